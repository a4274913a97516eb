package presencereader_test

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/presencereader"
)

type manifoldSuite struct {
	db      *mongo.Database
	clock   clock.Clock
	config  presencereader.ManifoldConfig
	started []presencereader.Config
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(presencereader.Config) (worker.Worker, error) = presencereader.NewWorker

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.db = client.Database("test")
	s.clock = agenttest.NewClock()
	s.started = nil
	s.config = presencereader.ManifoldConfig{
		ClockName:    "clock",
		DatabaseName: "database",
		Collection:   "presence",
		Period:       time.Minute,
		SyncInterval: 2 * time.Second,
		LogLength:    500,
		LogAge:       time.Minute,
		NewWorker: func(config presencereader.Config) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"clock": s.clock, "database": s.db}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(presencereader.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock", "database"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, presencereader.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[presencereader.ManifoldConfig]{
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.ClockName = "" }, Err: "empty ClockName not valid"},
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.DatabaseName = "" }, Err: "empty DatabaseName not valid"},
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.Period = -1 }, Err: "negative Period not valid"},
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.SyncInterval = -1 }, Err: "negative SyncInterval not valid"},
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.LogLength = -1 }, Err: "negative LogLength not valid"},
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.LogAge = -1 }, Err: "negative LogAge not valid"},
		{Mutate: func(cfg *presencereader.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, presencereader.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	w, err := presencereader.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.HasLen, 1)
	got := s.started[0]
	c.Assert(got.Base.Name(), gc.Equals, "presence")
	got.Base = nil
	c.Assert(got, gc.DeepEquals, presencereader.Config{
		Clock: s.clock, Period: time.Minute, SyncInterval: 2 * time.Second, LogLength: 500, LogAge: time.Minute,
	})
}

func (s *manifoldSuite) TestOutput(c *gc.C) {
	r := &presencereader.Reader{}
	output := presencereader.Manifold(s.config).Output
	var got *presencereader.Reader
	c.Assert(output(r, &got), gc.IsNil)
	c.Assert(got, gc.Equals, r)
	var wrong *int
	c.Assert(output(r, &wrong), gc.ErrorMatches, `expected \*\*presencereader.Reader or a pointer to an interface it implements, got \*\*int`)
	c.Assert(output(workertest.NewErrorWorker(nil), &got), gc.ErrorMatches, `expected \*presencereader.Reader, got .*`)
}

func (s *manifoldSuite) TestConfigValidation(c *gc.C) {
	valid := presencereader.Config{Base: s.db.Collection("presence"), Clock: s.clock}
	for i, t := range []struct {
		mutate func(*presencereader.Config)
		err    string
	}{
		{func(cfg *presencereader.Config) { cfg.Base = nil }, "nil Base not valid"},
		{func(cfg *presencereader.Config) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *presencereader.Config) { cfg.Period = -1 }, "negative Period not valid"},
		{func(cfg *presencereader.Config) { cfg.SyncInterval = -1 }, "negative SyncInterval not valid"},
		{func(cfg *presencereader.Config) { cfg.MaxStall = -1 }, "negative MaxStall not valid"},
		{func(cfg *presencereader.Config) { cfg.LogLength = -1 }, "negative LogLength not valid"},
		{func(cfg *presencereader.Config) { cfg.LogAge = -1 }, "negative LogAge not valid"},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		r, err := presencereader.New(cfg)
		c.Check(r, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
