package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/internal/wireproxy"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// oldSyncInterval is the sync interval of the sets per model that the
// controller set replaced: their watchers read every second.
const oldSyncInterval = time.Second

// shape is a controller's load: models models of agents agents each.
type shape struct {
	models, agents int
}

// String returns the shape as "M model(s) x A agents".
func (s shape) String() string {
	return fmt.Sprintf("%d model(s) x %d agents", s.models, s.agents)
}

// cost is what a controller sent the database in a measured window, as
// counted by a wire proxy in front of the server.
type cost struct {
	window         time.Duration
	writes, reads  int
	leaseReads     int
	flushes, loads int64
	slowLoads      int64 // loads that took longer than a sync
	// notAlive is how many agents never read alive before the window,
	// and claimsFailed how many of the models' first claims failed:
	// a baseline that breaks down is measured as it is.
	notAlive, claimsFailed int
	// maxFlush is the most write commands one flush of the controller
	// set sent; zero for sets per model, whose flushes interleave.
	maxFlush int64
}

func (c cost) perSecond(n int) float64 {
	return float64(n) / c.window.Seconds()
}

// benchController measures a controller's database cost on both axes
// (one model of many agents, many models of few agents), with one
// controller set beside one set per model as before (the baseline).
func benchController(ctx context.Context, e *env, t *table) error {
	// 100 models of 10 is the largest shape at which a set per model
	// still works on the embedded server; at 1,000 it collapses.
	shapes := []shape{{1, 10000}, {100, 10}, {1000, 10}}
	window := 20 * time.Second
	if e.opts.quick {
		shapes = []shape{{1, 100}, {20, 5}}
		window = 2 * time.Second
	}
	for _, sh := range shapes {
		if ctx.Err() != nil {
			return nil
		}
		shared, err := measureCost(ctx, e, sh, false, window)
		if err != nil {
			return fmt.Errorf("%v, controller set: %w", sh, err)
		}
		perModel, err := measureCost(ctx, e, sh, true, window)
		if err != nil {
			return fmt.Errorf("%v, sets per model: %w", sh, err)
		}
		addCostRows(e, t, sh, shared, perModel)
	}
	return nil
}

// benchScale measures detection latency with the library's defaults at a
// controller's scale: many models, and up to 100,000 agents.
func benchScale(ctx context.Context, e *env, t *table) error {
	scale := []shape{{1000, 10}, {1000, 100}}
	latency := settings{"defaults", schema.DefaultFlushInterval, schema.DefaultSyncInterval, schema.DefaultPeriod}
	if e.opts.quick {
		scale = []shape{{20, 5}}
		latency = settings{"short", 100 * time.Millisecond, 100 * time.Millisecond, time.Second}
	}
	for _, sh := range scale {
		if ctx.Err() != nil {
			return nil
		}
		live := sh.models * sh.agents
		res, err := measureLatency(ctx, e, latency, live, e.opts.events, sh.models)
		if err != nil {
			return fmt.Errorf("latency at %v: %w", sh, err)
		}
		startBound, disconnectBound, silentBound := latency.bounds()
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
			e.logf("%v, %s: p50 %v p99 %v max %v over %d", sh, r.what, p50, p99, worst, len(r.got))
			t.add(row{
				section:  "scale",
				what:     fmt.Sprintf("%s, %s settings, %v (%d events)", r.what, latency.name, sh, len(r.got)),
				measured: fmt.Sprintf("p50 %v p99 %v max %v", ms(p50), ms(p99), ms(worst)),
				target:   fmt.Sprintf("p99 <= %v", r.bound),
				verdict:  verdict(len(r.got) == e.opts.events && p99 <= r.bound),
			})
		}
	}
	return nil
}

func addCostRows(e *env, t *table, sh shape, shared, perModel cost) {
	flushes := shared.window.Seconds() / schema.DefaultFlushInterval.Seconds()
	syncs := shared.window.Seconds() / schema.DefaultSyncInterval.Seconds()
	ticks := shared.window.Seconds() / leasestore.DefaultMaxSleep.Seconds()
	for _, c := range []struct {
		name string
		cost cost
	}{{"controller set", shared}, {"sets per model", perModel}} {
		e.logf("%v, %s: %d writes, %d reads and %d lease reads in %v (%d flushes, %d loads, %d loads slower than a sync; %d agents not alive, %d claims failed)",
			sh, c.name, c.cost.writes, c.cost.reads, c.cost.leaseReads, c.cost.window, c.cost.flushes, c.cost.loads, c.cost.slowLoads,
			c.cost.notAlive, c.cost.claimsFailed)
	}
	writesPerFlush := float64(shared.writes) / flushes
	readsPerSync := float64(shared.reads-shared.leaseReads) / syncs
	leaseReadsPerTick := float64(shared.leaseReads) / ticks
	total := func(c cost) int { return c.writes + c.reads }
	saturated := ""
	if perModel.slowLoads > 0 || perModel.notAlive > 0 || perModel.claimsFailed > 0 {
		saturated = fmt.Sprintf("; saturated: %d loads slower than a sync, %d agents never alive, %d claims failed",
			perModel.slowLoads, perModel.notAlive, perModel.claimsFailed)
	}
	t.add(row{
		section:  "controller",
		what:     fmt.Sprintf("%v, library defaults: write commands per flush interval", sh),
		measured: fmt.Sprintf("%.2f", writesPerFlush),
		baseline: fmt.Sprintf("%.2f with a set per model%s", float64(perModel.writes)/flushes, saturated),
		ratio:    ratio(perModel.writes, shared.writes),
		target:   "<= 2",
		verdict:  verdict(writesPerFlush <= 2),
	})
	t.add(row{
		section:  "controller",
		what:     fmt.Sprintf("%v, library defaults: most write commands in one flush", sh),
		measured: fmt.Sprintf("%d", shared.maxFlush),
		target:   "<= 2",
		verdict:  verdict(shared.maxFlush <= 2),
	})
	t.add(row{
		section:  "controller",
		what:     fmt.Sprintf("%v, library defaults: presence read commands per sync interval (%v)", sh, schema.DefaultSyncInterval),
		measured: fmt.Sprintf("%.2f (%.1f/s)", readsPerSync, shared.perSecond(shared.reads-shared.leaseReads)),
		baseline: fmt.Sprintf("%.1f/s with a set per model reading every %v", perModel.perSecond(perModel.reads-perModel.leaseReads), oldSyncInterval),
		ratio:    ratio(perModel.reads-perModel.leaseReads, shared.reads-shared.leaseReads),
		target:   "<= 2",
		verdict:  verdict(readsPerSync <= 2),
	})
	t.add(row{
		section:  "controller",
		what:     fmt.Sprintf("%v, library defaults: every command, per second", sh),
		measured: fmt.Sprintf("%.1f/s", shared.perSecond(total(shared))),
		baseline: fmt.Sprintf("%.1f/s with sets per model", perModel.perSecond(total(perModel))),
		ratio:    ratio(total(perModel), total(shared)),
	})
	t.add(row{
		section:  "controller",
		what:     fmt.Sprintf("%v, library defaults: lease reads per lease tick", sh),
		measured: fmt.Sprintf("%.2f", leaseReadsPerTick),
		baseline: fmt.Sprintf("%.2f with a lease store per model", float64(perModel.leaseReads)/ticks),
		ratio:    ratio(perModel.leaseReads, shared.leaseReads),
		target:   "<= 1",
		verdict:  verdict(leaseReadsPerTick <= 1.1),
	})
}

// measureCost runs sh's agents on real pingers with the library's default
// settings, either under one controller set (one batcher, one reader, one
// pruner, a watcher per model) or with a whole set per model, waits until
// every agent reads alive, and counts the commands of a window.
func measureCost(ctx context.Context, e *env, sh shape, perModel bool, window time.Duration) (cost, error) {
	db, proxy, done, err := e.proxied()
	if err != nil {
		return cost{}, err
	}
	defer done()
	base := db.Collection("presence")
	var flushes, loads, slow, lastWrites, maxFlush atomic.Int64
	onFlush := func(pingbatcher.FlushStats) {
		flushes.Add(1)
		if !perModel {
			writes := int64(writesIn(proxy.Counts()))
			maxFlush.Store(max(maxFlush.Load(), writes-lastWrites.Swap(writes)))
		}
	}
	onLoad := func(l presencereader.LoadStats) {
		loads.Add(1)
		if l.Took > oldSyncInterval {
			slow.Add(1)
		}
	}
	var workers []worker.Worker
	defer func() {
		for _, w := range workers {
			w.Kill()
		}
		for _, w := range workers {
			_ = w.Wait()
		}
	}()
	sets := 1
	if perModel {
		sets = sh.models
	}
	batchers := make([]*pingbatcher.PingBatcher, sets)
	watchers := make([]*watcher.Watcher, sh.models)
	var reader *presencereader.Reader
	for i := 0; i < sets; i++ {
		if batchers[i], err = pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock, OnFlush: onFlush}); err != nil {
			return cost{}, err
		}
		p, err := pruner.New(pruner.Config{Base: base, Clock: clock.WallClock})
		if err != nil {
			return cost{}, err
		}
		workers = append(workers, batchers[i], p)
	}
	if !perModel {
		if reader, err = presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, OnLoad: onLoad}); err != nil {
			return cost{}, err
		}
		workers = append(workers, reader)
	}
	for m := range watchers {
		config := watcher.Config{Reader: reader, Model: modelTag(m)}
		if perModel {
			config = watcher.Config{Base: base, Model: modelTag(m), Clock: clock.WallClock, SyncInterval: oldSyncInterval, OnLoad: onLoad}
		}
		if watchers[m], err = watcher.New(config); err != nil {
			return cost{}, err
		}
		workers = append(workers, watchers[m])
	}
	for i := 0; i < sh.models*sh.agents; i++ {
		m := i % sh.models
		b := batchers[0]
		if perModel {
			b = batchers[m]
		}
		p, err := pinger.New(pinger.Config{
			Base: base, Model: modelTag(m), Key: fmt.Sprintf("machine-%d", i), Clock: clock.WallClock,
			Recorder: func() pinger.PingRecorder { return b },
		})
		if err != nil {
			return cost{}, err
		}
		if err := p.Start(); err != nil {
			return cost{}, err
		}
		workers = append(workers, p)
	}
	leases, claimsFailed, err := startLeases(db, sh.models, perModel)
	workers = append(workers, leases...)
	if err != nil {
		return cost{}, err
	}
	notAlive, err := waitAlive(ctx, watchers, sh.agents, 2*time.Minute)
	if err != nil {
		return cost{}, err
	}
	if notAlive > 0 && !perModel {
		return cost{}, fmt.Errorf("%d agents not alive after 2 minutes", notAlive)
	}
	proxy.Reset()
	flushes.Store(0)
	loads.Store(0)
	slow.Store(0)
	lastWrites.Store(0)
	maxFlush.Store(0)
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return cost{}, ctx.Err()
	}
	counts := proxy.Counts()
	return cost{
		window:       window,
		writes:       writesIn(counts),
		leaseReads:   counts["find "+leaseCollection],
		reads:        counts["find"] + counts["getMore"] + counts["aggregate"],
		flushes:      flushes.Load(),
		loads:        loads.Load(),
		slowLoads:    slow.Load(),
		maxFlush:     maxFlush.Load(),
		notAlive:     notAlive,
		claimsFailed: claimsFailed,
	}, nil
}

// writesIn returns the write commands among counts.
func writesIn(counts map[string]int) int {
	return counts["insert"] + counts["update"] + counts["delete"]
}

// leaseCollection is the collection the controller's leases live in.
const leaseCollection = "leases"

// startLeases starts a lease manager per model, fed by one shared lease
// store or, with perModel, by a private store each, and has each claim
// one application's leadership. It returns the workers it started, the
// store first, and how many claims failed.
func startLeases(db *mongo.Database, models int, perModel bool) ([]worker.Worker, int, error) {
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection(leaseCollection), Clock: clock.WallClock})
	if err != nil {
		return nil, 0, err
	}
	var started []worker.Worker
	config := leaseexpiry.ManagerConfig{Client: client, Clock: clock.WallClock}
	if !perModel {
		store, err := leasestore.New(leasestore.Config{Client: client, Clock: clock.WallClock})
		if err != nil {
			return nil, 0, err
		}
		started = append(started, store)
		config = leaseexpiry.ManagerConfig{Store: store, Clock: clock.WallClock}
	}
	var managers []leaseexpiry.ManagerWorker
	for m := 0; m < models; m++ {
		config.Model = modelTag(m)
		manager, err := leaseexpiry.NewManager(config)
		if err != nil {
			return started, 0, err
		}
		started = append(started, manager)
		managers = append(managers, manager)
	}
	// Every model's unit claims at once, as after a controller start.
	var failed atomic.Int64
	var wg sync.WaitGroup
	for _, manager := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := manager.ClaimLeadership("app", "app/0", time.Minute); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 && !perModel {
		return started, int(failed.Load()), fmt.Errorf("%d of %d claims failed", failed.Load(), models)
	}
	return started, int(failed.Load()), nil
}

// waitAlive waits until every watcher reports want keys alive, or
// timeout, and returns how many agents were missing then.
func waitAlive(ctx context.Context, watchers []*watcher.Watcher, want int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, w := range watchers {
			if alive, _ := w.Report()["alive"].(int); alive < want {
				missing += want - alive
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return missing, nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return missing, ctx.Err()
		}
	}
}

// proxied returns a fresh database whose client reaches the server
// through a wire proxy of its own, which counts commands at the server's
// side, and a function that disconnects the client, closes the proxy
// and then drops the database.
func (e *env) proxied() (*mongo.Database, *wireproxy.Proxy, func(), error) {
	proxy, uri, err := wireproxy.NewFor(e.uri)
	if err != nil {
		return nil, nil, nil, err
	}
	db, disconnect, err := e.connect(uri)
	if err != nil {
		_ = proxy.Close()
		return nil, nil, nil, err
	}
	return db, proxy, func() {
		disconnect()
		_ = proxy.Close()
		e.drop(db.Name())
	}, nil
}
