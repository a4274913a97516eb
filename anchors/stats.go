package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/presencekit/presence/internal/benchkit"
)

// metricByLabel returns the samples of the metric name in a Prometheus
// text exposition read from r, added up by the value of their label
// label ("" for samples without it). Comments and other metrics are
// skipped; a sample whose value does not parse is an error.
func metricByLabel(r io.Reader, name, label string) (map[string]float64, error) {
	out := make(map[string]float64)
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	for lines.Scan() {
		line := lines.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		var labels string
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("sample of %s with unclosed labels: %q", name, line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("sample of %s without a value: %q", name, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("sample of %s: %q: %w", name, line, err)
		}
		out[labelValue(labels, label)] += v
	}
	return out, lines.Err()
}

// labelValue returns the value of label in labels, a sample's
// `a="x",b="y"`, or "" if it is not there. Values holding quotes or
// commas are not expected of the metrics read here.
func labelValue(labels, label string) string {
	for _, pair := range strings.Split(labels, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(pair), label+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// cpuTicks returns the user plus system time, in clock ticks, of the
// process whose /proc/PID/stat content is stat: fields 14 and 15 (utime,
// stime). The command name (field 2) may hold spaces and parentheses, so
// the fields are counted from the last ")".
func cpuTicks(stat string) (int64, error) {
	fields, err := statFields(stat, 13)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time %q: %w", f, err)
		}
		total += v
	}
	return total, nil
}

// parentOf returns the parent process id in /proc/PID/stat content stat.
func parentOf(stat string) (int, error) {
	fields, err := statFields(stat, 2)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(fields[1])
}

// statFields returns the fields of /proc/PID/stat content stat after the
// command name, the state (field 3) first, or an error if there are
// fewer than n.
func statFields(stat string, n int) ([]string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("no command name in %q", stat)
	}
	fields := strings.Fields(stat[i+1:])
	if len(fields) < n {
		return nil, fmt.Errorf("too few fields in %q", stat)
	}
	return fields, nil
}

// detection is what one side measured of one kind of event: the latency
// of each event seen, and how many were caused.
type detection struct {
	got    []time.Duration
	events int
}

// String returns the detection as "p50 X p99 Y", with "(n of m seen)"
// when some events were never seen, or "-" when none was caused.
func (d detection) String() string {
	if d.events == 0 {
		return "-"
	}
	p50, p99, _ := benchkit.Percentiles(d.got)
	s := fmt.Sprintf("p50 %s p99 %s", short(p50), short(p99))
	if len(d.got) < d.events {
		s += fmt.Sprintf(" (%d of %d seen)", len(d.got), d.events)
	}
	return s
}

// p99 returns the detection's 99th percentile.
func (d detection) p99() time.Duration {
	_, p99, _ := benchkit.Percentiles(d.got)
	return p99
}

// short returns d in seconds with two decimals from a second up, and in
// milliseconds below.
func short(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	if d >= 10*time.Millisecond {
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// times returns how many times a is b, as "x 3.2", "x 0.023" or "x 275"
// (two significant digits below ten), or "-" when either is not
// positive.
func times(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	r := a / b
	if r < 10 {
		return "x " + strconv.FormatFloat(r, 'g', 2, 64)
	}
	return fmt.Sprintf("x %.0f", r)
}

// result is one side's figures: requests a second at the server and the
// server's CPU at rest, and the detection of each kind of event at the
// observer.
type result struct {
	name        string
	requests    float64
	writes      float64
	cpu         float64 // share of one core; negative when unknown
	load        string  // the machine's load average at rest and at the end
	start       detection
	silent      detection
	leave       detection
	breakdown   string // what the requests were
	hasRequests bool
	// falseDeaths is how many live agents (none of the events) the
	// observer saw die.
	falseDeaths int
}

// printTable writes the sides' figures to w as a Markdown table, a column
// a side, and a last column that sets the last side (the anchor) against
// the first: how many times its requests, CPU and p99s are ours.
func printTable(w io.Writer, sides []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	header := []string{"figure"}
	for _, s := range sides {
		header = append(header, s.name)
	}
	if len(sides) > 1 {
		header = append(header, sides[len(sides)-1].name+" / "+sides[0].name)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	rows := []struct {
		what  string
		cell  func(result) string
		value func(result) float64
	}{
		{"requests/s at the server, at rest", func(r result) string { return rate(r.requests, r.hasRequests) }, func(r result) float64 { return r.requests }},
		{"  of which writes", func(r result) string { return rate(r.writes, r.hasRequests) }, func(r result) float64 { return r.writes }},
		{"server CPU at rest, % of a core", func(r result) string { return percent(r.cpu) }, func(r result) float64 { return r.cpu }},
		{"start to alive at the observer", func(r result) string { return r.start.String() }, func(r result) float64 { return r.start.p99().Seconds() }},
		{"silent death to dead at the observer", func(r result) string { return r.silent.String() }, func(r result) float64 { return r.silent.p99().Seconds() }},
		{"clean leave to dead at the observer", func(r result) string { return r.leave.String() }, func(r result) float64 { return r.leave.p99().Seconds() }},
		{"live agents seen dead (false deaths)", func(r result) string { return strconv.Itoa(r.falseDeaths) }, nil},
		{"load average (1 min)", func(r result) string { return r.load }, nil},
	}
	for _, row := range rows {
		cells := []string{row.what}
		for _, s := range sides {
			cells = append(cells, row.cell(s))
		}
		if len(sides) > 1 {
			ratio := "-"
			if row.value != nil {
				ratio = times(row.value(sides[len(sides)-1]), row.value(sides[0]))
			}
			cells = append(cells, ratio)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
}

// rate returns v a second with one decimal, or "-" when not measured.
func rate(v float64, measured bool) string {
	if !measured {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// percent returns share as a percentage of a core, or "-" when negative
// (unknown).
func percent(share float64) string {
	if share < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", 100*share)
}

// writeCommands are the commands, and etcd's gRPC methods, that change
// what is stored. etcd's LeaseKeepAlive renews a lease in the leader's
// memory and is not one of them.
var writeCommands = map[string]bool{
	"insert": true, "update": true, "delete": true, "findAndModify": true,
	"Put": true, "Txn": true, "DeleteRange": true, "LeaseGrant": true, "LeaseRevoke": true,
}

// countsSince returns what after counted beyond before, command by
// command (a wire proxy's Counts taken twice).
func countsSince(before, after map[string]int) map[string]int {
	out := make(map[string]int)
	for name, n := range after {
		if d := n - before[name]; d > 0 {
			out[name] = d
		}
	}
	return out
}

// commandTotals returns every command in counts and the writes among
// them; a proxy's per-collection entries ("name collection") are not
// counted twice.
func commandTotals(counts map[string]int) (total, writes int) {
	for name, n := range counts {
		if strings.Contains(name, " ") {
			continue
		}
		total += n
		if writeCommands[name] {
			writes += n
		}
	}
	return total, writes
}

// describeCounts returns counts' commands (not their per-collection
// entries) as "3 find, 2 update", most first, then by name.
func describeCounts(counts map[string]int) string {
	var names []string
	for name := range counts {
		if !strings.Contains(name, " ") {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "nothing"
	}
	sort.Slice(names, func(i, j int) bool {
		if counts[names[i]] != counts[names[j]] {
			return counts[names[i]] > counts[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%d %s", counts[name], name)
	}
	return strings.Join(parts, ", ")
}
