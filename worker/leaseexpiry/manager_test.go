package leaseexpiry_test

import (
	"context"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

type managerSuite struct {
	fixture
}

var _ = gc.Suite(&managerSuite{})

func (s *managerSuite) TestClaimGrantsLeadershipWithAFence(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(token.Check(), gc.IsNil)
	c.Assert(token.Fence(), gc.Equals, int64(1))
	_, err = m.CheckLeadership("mysql", "mysql/1")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true)
}

func (s *managerSuite) TestClaimOfAnotherUnitsLeadershipIsDenied(c *gc.C) {
	m1 := s.newManager(c, nil)
	m2 := s.newManager(c, nil)
	c.Assert(m1.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	err := m2.ClaimLeadership("mysql", "mysql/1", time.Minute)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true, gc.Commentf("%v", err))
	// The holder extends through any manager.
	c.Assert(m2.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
}

func (s *managerSuite) TestClaimIsValidForItsDurationFromTheCall(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	s.clock.Advance(time.Minute - time.Nanosecond)
	c.Assert(token.Check(), gc.IsNil)
	s.clock.Advance(time.Nanosecond)
	c.Assert(errors.Is(token.Check(), leaseexpiry.ErrNotHeld), gc.Equals, true)
	_, err = m.CheckLeadership("mysql", "mysql/0")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true)
}

func (s *managerSuite) TestTokenFailsOnceLeadershipMovesAndFencesRise(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	old, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(m.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	c.Assert(errors.Is(old.Check(), leaseexpiry.ErrNotHeld), gc.Equals, true)
	c.Assert(m.ClaimLeadership("mysql", "mysql/1", time.Minute), gc.IsNil)
	c.Assert(m.ReleaseLeadership("mysql", "mysql/1"), gc.IsNil)
	// The first leader again: a new tenure, a new fence, and its old
	// token stays invalid.
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	current, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(current.Fence(), gc.Equals, old.Fence()+2)
	c.Assert(errors.Is(old.Check(), leaseexpiry.ErrNotHeld), gc.Equals, true)
}

func (s *managerSuite) TestReleaseNeedsTheLeader(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	err := m.ReleaseLeadership("mysql", "mysql/1")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true)
}

func (s *managerSuite) TestBlockReturnsWhenLeadershipIsReleased(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	select {
	case err := <-done:
		c.Fatalf("returned while the leader holds: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	c.Assert(m.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("not woken by the release")
	}
}

func (s *managerSuite) TestBlockReturnsWithinOneTickOfTheLeaseLapsing(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", 10*time.Second), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	// The manager's alarm is set for the moment others may claim:
	// expiry plus the clock skew.
	agenttest.WaitAdvance(c, s.clock, 10*time.Second+skew-time.Millisecond, 1)
	select {
	case err := <-done:
		c.Fatalf("returned before the lease was free: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	agenttest.WaitAdvance(c, s.clock, time.Millisecond, 1)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("not woken when the lease lapsed")
	}
	// The expiry was written: another manager sees the lease free.
	m2 := s.newManager(c, nil)
	c.Assert(m2.ClaimLeadership("mysql", "mysql/1", time.Minute), gc.IsNil)
}

func (s *managerSuite) TestBlockFailsWhenTheManagerStops(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	m.Kill()
	select {
	case err := <-done:
		c.Assert(err, gc.Equals, leaseexpiry.ErrStopped)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("BlockUntilLeadershipReleased hung")
	}
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.Equals, leaseexpiry.ErrStopped)
}

func (s *managerSuite) TestBlockGivesUpWithItsContext(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Assert(m.BlockUntilLeadershipReleasedContext(ctx, "mysql"), gc.Equals, context.Canceled)
}

func (s *managerSuite) TestPinnedLeadershipDoesNotExpire(c *gc.C) {
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", 10*time.Second), gc.IsNil)
	c.Assert(m.PinLeadership("mysql", "machine-0"), gc.IsNil)
	agenttest.WaitAdvance(c, s.clock, time.Hour, 1)
	token, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(token.Check(), gc.IsNil)
	err = m.ClaimLeadership("mysql", "mysql/1", time.Minute)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true)

	c.Assert(m.UnpinLeadership("mysql", "machine-0"), gc.IsNil)
	c.Assert(errors.Is(token.Check(), leaseexpiry.ErrNotHeld), gc.Equals, true)
	c.Assert(m.ClaimLeadership("mysql", "mysql/1", time.Minute), gc.IsNil)
}

func (s *managerSuite) TestRestartedManagerKeepsTheLeader(c *gc.C) {
	m1 := s.newManager(c, nil)
	c.Assert(m1.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	m1.Kill()
	c.Assert(m1.Wait(), gc.IsNil)
	m2 := s.newManager(c, nil)
	token, err := m2.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(token.Fence(), gc.Equals, int64(1))
	err = m2.ClaimLeadership("mysql", "mysql/1", time.Minute)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true)
}

func (s *managerSuite) TestReleaseOnStopLetsASuccessorTakeOverAtOnce(c *gc.C) {
	m1 := s.newManager(c, nil, func(cfg *leaseexpiry.ManagerConfig) { cfg.ReleaseOnStop = true })
	c.Assert(m1.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	m1.Kill()
	c.Assert(m1.Wait(), gc.IsNil)
	m2 := s.newManager(c, nil)
	c.Assert(m2.ClaimLeadership("mysql", "mysql/1", time.Minute), gc.IsNil)
}

func (s *managerSuite) TestReleaseOnStopLeavesALeaseExtendedElsewhere(c *gc.C) {
	m1 := s.newManager(c, nil, func(cfg *leaseexpiry.ManagerConfig) { cfg.ReleaseOnStop = true })
	c.Assert(m1.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	// The unit's agent moves to another controller and extends there.
	m2 := s.newManager(c, nil)
	s.clock.Advance(time.Second)
	c.Assert(m2.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	m1.Kill()
	c.Assert(m1.Wait(), gc.IsNil)
	// What m2 granted stands: nobody else may take over.
	_, err := m2.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	err = m2.ClaimLeadership("mysql", "mysql/1", time.Minute)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true, gc.Commentf("%v", err))
}

func (s *managerSuite) TestDatabaseOutageGivesErrorsNeverAWrongYes(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot stop an external MongoDB")
	}
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)

	c.Assert(s.Server.Stop(), gc.IsNil)
	err = m.ClaimLeadership("wordpress", "wordpress/1", time.Minute)
	c.Assert(err, gc.NotNil)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, false)
	_, err = m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.NotNil)
	c.Assert(token.Check(), gc.NotNil)

	c.Assert(s.Server.Start(), gc.IsNil)
	c.Assert(agenttest.Retry(agenttest.LongWait, func() error {
		return m.ClaimLeadership("mysql", "mysql/0", time.Minute)
	}), gc.IsNil)
	c.Assert(token.Check(), gc.IsNil)
}

func (s *managerSuite) TestSupersededTermsArePruned(c *gc.C) {
	m := s.newManager(c, nil, func(cfg *leaseexpiry.ManagerConfig) { cfg.PruneEvery = 1 })
	for i := 0; i < 10; i++ {
		c.Assert(m.ClaimLeadership("mysql", "mysql/0", 4*time.Minute), gc.IsNil)
	}
	agenttest.WaitAdvance(c, s.clock, time.Minute, 1)
	// The tick prunes on the real database; its timer is set again once
	// it is done.
	agenttest.WaitTimers(c, s.clock, 1)
	n, err := s.DB.Collection("leases").CountDocuments(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(1))
}

func (s *managerSuite) TestBadInputIsNotValidAndWritesNothing(c *gc.C) {
	m := s.newManager(c, nil)
	for i, t := range []struct {
		app, unit string
		d         time.Duration
	}{
		{"", "mysql/0", time.Minute},
		{"MySQL", "mysql/0", time.Minute},
		{"mysql", "mysql", time.Minute},
		{"mysql", "wordpress/0", time.Minute},
		{"mysql", "mysql/0", 0},
		{"mysql", "mysql/0", -time.Second},
		{"mysql", "mysql/0", time.Hour},
		{strings.Repeat("a", 5000), strings.Repeat("a", 5000) + "/0", time.Minute},
		{"mysql", "mysql/" + strings.Repeat("1", 5000), time.Minute},
	} {
		c.Logf("case %d", i)
		err := m.ClaimLeadership(t.app, t.unit, t.d)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
	}
	_, err := m.CheckLeadership("mysql", "wordpress/0")
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
	c.Assert(errors.Is(m.BlockUntilLeadershipReleased("Bad App"), errors.NotValid), gc.Equals, true)
	c.Assert(errors.Is(m.PinLeadership("mysql", ""), errors.NotValid), gc.Equals, true)
	c.Assert(errors.Is(m.PinLeadership("mysql", strings.Repeat("x", 5000)), errors.NotValid), gc.Equals, true)
	c.Assert(errors.Is(m.BlockUntilLeadershipReleased(strings.Repeat("a", 5000)), errors.NotValid), gc.Equals, true)
	n, err := s.DB.Collection("leases").CountDocuments(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(0))
}

func (s *managerSuite) TestConfigValidation(c *gc.C) {
	valid := s.managerConfig(c, s.DB.Collection("leases"), s.clock)
	for i, t := range []struct {
		mutate func(*leaseexpiry.ManagerConfig)
		err    string
	}{
		{func(cfg *leaseexpiry.ManagerConfig) { cfg.Client = nil }, "nil Store and nil Client not valid"},
		{func(cfg *leaseexpiry.ManagerConfig) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *leaseexpiry.ManagerConfig) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *leaseexpiry.ManagerConfig) { cfg.MaxSleep = -1 }, "negative MaxSleep not valid"},
		{func(cfg *leaseexpiry.ManagerConfig) { cfg.MaxDuration = -1 }, "negative MaxDuration not valid"},
		{func(cfg *leaseexpiry.ManagerConfig) { cfg.PruneEvery = -1 }, "negative PruneEvery not valid"},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		m, err := leaseexpiry.NewManager(cfg)
		c.Check(m, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}

func (s *managerSuite) TestBlockDoesNotReturnWhileAnotherHoldsTheLease(c *gc.C) {
	wall := func() leaseexpiry.ManagerWorker {
		client, err := lease.NewClient(lease.ClientConfig{Collection: s.NewDB(c).Collection("leases"), Clock: clock.WallClock, ClockSkew: 100 * time.Millisecond})
		c.Assert(err, gc.IsNil)
		m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Client: client, Clock: clock.WallClock, Model: model, MaxSleep: time.Minute})
		c.Assert(err, gc.IsNil)
		s.cleanup = append(s.cleanup, func() { workertest.CleanKill(agenttest.C(c), m) })
		return m
	}
	m1, m2 := wall(), wall()
	// m2's view is read before the claim, and its denied claim does not
	// refresh it: only a read made for the Block may answer.
	c.Assert(m2.BlockUntilLeadershipReleased("wordpress"), gc.IsNil)
	c.Assert(m1.ClaimLeadership("mysql", "mysql/0", time.Second), gc.IsNil)
	err := m2.ClaimLeadership("mysql", "mysql/1", time.Second)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true, gc.Commentf("%v", err))
	claimed := time.Now()
	done := make(chan error, 1)
	go func() { done <- m2.BlockUntilLeadershipReleased("mysql") }()
	select {
	case err := <-done:
		c.Fatalf("Block returned %v after %v while the lease was held", err, time.Since(claimed))
	case <-time.After(500 * time.Millisecond):
	}
	c.Assert(m1.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Block did not return after the release")
	}
}

func (s *managerSuite) TestContextVariantsGiveUpWithTheirContextWhileTheServerHangs(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	m := s.newManager(c, nil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	// A hung server answers nothing: only the caller's context can end
	// the calls, long before CallTimeout.
	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Assert(s.Server.Resume(), gc.IsNil) }()
	// A store read already on its way when the signal landed may still
	// be answered: wait until a read of our own hangs.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := s.DB.Client().Ping(ctx, nil)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}

	for name, call := range map[string]func(context.Context) error{
		"claim": func(ctx context.Context) error {
			return m.ClaimLeadershipContext(ctx, "wordpress", "wordpress/0", time.Minute)
		},
		"check": func(ctx context.Context) error {
			_, err := m.CheckLeadershipContext(ctx, "mysql", "mysql/0")
			return err
		},
		"token": token.CheckContext,
		"release": func(ctx context.Context) error {
			return m.ReleaseLeadershipContext(ctx, "mysql", "mysql/0")
		},
		"pin": func(ctx context.Context) error {
			return m.PinLeadershipContext(ctx, "mysql", "upgrade")
		},
		"unpin": func(ctx context.Context) error {
			return m.UnpinLeadershipContext(ctx, "mysql", "upgrade")
		},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		started := time.Now()
		err := call(ctx)
		cancel()
		c.Check(errors.Is(err, context.DeadlineExceeded), gc.Equals, true, gc.Commentf("%s: %v", name, err))
		c.Check(time.Since(started) < time.Second, gc.Equals, true, gc.Commentf("%s took %v", name, time.Since(started)))
	}
}

func (s *managerSuite) TestBlockIsNotAnsweredByAnOlderViewOnAFrozenClock(c *gc.C) {
	m1 := s.newManager(c, nil)
	m2 := s.newManager(c, nil)
	// m2's view is read before the claim, at the same instant of the
	// test clock as every later read.
	c.Assert(m2.BlockUntilLeadershipReleased("wordpress"), gc.IsNil)
	c.Assert(m1.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m2.BlockUntilLeadershipReleased("mysql") }()
	select {
	case err := <-done:
		c.Fatalf("Block returned %v while the lease was held", err)
	case <-time.After(300 * time.Millisecond):
	}
	c.Assert(m1.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	// m2's store reads again on its next tick.
	s.clock.Advance(time.Minute)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Block did not return after the release")
	}
}
