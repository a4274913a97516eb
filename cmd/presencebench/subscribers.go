package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/watcher"
)

// benchSubscribers measures delivery from one watcher to 1,000
// subscriptions while one more, to every key, is never read.
func benchSubscribers(ctx context.Context, e *env, t *table) error {
	subs, rounds := 1000, 20
	if e.opts.quick {
		subs, rounds = 100, 4
	}
	base, b, ids, stop, err := e.batcher(subs, func(i int) string { return fmt.Sprintf("unit-%d", i) })
	if err != nil {
		return err
	}
	defer stop()

	var appliedMu sync.Mutex
	var applied time.Time
	w, err := watcher.New(watcher.Config{
		Base: base, Model: modelTag(0), Clock: clock.WallClock, SyncInterval: time.Hour,
		OnLoad: func(watcher.LoadStats) {
			appliedMu.Lock()
			applied = time.Now()
			appliedMu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	defer func() { w.Kill(); _ = w.Wait() }()

	never := w.Subscribe()
	defer never.Close()

	// Each reader keeps its own delays, so that the measuring does not
	// add a shared lock to what is measured.
	perReader := make([][]time.Duration, subs)
	var delivered atomic.Int64
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var readers sync.WaitGroup
	for i := 0; i < subs; i++ {
		sub := w.Subscribe(fmt.Sprintf("unit-%d", i))
		readers.Add(1)
		go func(i int) {
			defer readers.Done()
			defer sub.Close()
			if _, err := sub.Next(readCtx); err != nil {
				return
			}
			for {
				if _, err := sub.Next(readCtx); err != nil {
					return
				}
				now := time.Now()
				appliedMu.Lock()
				delay := max(now.Sub(applied), 0)
				appliedMu.Unlock()
				perReader[i] = append(perReader[i], delay)
				delivered.Add(1)
			}
		}(i)
	}
	var heapAfterFirst uint64
	for round := 0; round < rounds && ctx.Err() == nil; round++ {
		slot := schema.Slot(time.Now(), schema.DefaultPeriod)
		for _, id := range ids {
			if round%2 == 0 {
				err = b.Ping(id, slot)
			} else {
				err = b.Dead(id, slot)
			}
			if err != nil {
				return err
			}
		}
		if err := b.Sync(); err != nil {
			return err
		}
		if err := w.Refresh(); err != nil {
			return err
		}
		// Wait for the readers of this round.
		deadline := time.Now().Add(30 * time.Second)
		for delivered.Load() < int64((round+1)*subs) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if round == 0 {
			heapAfterFirst = heap()
		}
	}
	heapGrowth := int64(heap()) - int64(heapAfterFirst)
	stopReading()
	readers.Wait()
	var delays []time.Duration
	for _, d := range perReader {
		delays = append(delays, d...)
	}

	p50, p99, worst := percentiles(delays)
	e.logf("%d subscriptions, %d rounds: p50 %v p99 %v max %v over %d deliveries; heap growth with one unread: %d bytes",
		subs, rounds, p50, p99, worst, len(delays), heapGrowth)
	t.add(row{
		section:  "subscribers",
		what:     fmt.Sprintf("delivery after the sync, %d subscriptions, one never read (%d deliveries)", subs, len(delays)),
		measured: fmt.Sprintf("p50 %v p99 %v max %v", p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond)),
		target:   "p99 < 1ms",
		verdict:  verdict(p99 < time.Millisecond && len(delays) == rounds*subs),
	})
	t.add(row{
		section:  "subscribers",
		what:     fmt.Sprintf("heap growth over %d more rounds with the never-read subscription (all %d keys flapping)", rounds-1, subs),
		measured: fmt.Sprintf("%d bytes", heapGrowth),
		target:   "bounded (one pending change per key)",
		verdict:  verdict(heapGrowth < int64(200*subs)),
	})
	return nil
}
