package pruner_test

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pruner"
)

type manifoldSuite struct {
	db      *mongo.Database
	clock   clock.Clock
	config  pruner.ManifoldConfig
	started []pruner.Config
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(pruner.Config) (worker.Worker, error) = pruner.NewWorker

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.db = client.Database("test")
	s.clock = agenttest.NewClock()
	s.started = nil
	s.config = pruner.ManifoldConfig{
		ClockName:    "clock",
		DatabaseName: "database",
		Interval:     time.Minute,
		Period:       time.Second,
		NewWorker: func(config pruner.Config) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"clock": s.clock, "database": s.db}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(pruner.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock", "database"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, pruner.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[pruner.ManifoldConfig]{
		{Mutate: func(cfg *pruner.ManifoldConfig) { cfg.ClockName = "" }, Err: "empty ClockName not valid"},
		{Mutate: func(cfg *pruner.ManifoldConfig) { cfg.DatabaseName = "" }, Err: "empty DatabaseName not valid"},
		{Mutate: func(cfg *pruner.ManifoldConfig) { cfg.Interval = -1 }, Err: "negative Interval not valid"},
		{Mutate: func(cfg *pruner.ManifoldConfig) { cfg.Period = -1 }, Err: "negative Period not valid"},
		{Mutate: func(cfg *pruner.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, pruner.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	w, err := pruner.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.HasLen, 1)
	got := s.started[0]
	c.Assert(got.Base.Name(), gc.Equals, "presence")
	got.Base = nil
	c.Assert(got, gc.DeepEquals, pruner.Config{Clock: s.clock, Interval: time.Minute, Period: time.Second})
}

func (s *manifoldSuite) TestHasNoOutput(c *gc.C) {
	c.Assert(pruner.Manifold(s.config).Output, gc.IsNil)
}
