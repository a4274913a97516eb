package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/juju/clock/testclock"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

func TestPackage(t *testing.T) {
	gc.TestingT(t)
}

type presencedSuite struct{}

var _ = gc.Suite(&presencedSuite{})

func (*presencedSuite) TestBadFlagsExitWithTwoAndSayWhy(c *gc.C) {
	for _, args := range [][]string{
		{"--agents", "0"},
		{"--models", "0"},
		{"--period", "1s", "--flush", "600ms"},
		{"--no-such-flag"},
		{"stray"},
	} {
		var stdout, stderr bytes.Buffer
		c.Check(run(args, &stdout, &stderr), gc.Equals, 2, gc.Commentf("%v", args))
		c.Check(stderr.String(), gc.Not(gc.Equals), "", gc.Commentf("%v", args))
	}
}

// output collects a process's standard output and lets a test wait for a
// line.
type output struct {
	mu    sync.Mutex
	lines []string
}

func (o *output) read(r io.Reader) {
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		o.mu.Lock()
		o.lines = append(o.lines, scanner.Text())
		o.mu.Unlock()
	}
}

func (o *output) wait(c *gc.C, prefix string, within time.Duration) string {
	var found string
	c.Assert(agenttest.Retry(within, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		i := slices.IndexFunc(o.lines, func(line string) bool { return strings.HasPrefix(line, prefix) })
		if i < 0 {
			return fmt.Errorf("no line starting %q; got:\n%s", prefix, strings.Join(o.lines, "\n"))
		}
		found = o.lines[i]
		return nil
	}), gc.IsNil)
	return found
}

func (o *output) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}

func getJSON(c *gc.C, url string, into any) {
	resp, err := http.Get(url)
	c.Assert(err, gc.IsNil)
	defer resp.Body.Close()
	c.Assert(resp.StatusCode, gc.Equals, http.StatusOK)
	c.Assert(json.NewDecoder(resp.Body).Decode(into), gc.IsNil)
}

// build builds presenced into a temporary directory.
func build(c *gc.C) string {
	binary := filepath.Join(c.MkDir(), "presenced")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	c.Assert(err, gc.IsNil, gc.Commentf("%s", out))
	return binary
}

// process is a running presenced.
type process struct {
	cmd    *exec.Cmd
	lines  *output
	stdout *io.PipeWriter
}

// start runs binary with args and the short settings of these tests.
func start(c *gc.C, binary string, args ...string) *process {
	args = append([]string{"--listen", "127.0.0.1:0", "--period", "1s", "--flush", "100ms", "--sync", "100ms",
		"--churn", "100ms", "--display", "1s", "--keepalive", "200ms"}, args...)
	cmd := exec.Command(binary, args...)
	// Not StdoutPipe: Wait would close it before the last lines are read.
	stdout, stdoutWriter := io.Pipe()
	cmd.Stdout = stdoutWriter
	cmd.Stderr = os.Stderr
	c.Assert(cmd.Start(), gc.IsNil)
	p := &process{cmd: cmd, lines: &output{}, stdout: stdoutWriter}
	go p.lines.read(stdout)
	return p
}

// interrupt sends SIGINT and checks that the process exits cleanly within
// five seconds.
func (p *process) interrupt(c *gc.C) {
	started := time.Now()
	c.Assert(p.cmd.Process.Signal(syscall.SIGINT), gc.IsNil)
	exited := make(chan error, 1)
	go func() {
		err := p.cmd.Wait()
		p.stdout.Close()
		exited <- err
	}()
	select {
	case err := <-exited:
		c.Assert(err, gc.IsNil)
	case <-time.After(5 * time.Second):
		c.Fatalf("did not stop within 5s of SIGINT; output:\n%s", p.lines.text())
	}
	c.Logf("stopped %v after SIGINT", time.Since(started))
	p.lines.wait(c, "stopped cleanly", time.Second)
}

func (*presencedSuite) TestRunsReportsDeathsAndLeadersAndStopsCleanly(c *gc.C) {
	p := start(c, build(c), "--agents", "40", "--models", "2")
	defer func() { _ = p.cmd.Process.Kill() }()
	lines := p.lines

	listening := lines.wait(c, "listening on ", time.Minute)
	base := strings.Fields(strings.TrimPrefix(listening, "listening on "))[0]

	// A crashed agent is reported dead, and every model has leaders.
	c.Assert(agenttest.Retry(time.Minute, func() error {
		var st statusDoc
		getJSON(c, base+"/status", &st)
		crashed := false
		for _, d := range st.Recent {
			crashed = crashed || (d.Cause == causeCrash && !d.Alive && d.Seconds > 0)
		}
		leaders := len(st.Models) == 2 && len(st.Models[0].Leaders) > 0 && len(st.Models[1].Leaders) > 0
		if !crashed || !leaders {
			return fmt.Errorf("no crash detected or no leaders: %+v", st)
		}
		return nil
	}), gc.IsNil)

	// /watch streams the snapshot first, then keepalives or deltas.
	resp, err := http.Get(base + "/watch?key=machine-0&key=machine-2")
	c.Assert(err, gc.IsNil)
	reader := bufio.NewReader(resp.Body)
	var first []watchLine
	for len(first) < 3 {
		line, err := reader.ReadBytes('\n')
		c.Assert(err, gc.IsNil)
		var wl watchLine
		c.Assert(json.Unmarshal(line, &wl), gc.IsNil)
		first = append(first, wl)
	}
	resp.Body.Close()
	c.Assert(first[0].Snapshot && first[1].Snapshot, gc.Equals, true, gc.Commentf("%+v", first))
	c.Assert([]string{first[0].Key, first[1].Key}, gc.DeepEquals, []string{"machine-0", "machine-2"})
	// Both keys are in model 0 (agents go round the models), and the
	// stream says so.
	c.Assert([]string{first[0].Model, first[1].Model}, gc.DeepEquals, []string{modelID(0), modelID(0)})
	c.Assert(first[2].SnapshotEnd, gc.Equals, true, gc.Commentf("%+v", first))

	// /status gives times in RFC 3339 and uptime in seconds.
	var st statusDoc
	getJSON(c, base+"/status", &st)
	var stamps []time.Time
	for _, stamp := range []string{st.Started, st.Time, st.Recent[0].Time} {
		t, err := time.Parse(time.RFC3339, stamp)
		c.Check(err, gc.IsNil)
		stamps = append(stamps, t)
	}
	// Both stamps are cut to the second.
	elapsed := int64(stamps[1].Sub(stamps[0]) / time.Second)
	c.Check(st.UptimeSeconds >= elapsed-1 && st.UptimeSeconds <= elapsed+1, gc.Equals, true, gc.Commentf("%+v", st))
	c.Check(st.RateWindow, gc.Equals, rateWindow.Seconds())
	var health map[string]bool
	getJSON(c, base+"/healthz", &health)
	c.Check(health["ok"], gc.Equals, true)

	resp, err = http.Get(base + "/metrics")
	c.Assert(err, gc.IsNil)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.Assert(err, gc.IsNil)
	for _, name := range []string{"presence_flushes_total", "presence_sync_seconds", "presence_alive_agents",
		"presence_leases_held", "presence_detection_seconds", "presence_database_write_commands_total",
		"presence_slow_flushes_total", "presence_skipped_documents_total", "presence_max_clock_skew_seconds",
		"presence_reader_loads_total", "presence_reader_held_keys", "presence_reader_stalled",
		"presence_flush_seconds", "presence_unexplained_deaths_total",
		"go_goroutines", "process_cpu_seconds_total"} {
		c.Check(strings.Contains(string(body), name), gc.Equals, true, gc.Commentf("%s", name))
	}

	p.interrupt(c)
}

func (*presencedSuite) TestErrorsArePrintedOncePerCauseEveryTenSeconds(c *gc.C) {
	var out bytes.Buffer
	clk := testclock.NewClock(time.Unix(0, 0))
	l := newLineLogger(&out, clk)
	l.Errorf("cannot read %s: %v", "pings", "connection refused")
	l.Errorf("cannot read %s: %v", "pings", "connection refused")
	l.Errorf("worker %q restarting", "reader")
	l.Debugf("not shown")
	clk.Advance(logEvery)
	l.Errorf("cannot read %s: %v", "pings", "timeout")
	c.Assert(out.String(), gc.Equals, "ERROR cannot read pings: connection refused\n"+
		"ERROR worker \"reader\" restarting\n"+
		"ERROR cannot read pings: timeout (and 1 more like it)\n")
}

// faultSuite runs presenced against the out-of-process test server, and
// breaks the server under it.
type faultSuite struct {
	agenttest.MongoSuite
	binary string
}

var _ = gc.Suite(&faultSuite{})

func (s *faultSuite) SetUpSuite(c *gc.C) {
	s.MongoSuite.SetUpSuite(c)
	s.binary = build(c)
}

// run starts presenced on uri with 10 models and 200 agents and waits for
// it to serve.
func (s *faultSuite) run(c *gc.C, uri string) *process {
	p := start(c, s.binary, "--agents", "200", "--models", "10", "--mongo-uri", uri)
	p.lines.wait(c, "listening on ", time.Minute)
	time.Sleep(time.Second)
	return p
}

func (s *faultSuite) TestSIGINTStopsWithinFiveSecondsWithTheServerHung(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	p := s.run(c, s.Server.URI())
	defer func() { _ = p.cmd.Process.Kill() }()
	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Assert(s.Server.Resume(), gc.IsNil) }()
	time.Sleep(2 * time.Second)
	p.interrupt(c)
}

func (s *faultSuite) TestSIGINTStopsWithinFiveSecondsWithTheServerDown(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot kill an external MongoDB")
	}
	p := s.run(c, s.Server.URI())
	defer func() { _ = p.cmd.Process.Kill() }()
	c.Assert(s.Server.Kill(), gc.IsNil)
	time.Sleep(2 * time.Second)
	p.interrupt(c)
}

func (s *faultSuite) TestSIGINTStopsWithinFiveSecondsWithTheServerSlow(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	p := s.run(c, uri)
	defer func() { _ = p.cmd.Process.Kill() }()
	proxy.SetDelay(3 * time.Second)
	time.Sleep(2 * time.Second)
	p.interrupt(c)
}
