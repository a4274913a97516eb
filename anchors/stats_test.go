package main

import (
	"strings"
	"time"

	gc "gopkg.in/check.v1"
)

type statsSuite struct{}

var _ = gc.Suite(&statsSuite{})

func (*statsSuite) TestMetricByLabelAddsUpOneMetricByTheLabel(c *gc.C) {
	text := `# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
# TYPE grpc_server_msg_received_total counter
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 2811
grpc_server_msg_received_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1.5e+01
grpc_server_msg_received_total{grpc_service="etcdserverpb.KV",grpc_method="Put",grpc_type="unary"} 5
grpc_server_msg_received_total 7
grpc_server_msg_received_total_other{grpc_method="Put"} 1000
grpc_server_msg_sent_total{grpc_method="LeaseKeepAlive"} 2811
`
	got, err := metricByLabel(strings.NewReader(text), "grpc_server_msg_received_total", "grpc_method")
	c.Assert(err, gc.IsNil)
	c.Check(got, gc.DeepEquals, map[string]float64{"LeaseKeepAlive": 2811, "Put": 20, "": 7})
}

func (*statsSuite) TestMetricByLabelRejectsAValueThatDoesNotParse(c *gc.C) {
	_, err := metricByLabel(strings.NewReader("requests{a=\"b\"} many\n"), "requests", "a")
	c.Check(err, gc.ErrorMatches, `sample of requests: .*invalid syntax`)
}

func (*statsSuite) TestCPUTicksCountFromTheLastParenthesis(c *gc.C) {
	stat := "4242 (odd) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 12 0 1000 0 0"
	ticks, err := cpuTicks(stat)
	c.Assert(err, gc.IsNil)
	c.Check(ticks, gc.Equals, int64(287))
	ppid, err := parentOf(stat)
	c.Assert(err, gc.IsNil)
	c.Check(ppid, gc.Equals, 1)
}

func (*statsSuite) TestCPUTicksRejectAShortLine(c *gc.C) {
	_, err := cpuTicks("1 (x) S 1 2")
	c.Check(err, gc.ErrorMatches, "too few fields.*")
}

func (*statsSuite) TestCommandTotalsCountEachCommandOnceAndItsWrites(c *gc.C) {
	counts := map[string]int{"find": 10, "find presence.pings": 10, "update": 2, "update presence.pings": 2, "insert": 1, "hello": 3}
	total, writes := commandTotals(counts)
	c.Check(total, gc.Equals, 16)
	c.Check(writes, gc.Equals, 3)
	total, writes = commandTotals(map[string]int{"LeaseKeepAlive": 2800, "LeaseGrant": 1, "Put": 1, "Range": 4})
	c.Check(total, gc.Equals, 2806)
	c.Check(writes, gc.Equals, 2)
	c.Check(describeCounts(counts), gc.Equals, "10 find, 3 hello, 2 update, 1 insert")
	c.Check(describeCounts(nil), gc.Equals, "nothing")
}

func (*statsSuite) TestCountsSinceKeepOnlyWhatGrew(c *gc.C) {
	c.Check(countsSince(map[string]int{"find": 3, "hello": 1}, map[string]int{"find": 5, "hello": 1, "update": 2}),
		gc.DeepEquals, map[string]int{"find": 2, "update": 2})
}

func (*statsSuite) TestDetectionSaysHowManyEventsWereNeverSeen(c *gc.C) {
	d := detection{got: []time.Duration{3 * time.Millisecond, 120 * time.Millisecond, 10500 * time.Millisecond}, events: 4}
	c.Check(d.String(), gc.Equals, "p50 120 ms p99 10.50 s (3 of 4 seen)")
	c.Check(detection{}.String(), gc.Equals, "-")
	c.Check(detection{got: []time.Duration{2500 * time.Microsecond}, events: 1}.String(), gc.Equals, "p50 2.5 ms p99 2.5 ms")
}

func (*statsSuite) TestTimesUsesTwoSignificantDigitsBelowTen(c *gc.C) {
	c.Check(times(2812, 10.2), gc.Equals, "x 276")
	c.Check(times(0.003, 0.13), gc.Equals, "x 0.023")
	c.Check(times(10.0, 10.5), gc.Equals, "x 0.95")
	c.Check(times(1, 0), gc.Equals, "-")
}

func (*statsSuite) TestTableSetsTheLastSideAgainstTheFirst(c *gc.C) {
	ours := result{name: "ours", requests: 10, writes: 0.2, hasRequests: true, cpu: 0.02, load: "1.5 at rest",
		leave: detection{got: []time.Duration{100 * time.Millisecond}, events: 1}}
	anchor := result{name: "etcd", requests: 2800, hasRequests: true, cpu: -1, load: "1.5 at rest",
		leave: detection{got: []time.Duration{2 * time.Millisecond}, events: 1}}
	var out strings.Builder
	printTable(&out, []result{ours, anchor})
	lines := strings.Split(out.String(), "\n")
	c.Assert(len(lines) > 7, gc.Equals, true)
	c.Check(squeeze(lines[0]), gc.Equals, "figure |ours |etcd |etcd / ours")
	c.Check(squeeze(lines[1]), gc.Equals, "requests/s at the server, at rest |10.0 |2800.0 |x 280")
	c.Check(squeeze(lines[3]), gc.Equals, "server CPU at rest, % of a core |2.0 % |- |-")
	c.Check(squeeze(lines[6]), gc.Equals, "clean leave to dead at the observer |p50 100 ms p99 100 ms |p50 2.0 ms p99 2.0 ms |x 0.02")
}

// squeeze returns line with each run of spaces made one.
func squeeze(line string) string {
	return strings.Join(strings.Fields(line), " ")
}
