package presence_test

import (
	"context"
	"sort"
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
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencerecorder"
	"github.com/presencekit/presence/worker/watcher"
)

// engineSuite runs the whole manifold set in a real dependency.Engine.
type engineSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&engineSuite{})

// outputs is what a consumer manifold got from the set.
type outputs struct {
	batcher  *pingbatcher.PingBatcher
	watcher  *watcher.Watcher
	manager  leaseexpiry.Manager
	recorder presencerecorder.Recorder
}

// consumer returns a manifold that depends on the set's outputs and sends
// them to got each time it starts.
func consumer(got chan<- outputs) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{presence.PingBatcherName, presence.WatcherName, presence.LeaseManagerName, presence.PresenceRecorderName},
		Start: func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
			var o outputs
			for name, out := range map[string]any{
				presence.PingBatcherName:      &o.batcher,
				presence.WatcherName:          &o.watcher,
				presence.LeaseManagerName:     &o.manager,
				presence.PresenceRecorderName: &o.recorder,
			} {
				if err := getter.Get(name, out); err != nil {
					return nil, errors.Trace(err)
				}
			}
			select {
			case got <- o:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *engineSuite) manifolds(c *gc.C, clk clock.Clock) dependency.Manifolds {
	manifolds := presence.Manifolds(presence.ManifoldsConfig{
		DatabaseName: "database",
		Model:        modelA,
		Clock:        clk,
		AgentKey:     "machine-0",
		APIServer:    true,
		Period:       30 * time.Second,
		// Flushes and syncs are asked for by the test.
		FlushInterval: time.Hour,
		SyncInterval:  time.Hour,
	})
	manifolds["database"] = presence.DatabaseManifold(s.Server.URI(), s.DB.Name(),
		options.Client().SetServerSelectionTimeout(5*time.Second))
	return manifolds
}

func next(c *gc.C, got <-chan outputs) outputs {
	select {
	case o := <-got:
		return o
	case <-time.After(agenttest.LongWait):
		c.Fatalf("the consumer did not start")
	}
	return outputs{}
}

func (s *engineSuite) TestManifoldsValidate(c *gc.C) {
	c.Assert(dependency.Validate(s.manifolds(c, agenttest.NewClock())), gc.IsNil)
}

func (s *engineSuite) TestEverythingStartsInOrderAndPresenceSurvivesADatabaseBounce(c *gc.C) {
	defer goleak.VerifyNone(c, goleak.IgnoreCurrent())
	clk := agenttest.NewClock()
	engine := agenttest.NewEngine(c)
	got := make(chan outputs, 1)
	databases := make(chan *bounceable, 2)
	manifolds := s.manifolds(c, clk)
	manifolds["database"] = bounceManifold(manifolds["database"], databases)
	for name, m := range manifolds {
		c.Assert(engine.Install(name, m), gc.IsNil)
	}
	c.Assert(engine.Install("consumer", consumer(got)), gc.IsNil)

	first := next(c, got)
	c.Assert(first.recorder.IsEnabled(), gc.Equals, true)
	c.Assert(first.batcher.Sync(), gc.IsNil)
	c.Assert(first.watcher.Refresh(), gc.IsNil)
	alive, err := first.watcher.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	c.Assert(first.manager.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)

	// Bounce the database: every dependent restarts on the new one.
	(<-databases).bounce()
	second := next(c, got)
	c.Assert(second.watcher != first.watcher, gc.Equals, true)
	c.Assert(second.batcher != first.batcher, gc.Equals, true)

	// The new watcher sees the agent alive before the new batcher has
	// written anything, and after.
	c.Assert(second.watcher.Refresh(), gc.IsNil)
	alive, err = second.watcher.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	c.Assert(second.batcher.Sync(), gc.IsNil)
	c.Assert(second.watcher.Refresh(), gc.IsNil)
	alive, err = second.watcher.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)

	// Leadership outlives the restart.
	token, err := second.manager.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(token.Fence(), gc.Equals, int64(1))

	workertest.CleanKill(agenttest.C(c), engine)
}

func (s *engineSuite) TestInvalidConfigFailsEveryStart(c *gc.C) {
	manifolds := presence.Manifolds(presence.ManifoldsConfig{DatabaseName: "database", Model: modelA})
	getter := agenttest.StubGetter(map[string]any{"database": s.DB, presence.ClockName: agenttest.NewClock()})
	_, err := manifolds[presence.WatcherName].Start(context.Background(), getter)
	c.Assert(err, gc.ErrorMatches, "nil Clock and empty ClockName not valid")
	_, err = manifolds[presence.ClockName].Start(context.Background(), getter)
	c.Assert(err, gc.ErrorMatches, "nil Clock not valid")
}

func (s *engineSuite) TestManifoldsConfigValidation(c *gc.C) {
	valid := presence.ManifoldsConfig{DatabaseName: "database", Model: modelA, Clock: agenttest.NewClock()}
	c.Assert(valid.Validate(), gc.IsNil)
	for i, t := range []struct {
		mutate func(*presence.ManifoldsConfig)
		err    string
	}{
		{func(cfg *presence.ManifoldsConfig) { cfg.DatabaseName = "" }, "empty DatabaseName not valid"},
		{func(cfg *presence.ManifoldsConfig) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *presence.ManifoldsConfig) { cfg.Clock = nil }, "nil Clock and empty ClockName not valid"},
		{func(cfg *presence.ManifoldsConfig) { cfg.AgentKey = "\xff" }, `AgentKey: key .* not valid`},
		{func(cfg *presence.ManifoldsConfig) { cfg.FlushInterval = -1 }, "negative FlushInterval not valid"},
		{func(cfg *presence.ManifoldsConfig) { cfg.Period = -1 }, "negative Period not valid"},
		{func(cfg *presence.ManifoldsConfig) { cfg.SyncInterval = -1 }, "negative SyncInterval not valid"},
		{func(cfg *presence.ManifoldsConfig) { cfg.PruneInterval = -1 }, "negative PruneInterval not valid"},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		err := cfg.Validate()
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}

func (s *engineSuite) TestManifoldsNamesAndPrefix(c *gc.C) {
	config := presence.ManifoldsConfig{DatabaseName: "database", Model: modelA, Clock: agenttest.NewClock()}
	c.Assert(keys(presence.Manifolds(config)), gc.DeepEquals, []string{
		presence.ClockName, presence.LeaseManagerName, presence.LeaseStoreName, presence.PingBatcherName,
		presence.PrunerName, presence.ReaderName, presence.PresenceRecorderName, presence.WatcherName,
	})
	config.AgentKey = "machine-0"
	config.Prefix = "m1-"
	manifolds := presence.Manifolds(config)
	c.Assert(manifolds, gc.HasLen, 10)
	c.Assert(manifolds["m1-"+presence.AgentName].Inputs, gc.DeepEquals, []string{
		"m1-" + presence.ClockName, "database", "m1-" + presence.PingBatcherName, "m1-" + presence.WatcherName, "m1-" + presence.PingerName,
	})
	c.Assert(manifolds["m1-"+presence.LeaseManagerName].Inputs, gc.DeepEquals,
		[]string{"m1-" + presence.ClockName, "m1-" + presence.LeaseStoreName})
	c.Assert(manifolds["m1-"+presence.PingerName].Inputs, gc.DeepEquals,
		[]string{"m1-" + presence.ClockName, "database", "m1-" + presence.PingBatcherName})
}

func (s *engineSuite) TestAConsumerOfTheAgentSeesItAliveAtFirstLook(c *gc.C) {
	clk := agenttest.NewClock()
	engine := agenttest.NewEngine(c)
	defer workertest.CleanKill(agenttest.C(c), engine)
	manifolds := s.manifolds(c, nil)
	// The engine's own clock: the set adds none and uses this one.
	manifolds["clock"] = agenttest.ValueManifold(clock.Clock(clk))
	for name, m := range presence.Manifolds(presence.ManifoldsConfig{
		DatabaseName: "database", ClockName: "clock", Model: modelA, AgentKey: "machine-0",
		FlushInterval: time.Hour, SyncInterval: time.Hour,
	}) {
		manifolds[name] = m
	}
	for name, m := range manifolds {
		c.Assert(engine.Install(name, m), gc.IsNil)
	}
	// The consumer names the agent, so it starts once the agent runs,
	// and before any flush or sync of the set's own schedule.
	var agent presence.Agent
	c.Assert(agenttest.EngineOutput(engine, presence.AgentName, &agent, agenttest.LongWait), gc.IsNil)
	var w watcher.PresenceWatcher
	c.Assert(agenttest.EngineOutput(engine, presence.WatcherName, &w, agenttest.LongWait), gc.IsNil)
	alive, err := agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	alive, err = w.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
}

func (s *engineSuite) TestClockNameUsesTheEnginesClockAndAddsNone(c *gc.C) {
	config := presence.ManifoldsConfig{DatabaseName: "database", ClockName: "clock", Model: modelA, AgentKey: "machine-0", Prefix: "p-"}
	c.Assert(config.Validate(), gc.IsNil)
	manifolds := presence.Manifolds(config)
	_, ours := manifolds["p-"+presence.ClockName]
	c.Assert(ours, gc.Equals, false)
	for name, m := range manifolds {
		for _, input := range m.Inputs {
			c.Check(input == "p-"+presence.ClockName, gc.Equals, false, gc.Commentf("%s reads our clock", name))
		}
		if name != "p-"+presence.WatcherName {
			c.Check(m.Inputs[0], gc.Equals, "clock", gc.Commentf("%s", name))
		}
	}
}

func (s *engineSuite) TestDatabaseManifoldOutputsTheDatabase(c *gc.C) {
	m := presence.DatabaseManifold(s.Server.URI(), "somedb")
	w, err := m.Start(context.Background(), agenttest.StubGetter(nil))
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	var db *mongo.Database
	c.Assert(m.Output(w, &db), gc.IsNil)
	c.Assert(db.Name(), gc.Equals, "somedb")
	var wrong *int
	c.Assert(m.Output(w, &wrong), gc.ErrorMatches, `expected \*\*mongo.Database, got \*\*int`)
}

func (s *engineSuite) TestDatabaseManifoldFailsWithoutAServer(c *gc.C) {
	m := presence.DatabaseManifold("mongodb://127.0.0.1:1", "db", options.Client().SetServerSelectionTimeout(100*time.Millisecond))
	_, err := m.Start(context.Background(), agenttest.StubGetter(nil))
	c.Assert(err, gc.ErrorMatches, "cannot reach MongoDB: .*")
	_, err = presence.DatabaseManifold("", "db").Start(context.Background(), agenttest.StubGetter(nil))
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}

func keys(m dependency.Manifolds) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// bounceable is a worker that the test can make stop with
// dependency.ErrBounce, as a database that went away would.
type bounceable struct {
	worker.Worker
	bounced chan struct{}
}

func (b *bounceable) bounce() {
	close(b.bounced)
	b.Kill()
}

// Wait is part of the worker.Worker interface.
func (b *bounceable) Wait() error {
	err := b.Worker.Wait()
	select {
	case <-b.bounced:
		return dependency.ErrBounce
	default:
		return err
	}
}

func bounceManifold(inner dependency.Manifold, started chan<- *bounceable) dependency.Manifold {
	outer := inner
	outer.Start = func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
		w, err := inner.Start(ctx, getter)
		if err != nil {
			return nil, err
		}
		b := &bounceable{Worker: w, bounced: make(chan struct{})}
		started <- b
		return b, nil
	}
	outer.Output = func(in worker.Worker, out any) error {
		return inner.Output(in.(*bounceable).Worker, out)
	}
	return outer
}

func (s *engineSuite) TestControllerManifoldsNamesAndValidation(c *gc.C) {
	config := presence.ControllerManifoldsConfig{DatabaseName: "database", Clock: agenttest.NewClock(), Prefix: "c-"}
	c.Assert(keys(presence.ControllerManifolds(config)), gc.DeepEquals, []string{
		"c-" + presence.ClockName, "c-" + presence.LeaseStoreName, "c-" + presence.PingBatcherName,
		"c-" + presence.PrunerName, "c-" + presence.ReaderName,
	})
	c.Assert(config.Validate(), gc.IsNil)
	for i, t := range []struct {
		mutate func(*presence.ControllerManifoldsConfig)
		err    string
	}{
		{func(cfg *presence.ControllerManifoldsConfig) { cfg.DatabaseName = "" }, "empty DatabaseName not valid"},
		{func(cfg *presence.ControllerManifoldsConfig) { cfg.Clock = nil }, "nil Clock and empty ClockName not valid"},
		{func(cfg *presence.ControllerManifoldsConfig) { cfg.FlushInterval = -1 }, "negative FlushInterval not valid"},
		{func(cfg *presence.ControllerManifoldsConfig) { cfg.Period = -1 }, "negative Period not valid"},
		{func(cfg *presence.ControllerManifoldsConfig) { cfg.SyncInterval = -1 }, "negative SyncInterval not valid"},
		{func(cfg *presence.ControllerManifoldsConfig) { cfg.PruneInterval = -1 }, "negative PruneInterval not valid"},
	} {
		c.Logf("case %d", i)
		cfg := config
		t.mutate(&cfg)
		c.Check(cfg.Validate(), gc.ErrorMatches, t.err)
		_, err := presence.ControllerManifolds(cfg)["c-"+presence.ReaderName].Start(context.Background(), agenttest.StubGetter(nil))
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}

func (s *engineSuite) TestModelManifoldsStandOnTheControllerSet(c *gc.C) {
	config := presence.ModelManifoldsConfig{
		ControllerPrefix: "c-", DatabaseName: "database", Model: modelA, Prefix: "m-", AgentKey: "machine-0",
	}
	manifolds := presence.ModelManifolds(config)
	c.Assert(keys(manifolds), gc.DeepEquals, []string{
		"m-" + presence.AgentName, "m-" + presence.LeaseManagerName, "m-" + presence.PingerName, "m-" + presence.PresenceRecorderName, "m-" + presence.WatcherName,
	})
	c.Assert(manifolds["m-"+presence.WatcherName].Inputs, gc.DeepEquals, []string{"c-" + presence.ReaderName})
	c.Assert(manifolds["m-"+presence.LeaseManagerName].Inputs, gc.DeepEquals,
		[]string{"c-" + presence.ClockName, "c-" + presence.LeaseStoreName})
	c.Assert(manifolds["m-"+presence.PingerName].Inputs, gc.DeepEquals,
		[]string{"c-" + presence.ClockName, "database", "c-" + presence.PingBatcherName})
	c.Assert(config.Validate(), gc.IsNil)
	for i, t := range []struct {
		mutate func(*presence.ModelManifoldsConfig)
		err    string
	}{
		{func(cfg *presence.ModelManifoldsConfig) { cfg.DatabaseName = "" }, "empty DatabaseName not valid"},
		{func(cfg *presence.ModelManifoldsConfig) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *presence.ModelManifoldsConfig) { cfg.AgentKey = "\xff" }, `AgentKey: key .* not valid`},
		{func(cfg *presence.ModelManifoldsConfig) { cfg.Period = -1 }, "negative Period not valid"},
	} {
		c.Logf("case %d", i)
		cfg := config
		t.mutate(&cfg)
		c.Check(cfg.Validate(), gc.ErrorMatches, t.err)
		_, err := presence.ModelManifolds(cfg)["m-"+presence.WatcherName].Start(context.Background(), agenttest.StubGetter(nil))
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
