package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/watcher"
)

// benchSubscribers measures delivery from one watcher to 1,000
// subscriptions while one more, to every key, is never read, beside the
// same without the unread one.
func benchSubscribers(ctx context.Context, e *env, t *table) error {
	subs, rounds := 1000, 20
	if e.opts.quick {
		subs, rounds = 100, 4
	}
	baseline, _, err := measureSubscribers(ctx, e, subs, rounds, false)
	if err != nil {
		return err
	}
	delays, heapGrowth, err := measureSubscribers(ctx, e, subs, rounds, true)
	if err != nil {
		return err
	}
	p50, p99, worst := percentiles(delays)
	b50, b99, _ := percentiles(baseline)
	e.logf("%d subscriptions, %d rounds: p50 %v p99 %v max %v over %d deliveries (without the unread one: p50 %v p99 %v); heap growth with one unread: %d bytes",
		subs, rounds, p50, p99, worst, len(delays), b50, b99, heapGrowth)
	t.add(row{
		section:  "subscribers",
		what:     fmt.Sprintf("delivery after the sync, %d subscriptions, one never read (%d deliveries)", subs, len(delays)),
		measured: fmt.Sprintf("p50 %v p99 %v max %v", p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond)),
		baseline: fmt.Sprintf("p50 %v p99 %v with no unread one", b50.Round(time.Microsecond), b99.Round(time.Microsecond)),
		ratio:    fmt.Sprintf("%.2fx at p99", float64(p99)/float64(max(b99, 1))),
		target:   "p99 < 1ms",
		verdict:  verdict(p99 < time.Millisecond && len(delays) == rounds*subs),
	})
	t.add(row{
		section:  "subscribers",
		what:     fmt.Sprintf("heap growth over %d more rounds with the never-read subscription (all %d keys flapping), beyond the change log's", rounds-1, subs),
		measured: fmt.Sprintf("%d bytes", heapGrowth),
		target:   "bounded (an unread subscription holds only its place in the log)",
		verdict:  verdict(heapGrowth < int64(200*subs)),
	})
	return benchResume(ctx, e, t)
}

// measureSubscribers flaps subs keys rounds times and returns how long
// after each applied load each reader got its change, and how much the
// heap grew after the first round.
func measureSubscribers(ctx context.Context, e *env, subs, rounds int, withUnread bool) ([]time.Duration, int64, error) {
	base, b, ids, stop, err := e.batcher(subs, 1, func(i int) string { return fmt.Sprintf("unit-%d", i) })
	if err != nil {
		return nil, 0, err
	}
	defer stop()

	// applied is when the watcher last applied a load, in Unix
	// nanoseconds; an atomic, so the readers share no lock.
	var applied atomic.Int64
	w, err := watcher.New(watcher.Config{
		Base: base, Model: modelTag(0), Clock: clock.WallClock, SyncInterval: time.Hour,
		OnLoad: func(watcher.LoadStats) { applied.Store(time.Now().UnixNano()) },
	})
	if err != nil {
		return nil, 0, err
	}
	defer func() { w.Kill(); _ = w.Wait() }()

	if withUnread {
		never := w.Subscribe()
		defer never.Close()
	}
	readers := startReaders(ctx, w, subs, rounds, &applied)
	defer readers.stop()
	heapGrowth, err := flapRounds(ctx, w, b, ids, rounds, readers)
	if err != nil {
		return nil, 0, err
	}
	return readers.stop(), heapGrowth, nil
}

// subscriptionReaders are goroutines that each read one key's
// subscription and keep how long after the watcher's applied load each
// change came.
type subscriptionReaders struct {
	// perReader are each reader's delays, so that the measuring does
	// not add a shared lock to what is measured.
	perReader [][]time.Duration
	delivered atomic.Int64
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startReaders starts a reader of each of subs keys' subscriptions on w,
// with room for rounds changes each; applied is when w last applied a
// load, in Unix nanoseconds. The first change each reads, its state when
// it subscribed, is not measured.
func startReaders(ctx context.Context, w *watcher.Watcher, subs, rounds int, applied *atomic.Int64) *subscriptionReaders {
	readCtx, cancel := context.WithCancel(ctx)
	r := &subscriptionReaders{perReader: make([][]time.Duration, subs), cancel: cancel}
	for i := range r.perReader {
		// Allocated up front, so that the heap growth measured is the
		// workers', not this record's.
		r.perReader[i] = make([]time.Duration, 0, rounds)
	}
	for i := 0; i < subs; i++ {
		sub := w.Subscribe(fmt.Sprintf("unit-%d", i))
		r.wg.Add(1)
		go func(i int) {
			defer r.wg.Done()
			defer sub.Close()
			if _, err := sub.Next(readCtx); err != nil {
				return
			}
			for {
				if _, err := sub.Next(readCtx); err != nil {
					return
				}
				delay := max(time.Since(time.Unix(0, applied.Load())), 0)
				r.perReader[i] = append(r.perReader[i], delay)
				r.delivered.Add(1)
			}
		}(i)
	}
	return r
}

// waitFor waits until the readers have read n changes, or timeout.
func (r *subscriptionReaders) waitFor(n int64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for r.delivered.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// stop stops the readers, waits for them, and returns every delay they
// kept. It may be called again.
func (r *subscriptionReaders) stop() []time.Duration {
	r.cancel()
	r.wg.Wait()
	var delays []time.Duration
	for _, d := range r.perReader {
		delays = append(delays, d...)
	}
	return delays
}

// flapRounds pings (even rounds) or disconnects (odd rounds) every one of
// ids, has w load it and waits for the readers to read it, rounds times;
// it returns how much the heap grew after the first round, beyond what
// w's change log grew.
func flapRounds(ctx context.Context, w *watcher.Watcher, b *pingbatcher.PingBatcher, ids []pinger.Identity, rounds int, readers *subscriptionReaders) (int64, error) {
	var heapAfterFirst uint64
	var logAfterFirst int
	for round := 0; round < rounds && ctx.Err() == nil; round++ {
		if err := writeStates(b, ids, currentSlot(), func(int) bool { return round%2 == 0 }); err != nil {
			return 0, err
		}
		if err := w.Refresh(); err != nil {
			return 0, err
		}
		readers.waitFor(int64((round+1)*len(ids)), 30*time.Second)
		if round == 0 {
			heapAfterFirst = heap()
			logAfterFirst, _ = w.Report()["log-bytes"].(int)
		}
	}
	// The model's change log fills meanwhile, up to its bound, whoever
	// reads: what grows beyond it is the subscribers'.
	logEnd, _ := w.Report()["log-bytes"].(int)
	return int64(heap()) - int64(heapAfterFirst) - int64(logEnd-logAfterFirst), nil
}
