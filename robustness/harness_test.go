package robustness_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

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
}

// outcome is what a run recorded and what the checkers found.
type outcome struct {
	plan       robustness.Plan
	ops        []robustness.Op
	end        time.Duration
	violations []robustness.Violation
	took       time.Duration
}

// controller is one controller's workers, over its own client, proxy and
// clocks: clock is its lease client's and the default, and each presence
// worker has a clock of its own that starts the same, so that a fault can
// step one of them alone.
type controller struct {
	id      int
	clock   *agenttest.SkewClock
	clocks  map[robustness.ClockPart]*agenttest.SkewClock
	proxy   *agenttest.Proxy
	client  *mongo.Client
	batcher *pingbatcher.PingBatcher
	rec     pinger.PingRecorder
	reader  *presencereader.Reader
	pruner  *pruner.Pruner
	store   *leasestore.Store
	base    *mongo.Collection
	// resources holds the resources its leaders write through guards.
	resources *mongo.Collection

	dying    chan struct{}
	views    map[int]*presencereader.View
	managers map[int]leaseexpiry.ManagerWorker

	// loads holds the latest LoadStats.
	keys, logEntries atomic.Int64
}

type harness struct {
	plan    robustness.Plan
	wire    wiring
	h       *robustness.History
	server  *agenttest.Server
	foreign *mongo.Database
	ctrls   []*controller
	models  []names.ModelTag
	runs    atomic.Int64
	ctx     context.Context
	logf    func(string, ...any)
}

func modelTag(i int) names.ModelTag {
	return names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012x", i))
}

// runPlan runs plan on a fresh embedded server and checks its history.
func runPlan(plan robustness.Plan, wire wiring, logf func(string, ...any)) (outcome, error) {
	started := time.Now()
	server, err := agenttest.NewServer()
	if err != nil {
		return outcome{}, errors.Trace(err)
	}
	defer func() { _ = server.Destroy() }()
	hs := &harness{plan: plan, wire: wire, h: robustness.NewHistory(), server: server, logf: logf}
	for i := range plan.Models {
		hs.models = append(hs.models, modelTag(i))
	}
	foreign, err := server.NewClient()
	if err != nil {
		return outcome{}, errors.Trace(err)
	}
	defer func() { _ = foreign.Disconnect(context.Background()) }()
	dbName := fmt.Sprintf("robustness_%d", plan.Seed)
	hs.foreign = foreign.Database(dbName)
	for i, cp := range plan.Controllers {
		ctrl, err := hs.newController(i, cp, dbName)
		if ctrl != nil {
			defer ctrl.stop()
		}
		if err != nil {
			return outcome{}, errors.Annotatef(err, "controller %d", i)
		}
		hs.ctrls = append(hs.ctrls, ctrl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs.ctx = ctx
	var wg sync.WaitGroup
	goes := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	for _, ctrl := range hs.ctrls {
		for m, view := range ctrl.views {
			goes(func() { hs.follow(ctrl, m, view, "fast", nil) })
			rng := rand.New(rand.NewPCG(plan.Seed, uint64(ctrl.id*1000+m)))
			goes(func() { hs.follow(ctrl, m, view, "slow", rng) })
		}
	}
	for i, a := range plan.Agents {
		goes(func() { hs.agent(i, a) })
	}
	for i, u := range plan.Units {
		goes(func() { hs.unit(i, u) })
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
	for _, ctrl := range hs.ctrls {
		ctrl.proxy.SetHold(0)
		ctrl.proxy.SetDelay(0)
	}
	wg.Wait()
	logs, err := hs.fencedWrites()
	if err != nil {
		return outcome{}, errors.Trace(err)
	}
	out := outcome{plan: plan, ops: ops, end: end}
	out.violations = append(check(plan, ops, end), robustness.CheckFencedWrites(logs)...)
	out.took = time.Since(started)
	return out, nil
}

// check runs every checker on a history of plan.
func check(plan robustness.Plan, ops []robustness.Op, end time.Duration) []robustness.Violation {
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
	}
	agents := len(plan.Agents)
	resourceBounds := robustness.ResourceBounds{
		Counts: map[string]int{
			"pings":  16 * len(plan.Controllers),
			"beings": 4 * len(plan.Controllers) * (1 + agents/schema.ChunkSize),
		},
		TermsBase: t.PruneEvery + 2,
		// Three of the pruner's intervals: a prune that a fault made
		// fail is made good by the next.
		Window: 6 * t.Period,
	}
	for i := range plan.Controllers {
		resourceBounds.Counts[fmt.Sprintf("keys c%d", i)] = agents
		resourceBounds.Counts[fmt.Sprintf("log c%d", i)] = presencereader.DefaultLogLength * plan.Models
	}
	var out []robustness.Violation
	out = append(out, robustness.CheckLeases(ops, leaseBounds)...)
	out = append(out, robustness.CheckBlocks(ops, end, leaseBounds)...)
	out = append(out, robustness.CheckPresence(ops, end, presenceBounds)...)
	out = append(out, robustness.CheckStreams(ops)...)
	out = append(out, robustness.CheckResources(ops, end, resourceBounds)...)
	return out
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

func (hs *harness) newController(id int, cp robustness.ControllerPlan, dbName string) (*controller, error) {
	t := hs.plan.Timing
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
	ctrl := &controller{id: id, clock: clk, clocks: clocks, proxy: proxy, dying: make(chan struct{}),
		views: make(map[int]*presencereader.View), managers: make(map[int]leaseexpiry.ManagerWorker)}
	ctrl.client, err = mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second))
	if err != nil {
		return ctrl, errors.Trace(err)
	}
	db := ctrl.client.Database(dbName)
	ctrl.base = db.Collection(schema.DefaultBase)
	ctrl.resources = db.Collection(resources)
	if ctrl.batcher, err = pingbatcher.New(pingbatcher.Config{Base: ctrl.base, FlushInterval: t.FlushInterval, Period: t.Period, Clock: clocks[robustness.ClockWriter]}); err != nil {
		return ctrl, errors.Trace(err)
	}
	ctrl.rec = ctrl.batcher
	if hs.wire.recorder != nil {
		ctrl.rec = hs.wire.recorder(ctrl.batcher)
	}
	if ctrl.reader, err = presencereader.New(presencereader.Config{
		Base: ctrl.base, Clock: clocks[robustness.ClockReader], Period: t.Period, SyncInterval: t.SyncInterval, MaxStall: t.MaxStall,
		OnLoad: func(s presencereader.LoadStats) {
			if s.Err == nil {
				ctrl.keys.Store(int64(s.Keys))
				ctrl.logEntries.Store(int64(s.LogEntries))
			}
		},
	}); err != nil {
		return ctrl, errors.Trace(err)
	}
	if ctrl.pruner, err = pruner.New(pruner.Config{Base: ctrl.base, Clock: clocks[robustness.ClockPruner], Interval: 2 * t.Period, Period: t.Period}); err != nil {
		return ctrl, errors.Trace(err)
	}
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection("leases"), Clock: clk, ClockSkew: t.ClockSkew})
	if err != nil {
		return ctrl, errors.Trace(err)
	}
	if hs.wire.leaseClient != nil {
		client = hs.wire.leaseClient(client)
	}
	if ctrl.store, err = leasestore.New(leasestore.Config{Client: client, Clock: clk, MaxSleep: t.MaxSleep, PruneEvery: t.PruneEvery}); err != nil {
		return ctrl, errors.Trace(err)
	}
	for m, tag := range hs.models {
		view, err := ctrl.reader.NewView(tag, ctrl.dying, func() error { return presencereader.ErrStopped })
		if err != nil {
			return ctrl, errors.Trace(err)
		}
		ctrl.views[m] = view
	}
	for _, u := range hs.plan.Units {
		if u.Ctrl != id || ctrl.managers[u.Model] != nil {
			continue
		}
		mgr, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Store: ctrl.store, Clock: clk, Model: hs.models[u.Model]})
		if err != nil {
			return ctrl, errors.Trace(err)
		}
		ctrl.managers[u.Model] = mgr
	}
	return ctrl, nil
}

// stop stops every worker of the controller, then its client and proxy.
func (ctrl *controller) stop() {
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
	d := at - hs.h.Now()
	if d <= 0 {
		return hs.ctx == nil || hs.ctx.Err() == nil
	}
	if hs.ctx == nil {
		time.Sleep(d)
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-hs.ctx.Done():
		return false
	}
}

func (hs *harness) sleep(d time.Duration) bool {
	return hs.sleepUntil(hs.h.Now() + d)
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
	model := hs.models[a.Model]
	var p *pinger.Pinger
	var run, runCtrl int
	defer func() {
		if p != nil {
			p.Kill()
			_ = p.Wait()
		}
	}()
	for _, act := range a.Actions {
		if !hs.sleepUntil(act.At) {
			return
		}
		op := robustness.Op{Kind: act.Kind, Model: model.Id(), Key: a.Key}
		switch act.Kind {
		case robustness.OpStart:
			ctrl := hs.ctrls[act.Ctrl]
			var err error
			p, err = pinger.New(pinger.Config{Base: ctrl.base, Model: model, Key: a.Key,
				Recorder: func() pinger.PingRecorder { return ctrl.rec }, Clock: ctrl.clocks[robustness.ClockWriter], Period: hs.plan.Timing.Period})
			if err != nil {
				hs.logf("agent %s: %v", a.Key, err)
				return
			}
			run = int(hs.runs.Add(1))
			op.Ctrl, op.Run, runCtrl = act.Ctrl, run, act.Ctrl
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
	<-hs.ctx.Done()
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
	ctrl := hs.ctrls[u.Ctrl]
	mgr := ctrl.managers[u.Model]
	model := hs.models[u.Model].Id()
	op := func(kind robustness.Kind) robustness.Op {
		return robustness.Op{Kind: kind, Ctrl: u.Ctrl, Model: model, Lease: u.App, Unit: u.Unit, Duration: u.Duration}
	}
	claim := func() (robustness.Result, bool) {
		n := hs.h.Begin(op(robustness.OpClaim))
		err := mgr.ClaimLeadershipContext(hs.ctx, u.App, u.Unit, u.Duration)
		if hs.ctx.Err() != nil {
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
	for hs.ctx.Err() == nil {
		r, ok := claim()
		if !ok {
			return
		}
		switch r {
		case robustness.Denied:
			n := hs.h.Begin(op(robustness.OpBlock))
			err := mgr.BlockUntilLeadershipReleasedContext(hs.ctx, u.App)
			if hs.ctx.Err() != nil {
				return
			}
			hs.h.End(n, result(err), nil)
			continue
		case robustness.Unknown:
			if !hs.sleep(u.Renew) {
				return
			}
			continue
		}
		leadUntil := hs.h.Now() + u.Lead
		for r == robustness.Ok && hs.h.Now() < leadUntil {
			if !hs.sleep(u.Renew) {
				return
			}
			if !u.Storm {
				n := hs.h.Begin(op(robustness.OpCheck))
				token, err := mgr.CheckLeadershipContext(hs.ctx, u.App, u.Unit)
				if hs.ctx.Err() != nil {
					return
				}
				hs.h.End(n, result(err), func(o *robustness.Op) {
					if err == nil {
						o.Fence = token.Fence()
					}
				})
				if err == nil && !hs.write(ctrl, u, token) {
					return
				}
			}
			if r, ok = claim(); !ok {
				return
			}
		}
		if u.Release && r == robustness.Ok {
			n := hs.h.Begin(op(robustness.OpRelease))
			err := mgr.ReleaseLeadershipContext(hs.ctx, u.App, u.Unit)
			if hs.ctx.Err() != nil {
				return
			}
			hs.h.End(n, result(err), nil)
		}
		if !hs.sleep(u.Rest) {
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
func (hs *harness) write(ctrl *controller, u robustness.UnitPlan, token leaseexpiry.Token) bool {
	model := hs.models[u.Model].Id()
	n := hs.h.Begin(robustness.Op{Kind: robustness.OpWrite, Ctrl: u.Ctrl, Model: model, Lease: u.App, Unit: u.Unit, Fence: token.Fence()})
	_, err := leaseexpiry.UpdateGuarded(hs.ctx, ctrl.resources, token,
		bson.D{{Key: "_id", Value: model + "/" + u.App}},
		bson.D{{Key: "$push", Value: bson.D{{Key: "log", Value: bson.D{{Key: "unit", Value: u.Unit}, {Key: "fence", Value: token.Fence()}}}}}},
		true)
	if hs.ctx.Err() != nil {
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
	n := hs.h.Begin(robustness.Op{Kind: robustness.OpFault, Ctrl: f.Ctrl, Fault: f.Kind})
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
		for _, c := range hs.ctrls {
			c.proxy.SetDelay(f.Delay)
		}
		hs.sleep(f.For)
		for _, c := range hs.ctrls {
			c.proxy.SetDelay(0)
		}
	case robustness.FaultControllerPause:
		hs.ctrls[f.Ctrl].proxy.SetHold(time.Hour)
		hs.sleep(f.For)
		hs.ctrls[f.Ctrl].proxy.SetHold(0)
	case robustness.FaultClockStep:
		clocks := []*agenttest.SkewClock{hs.ctrls[f.Ctrl].clocks[f.Clock]}
		if f.Clock == robustness.ClockController {
			clocks = slices.Collect(maps.Values(hs.ctrls[f.Ctrl].clocks))
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
	}
	hs.h.End(n, robustness.Ok, func(o *robustness.Op) { o.Note = note })
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
		for _, c := range hs.ctrls {
			counts[fmt.Sprintf("keys c%d", c.id)] = int(c.keys.Load())
			counts[fmt.Sprintf("log c%d", c.id)] = int(c.logEntries.Load())
		}
		now := hs.h.Now()
		hs.h.Add(robustness.Op{Kind: robustness.OpSample, Ctrl: -1, Call: now, Return: now, Result: robustness.Ok, Counts: counts})
	}
}
