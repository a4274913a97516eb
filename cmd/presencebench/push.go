package main

import (
	"context"
	"fmt"
	"time"
)

// remoteFigures are what another controller's reader saw in a latency
// run: its reads a second at rest, and detection of each cause.
type remoteFigures struct {
	readsAtRest               float64
	start, disconnect, silent []time.Duration
}

// remotesAlive waits until every remote reports every live key of fl alive.
func remotesAlive(ctx context.Context, remotes []*remote, fl *fleet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, rm := range remotes {
		for {
			alive := 0
			for _, w := range rm.watchers {
				if n, ok := w.Report()["alive"].(int); ok {
					alive += n
				}
			}
			if alive >= len(fl.pingers) {
				break
			}
			if ctx.Err() != nil || time.Now().After(deadline) {
				return fmt.Errorf("another controller sees %d of %d keys alive", alive, len(fl.pingers))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// readsAtRest returns the reads a second of the ping documents by push
// and poll while nothing changes, over a Period (at least two seconds).
func readsAtRest(ctx context.Context, s settings, push, poll *remote) (float64, float64) {
	window := max(s.period, 2*time.Second)
	pushBefore, pollBefore := push.reads(), poll.reads()
	select {
	case <-ctx.Done():
	case <-time.After(window):
	}
	return float64(push.reads()-pushBefore) / window.Seconds(), float64(poll.reads()-pollBefore) / window.Seconds()
}

// addPushRows logs and adds the rows that set another controller's reader
// with push against one that polls, in the same run: reads at rest, and
// detection of each cause.
func addPushRows(e *env, t *table, section string, s settings, scope string, res latencies) {
	startBound, disconnectBound, silentBound := s.bounds()
	e.logf("%s, another controller's reads a second at rest: %.2f with push, %.2f polling", scope, res.push.readsAtRest, res.poll.readsAtRest)
	t.add(row{
		section:  section,
		what:     fmt.Sprintf("another controller's reads a second at rest, %s settings, %s", s.name, scope),
		measured: fmt.Sprintf("%.2f/s", res.push.readsAtRest),
		baseline: fmt.Sprintf("%.2f/s polling (same run)", res.poll.readsAtRest),
		target:   "<= 2/s",
		verdict:  verdict(res.push.readsAtRest <= 2),
	})
	for _, d := range []struct {
		what       string
		push, poll []time.Duration
		bound      time.Duration
	}{
		{"start to alive, another controller", res.push.start, res.poll.start, startBound},
		{"Disconnect to dead, another controller", res.push.disconnect, res.poll.disconnect, disconnectBound},
		{"silent death to dead, another controller", res.push.silent, res.poll.silent, silentBound},
	} {
		p50, p99, worst := percentiles(d.push)
		b50, b99, bworst := percentiles(d.poll)
		e.logf("%s, %s: push p50 %v p99 %v max %v over %d; polling p50 %v p99 %v max %v over %d",
			scope, d.what, p50, p99, worst, len(d.push), b50, b99, bworst, len(d.poll))
		t.add(row{
			section:  section,
			what:     fmt.Sprintf("%s by push, %s settings, %s (%d events)", d.what, s.name, scope, len(d.push)),
			measured: fmt.Sprintf("p50 %v p99 %v max %v", ms(p50), ms(p99), ms(worst)),
			baseline: fmt.Sprintf("p50 %v p99 %v max %v polling (same run)", ms(b50), ms(b99), ms(bworst)),
			target:   fmt.Sprintf("p99 <= %v and no worse than polling", d.bound),
			verdict:  verdict(len(d.push) == e.opts.events && p99 <= d.bound && p99 <= b99+b99/10),
		})
	}
}
