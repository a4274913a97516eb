package presence_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/watcher"
)

// controllerSuite runs one controller set and many model sets in real
// dependency engines: the controller's, and a nested engine per model, as
// juju runs them.
type controllerSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&controllerSuite{})

const hostedModels = 50

func hostedModel(i int) names.ModelTag {
	return names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i))
}

func agentOf(i int) string {
	return fmt.Sprintf("machine-%d", i)
}

// modelWatcher is a model's watcher as its consumer got it, with the
// controller's batcher.
type modelWatcher struct {
	model   int
	w       *watcher.Watcher
	batcher *pingbatcher.PingBatcher
}

// hostedModels returns a list of hostedModels models and a model host
// over it, whose model i keeps agentOf(i) alive and whose consumers send
// their watcher to watchers once the agent is up.
func hostModels(watchers chan<- modelWatcher) (*presence.ModelList, dependency.Manifold) {
	index := make(map[names.ModelTag]int, hostedModels)
	list := presence.NewModelList()
	for i := 0; i < hostedModels; i++ {
		index[hostedModel(i)] = i
		list.Add(hostedModel(i))
	}
	return list, presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database",
		Models:       list,
		EngineConfig: func(names.ModelTag) dependency.EngineConfig { return agenttest.EngineConfig(nil) },
		Model: func(model names.ModelTag) presence.ModelManifoldsConfig {
			return presence.ModelManifoldsConfig{AgentKey: agentOf(index[model]), Period: 30 * time.Second}
		},
		Manifolds: func(model names.ModelTag) dependency.Manifolds {
			return dependency.Manifolds{"consumer": consumerManifold(index[model], watchers)}
		},
	})
}

// consumerManifold sends model i's watcher to watchers once the agent has
// started too: its start flushes and loads, which must not land in a
// window the test counts.
func consumerManifold(i int, watchers chan<- modelWatcher) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{presence.WatcherName, presence.AgentName, presence.PingBatcherName},
		Start: func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
			mw := modelWatcher{model: i}
			if err := getter.Get(presence.WatcherName, &mw.w); err != nil {
				return nil, errors.Trace(err)
			}
			if err := getter.Get(presence.PingBatcherName, &mw.batcher); err != nil {
				return nil, errors.Trace(err)
			}
			if err := getter.Get(presence.AgentName, nil); err != nil {
				return nil, errors.Trace(err)
			}
			select {
			case watchers <- mw:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

// collect waits for a watcher from every model and returns them by model,
// with the controller's batcher.
func collect(c *gc.C, watchers <-chan modelWatcher) ([]*watcher.Watcher, *pingbatcher.PingBatcher) {
	out := make([]*watcher.Watcher, hostedModels)
	var batcher *pingbatcher.PingBatcher
	for n := 0; n < hostedModels; {
		select {
		case mw := <-watchers:
			if out[mw.model] == nil {
				n++
			}
			out[mw.model] = mw.w
			batcher = mw.batcher
		case <-time.After(agenttest.LongWait):
			c.Fatalf("only %d of %d models' watchers started", n, hostedModels)
		}
	}
	return out, batcher
}

// waitAllAlive flushes and loads until every model's own agent reads
// alive: the pingers start with their engines, at their own pace.
func waitAllAlive(c *gc.C, b *pingbatcher.PingBatcher, ws []*watcher.Watcher) {
	c.Assert(agenttest.Retry(agenttest.LongWait, func() error {
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(ws[0].Refresh(), gc.IsNil)
		missing := 0
		for i, w := range ws {
			if alive, err := w.Alive(agentOf(i)); err != nil || !alive {
				missing++
			}
		}
		if missing > 0 {
			return errors.Errorf("%d agents not alive", missing)
		}
		return nil
	}), gc.IsNil)
}

// deathWatch holds a subscription per model to its agent's key and, in
// model 0, to a probe key as well: the probe dies on purpose, so that a
// subscription that stopped reporting cannot pass for one that saw no
// death.
type deathWatch struct {
	subs []watcher.Subscription
}

func watchForDeaths(c *gc.C, ws []*watcher.Watcher, probe string) *deathWatch {
	dw := &deathWatch{}
	for i, w := range ws {
		keys := []string{agentOf(i)}
		if i == 0 {
			keys = append(keys, probe)
		}
		sub := w.Subscribe(keys...)
		dw.subs = append(dw.subs, sub)
		var want []watcher.Change
		for _, key := range keys {
			want = append(want, watcher.Change{Key: key, Alive: true})
		}
		ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
		snapshot, err := sub.Next(ctx)
		cancel()
		c.Assert(err, gc.IsNil)
		slices.SortFunc(snapshot, func(a, b watcher.Change) int { return strings.Compare(a.Key, b.Key) })
		c.Assert(snapshot, gc.DeepEquals, want)
	}
	return dw
}

// checkNoDeath fails on any change a subscription reports, and on a
// subscription that fails instead of waiting for one.
func (dw *deathWatch) checkNoDeath(c *gc.C) {
	for i, sub := range dw.subs {
		ctx, cancel := context.WithTimeout(context.Background(), agenttest.ShortWait)
		changes, err := sub.Next(ctx)
		cancel()
		switch {
		case err == nil:
			c.Errorf("model %d: unexpected changes %v", i, changes)
		case !errors.Is(err, context.DeadlineExceeded):
			c.Errorf("model %d: subscription failed: %v", i, err)
		}
	}
}

// checkProbeDeath disconnects probe, the pinger of model 0's probe key,
// and requires model 0's subscription to report that death alone.
func (dw *deathWatch) checkProbeDeath(c *gc.C, probe *pinger.Pinger, b *pingbatcher.PingBatcher, w *watcher.Watcher) {
	c.Assert(probe.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	changes, err := dw.subs[0].Next(ctx)
	c.Assert(err, gc.IsNil)
	c.Assert(changes, gc.DeepEquals, []watcher.Change{{Key: probeKey, Alive: false}})
}

func (dw *deathWatch) close() {
	for _, sub := range dw.subs {
		sub.Close()
	}
}

// probeKey is the key of model 0 that a test kills on purpose.
const probeKey = "unit-probe-0"

// startProbe starts a pinger of probeKey in model 0 through b, and waits
// until w's reader has loaded it alive.
func (s *controllerSuite) startProbe(c *gc.C, clk clock.Clock, b *pingbatcher.PingBatcher, w *watcher.Watcher) *pinger.Pinger {
	p, err := pinger.New(pinger.Config{
		Base: s.DB.Collection("presence"), Model: hostedModel(0), Key: probeKey, Clock: clk, Period: 30 * time.Second,
		Recorder: func() pinger.PingRecorder { return b },
	})
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	return p
}

func (s *controllerSuite) TestOneControllerSetServesFiftyModelSets(c *gc.C) {
	defer goleak.VerifyNone(c, goleak.IgnoreCurrent())
	var counter agenttest.CommandCounter
	engine, err := dependency.NewEngine(agenttest.EngineConfig(nil))
	c.Assert(err, gc.IsNil)
	clk := agenttest.NewClock()
	manifolds := presence.ControllerManifolds(presence.ControllerManifoldsConfig{
		DatabaseName: "database",
		Clock:        clk,
		Period:       30 * time.Second,
		// Flushes and loads are asked for by the test.
		FlushInterval: time.Hour,
		SyncInterval:  time.Hour,
		PruneInterval: time.Hour,
	})
	databases := make(chan *bounceable, 2)
	manifolds["database"] = bounceManifold(presence.DatabaseManifold(s.Server.URI(), s.DB.Name(),
		options.Client().SetServerSelectionTimeout(5*time.Second), counter.Options()), databases)
	watchers := make(chan modelWatcher, hostedModels)
	models, host := hostModels(watchers)
	manifolds["host"] = host
	c.Assert(dependency.Install(engine, manifolds), gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), engine)

	first, batcher := collect(c, watchers)
	waitAllAlive(c, batcher, first)

	// Each model sees its own agents only.
	for i, w := range first {
		alive, err := w.Alive(agentOf((i + 1) % hostedModels))
		c.Assert(err, gc.IsNil)
		c.Assert(alive, gc.Equals, false)
		c.Assert(w.Report()["keys"], gc.Equals, 1)
	}

	// However many models, a flush is one write and a load one read. The
	// flush of a key coming up wakes the controller's reader: its
	// watchers see the key with no sync of theirs, and no clock moving.
	id, err := batcher.Register(s.DB.Collection("presence"), hostedModel(0), "unit-0")
	c.Assert(err, gc.IsNil)
	counter.Reset()
	c.Assert(batcher.Ping(id, schema.Slot(clk.Now(), 30*time.Second)), gc.IsNil)
	c.Assert(batcher.Sync(), gc.IsNil)
	agenttest.WaitFor(c, agenttest.LongWait, "unit-0 seen alive", func() bool {
		alive, err := first[0].Alive("unit-0")
		c.Assert(err, gc.IsNil)
		return alive
	})
	// One write of the ping document and the notice that tells other
	// controllers; one read of the ping documents (the notices cursor's
	// getMores wait for news, and the reader skips its own batcher's).
	c.Assert(counter.Writes(), gc.Equals, 2)
	c.Assert(counter.CountOn("insert", "presence.notices"), gc.Equals, 1)
	c.Assert(counter.CountOn("find", "presence.pings"), gc.Equals, 1)

	// Bouncing the database restarts everything, with no false death;
	// the subscriptions that saw none do see the probe's deliberate one.
	(<-databases).bounce()
	second, batcher := collect(c, watchers)
	for i, w := range second {
		c.Assert(w != first[i], gc.Equals, true)
	}
	probe := s.startProbe(c, clk, batcher, second[0])
	defer workertest.CleanKill(agenttest.C(c), probe)
	deaths := watchForDeaths(c, second, probeKey)
	defer deaths.close()
	waitAllAlive(c, batcher, second)
	c.Assert(second[0].Refresh(), gc.IsNil)
	deaths.checkNoDeath(c)
	deaths.checkProbeDeath(c, probe, batcher, second[0])

	// Removing one model's set leaves the others running and alive.
	models.Remove(hostedModel(3))
	select {
	case <-second[3].Dead():
	case <-time.After(agenttest.LongWait):
		c.Fatalf("model 3's watcher still runs")
	}
	c.Assert(batcher.Sync(), gc.IsNil)
	c.Assert(second[0].Refresh(), gc.IsNil)
	for i, w := range second {
		if i == 3 {
			continue
		}
		select {
		case <-w.Dead():
			c.Fatalf("model %d's watcher stopped", i)
		default:
		}
		alive, err := w.Alive(agentOf(i))
		c.Assert(err, gc.IsNil)
		c.Assert(alive, gc.Equals, true)
	}
}

func (s *controllerSuite) TestControllerOutputsNeedEveryOutput(c *gc.C) {
	valid := presence.ControllerOutputs{
		DatabaseName: "database",
		Database:     s.DB,
		Clock:        agenttest.NewClock(),
		PingBatcher:  pingbatcher.NewDeadPingBatcher(errors.New("dead")),
		Reader:       &presencereader.Reader{},
		LeaseStore:   &leasestore.Store{},
	}
	c.Assert(valid.Validate(), gc.IsNil)
	for i, t := range []struct {
		mutate func(*presence.ControllerOutputs)
		err    string
	}{
		{func(o *presence.ControllerOutputs) { o.DatabaseName = "" }, "empty DatabaseName not valid"},
		{func(o *presence.ControllerOutputs) { o.Database = nil }, "nil Database not valid"},
		{func(o *presence.ControllerOutputs) { o.Clock = nil }, "nil Clock not valid"},
		{func(o *presence.ControllerOutputs) { o.PingBatcher = nil }, "nil PingBatcher not valid"},
		{func(o *presence.ControllerOutputs) { o.Reader = nil }, "nil Reader not valid"},
		{func(o *presence.ControllerOutputs) { o.LeaseStore = nil }, "nil LeaseStore not valid"},
	} {
		c.Logf("case %d", i)
		o := valid
		t.mutate(&o)
		c.Check(o.Validate(), gc.ErrorMatches, t.err)
		for name, m := range o.Manifolds() {
			_, err := m.Start(context.Background(), agenttest.StubGetter(nil))
			c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%q", name))
		}
	}
}

func (s *controllerSuite) TestControllerOutputsFillInterfacesAndStopWithTheirWorker(c *gc.C) {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.DB.Collection("presence"), Clock: agenttest.NewClock()})
	c.Assert(err, gc.IsNil)
	o := presence.ControllerOutputs{
		DatabaseName: "database", Database: s.DB, Clock: agenttest.NewClock(),
		PingBatcher: b, Reader: &presencereader.Reader{}, LeaseStore: &leasestore.Store{},
	}
	m := o.Manifolds()[presence.PingBatcherName]
	w, err := m.Start(context.Background(), agenttest.StubGetter(nil))
	c.Assert(err, gc.IsNil)
	var recorder presence.Batcher
	c.Assert(m.Output(w, &recorder), gc.IsNil)
	c.Assert(recorder, gc.Equals, presence.Batcher(b))
	var wrong *mongo.Database
	c.Assert(m.Output(w, &wrong), gc.ErrorMatches, `expected a pointer to \*pingbatcher.PingBatcher .*, got \*\*mongo.Database`)

	workertest.CleanKill(agenttest.C(c), b)
	c.Assert(w.Wait(), gc.Equals, presence.ErrControllerWorkerStopped)
}
