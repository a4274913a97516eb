package leasestore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

type stormSuite struct {
	fixture
}

var _ = gc.Suite(&stormSuite{})

func (s *stormSuite) TestClaimsMoreOftenThanMaxSleepNeverStarveTheTick(c *gc.C) {
	const pruneEvery = 2
	store, _, _ := s.newStore(c, func(cfg *leasestore.Config) { cfg.PruneEvery = pruneEvery })
	m := s.newManager(c, store, modelTag(1))
	agenttest.WaitTimers(c, s.clock, 1)
	readsBefore := store.Report()["reads"].(int)
	// 40 renewals, one every half MaxSleep, for 20 s.
	for i := 0; i < 40; i++ {
		c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
		agenttest.WaitAdvance(c, s.clock, 500*time.Millisecond, 1)
	}
	agenttest.WaitTimers(c, s.clock, 1)
	reads := store.Report()["reads"].(int) - readsBefore
	n, err := s.DB.Collection("leases").CountDocuments(context.Background(), map[string]any{})
	c.Assert(err, gc.IsNil)
	c.Logf("%d reads in 20 MaxSleeps, %d terms of one lease kept", reads, n)
	c.Check(reads >= 19, gc.Equals, true, gc.Commentf("%d reads in 20 MaxSleeps", reads))
	c.Check(n <= pruneEvery+2, gc.Equals, true, gc.Commentf("%d terms of one lease kept", n))
}

func (s *stormSuite) TestBlockReturnsWithinMaxSleepOfAReleaseElsewhereWhileAUnitRenewsHere(c *gc.C) {
	here, _, waiter, leader := s.leaderElsewhere(c)
	done := make(chan error, 1)
	go func() { done <- waiter.BlockUntilLeadershipReleased("mysql") }()
	// The block's own read shows the leader.
	waitFor(c, "the block's read", func() bool { return here.Report()["reads"].(int) >= 3 })
	c.Assert(leader.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	readsBefore := here.Report()["reads"].(int)
	// A unit of another application renews through here every half
	// MaxSleep; the release must be seen within MaxSleep and one read.
	for step := 1; step <= 60; step++ {
		c.Assert(waiter.ClaimLeadership("wordpress", "wordpress/0", time.Minute), gc.IsNil)
		agenttest.WaitAdvance(c, s.clock, 500*time.Millisecond, 2)
		agenttest.WaitTimers(c, s.clock, 2)
		select {
		case err := <-done:
			c.Logf("returned after %d half MaxSleeps, %d reads since the release", step, here.Report()["reads"].(int)-readsBefore)
			c.Assert(err, gc.IsNil)
			c.Assert(step <= 2, gc.Equals, true, gc.Commentf("returned after %d half MaxSleeps", step))
			return
		case <-time.After(agenttest.ShortWait):
		}
	}
	c.Fatalf("still waiting after 30 MaxSleeps; the store read %d times since the release", here.Report()["reads"].(int)-readsBefore)
}

// mysqlClaim is mysql/0's claim of mysql in model 1 for a minute.
var mysqlClaim = lease.Claim{
	Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(1).Id(), Lease: "mysql"},
	Request: lease.Request{Holder: "mysql/0", Duration: time.Minute},
}

func (s *stormSuite) TestAClaimIsConfirmedByTheFirstReadThatBeganAfterItsInsert(c *gc.C) {
	store, client, counter := s.newStore(c)
	agenttest.WaitTimers(c, s.clock, 1)
	// A read begins and waits before its query.
	drain(client.entered)
	release := client.reads.hold()
	store.Refresh()
	client.waitEntered(c)
	done := make(chan error, 1)
	go func() {
		_, err := store.Claim(context.Background(), mysqlClaim)
		done <- err
	}()
	waitFor(c, "the claim inserted", func() bool { return store.Report()["claim-batches"] == 1 })
	counter.Reset()
	// The read queries after the insert, and the next read is held.
	release = client.reads.hold()
	client.waitEntered(c)
	leases, _, _, _ := store.Leases(modelTag(1).Id())
	c.Assert(leases["mysql"].Holder, gc.Equals, "mysql/0")
	select {
	case err := <-done:
		c.Fatalf("granted by a read that began before its insert ended: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	release()
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("not granted by the read that began after its insert")
	}
	agenttest.WaitTimers(c, s.clock, 1)
	// The read under way at the insert, then the one that confirmed
	// it: the claim made no read of its own.
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 2)

	// At an idle store a claim costs one insert and the one read that
	// begins after it.
	counter.Reset()
	_, err := store.Claim(context.Background(), lease.Claim{Key: lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(1).Id(), Lease: "wordpress"},
		Request: lease.Request{Holder: "wordpress/0", Duration: time.Minute}})
	c.Assert(err, gc.IsNil)
	agenttest.WaitTimers(c, s.clock, 1)
	c.Assert(counter.CountOn("insert", "leases"), gc.Equals, 1)
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 1)
}

func (s *stormSuite) TestClaimsQueuedBehindAStalledInsertNeverDelayTheTick(c *gc.C) {
	// mysql lapses in 2 s (3 s with the clock skew), claimed around the
	// store.
	other, _ := s.leaseClient(c, s.clock)
	lapsing := mysqlClaim
	lapsing.Request.Duration = 2 * time.Second
	_, errs, err := other.ClaimMany(context.Background(), []lease.Claim{lapsing})
	c.Assert(err, gc.IsNil)
	c.Assert(errs[0], gc.IsNil)
	store, client, _ := s.newStore(c, func(cfg *leasestore.Config) { cfg.PruneEvery = 2 })
	agenttest.WaitTimers(c, s.clock, 1)

	// 100 units claim; the first claim's insert stalls, the others
	// queue behind it.
	release := client.inserts.hold()
	var begun, answered atomic.Int64
	var wg sync.WaitGroup
	claims := make([]error, 100)
	for i := range claims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := fmt.Sprintf("app%d", i)
			begun.Add(1)
			_, claims[i] = store.Claim(context.Background(), lease.Claim{
				Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(1).Id(), Lease: app},
				Request: lease.Request{Holder: app + "/0", Duration: time.Minute},
			})
			answered.Add(1)
		}()
	}
	client.waitInserting(c)
	waitCount(c, "claims begun", &begun, 100)

	// Each MaxSleep still brings its tick: a read, a prune every
	// second read, and the expiry of mysql once it lapsed.
	reads0 := store.Report()["reads"].(int)
	for range 3 {
		agenttest.WaitAdvance(c, s.clock, time.Second, 1)
		agenttest.WaitTimers(c, s.clock, 1)
	}
	c.Assert(store.Report()["reads"].(int)-reads0, gc.Equals, 3)
	c.Assert(store.Report()["expired"], gc.Equals, 1)
	leases, _, _, _ := store.Leases(modelTag(1).Id())
	c.Assert(leases["mysql"].Holder, gc.Equals, "")
	c.Assert(answered.Load(), gc.Equals, int64(0))

	release()
	wg.Wait()
	for _, err := range claims {
		c.Assert(err, gc.IsNil)
	}
}

func (s *stormSuite) TestBlockedCallerHearsAReleaseElsewhereMaxSleepAfterTheLastReadBegan(c *gc.C) {
	here, client, waiter, leader := s.leaderElsewhere(c)
	reads0 := here.Report()["reads"].(int)
	done := make(chan error, 1)
	go func() { done <- waiter.BlockUntilLeadershipReleased("mysql") }()
	// The block's own read shows the leader.
	waitFor(c, "the block's read", func() bool { return here.Report()["reads"].(int) > reads0 })
	agenttest.WaitTimers(c, s.clock, 2)

	// A tick's read here queries, and the leader then releases through
	// its own controller; the read takes 600 ms before it is done.
	drain(client.queried)
	release := client.results.hold()
	agenttest.WaitAdvance(c, s.clock, time.Second, 2)
	waitSignal(c, client.queried, "the tick never read")
	c.Assert(leader.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	s.clock.Advance(600 * time.Millisecond)
	release()
	agenttest.WaitTimers(c, s.clock, 2)
	select {
	case err := <-done:
		c.Fatalf("returned on a read that began before the release: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	// The next read begins MaxSleep after that one began, not after it
	// ended, and shows the release.
	agenttest.WaitAdvance(c, s.clock, 399*time.Millisecond, 2)
	agenttest.WaitTimers(c, s.clock, 2)
	select {
	case err := <-done:
		c.Fatalf("returned before MaxSleep had passed since the last read began: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	agenttest.WaitAdvance(c, s.clock, time.Millisecond, 2)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("not woken MaxSleep after the last read began")
	}
}

func (s *stormSuite) TestAClaimOutlivesOneFailedReadAndFailsWithTheSecond(c *gc.C) {
	store, client, _ := s.newStore(c, func(cfg *leasestore.Config) { cfg.CallTimeout = 300 * time.Millisecond })
	agenttest.WaitTimers(c, s.clock, 1)
	claim := func(app string) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := store.Claim(context.Background(), lease.Claim{
				Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(1).Id(), Lease: app},
				Request: lease.Request{Holder: app + "/0", Duration: time.Minute},
			})
			done <- err
		}()
		return done
	}
	failures := func() int { return store.Report()["read-failures"].(int) }

	// The read after the insert times out; the next one confirms.
	release := client.reads.hold()
	done := claim("mysql")
	waitFor(c, "a failed read", func() bool { return failures() == 1 })
	release()
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("the claim was never confirmed")
	}

	// Both reads after the insert time out: the claim fails.
	release = client.reads.hold()
	defer release()
	done = claim("wordpress")
	select {
	case err := <-done:
		c.Assert(err, gc.ErrorMatches, "cannot read the leases of a claim: .*")
	case <-time.After(agenttest.LongWait):
		c.Fatalf("the claim never failed")
	}
	c.Assert(failures(), gc.Equals, 3)
}
