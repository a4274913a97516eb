package main

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/watcher"
)

// syncsMeasured is how many syncs each watcher-cost figure averages.
const syncsMeasured = 20

// benchWatcher measures what one sync costs the watcher's process (CPU
// time and allocations, the database being another process) with no change
// and with 1% of keys changing, and the heap each known key takes.
func benchWatcher(ctx context.Context, e *env, t *table) error {
	shapes := []shape{{1, 10000}, {1, 100000}, {1000, 100}}
	if e.opts.quick {
		shapes = []shape{{1, 1000}, {10, 100}}
	}
	for _, sh := range shapes {
		if err := watcherCost(ctx, e, t, sh); err != nil {
			return err
		}
	}
	return nil
}

// watcherCost measures, at shape sh, the heap each known key takes in a
// reader and its watchers, and what one sync costs with no change and
// with 1% of keys changing.
func watcherCost(ctx context.Context, e *env, t *table, sh shape) error {
	n := sh.models * sh.agents
	base, b, ids, stop, err := e.batcher(n, sh.models, func(i int) string { return fmt.Sprintf("unit-application-%d", i) })
	if err != nil {
		return err
	}
	defer stop()
	// Stamp pings into the current slot so the watcher sees every key.
	if err := writeStates(b, ids, currentSlot(), allAlive); err != nil {
		return err
	}

	heapBefore := heap()
	r, stopReader, err := startWatchers(base, sh.models)
	if err != nil {
		return err
	}
	defer stopReader()
	if err := r.Refresh(); err != nil {
		return err
	}
	perKey := float64(heap()-heapBefore) / float64(n)
	if alive := r.Report()["alive"]; alive != n {
		return fmt.Errorf("reader sees %v of %d keys alive", alive, n)
	}
	t.add(row{
		section:  "watcher",
		what:     fmt.Sprintf("Go heap per known key (reader and watchers), %v", sh),
		measured: fmt.Sprintf("%.0f bytes", perKey),
		target:   "<= 200 bytes",
		verdict:  verdict(perKey <= 200),
	})
	e.logf("%d keys: %.0f heap bytes per key", n, perKey)
	return addSyncRows(ctx, e, t, sh, r, b, ids)
}

// startWatchers starts a reader on base that syncs only when asked to
// (Refresh) and a watcher of each of models models over it, and returns
// the reader and a function that stops them all.
func startWatchers(base *mongo.Collection, models int) (*presencereader.Reader, func(), error) {
	r, err := presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, SyncInterval: time.Hour})
	if err != nil {
		return nil, nil, err
	}
	var watchers []*watcher.Watcher
	stop := func() {
		for i := len(watchers) - 1; i >= 0; i-- {
			watchers[i].Kill()
			_ = watchers[i].Wait()
		}
		r.Kill()
		_ = r.Wait()
	}
	for m := 0; m < models; m++ {
		w, err := watcher.New(watcher.Config{Reader: r, Model: modelTag(m)})
		if err != nil {
			stop()
			return nil, nil, err
		}
		watchers = append(watchers, w)
	}
	return r, stop, nil
}

// addSyncRows measures and adds what one sync of r costs at shape sh,
// with no change and with 1% of ids changing.
func addSyncRows(ctx context.Context, e *env, t *table, sh shape, r *presencereader.Reader, b *pingbatcher.PingBatcher, ids []pinger.Identity) error {
	for _, changing := range []int{0, len(ids) / 100} {
		cpu, allocs, wall, err := measureSyncs(ctx, r, b, ids[:changing])
		if err != nil {
			return err
		}
		what := fmt.Sprintf("one sync, %v, no change", sh)
		if changing > 0 {
			what = fmt.Sprintf("one sync, %v, 1%% changing", sh)
		}
		e.logf("%s: cpu %v, %.0f allocs, wall %v", what, cpu, allocs, wall)
		t.add(row{
			section:  "watcher",
			what:     what,
			measured: fmt.Sprintf("cpu %v, %.0f allocs, wall %v (read included)", cpu.Round(time.Microsecond), allocs, wall.Round(time.Microsecond)),
		})
	}
	return nil
}

// measureSyncs times syncsMeasured refreshes, flipping the changing
// identities (disconnected, then pinging again) before each.
func measureSyncs(ctx context.Context, w *presencereader.Reader, b *pingbatcher.PingBatcher, changing []pinger.Identity) (time.Duration, float64, time.Duration, error) {
	var cpu, wall time.Duration
	var allocs uint64
	for i := 0; i < syncsMeasured && ctx.Err() == nil; i++ {
		if err := writeStates(b, changing, currentSlot(), func(int) bool { return i%2 == 1 }); err != nil {
			return 0, 0, 0, err
		}
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		cpuBefore, started := cpuTime(), time.Now()
		if err := w.Refresh(); err != nil {
			return 0, 0, 0, err
		}
		wall += time.Since(started)
		cpu += cpuTime() - cpuBefore
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		allocs += after.Mallocs - before.Mallocs
	}
	return cpu / syncsMeasured, float64(allocs) / syncsMeasured, wall / syncsMeasured, nil
}

// cpuTime returns the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heap returns the live heap after a collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
