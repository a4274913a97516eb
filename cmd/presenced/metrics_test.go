package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/juju/clock/testclock"
	dto "github.com/prometheus/client_model/go"
	"go.mongodb.org/mongo-driver/v2/bson"
	mongoevent "go.mongodb.org/mongo-driver/v2/event"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

type metricsSuite struct{}

var _ = gc.Suite(&metricsSuite{})

// write makes m count n insert commands, as its command monitor would.
func write(c *gc.C, m *metrics, n int) {
	command, err := bson.Marshal(bson.D{{Key: "insert", Value: "presence.pings"}})
	c.Assert(err, gc.IsNil)
	monitor := m.monitor().Monitor
	for range n {
		monitor.Started(context.Background(), &mongoevent.CommandStartedEvent{CommandName: "insert", Command: command})
	}
}

func (*metricsSuite) TestWriteRatesAreOverAFixedWindowWhoeverPolls(c *gc.C) {
	clk := testclock.NewClock(time.Unix(0, 0))
	m := newMetrics(time.Second, true, clk)
	rate := newWriteRate(m, clk.Now())
	for range 30 {
		write(c, m, 7)
		clk.Advance(time.Second)
		rate.sample(clk.Now())
	}
	// Two pollers at the same instant see the same rate, that of the
	// last 10 s; a moment later, that of the samples still within 10 s.
	c.Assert(rate.perSecond(clk.Now()), gc.Equals, 7.0)
	c.Assert(rate.perSecond(clk.Now()), gc.Equals, 7.0)
	clk.Advance(100 * time.Millisecond)
	c.Assert(rate.perSecond(clk.Now()), gc.Equals, 63.0/9.1)
	// A burst shows at once; the window forgets it after 10 s.
	write(c, m, 100)
	c.Assert(rate.perSecond(clk.Now()), gc.Equals, 163.0/9.1)
	for range 11 {
		clk.Advance(time.Second)
		rate.sample(clk.Now())
	}
	c.Assert(rate.perSecond(clk.Now()), gc.Equals, 0.0)
}

func (*metricsSuite) TestRestartsAreCountedPerWorkerNotPerModel(c *gc.C) {
	m := newMetrics(time.Second, true, testclock.NewClock(time.Unix(0, 0)))
	for _, name := range []string{"m0-watcher", "m1-watcher", "ping-batcher", "m0-watcher", "m1-watcher", "ping-batcher", "m0-watcher"} {
		m.RecordStart(name)
	}
	c.Assert(metricValue(c, m, "presence_worker_restarts_total", "watcher"), gc.Equals, 3.0)
	c.Assert(metricValue(c, m, "presence_worker_restarts_total", "ping-batcher"), gc.Equals, 1.0)
}

func (*metricsSuite) TestDatabaseErrorsAreCountedByOperationAndKind(c *gc.C) {
	m := newMetrics(time.Second, true, testclock.NewClock(time.Unix(0, 0)))
	m.onLoad(presencereader.LoadStats{Err: context.DeadlineExceeded})
	m.onLoad(presencereader.LoadStats{Err: errors.New("no")})
	m.onFlush(pingbatcher.FlushStats{Err: context.DeadlineExceeded})
	c.Assert(metricValue(c, m, "presence_database_errors_total", "timeout", "read"), gc.Equals, 1.0)
	c.Assert(metricValue(c, m, "presence_database_errors_total", "other", "read"), gc.Equals, 1.0)
	c.Assert(metricValue(c, m, "presence_database_errors_total", "timeout", "write"), gc.Equals, 1.0)
}

func (*metricsSuite) TestClockSkewIsAGaugePerWriterThatForgetsRetiredWriters(c *gc.C) {
	m := newMetrics(time.Second, true, testclock.NewClock(time.Unix(0, 0)))
	m.onLoad(presencereader.LoadStats{Skews: map[string]time.Duration{"w1": 1500 * time.Millisecond, "w2": -time.Second}})
	c.Assert(metricValue(c, m, "presence_clock_skew_seconds", "w1"), gc.Equals, 1.5)
	c.Assert(metricValue(c, m, "presence_clock_skew_seconds", "w2"), gc.Equals, -1.0)
	m.onLoad(presencereader.LoadStats{Skews: map[string]time.Duration{"w1": time.Second}})
	c.Assert(metricValue(c, m, "presence_clock_skew_seconds", "w1"), gc.Equals, 1.0)
	families, err := m.registry.Gather()
	c.Assert(err, gc.IsNil)
	for _, f := range families {
		if f.GetName() == "presence_clock_skew_seconds" {
			c.Assert(f.GetMetric(), gc.HasLen, 1)
		}
	}
}

func (*metricsSuite) TestHealthNeedsARecentSuccessfulLoad(c *gc.C) {
	clk := testclock.NewClock(time.Unix(0, 0))
	m := newMetrics(time.Second, false, clk)
	c.Assert(m.health(clk.Now(), 10*time.Second), gc.ErrorMatches, "presence not read yet")
	m.onLoad(presencereader.LoadStats{})
	c.Assert(m.health(clk.Now(), 10*time.Second), gc.IsNil)
	clk.Advance(11 * time.Second)
	c.Assert(m.health(clk.Now(), 10*time.Second), gc.ErrorMatches, "no presence read for 11s")
	m.onLoad(presencereader.LoadStats{Err: errors.New("connection refused")})
	c.Assert(m.health(clk.Now(), 10*time.Second), gc.ErrorMatches, "cannot read presence: connection refused")
}

func (*metricsSuite) TestEachWorkersErrorsPrintOnTheirOwnLine(c *gc.C) {
	var out bytes.Buffer
	l := newLineLogger(&out, testclock.NewClock(time.Unix(0, 0)))
	const format = "%q manifold worker returned unexpected error: %v"
	l.Errorf(format, "presence-reader", "connection refused")
	l.Errorf(format, "ping-batcher", "connection refused")
	l.Errorf(format, "ping-batcher", "timeout")
	c.Assert(out.String(), gc.Equals, "ERROR \"presence-reader\" manifold worker returned unexpected error: connection refused\n"+
		"ERROR \"ping-batcher\" manifold worker returned unexpected error: connection refused\n")
}

// metricValue returns the value of the counter or gauge name whose label values
// are values, in label name order.
func metricValue(c *gc.C, m *metrics, name string, values ...string) float64 {
	families, err := m.registry.Gather()
	c.Assert(err, gc.IsNil)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, metric := range f.GetMetric() {
			var got []string
			for _, l := range metric.GetLabel() {
				got = append(got, l.GetValue())
			}
			if slices.Equal(got, values) {
				if g := metric.GetGauge(); g != nil {
					return g.GetValue()
				}
				return metric.GetCounter().GetValue()
			}
		}
	}
	c.Fatalf("no %s%v", name, values)
	return 0
}

func (*metricsSuite) TestAlertRulesNameOnlyMetricsPresencedExports(c *gc.C) {
	rules, err := os.ReadFile("../../ops/presence-alerts.yml")
	c.Assert(err, gc.IsNil)
	checkMetricNames(c, string(rules))
}

func (*metricsSuite) TestTheDashboardNamesOnlyMetricsPresencedExports(c *gc.C) {
	data, err := os.ReadFile("../../ops/presence-dashboard.json")
	c.Assert(err, gc.IsNil)
	var dashboard struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	c.Assert(json.Unmarshal(data, &dashboard), gc.IsNil)
	c.Assert(len(dashboard.Panels) > 5, gc.Equals, true)
	var exprs []string
	for _, p := range dashboard.Panels {
		c.Check(p.Targets, gc.Not(gc.HasLen), 0, gc.Commentf("%s", p.Title))
		for _, t := range p.Targets {
			exprs = append(exprs, t.Expr)
		}
	}
	checkMetricNames(c, strings.Join(exprs, "\n"))
}

// checkMetricNames checks that every presence_ metric text names is one
// that the demo's metrics export (a histogram's series by its name).
func checkMetricNames(c *gc.C, text string) {
	m := newMetrics(time.Second, true, testclock.NewClock(time.Unix(0, 0)))
	// Vectors export nothing until they have a series.
	m.onLeases([]leaseStatus{{Model: modelA, Held: true}})
	m.restarts.WithLabelValues("watcher")
	m.flushes.WithLabelValues("ok")
	m.failures.WithLabelValues("ok")
	m.detections.WithLabelValues("crash")
	m.skews.WithLabelValues("w")
	families, err := m.registry.Gather()
	c.Assert(err, gc.IsNil)
	exported := make(map[string]bool)
	for _, f := range families {
		exported[f.GetName()] = true
	}
	named := regexp.MustCompile(`\bpresence_[a-z_]+`).FindAllString(text, -1)
	c.Assert(len(named) > 5, gc.Equals, true)
	for _, name := range named {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		c.Check(exported[name] || exported[base], gc.Equals, true, gc.Commentf("%s", name))
	}
}

func (s *metricsSuite) TestFrozenLeasesAreCountedPerModel(c *gc.C) {
	m := newMetrics(time.Second, true, testclock.NewClock(time.Unix(0, 0)))
	m.onLeases([]leaseStatus{{Model: modelA, Held: true}, {Model: modelA, Invalid: "term _id names no term number"}})
	var frozen dto.Metric
	c.Assert(m.frozen.WithLabelValues(modelA).Write(&frozen), gc.IsNil)
	c.Assert(frozen.GetGauge().GetValue(), gc.Equals, 1.0)
}
