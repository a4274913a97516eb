package robustness_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	presence "github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/robustness"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
)

// wiring lets a positive control replace a component with a broken one.
type wiring struct {
	// leaseClient wraps each controller's lease client.
	leaseClient func(lease.Client) lease.Client
	// recorder wraps each controller's batcher as its pingers see it.
	recorder func(*pingbatcher.PingBatcher) pinger.PingRecorder
	// watchDrop, if not nil, loses the /watch lines it says.
	watchDrop func(stream string, line watchLine) bool
}

// outcome is what a run recorded and what the checkers found.
type outcome struct {
	plan       robustness.Plan
	ops        []robustness.Op
	end        time.Duration
	violations []robustness.Violation
	// allowed are the deaths CheckPresence allowed: the writer had
	// written nothing for the whole bound.
	allowed []robustness.Violation
	took    time.Duration
}

// controller is one controller's workers, over its own client, proxy and
// clocks: clock is its lease client's and the default, and each presence
// worker has a clock of its own that starts the same, so that a fault can
// step one of them alone. id names it in the history; slot is the plan's
// controller it plays (a controller killed and restarted comes back in its
// slot under a new id).
type controller struct {
	id, slot int
	clock    *agenttest.SkewClock
	clocks   map[robustness.ClockPart]*agenttest.SkewClock
	proxy    *agenttest.Proxy
	client   *mongo.Client
	batcher  *pingbatcher.PingBatcher
	rec      pinger.PingRecorder
	reader   *presencereader.Reader
	pruner   *pruner.Pruner
	store    *leasestore.Store
	base     *mongo.Collection
	// resources holds the resources its leaders write through guards.
	resources *mongo.Collection

	dying    chan struct{}
	views    map[int]*presencereader.View
	managers map[int]leaseexpiry.ManagerWorker

	// loads holds the latest LoadStats.
	keys, logEntries atomic.Int64
	stopping         sync.Once
}

// follows records the streams of every view of ctrl, a fast one and a
// slow one each.
func (hs *harness) follows(ctrl *controller) {
	for m, view := range ctrl.views {
		hs.goes(func() { hs.follow(ctrl, m, view, "fast", nil) })
		rng := rand.New(rand.NewPCG(hs.plan.Seed, uint64(ctrl.id*1000+m)))
		hs.goes(func() { hs.follow(ctrl, m, view, "slow", rng) })
	}
}

// record records a flush (of documents) or a load of controller id that
// took took and ended now with err.
func (hs *harness) record(kind robustness.Kind, id int, took time.Duration, documents int, err error) {
	now := hs.h.Now()
	op := robustness.Op{Kind: kind, Ctrl: id, Call: now - took, Return: now, Result: robustness.Ok}
	if kind == robustness.OpFlush {
		op.Counts = map[string]int{"documents": documents}
	}
	if err != nil {
		op.Result, op.Note = robustness.Unknown, err.Error()
	}
	hs.h.Add(op)
}

type harness struct {
	plan    robustness.Plan
	wire    wiring
	h       *robustness.History
	server  *agenttest.Server
	foreign *mongo.Database
	dbName  string
	models  []names.ModelTag
	lives   []*modelLife
	runs    atomic.Int64
	ctx     context.Context
	logf    func(string, ...any)
	// goes runs a function in a goroutine the run waits for.
	goes func(func())
	// serveBase is presenced serve's address, once it listens.
	serveBase atomic.Pointer[string]

	mu sync.Mutex
	// slots holds the live controller of each of the plan's, or nil
	// once killed; all every controller started, for the final stop.
	slots, all []*controller
}

// ctrl returns the live controller of slot, or else of the next slot
// that has one (an agent meant to come through a killed controller comes
// through another), or nil if every one was killed.
func (hs *harness) ctrl(slot int) *controller {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for i := range hs.slots {
		if c := hs.slots[(slot+i)%len(hs.slots)]; c != nil {
			return c
		}
	}
	return nil
}

// live returns every live controller.
func (hs *harness) live() []*controller {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var out []*controller
	for _, c := range hs.slots {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

func modelTag(i int) names.ModelTag {
	return names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012x", i))
}

// runPlan runs plan on a fresh embedded server and checks its history.
func runPlan(plan robustness.Plan, wire wiring, logf func(string, ...any)) (outcome, error) {
	started := time.Now()
	// Built before the history's clock starts, which the plan follows.
	if _, err := presenced(); err != nil {
		return outcome{}, errors.Trace(err)
	}
	server, err := agenttest.NewServer()
	if err != nil {
		return outcome{}, errors.Trace(err)
	}
	defer func() { _ = server.Destroy() }()
	hs := &harness{plan: plan, wire: wire, h: robustness.NewHistory(), server: server, logf: logf,
		dbName: fmt.Sprintf("robustness_%d", plan.Seed)}
	for i := range plan.Models {
		hs.models = append(hs.models, modelTag(i))
	}
	foreign, err := server.NewClient()
	if err != nil {
		return outcome{}, errors.Trace(err)
	}
	defer func() { _ = foreign.Disconnect(context.Background()) }()
	hs.foreign = foreign.Database(hs.dbName)
	defer func() {
		for _, ctrl := range hs.all {
			ctrl.stop()
		}
	}()
	hs.slots = make([]*controller, len(plan.Controllers))
	for i := range plan.Controllers {
		if _, err := hs.newController(i, i); err != nil {
			return outcome{}, errors.Annotatef(err, "controller %d", i)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs.ctx = ctx
	var wg sync.WaitGroup
	goes := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	hs.goes = goes
	for _, ctrl := range hs.live() {
		hs.follows(ctrl)
	}
	if err := hs.serveWatch(wire.watchDrop); err != nil {
		cancel()
		wg.Wait()
		return outcome{}, errors.Trace(err)
	}
	for range plan.Models {
		life := &modelLife{}
		life.ctx, life.remove = context.WithCancel(ctx)
		hs.lives = append(hs.lives, life)
	}
	for i, a := range plan.Agents {
		life := hs.lives[a.Model]
		life.wg.Add(1)
		goes(func() { defer life.wg.Done(); hs.agent(i, a) })
	}
	for i, u := range plan.Units {
		life := hs.lives[u.Model]
		life.wg.Add(1)
		goes(func() { defer life.wg.Done(); hs.unit(i, u) })
	}
	for _, f := range plan.Injected {
		goes(func() { hs.fault(f) })
	}
	goes(hs.sample)
	hs.sleepUntil(plan.Duration)
	// The history is taken before the run is stopped: what is pending
	// now (a block still waiting) is pending for the checkers.
	end := hs.h.Now()
	ops := hs.h.Ops()
	cancel()
	_ = server.Start()
	_ = server.Resume()
	for _, ctrl := range hs.live() {
		ctrl.proxy.SetHold(0)
		ctrl.proxy.SetDelay(0)
		ctrl.proxy.SetFaults(agenttest.Faults{})
	}
	wg.Wait()
	logs, err := hs.fencedWrites()
	if err != nil {
		return outcome{}, errors.Trace(err)
	}
	out := outcome{plan: plan, ops: ops, end: end}
	out.violations, out.allowed = check(plan, ops, end)
	out.violations = append(out.violations, robustness.CheckFencedWrites(logs)...)
	out.took = time.Since(started)
	return out, nil
}

// check runs every checker on a history of plan, and returns what they
// found and the deaths CheckPresence allowed.
func check(plan robustness.Plan, ops []robustness.Op, end time.Duration) (violations, allowed []robustness.Violation) {
	t := plan.Timing
	const slack = 700 * time.Millisecond
	var maxOffset time.Duration
	for _, c := range plan.Controllers {
		drift := time.Duration(abs(c.Drift) * float64(plan.Duration))
		maxOffset = max(maxOffset, absDuration(c.Offset)+drift)
	}
	if plan.Enabled(robustness.FaultClockStep) {
		maxOffset += t.Period
	}
	leaseBounds := robustness.LeaseBounds{
		Skew:    2*maxOffset + slack,
		Release: 2*t.MaxSleep + 2*slack,
		Trouble: leasestore.MaxCallTimeout + 2*t.MaxSleep,
	}
	presenceBounds := robustness.PresenceBounds{
		// Coming up is held to a latency bound, not a correctness
		// one: a Period more than flush + sync, for a loaded run
		// under -race on two cores (measured up to 1.6s).
		Up:         t.FlushInterval + t.SyncInterval + t.Period + slack,
		Silent:     t.Period + t.FlushInterval + t.SyncInterval + slack,
		Disconnect: t.FlushInterval + t.SyncInterval + slack,
		Hold:       t.MaxStall + t.Period + slack,
		Starved:    t.Period + t.FlushInterval + t.SyncInterval,
		Stall:      4 * t.SyncInterval,
		AllLate:    t.Period,
		// presenced serve's reader holds for its default MaxStall.
		Holds: map[int]time.Duration{watchCtrl: presencereader.DefaultMaxStallPeriods*t.Period + t.Period + slack},
	}
	agents := len(plan.Agents)
	// Every controller restarted after a kill writes as a new one.
	ids := len(plan.Controllers)
	for _, f := range plan.Injected {
		if f.Kind == robustness.FaultControllerKill && f.Restart {
			ids++
		}
	}
	resourceBounds := robustness.ResourceBounds{
		// The test process's live heap holds every controller and the
		// history, which grows with the run; serve's is one reader's.
		Heaps: map[string]robustness.HeapBound{
			"heap test":  {Warmup: 3 * time.Second, Factor: 2, Slack: 16 << 20},
			"heap serve": {Warmup: 3 * time.Second, Factor: 1.5, Slack: 4 << 20},
		},
		Counts: map[string]int{
			"pings":  16 * ids,
			"beings": 4 * ids * (1 + agents/schema.ChunkSize),
		},
		TermsBase: t.PruneEvery + 2,
		// Three of the pruner's intervals: a prune that a fault made
		// fail is made good by the next.
		Window: 6 * t.Period,
	}
	for i := range ids {
		resourceBounds.Counts[fmt.Sprintf("keys c%d", i)] = agents
		resourceBounds.Counts[fmt.Sprintf("log c%d", i)] = presencereader.DefaultLogLength * plan.Models
	}
	var out []robustness.Violation
	out = append(out, robustness.CheckLeases(ops, leaseBounds)...)
	out = append(out, robustness.CheckBlocks(ops, end, leaseBounds)...)
	out = append(out, robustness.CheckPresence(ops, end, presenceBounds)...)
	out = append(out, robustness.CheckStreams(ops)...)
	out = append(out, robustness.CheckResources(ops, end, resourceBounds)...)
	return out, robustness.AllowedDeaths(ops, end, presenceBounds)
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// newController starts a controller of id in slot and puts it there.
func (hs *harness) newController(id, slot int) (*controller, error) {
	cp := hs.plan.Controllers[slot]
	clocks := make(map[robustness.ClockPart]*agenttest.SkewClock)
	for _, part := range []robustness.ClockPart{robustness.ClockController, robustness.ClockWriter, robustness.ClockReader, robustness.ClockPruner} {
		c, err := agenttest.NewSkewClock(clock.WallClock, cp.Offset, cp.Drift)
		if err != nil {
			return nil, errors.Trace(err)
		}
		clocks[part] = c
	}
	clk := clocks[robustness.ClockController]
	proxy, uri, err := hs.server.NewProxy()
	if err != nil {
		return nil, errors.Trace(err)
	}
	ctrl := &controller{id: id, slot: slot, clock: clk, clocks: clocks, proxy: proxy, dying: make(chan struct{}),
		views: make(map[int]*presencereader.View), managers: make(map[int]leaseexpiry.ManagerWorker)}
	hs.mu.Lock()
	hs.all = append(hs.all, ctrl)
	hs.mu.Unlock()
	if err := hs.startController(ctrl, uri); err != nil {
		return nil, errors.Trace(err)
	}
	hs.mu.Lock()
	hs.slots[slot] = ctrl
	hs.mu.Unlock()
	return ctrl, nil
}

// startController connects ctrl through uri and starts its workers.
func (hs *harness) startController(ctrl *controller, uri string) error {
	t := hs.plan.Timing
	clk, id := ctrl.clock, ctrl.id
	var err error
	ctrl.client, err = mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second))
	if err != nil {
		return errors.Trace(err)
	}
	db := ctrl.client.Database(hs.dbName)
	ctrl.base = db.Collection(schema.DefaultBase)
	ctrl.resources = db.Collection(resources)
	if ctrl.batcher, err = pingbatcher.New(pingbatcher.Config{Base: ctrl.base, FlushInterval: t.FlushInterval, Period: t.Period, Clock: ctrl.clocks[robustness.ClockWriter],
		OnFlush: func(s pingbatcher.FlushStats) { hs.record(robustness.OpFlush, id, s.Took, s.Documents, s.Err) }}); err != nil {
		return errors.Trace(err)
	}
	ctrl.rec = ctrl.batcher
	if hs.wire.recorder != nil {
		ctrl.rec = hs.wire.recorder(ctrl.batcher)
	}
	ctrl.rec = &pingLog{PingRecorder: ctrl.rec, h: hs.h, ctrl: id, keys: make(map[pinger.Identity]string)}
	if ctrl.reader, err = presencereader.New(presencereader.Config{
		Base: ctrl.base, Clock: ctrl.clocks[robustness.ClockReader], Period: t.Period, SyncInterval: t.SyncInterval, MaxStall: t.MaxStall,
		OnLoad: func(s presencereader.LoadStats) {
			hs.record(robustness.OpLoad, id, 0, 0, s.Err)
			if s.Err == nil {
				ctrl.keys.Store(int64(s.Keys))
				ctrl.logEntries.Store(int64(s.LogEntries))
			}
		},
	}); err != nil {
		return errors.Trace(err)
	}
	if ctrl.pruner, err = pruner.New(pruner.Config{Base: ctrl.base, Clock: ctrl.clocks[robustness.ClockPruner], Interval: 2 * t.Period, Period: t.Period}); err != nil {
		return errors.Trace(err)
	}
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection("leases"), Clock: clk, ClockSkew: t.ClockSkew})
	if err != nil {
		return errors.Trace(err)
	}
	if hs.wire.leaseClient != nil {
		client = hs.wire.leaseClient(client)
	}
	if ctrl.store, err = leasestore.New(leasestore.Config{Client: client, Clock: clk, MaxSleep: t.MaxSleep, PruneEvery: t.PruneEvery}); err != nil {
		return errors.Trace(err)
	}
	for m, tag := range hs.models {
		view, err := ctrl.reader.NewView(tag, ctrl.dying, func() error { return presencereader.ErrStopped })
		if err != nil {
			return errors.Trace(err)
		}
		ctrl.views[m] = view
	}
	for _, u := range hs.plan.Units {
		if u.Ctrl != ctrl.slot || ctrl.managers[u.Model] != nil {
			continue
		}
		mgr, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Store: ctrl.store, Clock: clk, Model: hs.models[u.Model]})
		if err != nil {
			return errors.Trace(err)
		}
		ctrl.managers[u.Model] = mgr
	}
	return nil
}

// stop stops every worker of the controller, then its client and proxy;
// it does so once however often it is called.
func (ctrl *controller) stop() {
	ctrl.stopping.Do(ctrl.stopOnce)
}

func (ctrl *controller) stopOnce() {
	close(ctrl.dying)
	for _, v := range ctrl.views {
		v.Close()
	}
	for _, mgr := range ctrl.managers {
		mgr.Kill()
		_ = mgr.Wait()
	}
	for _, w := range []interface {
		Kill()
		Wait() error
	}{ctrl.store, ctrl.pruner, ctrl.reader, ctrl.batcher} {
		if w != nil && !isNil(w) {
			w.Kill()
			_ = w.Wait()
		}
	}
	if ctrl.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = ctrl.client.Disconnect(ctx)
		cancel()
	}
	_ = ctrl.proxy.Close()
}

func isNil(w any) bool {
	switch w := w.(type) {
	case *leasestore.Store:
		return w == nil
	case *pruner.Pruner:
		return w == nil
	case *presencereader.Reader:
		return w == nil
	case *pingbatcher.PingBatcher:
		return w == nil
	}
	return false
}

// sleepUntil sleeps until the harness's clock reads at, or the run ends.
func (hs *harness) sleepUntil(at time.Duration) bool {
	return hs.sleepUntilIn(hs.ctx, at)
}

func (hs *harness) sleep(d time.Duration) bool {
	return hs.sleepIn(hs.ctx, d)
}

// sleepUntilIn sleeps until the harness's clock reads at, or ctx (if
// not nil) ends.
func (hs *harness) sleepUntilIn(ctx context.Context, at time.Duration) bool {
	d := at - hs.h.Now()
	if d <= 0 {
		return ctx == nil || ctx.Err() == nil
	}
	if ctx == nil {
		time.Sleep(d)
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (hs *harness) sleepIn(ctx context.Context, d time.Duration) bool {
	return hs.sleepUntilIn(ctx, hs.h.Now()+d)
}

// modelLife is one model's life in a run: ctx ends when the model is
// removed (or the run ends); wg counts its agents and units, which
// stop before it is removed.
type modelLife struct {
	ctx    context.Context
	remove context.CancelFunc
	wg     sync.WaitGroup
}

// follow records every event of one stream of a controller's view of
// model m. A slow stream (rng set) pauses between pulls and now and then
// goes away and resumes after the last position it took.
func (hs *harness) follow(ctrl *controller, m int, view *presencereader.View, stream string, rng *rand.Rand) {
	model := hs.models[m].Id()
	sub := view.SubscribeWith(presencereader.SubscribeConfig{})
	defer func() { sub.Close() }()
	for {
		call := hs.h.Now()
		batch, err := sub.NextBatch(hs.ctx)
		if err != nil {
			return
		}
		ret := hs.h.Now()
		for _, e := range batch.Events {
			op := robustness.Op{Kind: robustness.OpEvent, Ctrl: ctrl.id, Call: call, Return: ret, Result: robustness.Ok,
				Model: model, Key: e.Key, Alive: e.Alive, Stream: stream, Seq: e.Position.Seq, Snapshot: batch.Snapshot}
			if batch.Snapshot {
				op.Seq = batch.End.Seq
			}
			if batch.Reset {
				op.Note = "reset"
			}
			hs.h.Add(op)
		}
		if batch.Snapshot && len(batch.Events) == 0 {
			hs.h.Add(robustness.Op{Kind: robustness.OpEvent, Ctrl: ctrl.id, Call: call, Return: ret, Result: robustness.Ok,
				Model: model, Stream: stream, Seq: batch.End.Seq, Snapshot: true, Note: "empty snapshot"})
		}
		if rng == nil {
			continue
		}
		if !hs.sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond)))) {
			return
		}
		if rng.IntN(10) == 0 {
			sub.Close()
			sub = view.SubscribeWith(presencereader.SubscribeConfig{After: batch.End})
		}
	}
}

// agent plays one agent's actions.
func (hs *harness) agent(i int, a robustness.AgentPlan) {
	ctx := hs.lives[a.Model].ctx
	model := hs.models[a.Model]
	var p *pinger.Pinger
	var run, runCtrl int
	defer func() {
		if p == nil {
			return
		}
		if hs.ctx.Err() == nil {
			// The model is being removed: its pingers stop first.
			n := hs.h.Begin(robustness.Op{Kind: robustness.OpStop, Ctrl: runCtrl, Run: run, Model: model.Id(), Key: a.Key})
			hs.h.End(n, result(p.Stop()), func(o *robustness.Op) { o.Note = "model removed" })
		}
		p.Kill()
		_ = p.Wait()
	}()
	for _, act := range a.Actions {
		if !hs.sleepUntilIn(ctx, act.At) {
			return
		}
		op := robustness.Op{Kind: act.Kind, Model: model.Id(), Key: a.Key}
		switch act.Kind {
		case robustness.OpStart:
			ctrl := hs.ctrl(act.Ctrl)
			var err error
			p, err = pinger.New(pinger.Config{Base: ctrl.base, Model: model, Key: a.Key,
				Recorder: func() pinger.PingRecorder { return ctrl.rec }, Clock: ctrl.clocks[robustness.ClockWriter], Period: hs.plan.Timing.Period})
			if err != nil {
				hs.logf("agent %s: %v", a.Key, err)
				return
			}
			run = int(hs.runs.Add(1))
			op.Ctrl, op.Run, runCtrl = ctrl.id, run, ctrl.id
			n := hs.h.Begin(op)
			hs.h.End(n, result(p.Start()), nil)
		case robustness.OpStop, robustness.OpDisconnect:
			if p == nil {
				continue
			}
			op.Ctrl, op.Run = runCtrl, run
			n := hs.h.Begin(op)
			var err error
			if act.Kind == robustness.OpStop {
				err = p.Stop()
			} else {
				err = p.Disconnect()
			}
			hs.h.End(n, result(err), nil)
			p.Kill()
			_ = p.Wait()
			p = nil
		}
	}
	// The last run lasts until the end of the scenario.
	<-ctx.Done()
}

func result(err error) robustness.Result {
	switch {
	case err == nil:
		return robustness.Ok
	case errors.Is(err, leaseexpiry.ErrClaimDenied), errors.Is(err, leaseexpiry.ErrNotHeld):
		return robustness.Denied
	}
	return robustness.Unknown
}

// unit plays one unit: it claims; leading, it renews and checks until its
// time to lead is over, then releases or goes quiet, and rests; denied, it
// blocks until the lease is released and claims again.
func (hs *harness) unit(i int, u robustness.UnitPlan) {
	ctx := hs.lives[u.Model].ctx
	// The unit's controller, and its manager: a killed controller's
	// units wait for its restart.
	var ctrl *controller
	var mgr leaseexpiry.ManagerWorker
	model := hs.models[u.Model].Id()
	op := func(kind robustness.Kind) robustness.Op {
		return robustness.Op{Kind: kind, Ctrl: ctrl.id, Model: model, Lease: u.App, Unit: u.Unit, Duration: u.Duration}
	}
	claim := func() (robustness.Result, bool) {
		n := hs.h.Begin(op(robustness.OpClaim))
		err := mgr.ClaimLeadershipContext(ctx, u.App, u.Unit, u.Duration)
		if ctx.Err() != nil {
			return robustness.Unknown, false // pending: the run ended
		}
		r := result(err)
		hs.h.End(n, r, func(o *robustness.Op) {
			if err != nil {
				o.Note = err.Error()
			}
		})
		return r, true
	}
	for ctx.Err() == nil {
		if ctrl = hs.ctrl(u.Ctrl); ctrl == nil || ctrl.slot != u.Ctrl {
			if !hs.sleepIn(ctx, u.Renew) {
				return
			}
			continue
		}
		mgr = ctrl.managers[u.Model]
		r, ok := claim()
		if !ok {
			return
		}
		switch r {
		case robustness.Denied:
			n := hs.h.Begin(op(robustness.OpBlock))
			err := mgr.BlockUntilLeadershipReleasedContext(ctx, u.App)
			if ctx.Err() != nil {
				return
			}
			hs.h.End(n, result(err), nil)
			continue
		case robustness.Unknown:
			if !hs.sleepIn(ctx, u.Renew) {
				return
			}
			continue
		}
		leadUntil := hs.h.Now() + u.Lead
		for r == robustness.Ok && hs.h.Now() < leadUntil {
			if !hs.sleepIn(ctx, u.Renew) {
				return
			}
			if !u.Storm {
				n := hs.h.Begin(op(robustness.OpCheck))
				token, err := mgr.CheckLeadershipContext(ctx, u.App, u.Unit)
				if ctx.Err() != nil {
					return
				}
				hs.h.End(n, result(err), func(o *robustness.Op) {
					if err == nil {
						o.Fence = token.Fence()
					}
				})
				if err == nil && !hs.write(ctx, ctrl, u, token) {
					return
				}
			}
			if r, ok = claim(); !ok {
				return
			}
		}
		if u.Pin > 0 && r == robustness.Ok && !hs.pinFor(ctx, mgr, op, u) {
			return
		}
		if u.Release && r == robustness.Ok {
			n := hs.h.Begin(op(robustness.OpRelease))
			err := mgr.ReleaseLeadershipContext(ctx, u.App, u.Unit)
			if ctx.Err() != nil {
				return
			}
			hs.h.End(n, result(err), nil)
		}
		if !hs.sleepIn(ctx, u.Rest) {
			return
		}
	}
}

// resources is the collection of the resources that leaders write
// through their tokens' guards, one document per lease.
const resources = "resources"

// write writes u's lease's resource through token's guard, appending the
// unit and its fence to the resource's log, and records the write. It
// returns false once the run is over.
func (hs *harness) write(ctx context.Context, ctrl *controller, u robustness.UnitPlan, token leaseexpiry.Token) bool {
	model := hs.models[u.Model].Id()
	n := hs.h.Begin(robustness.Op{Kind: robustness.OpWrite, Ctrl: ctrl.id, Model: model, Lease: u.App, Unit: u.Unit, Fence: token.Fence()})
	_, err := leaseexpiry.UpdateGuarded(ctx, ctrl.resources, token,
		bson.D{{Key: "_id", Value: model + "/" + u.App}},
		bson.D{{Key: "$push", Value: bson.D{{Key: "log", Value: bson.D{{Key: "unit", Value: u.Unit}, {Key: "fence", Value: token.Fence()}}}}}},
		true)
	if ctx.Err() != nil {
		return false
	}
	r := robustness.Ok
	switch {
	case errors.Is(err, leaseexpiry.ErrFenced):
		r = robustness.Denied
	case err != nil:
		r = robustness.Unknown
	}
	hs.h.End(n, r, func(o *robustness.Op) {
		if err != nil {
			o.Note = err.Error()
		}
	})
	return true
}

// fencedWrites reads every resource's log of accepted writes.
func (hs *harness) fencedWrites() (map[string][]robustness.FencedWrite, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cursor, err := hs.foreign.Collection(resources).Find(ctx, bson.D{})
	if err != nil {
		return nil, errors.Annotate(err, "cannot read the resources")
	}
	var docs []struct {
		ID  string                   `bson:"_id"`
		Log []robustness.FencedWrite `bson:"log"`
	}
	if err := cursor.All(ctx, &docs); err != nil {
		return nil, errors.Annotate(err, "cannot read the resources")
	}
	logs := make(map[string][]robustness.FencedWrite, len(docs))
	for _, d := range docs {
		logs[d.ID] = d.Log
	}
	return logs, nil
}

// fault injects one fault and heals it.
func (hs *harness) fault(f robustness.FaultPlan) {
	if !hs.sleepUntil(f.At) {
		return
	}
	op := robustness.Op{Kind: robustness.OpFault, Ctrl: -1, Fault: f.Kind}
	var target *controller
	if f.Ctrl >= 0 {
		if target = hs.ctrl(f.Ctrl); target == nil {
			return
		}
		op.Ctrl = target.id
	}
	switch f.Kind {
	case robustness.FaultHostileTerm:
		u := hs.plan.Units[f.Unit]
		op.Model, op.Lease = hs.models[u.Model].Id(), u.App
	case robustness.FaultModelRemove:
		op.Model = hs.models[f.Model].Id()
	}
	n := hs.h.Begin(op)
	note := ""
	switch f.Kind {
	case robustness.FaultServerPause:
		if err := hs.server.Pause(); err != nil {
			note = err.Error()
		}
		hs.sleep(f.For)
		_ = hs.server.Resume()
	case robustness.FaultServerKill:
		if err := hs.server.Kill(); err != nil {
			note = err.Error()
		}
		hs.sleep(f.For)
		if err := hs.server.Start(); err != nil {
			note = err.Error()
		}
	case robustness.FaultReplyDelay:
		for _, c := range hs.live() {
			c.proxy.SetDelay(f.Delay)
		}
		hs.sleep(f.For)
		for _, c := range hs.live() {
			c.proxy.SetDelay(0)
		}
	case robustness.FaultControllerPause:
		target.proxy.SetHold(time.Hour)
		hs.sleep(f.For)
		target.proxy.SetHold(0)
	case robustness.FaultClockStep:
		clocks := []*agenttest.SkewClock{target.clocks[f.Clock]}
		if f.Clock == robustness.ClockController {
			clocks = slices.Collect(maps.Values(target.clocks))
		}
		for _, c := range clocks {
			c.Step(f.Step)
		}
		if f.For > 0 {
			hs.sleep(f.For)
			for _, c := range clocks {
				c.Step(-f.Step)
			}
		}
	case robustness.FaultHostileDocument:
		note = hs.hostile(f.At)
	case robustness.FaultHostileTerm:
		note = hs.hostileTerm(op.Model, op.Lease, f.Term)
	case robustness.FaultModelRemove:
		note = hs.removeModel(f.Model)
	case robustness.FaultReplyLost:
		target.proxy.SetFaults(agenttest.Faults{Drop: f.Share, Seed: hs.plan.Seed})
		hs.sleep(f.For)
		target.proxy.SetFaults(agenttest.Faults{})
	case robustness.FaultControllerKill:
		// The kill is an instant: its Return is when the controller
		// could no longer reach the database.
		if !hs.kill(target) {
			hs.h.End(n, robustness.Unknown, func(o *robustness.Op) { o.Note = "not killed: the last live controller" })
			return
		}
		hs.h.End(n, robustness.Ok, nil)
		if f.Restart && hs.sleep(f.For) {
			hs.restart(target.slot)
		}
		return
	}
	hs.h.End(n, robustness.Ok, func(o *robustness.Op) { o.Note = note })
}

// kill cuts ctrl off from the database at once (its proxy closed, every
// request it held dropped) and stops its workers behind it, with no
// Disconnect of its pingers; it reports false, killing nothing, if ctrl
// is the last live controller.
func (hs *harness) kill(ctrl *controller) bool {
	hs.mu.Lock()
	live := 0
	for _, c := range hs.slots {
		if c != nil {
			live++
		}
	}
	if live < 2 || hs.slots[ctrl.slot] != ctrl {
		hs.mu.Unlock()
		return false
	}
	hs.slots[ctrl.slot] = nil
	hs.mu.Unlock()
	_ = ctrl.proxy.Close()
	hs.goes(ctrl.stop)
	return true
}

// restart starts a new controller, of a new id, in slot.
func (hs *harness) restart(slot int) {
	hs.mu.Lock()
	id := len(hs.all)
	hs.mu.Unlock()
	ctrl, err := hs.newController(id, slot)
	if err != nil {
		hs.logf("restart of controller %d as c%d: %v", slot, id, err)
		return
	}
	hs.follows(ctrl)
}

// hostileTerm has a foreign client write junk as the next term of model's
// lease (or, for the last of robustness.HostileTerms, a term whose _id
// names no number), and says what it wrote.
func (hs *harness) hostileTerm(model, leaseName string, junk int) string {
	ctx, cancel := context.WithTimeout(hs.ctx, 5*time.Second)
	defer cancel()
	leases := hs.foreign.Collection("leases")
	prefix := leaseexpiry.Namespace + "#" + model + "#" + leaseName + "#"
	var latest int64
	cursor, err := leases.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$regex", Value: "^" + regexp.QuoteMeta(prefix)}}}})
	if err != nil {
		return err.Error()
	}
	var docs []bson.M
	if err := cursor.All(ctx, &docs); err != nil {
		return err.Error()
	}
	for _, d := range docs {
		id, _ := d["_id"].(string)
		if n, err := strconv.ParseInt(strings.TrimPrefix(id, prefix), 10, 64); err == nil && n < 1<<61 {
			latest = max(latest, n)
		}
	}
	next := latest + 1
	doc := bson.M{"_id": prefix + strconv.FormatInt(next, 10), "ns": leaseexpiry.Namespace, "model": model, "lease": leaseName,
		"term": next, "holder": "", "expiry": int64(0), "fence": next, "pins": bson.A{}}
	switch robustness.HostileTerms[junk] {
	case "term a string":
		doc["term"] = "x"
	case "term missing":
		delete(doc, "term")
	case "term 2^62":
		doc["term"] = int64(1) << 62
	case "term 2^63-1":
		doc["term"] = int64(math.MaxInt64)
	case "fence 2^63-1":
		doc["fence"] = int64(math.MaxInt64)
	case "lease field missing":
		delete(doc, "lease")
	case "ns not a string":
		doc["ns"] = 7
	case "_id naming no number":
		doc["_id"] = prefix + "junk"
	}
	if _, err := leases.InsertOne(ctx, doc); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s as %v after term %d", robustness.HostileTerms[junk], doc["_id"], latest)
}

// hostile has a foreign client write documents no controller wrote: a
// ping and a beings document of the wrong shape, and a lease term of
// another namespace.
func (hs *harness) hostile(at time.Duration) string {
	ctx, cancel := context.WithTimeout(hs.ctx, 5*time.Second)
	defer cancel()
	base := hs.foreign.Collection(schema.DefaultBase)
	id := fmt.Sprintf("hostile-%d", at)
	var errs []string
	for _, w := range []struct {
		coll *mongo.Collection
		doc  bson.D
	}{
		{schema.Pings(base), bson.D{{Key: "_id", Value: id}, {Key: "writer", Value: 42}, {Key: "slot", Value: "soon"}}},
		{schema.Beings(base), bson.D{{Key: "_id", Value: id}, {Key: "entries", Value: bson.A{"x", 1}}}},
		{hs.foreign.Collection("leases"), bson.D{{Key: "_id", Value: id}, {Key: "ns", Value: "other-namespace"}, {Key: "term", Value: "x"}}},
	} {
		if _, err := w.coll.InsertOne(ctx, w.doc); err != nil {
			errs = append(errs, err.Error())
		}
	}
	return fmt.Sprint(errs)
}

// sample records, every half second, the documents of every collection
// and every reader's view entries.
func (hs *harness) sample() {
	base := hs.foreign.Collection(schema.DefaultBase)
	for hs.sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(hs.ctx, time.Second)
		counts := make(map[string]int)
		ok := true
		for name, coll := range map[string]*mongo.Collection{"pings": schema.Pings(base), "beings": schema.Beings(base)} {
			n, err := coll.CountDocuments(ctx, bson.D{})
			ok = ok && err == nil
			counts[name] = int(n)
		}
		cur, err := hs.foreign.Collection("leases").Find(ctx, bson.D{{Key: "ns", Value: leaseexpiry.Namespace}})
		var terms []struct {
			Model string `bson:"model"`
			Lease string `bson:"lease"`
		}
		if err == nil {
			err = cur.All(ctx, &terms)
		}
		cancel()
		if !ok || err != nil {
			continue
		}
		for _, t := range terms {
			counts["terms "+t.Model+"/"+t.Lease]++
		}
		for _, c := range hs.live() {
			counts[fmt.Sprintf("keys c%d", c.id)] = int(c.keys.Load())
			counts[fmt.Sprintf("log c%d", c.id)] = int(c.logEntries.Load())
		}
		heap := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
		rtmetrics.Read(heap)
		if heap[0].Value.Kind() == rtmetrics.KindUint64 {
			counts["heap test"] = int(heap[0].Value.Uint64())
		}
		if n, err := hs.serveHeap(); err == nil {
			counts["heap serve"] = n
		}
		now := hs.h.Now()
		hs.h.Add(robustness.Op{Kind: robustness.OpSample, Ctrl: -1, Call: now, Return: now, Result: robustness.Ok, Counts: counts})
	}
}

// pingLog records every ping its recorder takes in the history, so that
// a death can be told from a pinger that did not ping.
type pingLog struct {
	pinger.PingRecorder
	h    *robustness.History
	ctrl int

	mu   sync.Mutex
	keys map[pinger.Identity]string
}

// Register registers key with the recorder and remembers its identity.
func (p *pingLog) Register(base *mongo.Collection, model names.ModelTag, key string) (pinger.Identity, error) {
	id, err := p.PingRecorder.Register(base, model, key)
	if err == nil {
		p.mu.Lock()
		p.keys[id] = key
		p.mu.Unlock()
	}
	return id, err
}

// Ping passes the ping on and records it.
func (p *pingLog) Ping(id pinger.Identity, slot int64) error {
	err := p.PingRecorder.Ping(id, slot)
	p.mu.Lock()
	key := p.keys[id]
	p.mu.Unlock()
	now := p.h.Now()
	op := robustness.Op{Kind: robustness.OpPing, Ctrl: p.ctrl, Call: now, Return: now, Result: robustness.Ok, Model: id.Model, Key: key, Seq: uint64(slot)}
	if err != nil {
		op.Result, op.Note = robustness.Unknown, err.Error()
	}
	p.h.Add(op)
	return err
}

// pinFor pins u's lease, keeps it pinned for u.Pin without renewing it
// (longer than its claim's duration), and unpins it, recording both. It
// returns false once the run is over.
func (hs *harness) pinFor(ctx context.Context, mgr leaseexpiry.ManagerWorker, op func(robustness.Kind) robustness.Op, u robustness.UnitPlan) bool {
	for _, pinned := range []bool{true, false} {
		kind, call := robustness.OpUnpin, mgr.UnpinLeadershipContext
		if pinned {
			kind, call = robustness.OpPin, mgr.PinLeadershipContext
		}
		n := hs.h.Begin(op(kind))
		err := call(ctx, u.App, u.Unit)
		if ctx.Err() != nil {
			return false
		}
		hs.h.End(n, result(err), func(o *robustness.Op) {
			if err != nil {
				o.Note = err.Error()
			}
		})
		if pinned && !hs.sleepIn(ctx, u.Pin) {
			return false
		}
	}
	return true
}

// removeModel removes model m as DESIGN says an operator does: its
// engine stopped first (its agents' pingers stopped, its units gone, its
// views and lease managers closed at every controller), then
// presence.RemoveModel; it says what failed, if anything.
func (hs *harness) removeModel(m int) string {
	life := hs.lives[m]
	life.remove()
	life.wg.Wait()
	for _, ctrl := range hs.live() {
		if view := ctrl.views[m]; view != nil {
			view.Close()
		}
		if mgr := ctrl.managers[m]; mgr != nil {
			mgr.Kill()
			_ = mgr.Wait()
		}
	}
	ctx, cancel := context.WithTimeout(hs.ctx, 10*time.Second)
	defer cancel()
	if err := presence.RemoveModel(ctx, hs.foreign, hs.models[m]); err != nil {
		return err.Error()
	}
	return ""
}
