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

// perSecond returns n over c's window, per second.
func (c cost) perSecond(n int) float64 {
	return float64(n) / c.window.Seconds()
}

// presenceReads returns c's read commands other than the lease store's.
func (c cost) presenceReads() int {
	return c.reads - c.leaseReads
}

// total returns every command of c.
func (c cost) total() int {
	return c.writes + c.reads
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
	scale := []shape{{1, 10000}, {1000, 10}, {1000, 100}}
	latency := settings{"defaults", schema.DefaultFlushInterval, schema.DefaultSyncInterval, schema.DefaultPeriod}
	if e.opts.quick {
		scale = []shape{{20, 5}}
		latency = settings{"short", 100 * time.Millisecond, 100 * time.Millisecond, time.Second}
	}
	if len(e.opts.shapes) > 0 {
		scale = e.opts.shapes
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
		flushP50, flushP99, _ := percentiles(res.flushes)
		loadP50, loadP99, _ := percentiles(res.loads)
		e.logf("%v: the controller's database time per flush p50 %v p99 %v, per read p50 %v p99 %v",
			sh, ms(flushP50), ms(flushP99), ms(loadP50), ms(loadP99))
		addDetectionRows(e, t, "scale", latency, sh.String(), sh.String(), res)
		addPushRows(e, t, "scale", latency, sh.String(), res)
	}
	return nil
}

// addCostRows logs both sets' costs at shape sh and adds the rows that
// compare them.
func addCostRows(e *env, t *table, sh shape, shared, perModel cost) {
	for _, c := range []struct {
		name string
		cost cost
	}{{"controller set", shared}, {"sets per model", perModel}} {
		e.logf("%v, %s: %d writes, %d reads and %d lease reads in %v (%d flushes, %d loads, %d loads slower than a sync; %d agents not alive, %d claims failed)",
			sh, c.name, c.cost.writes, c.cost.reads, c.cost.leaseReads, c.cost.window, c.cost.flushes, c.cost.loads, c.cost.slowLoads,
			c.cost.notAlive, c.cost.claimsFailed)
	}
	for _, r := range costRows(sh, shared, perModel) {
		t.add(r)
	}
}

// costRows returns the controller rows of shape sh: the controller set's
// cost per flush, sync and lease tick of the library's defaults, beside
// the sets per model's.
func costRows(sh shape, shared, perModel cost) []row {
	flushes := shared.window.Seconds() / schema.DefaultFlushInterval.Seconds()
	syncs := shared.window.Seconds() / schema.DefaultSyncInterval.Seconds()
	ticks := shared.window.Seconds() / leasestore.DefaultMaxSleep.Seconds()
	writesPerFlush := float64(shared.writes) / flushes
	readsPerSync := float64(shared.presenceReads()) / syncs
	leaseReadsPerTick := float64(shared.leaseReads) / ticks
	saturated := ""
	if perModel.slowLoads > 0 || perModel.notAlive > 0 || perModel.claimsFailed > 0 {
		saturated = fmt.Sprintf("; saturated: %d loads slower than a sync, %d agents never alive, %d claims failed",
			perModel.slowLoads, perModel.notAlive, perModel.claimsFailed)
	}
	what := func(figure string) string { return fmt.Sprintf("%v, library defaults: %s", sh, figure) }
	return []row{{
		section:  "controller",
		what:     what("write commands per flush interval"),
		measured: fmt.Sprintf("%.2f", writesPerFlush),
		baseline: fmt.Sprintf("%.2f with a set per model%s", float64(perModel.writes)/flushes, saturated),
		ratio:    ratio(perModel.writes, shared.writes),
		target:   "<= 2",
		verdict:  verdict(writesPerFlush <= 2),
	}, {
		section:  "controller",
		what:     what("most write commands in one flush"),
		measured: fmt.Sprintf("%d", shared.maxFlush),
		target:   "<= 2",
		verdict:  verdict(shared.maxFlush <= 2),
	}, {
		section:  "controller",
		what:     what(fmt.Sprintf("presence read commands per sync interval (%v)", schema.DefaultSyncInterval)),
		measured: fmt.Sprintf("%.2f (%.1f/s)", readsPerSync, shared.perSecond(shared.presenceReads())),
		baseline: fmt.Sprintf("%.1f/s with a set per model reading every %v", perModel.perSecond(perModel.presenceReads()), oldSyncInterval),
		ratio:    ratio(perModel.presenceReads(), shared.presenceReads()),
		target:   "<= 2",
		verdict:  verdict(readsPerSync <= 2),
	}, {
		section:  "controller",
		what:     what("every command, per second"),
		measured: fmt.Sprintf("%.1f/s", shared.perSecond(shared.total())),
		baseline: fmt.Sprintf("%.1f/s with sets per model", perModel.perSecond(perModel.total())),
		ratio:    ratio(perModel.total(), shared.total()),
	}, {
		section:  "controller",
		what:     what("lease reads per lease tick"),
		measured: fmt.Sprintf("%.2f", leaseReadsPerTick),
		baseline: fmt.Sprintf("%.2f with a lease store per model", float64(perModel.leaseReads)/ticks),
		ratio:    ratio(perModel.leaseReads, shared.leaseReads),
		target:   "<= 1",
		verdict:  verdict(leaseReadsPerTick <= 1.1),
	}}
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
	rig := &costRig{sh: sh, perModel: perModel, base: db.Collection("presence"), hooks: &costHooks{proxy: proxy, perFlush: !perModel}}
	defer rig.stop()
	if err := rig.startSets(); err != nil {
		return cost{}, err
	}
	if err := rig.startPingers(); err != nil {
		return cost{}, err
	}
	leases, claimsFailed, err := startLeases(db, sh.models, perModel)
	rig.workers = append(rig.workers, leases...)
	if err != nil {
		return cost{}, err
	}
	notAlive, err := waitAlive(ctx, rig.watchers, sh.agents, 2*time.Minute)
	if err != nil {
		return cost{}, err
	}
	if notAlive > 0 && !perModel {
		return cost{}, fmt.Errorf("%d agents not alive after 2 minutes", notAlive)
	}
	rig.hooks.reset()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return cost{}, ctx.Err()
	}
	c := rig.hooks.cost(window)
	c.notAlive, c.claimsFailed = notAlive, claimsFailed
	return c, nil
}

// costHooks counts what the workers' hooks report, and the commands the
// proxy saw, for a cost.
type costHooks struct {
	proxy *wireproxy.Proxy
	// perFlush has onFlush keep the most write commands one flush sent,
	// which means anything only where one batcher writes.
	perFlush                                   bool
	flushes, loads, slow, lastWrites, maxFlush atomic.Int64
}

// onFlush is the batchers' OnFlush.
func (h *costHooks) onFlush(pingbatcher.FlushStats) {
	h.flushes.Add(1)
	if h.perFlush {
		writes := int64(writesIn(h.proxy.Counts()))
		h.maxFlush.Store(max(h.maxFlush.Load(), writes-h.lastWrites.Swap(writes)))
	}
}

// onLoad is the readers' and watchers' OnLoad.
func (h *costHooks) onLoad(l presencereader.LoadStats) {
	h.loads.Add(1)
	if l.Took > oldSyncInterval {
		h.slow.Add(1)
	}
}

// reset starts a window: every count from zero.
func (h *costHooks) reset() {
	h.proxy.Reset()
	h.flushes.Store(0)
	h.loads.Store(0)
	h.slow.Store(0)
	h.lastWrites.Store(0)
	h.maxFlush.Store(0)
}

// cost returns what was counted since reset, over window.
func (h *costHooks) cost(window time.Duration) cost {
	counts := h.proxy.Counts()
	return cost{
		window:     window,
		writes:     writesIn(counts),
		leaseReads: counts["find "+leaseCollection],
		reads:      counts["find"] + counts["getMore"] + counts["aggregate"],
		flushes:    h.flushes.Load(),
		loads:      h.loads.Load(),
		slowLoads:  h.slow.Load(),
		maxFlush:   h.maxFlush.Load(),
	}
}

// costRig is the presence workers of a cost measurement: one controller
// set, or with perModel a set per model.
type costRig struct {
	sh       shape
	perModel bool
	base     *mongo.Collection
	hooks    *costHooks
	workers  []worker.Worker
	batchers []*pingbatcher.PingBatcher
	watchers []*watcher.Watcher
}

// startSets starts the batchers and pruners, one or one per model, and a
// watcher per model, over one shared reader or each reading for itself
// every oldSyncInterval.
func (rig *costRig) startSets() error {
	sets := 1
	if rig.perModel {
		sets = rig.sh.models
	}
	for i := 0; i < sets; i++ {
		b, err := pingbatcher.New(pingbatcher.Config{Base: rig.base, Clock: clock.WallClock, OnFlush: rig.hooks.onFlush})
		if err != nil {
			return err
		}
		rig.workers, rig.batchers = append(rig.workers, b), append(rig.batchers, b)
		p, err := pruner.New(pruner.Config{Base: rig.base, Clock: clock.WallClock})
		if err != nil {
			return err
		}
		rig.workers = append(rig.workers, p)
	}
	var reader *presencereader.Reader
	if !rig.perModel {
		r, err := presencereader.New(presencereader.Config{Base: rig.base, Clock: clock.WallClock, OnLoad: rig.hooks.onLoad})
		if err != nil {
			return err
		}
		reader, rig.workers = r, append(rig.workers, r)
	}
	for m := 0; m < rig.sh.models; m++ {
		config := watcher.Config{Reader: reader, Model: modelTag(m)}
		if rig.perModel {
			config = watcher.Config{Base: rig.base, Model: modelTag(m), Clock: clock.WallClock, SyncInterval: oldSyncInterval, OnLoad: rig.hooks.onLoad}
		}
		w, err := watcher.New(config)
		if err != nil {
			return err
		}
		rig.workers, rig.watchers = append(rig.workers, w), append(rig.watchers, w)
	}
	return nil
}

// startPingers starts a pinger of each agent, recording to its model's
// batcher.
func (rig *costRig) startPingers() error {
	for i := 0; i < rig.sh.models*rig.sh.agents; i++ {
		m := i % rig.sh.models
		b := rig.batchers[0]
		if rig.perModel {
			b = rig.batchers[m]
		}
		p, err := pinger.New(pinger.Config{
			Base: rig.base, Model: modelTag(m), Key: fmt.Sprintf("machine-%d", i), Clock: clock.WallClock,
			Recorder: func() pinger.PingRecorder { return b },
		})
		if err != nil {
			return err
		}
		if err := p.Start(); err != nil {
			return err
		}
		rig.workers = append(rig.workers, p)
	}
	return nil
}

// stop kills every worker the rig started, then waits for them.
func (rig *costRig) stop() {
	for _, w := range rig.workers {
		w.Kill()
	}
	for _, w := range rig.workers {
		_ = w.Wait()
	}
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
	failed, _ := concurrently(len(managers), func(i int) error {
		return managers[i].ClaimLeadership("app", "app/0", time.Minute)
	})
	if failed > 0 && !perModel {
		return started, failed, fmt.Errorf("%d of %d claims failed", failed, models)
	}
	return started, failed, nil
}

// concurrently runs f(0) to f(n-1) each in a goroutine of its own, waits
// for them all, and returns how many failed and the error of one of them.
func concurrently(n int, f func(i int) error) (int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed, last := 0, error(nil)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(i); err != nil {
				mu.Lock()
				defer mu.Unlock()
				failed, last = failed+1, err
			}
		}()
	}
	wg.Wait()
	return failed, last
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
