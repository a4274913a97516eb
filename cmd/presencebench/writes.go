package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/internal/commands"
	"github.com/presencekit/presence/internal/schema"
)

// flushesMeasured is how many flushes each writes figure averages.
const flushesMeasured = 5

// naiveSample is how many naive upserts are timed for the baseline.
const naiveSample = 300

func modelTag(i int) names.ModelTag {
	return names.NewModelTag(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
}

// benchWrites counts database writes per flush for pingers spread over one
// and over 100 models, beside a naive pinger that upserts its own document
// on every ping; and runs that naive scheme for real (the Kubernetes
// node-lease pattern) at 1,000 and 10,000 agents.
func benchWrites(ctx context.Context, e *env, t *table) error {
	pingsPerSecond := 1 / schema.PingInterval(schema.DefaultPeriod).Seconds()
	flushesPerSecond := 1 / schema.DefaultFlushInterval.Seconds()
	naiveCost, err := naiveUpsertCost(ctx, e)
	if err != nil {
		return err
	}
	if err := benchNaive(ctx, e, t); err != nil {
		return err
	}
	for _, n := range e.opts.sizes {
		for _, models := range []int{1, 100} {
			if models > n {
				continue
			}
			writes, docs, took, err := batchedWrites(ctx, e, n, models)
			if err != nil {
				return err
			}
			what := fmt.Sprintf("%d pingers, %d model(s)", n, models)
			e.logf("%s: %.1f write commands and %.1f documents per flush, %v per flush", what, writes, docs, took)
			naivePerSecond := float64(n) * pingsPerSecond
			batchedPerSecond := writes * flushesPerSecond
			target, ok := "", true
			if n == 10000 && models == 1 {
				target = "<= 1 per flush, >= 1000x fewer"
				ok = writes <= 1 && naivePerSecond/batchedPerSecond >= 1000
			}
			t.add(row{
				section:  "writes",
				what:     what + ": write commands per flush",
				measured: fmt.Sprintf("%.1f (%.1f docs; %v)", writes, docs, took.Round(time.Microsecond*100)),
				baseline: fmt.Sprintf("%.0f/s naive upserts (%v each)", naivePerSecond, naiveCost.Round(time.Microsecond*10)),
				ratio:    fmt.Sprintf("%.0fx fewer", naivePerSecond/batchedPerSecond),
				target:   target,
				verdict:  map[bool]string{true: verdict(ok), false: ""}[target != ""],
			})
		}
	}
	return nil
}

// batchedWrites registers n identities over models models, then measures
// flushes in each of which every pinger pinged a new slot: the busiest
// flush there is. It returns write commands and documents per flush, and
// the mean flush time.
func batchedWrites(ctx context.Context, e *env, n, models int) (float64, float64, time.Duration, error) {
	counter := &commands.Counter{}
	_, b, ids, stop, err := e.batcher(n, models, func(i int) string { return fmt.Sprintf("machine-%d", i) }, counter.Options())
	if err != nil {
		return 0, 0, 0, err
	}
	defer stop()
	ping := func(slot int64) error {
		for _, id := range ids {
			if err := b.Ping(id, slot); err != nil {
				return err
			}
		}
		// A failed flush loses nothing: the next writes it all.
		err := b.Sync()
		for retry := 0; err != nil && retry < 3; retry++ {
			e.logf("flush failed (%v); again", err)
			err = b.Sync()
		}
		return err
	}
	if err := ping(1); err != nil {
		return 0, 0, 0, err
	}
	counter.Reset()
	docsBefore := b.Report()["docs-written"].(int64)
	var took time.Duration
	for f := 0; f < flushesMeasured && ctx.Err() == nil; f++ {
		started := time.Now()
		if err := ping(int64(f + 2)); err != nil {
			return 0, 0, 0, err
		}
		took += time.Since(started)
	}
	docs := b.Report()["docs-written"].(int64) - docsBefore
	// The notice each new slot appends for other controllers' readers
	// (one small insert a slot, whatever the pingers) is not the pings'
	// write.
	writes := counter.Writes() - counter.CountOn("insert", "presence.notices")
	return float64(writes) / flushesMeasured, float64(docs) / flushesMeasured, took / flushesMeasured, nil
}

// naiveUpsertCost times the baseline's write: one pinger upserting its own
// document, one command per ping.
func naiveUpsertCost(ctx context.Context, e *env) (time.Duration, error) {
	db, counter, done, err := e.counted()
	if err != nil {
		return 0, err
	}
	defer done()
	coll := db.Collection("naive")
	started := time.Now()
	for i := 0; i < naiveSample; i++ {
		_, err := coll.UpdateOne(ctx,
			bson.D{{Key: "_id", Value: fmt.Sprintf("%s:machine-%d", modelTag(0).Id(), i)}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "slot", Value: int64(i)}}}},
			mongooptions.UpdateOne().SetUpsert(true))
		if err != nil {
			return 0, err
		}
	}
	if counter.Writes() != naiveSample {
		return 0, fmt.Errorf("naive pinger sent %d writes for %d pings", counter.Writes(), naiveSample)
	}
	return time.Since(started) / naiveSample, nil
}

// benchNaive runs agents that each upsert their own document every ping
// interval, as a per-agent heartbeat would, and reports what the server
// kept up with.
func benchNaive(ctx context.Context, e *env, t *table) error {
	sizes := []int{1000, 10000}
	period, window := schema.DefaultPeriod, 30*time.Second
	if e.opts.quick {
		sizes, period, window = []int{50}, time.Second, 2*time.Second
	}
	for _, agents := range sizes {
		if ctx.Err() != nil {
			return nil
		}
		r, err := naiveRun(ctx, e, agents, period, window)
		if err != nil {
			return err
		}
		interval := schema.PingInterval(period)
		needed := float64(agents) / interval.Seconds()
		achieved := float64(r.done) / window.Seconds()
		_, p99, worst := percentiles(r.gaps)
		e.logf("naive, %d agents: %d upserts done, %d failed, %d agents never written, in %v; gap p99 %v max %v",
			agents, r.done, r.failed, r.never, window, p99, worst)
		kept := achieved >= 0.95*needed && r.never == 0 && worst <= 2*period
		t.add(row{
			section:  "writes",
			what:     fmt.Sprintf("naive upsert per agent every %v, %d agents, for %v", interval, agents, window),
			measured: fmt.Sprintf("%.0f/s of %.0f/s needed; %d failed; %d agents never written; gap between an agent's writes p99 %v max %v", achieved, needed, r.failed, r.never, ms(p99), ms(worst)),
			target:   "keeps up (a gap over 2 periods is a false death)",
			verdict:  map[bool]string{true: "kept up", false: "broke"}[kept],
		})
	}
	return nil
}

// naiveResult is what a naive run managed.
type naiveResult struct {
	done, failed, never int
	// gaps are, per agent, the longest time between two of its
	// completed writes (or from the start to its first), over the run.
	gaps []time.Duration
}

// naiveRun starts agents goroutines that upsert their own document every
// ping interval of period, each call bounded by the interval, for window.
func naiveRun(ctx context.Context, e *env, agents int, period, window time.Duration) (naiveResult, error) {
	db, proxy, done, err := e.proxied()
	if err != nil {
		return naiveResult{}, err
	}
	defer done()
	coll := db.Collection("naive")
	interval := schema.PingInterval(period)
	runCtx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	started := time.Now()
	gaps := make([]time.Duration, agents)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < agents; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("%s:machine-%d", modelTag(0).Id(), i)
			last := started
			due := started.Add(time.Duration(int64(interval) * int64(i) / int64(agents)))
			for {
				select {
				case <-time.After(time.Until(due)):
				case <-runCtx.Done():
					gaps[i] = max(gaps[i], time.Since(last))
					return
				}
				callCtx, cancelCall := context.WithTimeout(runCtx, interval)
				_, err := coll.UpdateOne(callCtx, bson.D{{Key: "_id", Value: id}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "at", Value: time.Now()}}}},
					mongooptions.UpdateOne().SetUpsert(true))
				cancelCall()
				if err != nil {
					if runCtx.Err() == nil {
						failed.Add(1)
					}
				} else {
					now := time.Now()
					gaps[i] = max(gaps[i], now.Sub(last))
					last = now
				}
				due = due.Add(interval)
			}
		}()
	}
	wg.Wait()
	r := naiveResult{done: proxy.Counts()["update naive"], failed: int(failed.Load()), gaps: gaps}
	for _, g := range gaps {
		if g >= window {
			r.never++
		}
	}
	return r, nil
}
