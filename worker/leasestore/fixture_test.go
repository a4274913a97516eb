package leasestore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"github.com/juju/clock/testclock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

const skew = time.Second

// modelTag returns the tag of the i-th test model.
func modelTag(i int) names.ModelTag {
	return names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i))
}

// fixture runs stores and managers on the suite's server, each store on a
// client of its own whose commands it counts.
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

// leaseClient returns a lease client on a new connection to the test's
// database, with clk, and the counter of its commands.
func (s *fixture) leaseClient(c *gc.C, clk clock.Clock) (*gatedClient, *agenttest.CommandCounter) {
	counter := &agenttest.CommandCounter{}
	coll := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases")
	client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clk, ClockSkew: skew})
	c.Assert(err, gc.IsNil)
	return &gatedClient{Client: client, entered: make(chan struct{}, 1)}, counter
}

// newStore starts a store on a client of its own with the suite's clock
// and a MaxSleep of one second, changed by mutate.
func (s *fixture) newStore(c *gc.C, mutate ...func(*leasestore.Config)) (*leasestore.Store, *gatedClient, *agenttest.CommandCounter) {
	client, counter := s.leaseClient(c, s.clock)
	config := leasestore.Config{Client: client, Clock: s.clock, MaxSleep: time.Second}
	for _, f := range mutate {
		f(&config)
	}
	store, err := leasestore.New(config)
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { workertest.DirtyKill(agenttest.C(c), store) })
	return store, client, counter
}

// newManager starts model's manager over store.
func (s *fixture) newManager(c *gc.C, store leaseexpiry.Store, model names.ModelTag) leaseexpiry.ManagerWorker {
	m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Store: store, Clock: s.clock, Model: model})
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { workertest.DirtyKill(agenttest.C(c), m) })
	return m
}

// leaderElsewhere starts two stores of one clock, as two controllers, a
// manager of model 1 on each, and makes the one over there lead mysql. It
// returns the store here once it has read that claim, and its manager.
func (s *fixture) leaderElsewhere(c *gc.C) (here *leasestore.Store, waiter, leader leaseexpiry.ManagerWorker) {
	here, _, _ = s.newStore(c)
	there, _, _ := s.newStore(c)
	waiter = s.newManager(c, here, modelTag(1))
	leader = s.newManager(c, there, modelTag(1))
	c.Assert(leader.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	// Until here has read the claim, a wait would end at once.
	agenttest.WaitAdvance(c, s.clock, time.Second, 2)
	agenttest.WaitTimers(c, s.clock, 2)
	return here, waiter, leader
}

// gatedClient is a lease client that reports each Snapshot call (the
// store's read) on entered (without blocking) and, while held, makes it
// wait until released.
type gatedClient struct {
	lease.Client
	entered chan struct{}

	mu   sync.Mutex
	gate chan struct{}
}

// Snapshot is part of the lease.Client interface.
func (g *gatedClient) Snapshot(ctx context.Context, namespace, model string) (lease.Snapshot, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return lease.Snapshot{}, ctx.Err()
		}
	}
	return g.Client.Snapshot(ctx, namespace, model)
}

// hold makes Snapshot calls wait until the returned function is called.
func (g *gatedClient) hold() func() {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.gate = nil
		g.mu.Unlock()
		close(gate)
	}
}

// waitEntered waits for a Snapshot call that began after the last wait.
func (g *gatedClient) waitEntered(c *gc.C) {
	select {
	case <-g.entered:
	case <-time.After(agenttest.LongWait):
		c.Fatalf("the store never read")
	}
}

// countingStore is a store that counts the calls of Claim and Read begun,
// so that a test knows when callers have reached the store.
type countingStore struct {
	*leasestore.Store
	claims, reads atomic.Int64
}

// Claim is part of the leaseexpiry.Store interface.
func (s *countingStore) Claim(ctx context.Context, claim lease.Claim) (lease.Info, error) {
	s.claims.Add(1)
	return s.Store.Claim(ctx, claim)
}

// Read is part of the leaseexpiry.Store interface.
func (s *countingStore) Read(ctx context.Context, key lease.Key) (lease.Info, error) {
	s.reads.Add(1)
	return s.Store.Read(ctx, key)
}

// waitCount waits until counter reaches n.
func waitCount(c *gc.C, what string, counter *atomic.Int64, n int64) {
	waitFor(c, fmt.Sprintf("%d %s", n, what), func() bool { return counter.Load() >= n })
}

// waitFor waits on the wall clock until f holds, for what takes real
// time: a database call's deadline.
func waitFor(c *gc.C, what string, f func() bool) {
	agenttest.WaitFor(c, agenttest.LongWait, what, f)
}
