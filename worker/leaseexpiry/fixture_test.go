package leaseexpiry_test

import (
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

const skew = time.Second

var model = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")

type fixture struct {
	agenttest.MongoSuite
	clock   *testclock.Clock
	cleanup []func()
}

func (s *fixture) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.cleanup = nil
}

func (s *fixture) TearDownTest(c *gc.C) {
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	s.MongoSuite.TearDownTest(c)
}

// newManager starts a manager on a client of its own, as another
// controller would have, with clk (the suite's clock if nil).
func (s *fixture) newManager(c *gc.C, clk *testclock.Clock, mutate ...func(*leaseexpiry.ManagerConfig)) leaseexpiry.ManagerWorker {
	if clk == nil {
		clk = s.clock
	}
	m, err := leaseexpiry.NewManager(s.managerConfig(c, s.NewDB(c).Collection("leases"), clk, mutate...))
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { m.Kill(); c.Check(m.Wait(), gc.IsNil) })
	return m
}

func (s *fixture) managerConfig(c *gc.C, coll *mongo.Collection, clk *testclock.Clock, mutate ...func(*leaseexpiry.ManagerConfig)) leaseexpiry.ManagerConfig {
	client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clk, ClockSkew: skew})
	c.Assert(err, gc.IsNil)
	config := leaseexpiry.ManagerConfig{Client: client, Clock: clk, Model: model, MaxSleep: time.Minute}
	for _, f := range mutate {
		f(&config)
	}
	return config
}
