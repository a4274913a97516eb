package leasestore_test

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

type manifoldSuite struct {
	db      *mongo.Database
	clock   clock.Clock
	config  leasestore.ManifoldConfig
	started []leasestore.Config
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(leasestore.Config) (worker.Worker, error) = leasestore.NewWorker

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	// Never connected: the workers started here are killed before
	// they need the database, or give up when killed.
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.db = client.Database("test")
	s.clock = agenttest.NewClock()
	s.started = nil
	s.config = leasestore.ManifoldConfig{
		ClockName:    "clock",
		DatabaseName: "database",
		Namespace:    "ns",
		Model:        modelTag(1),
		MaxSleep:     2 * time.Second,
		PruneEvery:   3,
		CallTimeout:  4 * time.Second,
		NewWorker: func(config leasestore.Config) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"clock": s.clock, "database": s.db}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(leasestore.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock", "database"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, leasestore.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[leasestore.ManifoldConfig]{
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.ClockName = "" }, Err: "empty ClockName not valid"},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.DatabaseName = "" }, Err: "empty DatabaseName not valid"},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.Model = names.NewModelTag("x") }, Err: `model tag "model-x" not valid`},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.ClockSkew = -1 }, Err: "negative ClockSkew not valid"},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.MaxSleep = -1 }, Err: "negative MaxSleep not valid"},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.PruneEvery = -1 }, Err: "negative PruneEvery not valid"},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.CallTimeout = -1 }, Err: "negative CallTimeout not valid"},
		{Mutate: func(cfg *leasestore.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, leasestore.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	w, err := leasestore.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.HasLen, 1)
	got := s.started[0]
	c.Assert(got.Client, gc.NotNil)
	got.Client = nil
	c.Assert(got, gc.DeepEquals, leasestore.Config{
		Clock: s.clock, Namespace: "ns", Model: modelTag(1), MaxSleep: 2 * time.Second, PruneEvery: 3, CallTimeout: 4 * time.Second,
	})
}

func (s *manifoldSuite) TestOutputIsTheStoreOrAnInterfaceItImplements(c *gc.C) {
	s.config.NewWorker = leasestore.NewWorker
	w, err := leasestore.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	output := leasestore.Manifold(s.config).Output

	var store *leasestore.Store
	c.Assert(output(w, &store), gc.IsNil)
	c.Assert(store, gc.Equals, w)
	var narrow leaseexpiry.Store
	c.Assert(output(w, &narrow), gc.IsNil)
	c.Assert(narrow, gc.Equals, w)

	var client lease.Client
	c.Assert(output(w, &client), gc.ErrorMatches,
		`expected \*\*leasestore.Store or a pointer to an interface it implements, got \*lease.Client`)
	c.Assert(output(w, store), gc.ErrorMatches, `expected \*\*leasestore.Store .*, got \*leasestore.Store`)
	c.Assert(output(workertest.NewErrorWorker(nil), &store), gc.ErrorMatches, `expected \*leasestore.Store, got .*`)
}
