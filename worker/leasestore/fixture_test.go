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
	return &gatedClient{Client: client, entered: make(chan struct{}, 1), requestEntered: make(chan struct{}, 1), read: make(chan struct{}, 1)}, counter
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
// wait until released; and the same of the calls of claims and checks
// (ClaimMany, ClaimManyOn, ReadMany) on requestEntered, while requests are
// held. A read is reported again on read once it has read, and its result
// withheld while read results are held.
type gatedClient struct {
	lease.Client
	entered        chan struct{}
	requestEntered chan struct{}
	read           chan struct{}

	mu          sync.Mutex
	gate        chan struct{}
	requestGate chan struct{}
	resultGate  chan struct{}
}

// Snapshot is part of the lease.Client interface.
func (g *gatedClient) Snapshot(ctx context.Context, namespace, model string) (lease.Snapshot, error) {
	if err := g.pass(ctx, g.entered, &g.gate); err != nil {
		return lease.Snapshot{}, err
	}
	snap, err := g.Client.Snapshot(ctx, namespace, model)
	if err := g.pass(ctx, g.read, &g.resultGate); err != nil {
		return lease.Snapshot{}, err
	}
	return snap, err
}

// ReadMany is part of the lease.Client interface.
func (g *gatedClient) ReadMany(ctx context.Context, keys []lease.Key) (map[lease.Key]lease.Info, error) {
	if err := g.pass(ctx, g.requestEntered, &g.requestGate); err != nil {
		return nil, err
	}
	return g.Client.ReadMany(ctx, keys)
}

// ClaimMany is part of the lease.Client interface.
func (g *gatedClient) ClaimMany(ctx context.Context, claims []lease.Claim) ([]lease.Info, []error, error) {
	if err := g.pass(ctx, g.requestEntered, &g.requestGate); err != nil {
		return nil, nil, err
	}
	return g.Client.ClaimMany(ctx, claims)
}

// ClaimManyOn is part of the lease.Client interface.
func (g *gatedClient) ClaimManyOn(ctx context.Context, claims []lease.Claim, current map[lease.Key]lease.Info) ([]lease.Info, []error, error) {
	if err := g.pass(ctx, g.requestEntered, &g.requestGate); err != nil {
		return nil, nil, err
	}
	return g.Client.ClaimManyOn(ctx, claims, current)
}

// pass reports a call on entered and waits while *gate is held.
func (g *gatedClient) pass(ctx context.Context, entered chan struct{}, gate *chan struct{}) error {
	select {
	case entered <- struct{}{}:
	default:
	}
	g.mu.Lock()
	held := *gate
	g.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// hold makes Snapshot calls wait until the returned function is first
// called.
func (g *gatedClient) hold() func() {
	return g.holdOn(&g.gate)
}

// holdResults makes Snapshot calls that have read wait until the returned
// function is called before they return what they read.
func (g *gatedClient) holdResults() func() {
	return g.holdOn(&g.resultGate)
}

// holdRequests makes the calls of claims and checks wait until the
// returned function is called.
func (g *gatedClient) holdRequests() func() {
	return g.holdOn(&g.requestGate)
}

func (g *gatedClient) holdOn(gate *chan struct{}) func() {
	held := make(chan struct{})
	g.mu.Lock()
	*gate = held
	g.mu.Unlock()
	return sync.OnceFunc(func() {
		g.mu.Lock()
		*gate = nil
		g.mu.Unlock()
		close(held)
	})
}

// waitEntered waits for a Snapshot call that began after the last wait.
func (g *gatedClient) waitEntered(c *gc.C) {
	waitOn(c, g.entered, "the store never read")
}

// waitRead waits for a Snapshot call that has read since the last wait.
func (g *gatedClient) waitRead(c *gc.C) {
	waitOn(c, g.read, "the store never finished a read")
}

// forgetRequests forgets the calls of claims and checks made so far, for
// waitRequestEntered.
func (g *gatedClient) forgetRequests() {
	select {
	case <-g.requestEntered:
	default:
	}
}

// waitRequestEntered waits for a call of a claim or check that began
// after the last wait.
func (g *gatedClient) waitRequestEntered(c *gc.C) {
	waitOn(c, g.requestEntered, "the store never wrote a claim nor read a check")
}

func waitOn(c *gc.C, entered <-chan struct{}, never string) {
	select {
	case <-entered:
	case <-time.After(agenttest.LongWait):
		c.Fatalf("%s", never)
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

// mysqlKey returns the key of the lease "mysql" of model i.
func mysqlKey(i int) lease.Key {
	return lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(i).Id(), Lease: "mysql"}
}
