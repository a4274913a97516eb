package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/presencekit/presence/internal/benchkit"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// settings are the tunables a latency run uses.
type settings struct {
	name                string
	flush, sync, period time.Duration
}

// bounds returns the detection bounds for s: start and Disconnect, which
// the batcher writes at once (at most 50ms after its previous flush),
// within that, a sync and 100ms for the write and the read (250ms with
// the library's defaults); a silent death within a period, a flush (with
// its +20% jitter) and a sync.
func (s settings) bounds() (start, disconnect, silent time.Duration) {
	prompt := min(50*time.Millisecond, s.flush) + s.sync + 100*time.Millisecond
	return prompt, prompt, s.period + s.flush*12/10 + s.sync
}

// benchLatency measures detection from each cause to the watcher's
// report at short settings (and the library's defaults in a full run),
// at a small and a larger number of live keys.
func benchLatency(ctx context.Context, e *env, t *table) error {
	runs := []settings{{"short", 100 * time.Millisecond, 100 * time.Millisecond, time.Second}}
	sizes := []int{100, 10000}
	if e.opts.quick {
		sizes = []int{20, 200}
	} else {
		runs = append(runs, settings{"defaults", schema.DefaultFlushInterval, schema.DefaultSyncInterval, schema.DefaultPeriod})
	}
	for _, s := range runs {
		for _, live := range sizes {
			if ctx.Err() != nil {
				return nil
			}
			res, err := measureLatency(ctx, e, s, live, e.opts.events, 1)
			if err != nil {
				return err
			}
			_, flushP99, flushMax := percentiles(res.flushes)
			_, loadP99, loadMax := percentiles(res.loads)
			e.logf("%s, %d live keys: database time per flush p99 %v max %v, per watcher read p99 %v max %v",
				s.name, live, flushP99, flushMax, loadP99, loadMax)
			t.add(row{
				section:  "latency",
				what:     fmt.Sprintf("database time in those runs, %s settings, %d live keys", s.name, live),
				measured: fmt.Sprintf("flush p99 %v max %v; read p99 %v max %v", ms(flushP99), ms(flushMax), ms(loadP99), ms(loadMax)),
			})
			scope := fmt.Sprintf("%d live keys", live)
			addDetectionRows(e, t, "latency", s, scope, s.name+", "+scope, res)
			addPushRows(e, t, "latency", s, scope, res)
		}
	}
	return nil
}

// latencies are a latency run's figures, each one per event.
type latencies struct {
	start, disconnect, silent []time.Duration
	// remoteStart and remoteDisconnect are the same events as seen by
	// another controller's reader, which hears them by push.
	remoteStart, remoteDisconnect []time.Duration
	// push are the figures of another controller's reader with push,
	// poll those of one that polls (Config.NoPush), in the same run.
	push, poll remoteFigures
	// flushes and loads are how long the batcher's writes and the
	// watcher's reads took during the run: the database's share.
	flushes, loads []time.Duration
}

// detection is one of a latency run's figures and the bound it is
// measured against.
type detection struct {
	what  string
	got   []time.Duration
	bound time.Duration
}

// detections returns res's five detection figures, each with its bound
// under s.
func (res latencies) detections(s settings) []detection {
	startBound, disconnectBound, silentBound := s.bounds()
	return []detection{
		{"start to alive", res.start, startBound},
		{"start to alive, another controller", res.remoteStart, startBound},
		{"Disconnect to dead", res.disconnect, disconnectBound},
		{"Disconnect to dead, another controller", res.remoteDisconnect, disconnectBound},
		{"silent death to dead", res.silent, silentBound},
	}
}

// addDetectionRows logs and adds a row to section for each of res's
// detection figures, its figure naming s and scope and its log line
// starting with logScope; a figure meets its target when it saw every
// event and its p99 is within the bound.
func addDetectionRows(e *env, t *table, section string, s settings, scope, logScope string, res latencies) {
	for _, d := range res.detections(s) {
		p50, p99, worst := percentiles(d.got)
		e.logf("%s, %s: p50 %v p99 %v max %v over %d", logScope, d.what, p50, p99, worst, len(d.got))
		t.add(row{
			section:  section,
			what:     fmt.Sprintf("%s, %s settings, %s (%d events)", d.what, s.name, scope, len(d.got)),
			measured: fmt.Sprintf("p50 %v p99 %v max %v", ms(p50), ms(p99), ms(worst)),
			target:   fmt.Sprintf("p99 <= %v", d.bound),
			verdict:  verdict(len(d.got) == e.opts.events && p99 <= d.bound),
		})
	}
}

// eventPrefix starts the keys that a run starts and stops on purpose;
// the death of any other key is false.
const eventPrefix = benchkit.EventPrefix

// measureLatency runs live keys and events event keys spread over models
// models, with one batcher, one reader and one watcher per model (as a
// controller runs them), and measures detection from each cause to the
// watcher's report.
func measureLatency(ctx context.Context, e *env, s settings, live, events, models int) (latencies, error) {
	var res latencies
	fl, stopFleet, err := startFleet(ctx, e, s, models)
	if err != nil {
		return res, err
	}
	defer stopFleet()
	_, _, silentBound := s.bounds()
	timeout := 2*silentBound + 5*time.Second
	rm, err := newRemote(ctx, e, s, models, fl.readerBase, false)
	if err != nil {
		return res, err
	}
	defer rm.stop()
	poll, err := newRemote(ctx, e, s, models, fl.readerBase, true)
	if err != nil {
		return res, err
	}
	defer poll.stop()
	if err := fl.grow(ctx, live, timeout); err != nil {
		return res, err
	}
	if err := remotesAlive(ctx, []*remote{rm, poll}, fl, timeout); err != nil {
		return res, err
	}
	res.push.readsAtRest, res.poll.readsAtRest = readsAtRest(ctx, s, rm, poll)
	run, err := newLatencyRun(fl, rm, events, timeout)
	if err != nil {
		return res, err
	}
	defer run.kill()
	run.poll = poll.d
	run.rng = rand.New(rand.NewPCG(uint64(live), uint64(events)))
	if err := run.startAndDisconnect(&res); err != nil {
		return res, err
	}
	if res.silent, err = run.silentDeaths(&res); err != nil {
		return res, err
	}
	res.push.start, res.push.disconnect = res.remoteStart, res.remoteDisconnect
	res.flushes, res.loads = fl.flushes.get(), fl.loads.get()
	return res, nil
}

// latencyRun is a latency measurement's event pingers and the detectors
// that see them: the fleet's own and a remote controller's.
type latencyRun struct {
	s             settings
	keys          []string
	pingers       []*pinger.Pinger
	local, remote *benchkit.Sightings
	// poll is the detector of another controller's reader that polls.
	poll    *benchkit.Sightings
	rng     *rand.Rand
	timeout time.Duration
}

// newLatencyRun returns a run of events event pingers of fl, not
// started, seen by fl's detector and rm's, each wait bounded by timeout.
func newLatencyRun(fl *fleet, rm *remote, events int, timeout time.Duration) (*latencyRun, error) {
	run := &latencyRun{s: fl.s, local: fl.d, remote: rm.d, timeout: timeout}
	for i := 0; i < events; i++ {
		key := fmt.Sprintf("%s%d", eventPrefix, i)
		p, err := fl.newPinger(key, i)
		if err != nil {
			run.kill()
			return nil, err
		}
		run.keys, run.pingers = append(run.keys, key), append(run.pingers, p)
	}
	return run, nil
}

// kill kills the run's pingers.
func (run *latencyRun) kill() {
	for _, p := range run.pingers {
		p.Kill()
	}
}

// startAndDisconnect starts every pinger and then disconnects each, at
// random moments over a period each time, and records how long each side
// took to see each.
func (run *latencyRun) startAndDisconnect(res *latencies) error {
	var startErr error
	causes := benchkit.Staggered(len(run.pingers), run.s.period, run.rng, func(i int) {
		if err := run.pingers[i].Start(); err != nil && startErr == nil {
			startErr = err
		}
	})
	if startErr != nil {
		return startErr
	}
	res.start = run.local.Wait(run.keys, causes, true, run.timeout)
	res.remoteStart = run.remote.Wait(run.keys, causes, true, run.timeout)
	res.poll.start = run.poll.Wait(run.keys, causes, true, run.timeout)

	causes = benchkit.Staggered(len(run.pingers), run.s.period, run.rng, func(i int) { _ = run.pingers[i].Disconnect() })
	res.disconnect = run.local.Wait(run.keys, causes, false, run.timeout)
	res.remoteDisconnect = run.remote.Wait(run.keys, causes, false, run.timeout)
	res.poll.disconnect = run.poll.Wait(run.keys, causes, false, run.timeout)
	return nil
}

// silentDeaths starts every pinger again and, once each is in a steady
// state, stops each without a word at random moments over a period, and
// returns how long the fleet's detector took to see each death; the
// other controllers' go into res.
func (run *latencyRun) silentDeaths(res *latencies) ([]time.Duration, error) {
	run.local.Forget(run.keys)
	run.remote.Forget(run.keys)
	run.poll.Forget(run.keys)
	for _, p := range run.pingers {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	restarted := make([]time.Time, len(run.pingers))
	for i := range restarted {
		restarted[i] = time.Now()
	}
	run.local.Wait(run.keys, restarted, true, run.timeout)
	// Let every restarted key reach a steady state (pinged in two
	// slots) before it goes silent, as a long-lived agent would be.
	time.Sleep(run.s.period)
	causes := benchkit.Staggered(len(run.pingers), run.s.period, run.rng, func(i int) { _ = run.pingers[i].Stop() })
	local := run.local.Wait(run.keys, causes, false, run.timeout)
	res.push.silent = run.remote.Wait(run.keys, causes, false, run.timeout)
	res.poll.silent = run.poll.Wait(run.keys, causes, false, run.timeout)
	return local, nil
}
