package leaseexpiry_test

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

type manifoldSuite struct {
	clock   clock.Clock
	store   leaseexpiry.Store
	config  leaseexpiry.ManifoldConfig
	started []leaseexpiry.ManagerConfig
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(leaseexpiry.ManagerConfig) (worker.Worker, error) = leaseexpiry.NewWorker

// fakeStore is a Store that never reads: enough for a manager to start
// and stop.
type fakeStore struct {
	leaseexpiry.Store
}

// Leases is part of the leaseexpiry.Store interface: nothing read yet,
// and never a change.
func (*fakeStore) Leases(string) (map[string]lease.Info, time.Time, uint64, <-chan struct{}) {
	return nil, time.Time{}, 0, nil
}

// Client is part of the leaseexpiry.Store interface.
func (*fakeStore) Client() lease.Client {
	return nil
}

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	s.clock = agenttest.NewClock()
	s.store = &fakeStore{}
	s.started = nil
	s.config = leaseexpiry.ManifoldConfig{
		ClockName:     "clock",
		StoreName:     "lease-store",
		Model:         model,
		MaxDuration:   time.Minute,
		ReleaseOnStop: true,
		NewWorker: func(config leaseexpiry.ManagerConfig) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"clock": s.clock, "lease-store": s.store}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(leaseexpiry.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock", "lease-store"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, leaseexpiry.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[leaseexpiry.ManifoldConfig]{
		{Mutate: func(cfg *leaseexpiry.ManifoldConfig) { cfg.ClockName = "" }, Err: "empty ClockName not valid"},
		{Mutate: func(cfg *leaseexpiry.ManifoldConfig) { cfg.StoreName = "" }, Err: "empty StoreName not valid"},
		{Mutate: func(cfg *leaseexpiry.ManifoldConfig) { cfg.Model = names.NewModelTag("x") }, Err: `model tag "model-x" not valid`},
		{Mutate: func(cfg *leaseexpiry.ManifoldConfig) { cfg.MaxDuration = -1 }, Err: "negative MaxDuration not valid"},
		{Mutate: func(cfg *leaseexpiry.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, leaseexpiry.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	w, err := leaseexpiry.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.HasLen, 1)
	c.Assert(s.started[0], gc.DeepEquals, leaseexpiry.ManagerConfig{
		Store: s.store, Clock: s.clock, Model: model, MaxDuration: time.Minute, ReleaseOnStop: true,
	})
}

func (s *manifoldSuite) TestOutputIsTheManagerOnly(c *gc.C) {
	s.config.NewWorker = leaseexpiry.NewWorker
	w, err := leaseexpiry.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	output := leaseexpiry.Manifold(s.config).Output
	var m leaseexpiry.Manager
	c.Assert(output(w, &m), gc.IsNil)
	c.Assert(m, gc.Equals, w)
	var ww worker.Worker
	c.Assert(output(w, &ww), gc.ErrorMatches, `expected \*leaseexpiry.Manager or a pointer to an interface it implements, got \*worker.Worker`)
	c.Assert(output(workertest.NewErrorWorker(nil), &m), gc.ErrorMatches, `expected leaseexpiry.Manager, got .*`)
}
