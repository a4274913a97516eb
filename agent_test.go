package presence_test

import (
	"context"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/watcher"
)

const never = 24 * time.Hour

var (
	modelA = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")
	modelB = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")
)

type agentSuite struct {
	agenttest.MongoSuite
	clock   *testclock.Clock
	base    *mongo.Collection
	batcher *pingbatcher.PingBatcher
	watcher *watcher.Watcher
}

var _ = gc.Suite(&agentSuite{})

func (s *agentSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.base = s.DB.Collection("presence")
	var err error
	s.batcher, err = pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: never, Clock: s.clock})
	c.Assert(err, gc.IsNil)
	s.watcher, err = watcher.New(watcher.Config{Base: s.base, Model: modelA, Clock: s.clock, SyncInterval: never})
	c.Assert(err, gc.IsNil)
}

func (s *agentSuite) TearDownTest(c *gc.C) {
	workertest.CleanKill(agenttest.C(c), s.watcher)
	workertest.CleanKill(agenttest.C(c), s.batcher)
	s.MongoSuite.TearDownTest(c)
}

func (s *agentSuite) newAgent(c *gc.C, key string) *presence.PresenceAgent {
	agent, err := presence.NewAgent(presence.AgentConfig{
		Key: key, Model: modelA, Base: s.base, Batcher: s.batcher, Watcher: s.watcher, Clock: s.clock,
	})
	c.Assert(err, gc.IsNil)
	return agent
}

func (s *agentSuite) TestSetAgentPresenceMakesTheAgentAlive(c *gc.C) {
	agent := s.newAgent(c, "unit-mysql-0")
	alive, err := agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)

	p, err := agent.SetAgentPresence()
	c.Assert(err, gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	alive, err = agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
}

func (s *agentSuite) TestDisconnectMakesTheAgentDead(c *gc.C) {
	agent := s.newAgent(c, "unit-mysql-0")
	p, err := agent.SetAgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(p.Disconnect(), gc.IsNil)
	c.Assert(s.batcher.Sync(), gc.IsNil)
	c.Assert(s.watcher.Refresh(), gc.IsNil)
	alive, err := agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)
}

func (s *agentSuite) TestWaitAgentPresenceReturnsOnceAlive(c *gc.C) {
	agent := s.newAgent(c, "unit-mysql-0")
	done := make(chan error, 1)
	go func() { done <- agent.WaitAgentPresence(time.Minute) }()
	// Wait until the waiter's timer is set: it is subscribed by then.
	agenttest.WaitTimers(c, s.clock, 3)
	p, err := agent.SetAgentPresence()
	c.Assert(err, gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("WaitAgentPresence did not return")
	}
}

func (s *agentSuite) TestWaitAgentPresenceTimesOut(c *gc.C) {
	agent := s.newAgent(c, "unit-mysql-0")
	done := make(chan error, 1)
	go func() { done <- agent.WaitAgentPresence(time.Minute) }()
	// The batcher's, the watcher's and the waiter's timers.
	agenttest.WaitAdvance(c, s.clock, time.Minute, 3)
	select {
	case err := <-done:
		c.Assert(errors.Is(err, errors.Timeout), gc.Equals, true, gc.Commentf("%v", err))
		c.Assert(err, gc.ErrorMatches, `waiting for presence of "unit-mysql-0" after 1m0s timeout`)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("WaitAgentPresence did not time out")
	}
}

func (s *agentSuite) TestWaitAgentPresenceFailsWhenTheWatcherStops(c *gc.C) {
	agent := s.newAgent(c, "unit-mysql-0")
	done := make(chan error, 1)
	go func() { done <- agent.WaitAgentPresence(time.Minute) }()
	agenttest.WaitTimers(c, s.clock, 3)
	s.watcher.Kill()
	select {
	case err := <-done:
		c.Assert(errors.Is(err, watcher.ErrStopped), gc.Equals, true, gc.Commentf("%v", err))
	case <-time.After(agenttest.LongWait):
		c.Fatalf("WaitAgentPresence did not return")
	}
}

func (s *agentSuite) TestNewAgentValidatesItsConfig(c *gc.C) {
	valid := presence.AgentConfig{Key: "k", Model: modelA, Base: s.base, Batcher: s.batcher, Watcher: s.watcher, Clock: s.clock}
	for i, t := range []struct {
		mutate func(*presence.AgentConfig)
		err    string
	}{
		{func(cfg *presence.AgentConfig) { cfg.Key = "" }, "empty key not valid"},
		{func(cfg *presence.AgentConfig) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *presence.AgentConfig) { cfg.Batcher = nil }, "nil Batcher not valid"},
		{func(cfg *presence.AgentConfig) { cfg.Watcher = nil }, "nil Watcher not valid"},
		{func(cfg *presence.AgentConfig) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *presence.AgentConfig) { cfg.Period = -1 }, "negative Period not valid"},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		_, err := presence.NewAgent(cfg)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
	c.Assert(errors.Is(s.newAgent(c, "k").WaitAgentPresence(0), errors.NotValid), gc.Equals, true)
}

func (s *agentSuite) TestRemovePresenceForModelLeavesSharedDocumentsAlone(c *gc.C) {
	for _, model := range []names.ModelTag{modelA, modelB} {
		id, err := s.batcher.Register(s.base, model, "k")
		c.Assert(err, gc.IsNil)
		c.Assert(s.batcher.Ping(id, schema.Slot(s.clock.Now(), schema.DefaultPeriod)), gc.IsNil)
	}
	c.Assert(s.batcher.Sync(), gc.IsNil)
	c.Assert(presence.RemovePresenceForModel(context.Background(), s.base, modelA), gc.IsNil)
	ctx := context.Background()
	for _, coll := range []*mongo.Collection{schema.Pings(s.base), schema.Beings(s.base)} {
		n, err := coll.CountDocuments(ctx, bson.D{})
		c.Assert(err, gc.IsNil)
		c.Assert(n, gc.Equals, int64(1), gc.Commentf("%s", coll.Name()))
	}
}

func (s *agentSuite) TestRemovePresenceForModelRejectsBadInput(c *gc.C) {
	err := presence.RemovePresenceForModel(context.Background(), nil, modelA)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
	err = presence.RemovePresenceForModel(context.Background(), s.base, names.NewModelTag("x"))
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}

func (s *agentSuite) TestAgentWithoutPeriodUsesTheBatchersAndIsAlive(c *gc.C) {
	batcher, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: never, Clock: s.clock, Period: time.Second})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), batcher)
	w, err := watcher.New(watcher.Config{Base: s.base, Model: modelA, Clock: s.clock, SyncInterval: never, Period: time.Second})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	agent, err := presence.NewAgent(presence.AgentConfig{
		Key: "unit-mysql-0", Model: modelA, Base: s.base, Batcher: batcher, Watcher: w, Clock: s.clock,
	})
	c.Assert(err, gc.IsNil)
	p, err := agent.SetAgentPresence()
	c.Assert(err, gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	alive, err := agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
}

func (s *agentSuite) TestSetAgentPresenceRefusesAPeriodOtherThanTheBatchers(c *gc.C) {
	agent, err := presence.NewAgent(presence.AgentConfig{
		Key: "unit-mysql-0", Model: modelA, Base: s.base, Batcher: s.batcher, Watcher: s.watcher, Clock: s.clock,
		Period: time.Second,
	})
	c.Assert(err, gc.IsNil)
	p, err := agent.SetAgentPresence()
	c.Assert(p, gc.IsNil)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
	c.Assert(err, gc.ErrorMatches, `.*Period 1s for "unit-mysql-0": the ping recorder writes .* slots.*`)
}
