package leasestore_test

import (
	"context"
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
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
	here, waiter, leader := s.leaderElsewhere(c)
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
