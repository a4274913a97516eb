package pinger_test

import (
	"context"
	"time"

	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pinger"
)

type manifoldSuite struct {
	db       *mongo.Database
	recorder *fakeRecorder
	config   pinger.ManifoldConfig
	started  []pinger.Config
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(pinger.Config) (worker.Worker, error) = pinger.NewWorker

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.db = client.Database("test")
	s.recorder = newFakeRecorder()
	s.recorder.period = time.Minute
	s.started = nil
	s.config = pinger.ManifoldConfig{
		ClockName:       "clock",
		DatabaseName:    "database",
		PingBatcherName: "batcher",
		Model:           model,
		Key:             "machine-0",
		Period:          time.Minute,
		NewWorker: func(config pinger.Config) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"clock": agenttest.NewClock(), "database": s.db, "batcher": s.recorder}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(pinger.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock", "database", "batcher"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, pinger.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[pinger.ManifoldConfig]{
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.ClockName = "" }, Err: "empty ClockName not valid"},
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.DatabaseName = "" }, Err: "empty DatabaseName not valid"},
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.PingBatcherName = "" }, Err: "empty PingBatcherName not valid"},
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.Model = names.ModelTag{} }, Err: `model tag "model-" not valid`},
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.Key = "" }, Err: "empty key not valid"},
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.Period = -1 }, Err: "negative Period not valid"},
		{Mutate: func(cfg *pinger.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, pinger.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	resources := s.resources()
	w, err := pinger.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(resources))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.HasLen, 1)
	got := s.started[0]
	c.Assert(got.Base.Name(), gc.Equals, "presence")
	c.Assert(got.Recorder(), gc.Equals, pinger.PingRecorder(s.recorder))
	c.Assert(got.Clock, gc.Equals, resources["clock"])
	c.Assert(got.Model, gc.Equals, model)
	c.Assert(got.Key, gc.Equals, "machine-0")
	c.Assert(got.Period, gc.Equals, time.Minute)
}

func (s *manifoldSuite) TestNewWorkerStartsThePinger(c *gc.C) {
	s.config.NewWorker = pinger.NewWorker
	w, err := pinger.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	pings, _, _, _ := s.recorder.snapshot()
	c.Assert(pings, gc.HasLen, 1)
}

func (s *manifoldSuite) TestOutput(c *gc.C) {
	p, err := pinger.New(pinger.Config{
		Base: s.db.Collection("presence"), Model: model, Key: "k",
		Recorder: func() pinger.PingRecorder { return s.recorder }, Clock: agenttest.NewClock(),
	})
	c.Assert(err, gc.IsNil)
	output := pinger.Manifold(s.config).Output
	var got *pinger.Pinger
	c.Assert(output(p, &got), gc.IsNil)
	c.Assert(got, gc.Equals, p)
	var wrong *int
	c.Assert(output(p, &wrong), gc.ErrorMatches, `expected \*\*pinger.Pinger or a pointer to an interface it implements, got \*\*int`)
	c.Assert(output(workertest.NewErrorWorker(nil), &got), gc.ErrorMatches, `expected \*pinger.Pinger, got .*`)
}
