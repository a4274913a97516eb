package pingbatcher_test

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	presence "github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

type manifoldSuite struct {
	db      *mongo.Database
	clock   clock.Clock
	config  pingbatcher.ManifoldConfig
	started []pingbatcher.Config
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(pingbatcher.Config) (worker.Worker, error) = pingbatcher.NewWorker

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.db = client.Database("test")
	s.clock = agenttest.NewClock()
	s.started = nil
	s.config = pingbatcher.ManifoldConfig{
		ClockName:     "clock",
		DatabaseName:  "database",
		Collection:    "presence",
		FlushInterval: 2 * time.Second,
		Period:        time.Minute,
		NewWorker: func(config pingbatcher.Config) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"clock": s.clock, "database": s.db}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(pingbatcher.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock", "database"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, pingbatcher.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[pingbatcher.ManifoldConfig]{
		{Mutate: func(cfg *pingbatcher.ManifoldConfig) { cfg.ClockName = "" }, Err: "empty ClockName not valid"},
		{Mutate: func(cfg *pingbatcher.ManifoldConfig) { cfg.DatabaseName = "" }, Err: "empty DatabaseName not valid"},
		{Mutate: func(cfg *pingbatcher.ManifoldConfig) { cfg.FlushInterval = -1 }, Err: "negative FlushInterval not valid"},
		{Mutate: func(cfg *pingbatcher.ManifoldConfig) { cfg.Period = -1 }, Err: "negative Period not valid"},
		{Mutate: func(cfg *pingbatcher.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, pingbatcher.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	w, err := pingbatcher.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.HasLen, 1)
	got := s.started[0]
	c.Assert(got.Base.Name(), gc.Equals, "presence")
	c.Assert(got.Base.Database().Name(), gc.Equals, "test")
	got.Base = nil
	c.Assert(got, gc.DeepEquals, pingbatcher.Config{FlushInterval: 2 * time.Second, Period: time.Minute, Clock: s.clock})
}

func (s *manifoldSuite) TestOutputFillsTheBatcherOrAnyInterfaceItImplements(c *gc.C) {
	b := pingbatcher.NewDeadPingBatcher(errors.New("dead"))
	output := pingbatcher.Manifold(s.config).Output
	var got *pingbatcher.PingBatcher
	c.Assert(output(b, &got), gc.IsNil)
	c.Assert(got, gc.Equals, b)
	var recorder pinger.PingRecorder
	c.Assert(output(b, &recorder), gc.IsNil)
	c.Assert(recorder, gc.Equals, pinger.PingRecorder(b))

	var batcher presence.Batcher
	c.Assert(output(b, &batcher), gc.IsNil)
	c.Assert(batcher, gc.Equals, presence.Batcher(b))

	var wrong *int
	c.Assert(output(b, &wrong), gc.ErrorMatches, `expected \*\*pingbatcher.PingBatcher or a pointer to an interface it implements, got \*\*int`)
	c.Assert(output(workertest.NewErrorWorker(nil), &got), gc.ErrorMatches, `expected \*pingbatcher.PingBatcher, got .*`)
}
