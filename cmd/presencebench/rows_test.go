package main

import (
	"io"
	"time"

	gc "gopkg.in/check.v1"
)

type rowsSuite struct{}

var _ = gc.Suite(&rowsSuite{})

func (*rowsSuite) TestDetectionRowsMeetTheirTargetOnlyWithEveryEventWithinTheBound(c *gc.C) {
	e := &env{opts: options{events: 2}, progress: io.Discard}
	t := &table{}
	s := settings{"short", 100 * time.Millisecond, 100 * time.Millisecond, time.Second}
	addDetectionRows(e, t, "latency", s, "20 live keys", "short, 20 live keys", latencies{
		start:            millis(10, 20),
		remoteStart:      millis(300, 10), // p99 over the 250ms bound
		disconnect:       millis(10),      // one event missing
		remoteDisconnect: millis(10, 10),
		silent:           millis(1000, 1200),
	})
	c.Assert(t.rows, gc.HasLen, 5)
	c.Check(t.rows[0], gc.DeepEquals, row{
		section:  "latency",
		what:     "start to alive, short settings, 20 live keys (2 events)",
		measured: "p50 20ms p99 20ms max 20ms",
		target:   "p99 <= 250ms",
		verdict:  "yes",
	})
	var verdicts, targets []string
	for _, r := range t.rows {
		verdicts, targets = append(verdicts, r.verdict), append(targets, r.target)
	}
	c.Check(verdicts, gc.DeepEquals, []string{"yes", "NO", "NO", "yes", "yes"})
	c.Check(targets, gc.DeepEquals, []string{"p99 <= 250ms", "p99 <= 250ms", "p99 <= 250ms", "p99 <= 250ms", "p99 <= 1.22s"})
	c.Check(t.rows[2].what, gc.Equals, "Disconnect to dead, short settings, 20 live keys (1 events)")
}

func (*rowsSuite) TestCostRowsCompareTheControllerSetWithSetsPerModel(c *gc.C) {
	// Over 10s of the defaults: 10 flushes, 100 syncs, 10 lease ticks.
	shared := cost{window: 10 * time.Second, writes: 10, reads: 120, leaseReads: 20, maxFlush: 2}
	perModel := cost{window: 10 * time.Second, writes: 40, reads: 1020, leaseReads: 20}
	rows := costRows(shape{100, 10}, shared, perModel)
	c.Check(rows, gc.DeepEquals, []row{{
		section:  "controller",
		what:     "100 model(s) x 10 agents, library defaults: write commands per flush interval",
		measured: "1.00",
		baseline: "4.00 with a set per model",
		ratio:    "4x fewer",
		target:   "<= 2",
		verdict:  "yes",
	}, {
		section:  "controller",
		what:     "100 model(s) x 10 agents, library defaults: most write commands in one flush",
		measured: "2",
		target:   "<= 2",
		verdict:  "yes",
	}, {
		section:  "controller",
		what:     "100 model(s) x 10 agents, library defaults: presence read commands per sync interval (100ms)",
		measured: "1.00 (10.0/s)",
		baseline: "100.0/s with a set per model reading every 1s",
		ratio:    "10x fewer",
		target:   "<= 2",
		verdict:  "yes",
	}, {
		section:  "controller",
		what:     "100 model(s) x 10 agents, library defaults: every command, per second",
		measured: "13.0/s",
		baseline: "106.0/s with sets per model",
		ratio:    "8x fewer",
	}, {
		section:  "controller",
		what:     "100 model(s) x 10 agents, library defaults: lease reads per lease tick",
		measured: "2.00",
		baseline: "2.00 with a lease store per model",
		ratio:    "1x fewer",
		target:   "<= 1",
		verdict:  "NO",
	}})
}

func (*rowsSuite) TestCostRowsSayWhenTheSetsPerModelSaturated(c *gc.C) {
	shared := cost{window: 10 * time.Second, writes: 10}
	perModel := cost{window: 10 * time.Second, writes: 40, slowLoads: 3, notAlive: 2, claimsFailed: 1}
	rows := costRows(shape{1000, 10}, shared, perModel)
	c.Check(rows[0].baseline, gc.Equals, "4.00 with a set per model; saturated: 3 loads slower than a sync, 2 agents never alive, 1 claims failed")
}

func (*rowsSuite) TestReconnectRowComparesBytesWithAFreshSnapshot(c *gc.C) {
	r := reconnectRow("resume", encoded{lines: 3, bytes: 100}, encoded{lines: 1001, bytes: 25050}, "every transition", true)
	c.Check(r, gc.DeepEquals, row{
		section:  "subscribers",
		what:     "resume",
		measured: "3 lines, 100 bytes",
		baseline: "fresh snapshot: 1001 lines, 25050 bytes",
		ratio:    "250.5x fewer bytes",
		target:   "every transition",
		verdict:  "yes",
	})
}

func (*rowsSuite) TestRenewRowMeetsItsTargetAtMostRoundTrips(c *gc.C) {
	r := renewRow("renew", 2, 41499*time.Microsecond, 2)
	c.Check(r, gc.DeepEquals, row{section: "leases", what: "renew", measured: "2 round trips, 41ms", target: "<= 2 round trips", verdict: "yes"})
	c.Check(renewRow("renew", 3, 0, 2).verdict, gc.Equals, "NO")
}
