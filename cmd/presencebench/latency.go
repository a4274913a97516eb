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
			startBound, disconnectBound, silentBound := s.bounds()
			_, flushP99, flushMax := percentiles(res.flushes)
			_, loadP99, loadMax := percentiles(res.loads)
			e.logf("%s, %d live keys: database time per flush p99 %v max %v, per watcher read p99 %v max %v",
				s.name, live, flushP99, flushMax, loadP99, loadMax)
			t.add(row{
				section:  "latency",
				what:     fmt.Sprintf("database time in those runs, %s settings, %d live keys", s.name, live),
				measured: fmt.Sprintf("flush p99 %v max %v; read p99 %v max %v", ms(flushP99), ms(flushMax), ms(loadP99), ms(loadMax)),
			})
			for _, r := range []struct {
				what  string
				got   []time.Duration
				bound time.Duration
			}{
				{"start to alive", res.start, startBound},
				{"start to alive, another controller", res.remoteStart, startBound},
				{"Disconnect to dead", res.disconnect, disconnectBound},
				{"Disconnect to dead, another controller", res.remoteDisconnect, disconnectBound},
				{"silent death to dead", res.silent, silentBound},
			} {
				p50, p99, worst := percentiles(r.got)
				e.logf("%s, %d live keys, %s: p50 %v p99 %v max %v over %d", s.name, live, r.what, p50, p99, worst, len(r.got))
				t.add(row{
					section:  "latency",
					what:     fmt.Sprintf("%s, %s settings, %d live keys (%d events)", r.what, s.name, live, len(r.got)),
					measured: fmt.Sprintf("p50 %v p99 %v max %v", ms(p50), ms(p99), ms(worst)),
					target:   fmt.Sprintf("p99 <= %v", r.bound),
					verdict:  verdict(len(r.got) == e.opts.events && p99 <= r.bound),
				})
			}
		}
	}
	return nil
}

// latencies are a latency run's figures, each one per event.
type latencies struct {
	start, disconnect, silent []time.Duration
	// remoteStart and remoteDisconnect are the same events as seen by
	// another controller's reader, which polls.
	remoteStart, remoteDisconnect []time.Duration
	// flushes and loads are how long the batcher's writes and the
	// watcher's reads took during the run: the database's share.
	flushes, loads []time.Duration
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
	db, done, err := e.database()
	if err != nil {
		return res, err
	}
	defer done()
	base := db.Collection("presence")
	fl, err := newFleet(ctx, e, s, models, base, base)
	if err != nil {
		return res, err
	}
	defer fl.stop()
	_, _, silentBound := s.bounds()
	timeout := 2*silentBound + 5*time.Second
	rm, err := newRemote(ctx, s, models, base)
	if err != nil {
		return res, err
	}
	defer rm.stop()
	if err := fl.grow(ctx, live, timeout); err != nil {
		return res, err
	}
	d := fl.d
	var all []*pinger.Pinger
	defer func() {
		for _, p := range all {
			p.Kill()
		}
	}()
	keys := make([]string, events)
	ps := make([]*pinger.Pinger, events)
	for i := range keys {
		keys[i] = fmt.Sprintf("event-%d", i)
		if ps[i], err = fl.newPinger(keys[i], i); err != nil {
			return res, err
		}
		all = append(all, ps[i])
	}
	rng := rand.New(rand.NewPCG(uint64(live), uint64(events)))
	var startErr error
	causes := staggered(events, s.period, rng, func(i int) {
		if err := ps[i].Start(); err != nil && startErr == nil {
			startErr = err
		}
	})
	if startErr != nil {
		return res, startErr
	}
	res.start = d.wait(keys, causes, true, timeout)
	res.remoteStart = rm.d.wait(keys, causes, true, timeout)

	causes = staggered(events, s.period, rng, func(i int) { _ = ps[i].Disconnect() })
	res.disconnect = d.wait(keys, causes, false, timeout)
	res.remoteDisconnect = rm.d.wait(keys, causes, false, timeout)

	d.reset(keys)
	rm.d.reset(keys)
	for i := range ps {
		if err := ps[i].Start(); err != nil {
			return res, err
		}
	}
	restarted := make([]time.Time, events)
	for i := range restarted {
		restarted[i] = time.Now()
	}
	d.wait(keys, restarted, true, timeout)
	// Let every restarted key reach a steady state (pinged in two
	// slots) before it goes silent, as a long-lived agent would be.
	time.Sleep(s.period)
	causes = staggered(events, s.period, rng, func(i int) { _ = ps[i].Stop() })
	res.silent = d.wait(keys, causes, false, timeout)
	res.flushes, res.loads = fl.flushes.get(), fl.loads.get()
	return res, nil
}
