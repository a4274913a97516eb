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
	return newGatedClient(client), counter
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
// returns the store here once it has read that claim, its client and its
// manager.
func (s *fixture) leaderElsewhere(c *gc.C) (here *leasestore.Store, client *gatedClient, waiter, leader leaseexpiry.ManagerWorker) {
	here, client, _ = s.newStore(c)
	there, _, _ := s.newStore(c)
	waiter = s.newManager(c, here, modelTag(1))
	leader = s.newManager(c, there, modelTag(1))
	c.Assert(leader.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	// Until here has read the claim, a wait would end at once.
	agenttest.WaitAdvance(c, s.clock, time.Second, 2)
	agenttest.WaitTimers(c, s.clock, 2)
	return here, client, waiter, leader
}

// gatedClient is a lease client that reports each Snapshot call (the
// store's read) on entered and once its query returned on queried, and
// each InsertClaims call (the store's insert of claims) on inserting,
// without blocking, and whose gates, while held, make a read wait before
// its query (reads) or after it (results), or an insert of claims wait
// before it is sent (inserts).
type gatedClient struct {
	lease.Client
	entered, queried, inserting chan struct{}
	reads, results, inserts     gate
}

func newGatedClient(client lease.Client) *gatedClient {
	return &gatedClient{Client: client, entered: make(chan struct{}, 1), queried: make(chan struct{}, 1), inserting: make(chan struct{}, 1)}
}

// Snapshot is part of the lease.Client interface.
func (g *gatedClient) Snapshot(ctx context.Context, namespace, model string) (lease.Snapshot, error) {
	notify(g.entered)
	if err := g.reads.pass(ctx); err != nil {
		return lease.Snapshot{}, err
	}
	snap, err := g.Client.Snapshot(ctx, namespace, model)
	notify(g.queried)
	if err := g.results.pass(ctx); err != nil {
		return lease.Snapshot{}, err
	}
	return snap, err
}

// InsertClaims is part of the lease.Client interface.
func (g *gatedClient) InsertClaims(ctx context.Context, claims []lease.Claim, current map[lease.Key]lease.Info) ([]lease.Info, []error, error) {
	notify(g.inserting)
	if err := g.inserts.pass(ctx); err != nil {
		return nil, nil, err
	}
	return g.Client.InsertClaims(ctx, claims, current)
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// gate holds the calls that pass it while it is held.
type gate struct {
	mu sync.Mutex
	ch chan struct{}
}

// hold makes the calls that reach the gate from now on wait until the
// returned function is called (or the gate is held again).
func (g *gate) hold() func() {
	ch := make(chan struct{})
	g.mu.Lock()
	old := g.ch
	g.ch = ch
	g.mu.Unlock()
	if old != nil {
		close(old)
	}
	return func() {
		g.mu.Lock()
		if g.ch == ch {
			g.ch = nil
		}
		g.mu.Unlock()
		close(ch)
	}
}

// pass returns once the gate is open, or ctx's error.
func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hold makes reads wait before their query until the returned function
// is called.
func (g *gatedClient) hold() func() {
	return g.reads.hold()
}

// waitEntered waits for a Snapshot call that began after the last wait.
func (g *gatedClient) waitEntered(c *gc.C) {
	waitSignal(c, g.entered, "the store never read")
}

// waitInserting waits for an InsertClaims call that began after the last
// wait.
func (g *gatedClient) waitInserting(c *gc.C) {
	waitSignal(c, g.inserting, "the store never inserted claims")
}

// drain forgets a signal sent on ch before now.
func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func waitSignal(c *gc.C, ch <-chan struct{}, failure string) {
	select {
	case <-ch:
	case <-time.After(agenttest.LongWait):
		c.Fatal(failure)
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
