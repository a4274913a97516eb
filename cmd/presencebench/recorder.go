package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/juju/clock"

	"github.com/presencekit/presence/worker/presencerecorder"
)

// benchRecorder measures the recorder's operations at 100,000 connections
// beside a flat list scanned on every lookup (juju's core/presence).
func benchRecorder(ctx context.Context, e *env, t *table) error {
	connections, models := 100000, 100
	if e.opts.quick {
		connections = 10000
	}
	for _, op := range recorderOps(connections, models) {
		if ctx.Err() != nil {
			return nil
		}
		r := op.measure(connections)
		e.logf("%s: %s", r.what, r.measured)
		t.add(r)
	}
	return nil
}

// recorderOp is one recorder operation to time, calls operations at a
// time, and the same done on a flat list, if it has a baseline.
type recorderOp struct {
	what       string
	operations int64
	f          func(i int)
	baseline   func()
}

// recorderOps returns the operations to time on a recorder of
// connections connections over three servers and models models.
func recorderOps(connections, models int) []recorderOp {
	r := presencerecorder.New(clock.WallClock)
	r.Enable()
	servers := []string{"machine-0", "machine-1", "machine-2"}
	for i := 0; i < connections; i++ {
		r.Connect(servers[i%3], fmt.Sprintf("model-%d", i%models), fmt.Sprintf("unit-%d", i), uint64(i), false, "")
	}
	flat := r.Connections().Values()
	model, agent := "model-7", "unit-7"
	return []recorderOp{
		{"Connect + Disconnect (two operations)", 2, func(i int) {
			id := uint64(connections + i)
			r.Connect("machine-0", "model-0", "unit-new", id, false, "")
			r.Disconnect("machine-0", id)
		}, nil},
		{"Activity", 1, func(i int) {
			id := i % connections
			r.Activity(servers[id%3], uint64(id))
		}, nil},
		{"Connections().ForModel(m).AgentStatus(a)", 1, func(int) {
			_, _ = r.Connections().ForModel(model).AgentStatus(agent)
		}, func() {
			best := presencerecorder.Unknown
			for _, v := range flat {
				if v.Model == model && v.Agent == agent && !v.ControllerAgent && v.Status > best {
					best = v.Status
				}
			}
		}},
	}
}

// measure benchmarks op and returns its row: beside its baseline if it
// has one, or else against a target of a microsecond an operation.
func (op recorderOp) measure(connections int) row {
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			op.f(i)
		}
	})
	r := row{
		section:  "recorder",
		what:     fmt.Sprintf("%s at %d connections", op.what, connections),
		measured: fmt.Sprintf("%d ns/op, %d allocs/op", res.NsPerOp(), res.AllocsPerOp()),
	}
	if op.baseline == nil {
		r.target = "< 1000 ns per operation"
		r.verdict = verdict(res.NsPerOp()/op.operations < 1000)
		return r
	}
	base := testing.Benchmark(func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			op.baseline()
		}
	})
	r.baseline = fmt.Sprintf("%d ns/op linear scan", base.NsPerOp())
	r.ratio = fmt.Sprintf("%.0fx faster", float64(base.NsPerOp())/float64(max(res.NsPerOp(), 1)))
	return r
}
