package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/watcher"
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
const eventPrefix = "event-"

// detector records when the watcher reported each key alive or dead.
type detector struct {
	mu    sync.Mutex
	alive map[string]time.Time
	dead  map[string]time.Time
	// unexpected counts the deaths of keys not named with eventPrefix.
	unexpected int
	changed    chan struct{}
}

func newDetector(ctx context.Context, subs ...watcher.Subscription) *detector {
	d := &detector{alive: make(map[string]time.Time), dead: make(map[string]time.Time), changed: make(chan struct{}, 1)}
	for _, sub := range subs {
		go d.follow(ctx, sub)
	}
	return d
}

// follow records what sub reports until ctx ends.
func (d *detector) follow(ctx context.Context, sub watcher.Subscription) {
	for {
		changes, err := sub.Next(ctx)
		if err != nil {
			return
		}
		now := time.Now()
		d.mu.Lock()
		for _, c := range changes {
			if c.Alive {
				d.alive[c.Key] = now
			} else {
				d.dead[c.Key] = now
				if !strings.HasPrefix(c.Key, eventPrefix) {
					d.unexpected++
				}
			}
		}
		d.mu.Unlock()
		select {
		case d.changed <- struct{}{}:
		default:
		}
	}
}

// unexpectedDeaths returns how many deaths of keys that nobody stopped
// were reported.
func (d *detector) unexpectedDeaths() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unexpected
}

// reset forgets what was seen of keys.
func (d *detector) reset(keys []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		delete(d.alive, k)
		delete(d.dead, k)
	}
}

// wait waits until every key was seen in state alive, or timeout, and
// returns each latency from its cause.
func (d *detector) wait(keys []string, causes []time.Time, alive bool, timeout time.Duration) []time.Duration {
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		seen := d.dead
		if alive {
			seen = d.alive
		}
		var out []time.Duration
		for i, k := range keys {
			if at, ok := seen[k]; ok && !causes[i].IsZero() {
				out = append(out, max(at.Sub(causes[i]), 0))
			}
		}
		d.mu.Unlock()
		if len(out) == len(keys) {
			return out
		}
		select {
		case <-d.changed:
		case <-deadline:
			return out
		}
	}
}

// staggered runs act(i) for each of n events at random moments spread over
// one period, so that latencies cover every phase of the slots and flushes,
// and returns when each happened.
func staggered(n int, period time.Duration, rng *rand.Rand, act func(i int)) []time.Time {
	offsets := make([]time.Duration, n)
	for i := range offsets {
		offsets[i] = time.Duration(rng.Int64N(int64(period)))
	}
	order := rng.Perm(n)
	sort.Slice(order, func(a, b int) bool { return offsets[order[a]] < offsets[order[b]] })
	at := make([]time.Time, n)
	began := time.Now()
	for _, i := range order {
		time.Sleep(time.Until(began.Add(offsets[i])))
		at[i] = time.Now()
		act(i)
	}
	return at
}

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
	local, remote *detector
	// poll is the detector of another controller's reader that polls.
	poll    *detector
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
	causes := staggered(len(run.pingers), run.s.period, run.rng, func(i int) {
		if err := run.pingers[i].Start(); err != nil && startErr == nil {
			startErr = err
		}
	})
	if startErr != nil {
		return startErr
	}
	res.start = run.local.wait(run.keys, causes, true, run.timeout)
	res.remoteStart = run.remote.wait(run.keys, causes, true, run.timeout)
	res.poll.start = run.poll.wait(run.keys, causes, true, run.timeout)

	causes = staggered(len(run.pingers), run.s.period, run.rng, func(i int) { _ = run.pingers[i].Disconnect() })
	res.disconnect = run.local.wait(run.keys, causes, false, run.timeout)
	res.remoteDisconnect = run.remote.wait(run.keys, causes, false, run.timeout)
	res.poll.disconnect = run.poll.wait(run.keys, causes, false, run.timeout)
	return nil
}

// silentDeaths starts every pinger again and, once each is in a steady
// state, stops each without a word at random moments over a period, and
// returns how long the fleet's detector took to see each death; the
// other controllers' go into res.
func (run *latencyRun) silentDeaths(res *latencies) ([]time.Duration, error) {
	run.local.reset(run.keys)
	run.remote.reset(run.keys)
	run.poll.reset(run.keys)
	for _, p := range run.pingers {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	restarted := make([]time.Time, len(run.pingers))
	for i := range restarted {
		restarted[i] = time.Now()
	}
	run.local.wait(run.keys, restarted, true, run.timeout)
	// Let every restarted key reach a steady state (pinged in two
	// slots) before it goes silent, as a long-lived agent would be.
	time.Sleep(run.s.period)
	causes := staggered(len(run.pingers), run.s.period, run.rng, func(i int) { _ = run.pingers[i].Stop() })
	local := run.local.wait(run.keys, causes, false, run.timeout)
	res.push.silent = run.remote.wait(run.keys, causes, false, run.timeout)
	res.poll.silent = run.poll.wait(run.keys, causes, false, run.timeout)
	return local, nil
}
