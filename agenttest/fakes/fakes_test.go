package fakes_test

import (
	"context"
	"testing"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/agenttest/fakes"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/watcher"
)

func TestPackage(t *testing.T) { gc.TestingT(t) }

var model = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")

type watcherSuite struct {
	w *fakes.Watcher
}

var _ = gc.Suite(&watcherSuite{})

func (s *watcherSuite) SetUpTest(c *gc.C) {
	s.w = fakes.NewWatcher()
}

func (s *watcherSuite) TearDownTest(c *gc.C) {
	s.w.Stop()
}

func receive(c *gc.C, ch <-chan watcher.Change) watcher.Change {
	select {
	case change := <-ch:
		return change
	case <-time.After(agenttest.LongWait):
		c.Fatalf("no change")
	}
	return watcher.Change{}
}

func (s *watcherSuite) TestWatchSendsTheStateThenEveryChangeInOrder(c *gc.C) {
	ch := make(chan watcher.Change)
	s.w.Watch("machine-0", ch)
	c.Assert(receive(c, ch), gc.Equals, watcher.Change{Key: "machine-0", Alive: false})
	s.w.Set("machine-0", true)
	c.Assert(receive(c, ch), gc.Equals, watcher.Change{Key: "machine-0", Alive: true})
	s.w.Set("machine-1", true)
	s.w.Set("machine-0", false)
	c.Assert(receive(c, ch), gc.Equals, watcher.Change{Key: "machine-0", Alive: false})
}

func (s *watcherSuite) TestAnUnreadChannelDelaysNeitherSetNorOthers(c *gc.C) {
	s.w.Watch("machine-0", make(chan watcher.Change))
	read := make(chan watcher.Change)
	s.w.Watch("machine-0", read)
	receive(c, read)
	for i := 0; i < 10; i++ {
		s.w.Set("machine-0", i%2 == 0)
	}
	// The reader gets the latest state, after at most the one change
	// already on its way.
	got := receive(c, read)
	if got.Alive {
		got = receive(c, read)
	}
	c.Assert(got, gc.Equals, watcher.Change{Key: "machine-0", Alive: false})
}

func (s *watcherSuite) TestSyncReturnsOnceEveryChangeIsDelivered(c *gc.C) {
	ch := make(chan watcher.Change, 2)
	s.w.Watch("machine-0", ch)
	s.w.Sync()
	c.Assert(len(ch), gc.Equals, 1)
	s.w.Set("machine-0", true)
	s.w.Sync()
	c.Assert(len(ch), gc.Equals, 2)
}

func (s *watcherSuite) TestInvalidWatchIsIgnored(c *gc.C) {
	s.w.Watch("", make(chan watcher.Change))
	s.w.Watch("machine-0", nil)
	s.w.Sync()
	_, err := s.w.Alive("")
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}

func (s *watcherSuite) TestSubscribeGivesASnapshotThenCoalescedChanges(c *gc.C) {
	s.w.Set("machine-0", true)
	sub := s.w.Subscribe("machine-0", "machine-1")
	defer sub.Close()
	ctx := context.Background()
	snapshot, err := sub.Next(ctx)
	c.Assert(err, gc.IsNil)
	c.Assert(snapshot, gc.HasLen, 2)
	s.w.Set("machine-1", true)
	s.w.Set("machine-1", false)
	s.w.Set("machine-2", true)
	s.w.Set("machine-1", true)
	changes, err := sub.Next(ctx)
	c.Assert(err, gc.IsNil)
	c.Assert(changes, gc.DeepEquals, []watcher.Change{{Key: "machine-1", Alive: true}})
}

func (s *watcherSuite) TestStopEndsSubscriptionsAndAlive(c *gc.C) {
	sub := s.w.Subscribe()
	_, err := sub.Next(context.Background())
	c.Assert(err, gc.IsNil)
	s.w.Stop()
	_, err = sub.Next(context.Background())
	c.Assert(errors.Is(err, watcher.ErrStopped), gc.Equals, true)
	_, err = s.w.Alive("machine-0")
	c.Assert(errors.Is(err, watcher.ErrStopped), gc.Equals, true)
}

func (s *watcherSuite) TestSetErrorFailsAliveAndRefresh(c *gc.C) {
	s.w.SetError(watcher.ErrNotLoaded)
	_, err := s.w.Alive("machine-0")
	c.Assert(errors.Is(err, watcher.ErrNotLoaded), gc.Equals, true)
	c.Assert(errors.Is(s.w.Refresh(), watcher.ErrNotLoaded), gc.Equals, true)
}

func next(c *gc.C, sub watcher.ResumableSubscription) watcher.Batch {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	b, err := sub.NextBatch(ctx)
	c.Assert(err, gc.IsNil)
	return b
}

func (s *watcherSuite) TestSubscribeWithReportsEveryTransitionInOrder(c *gc.C) {
	sub := s.w.SubscribeWith(watcher.SubscribeConfig{Keys: []string{"machine-0"}})
	defer sub.Close()
	snapshot := next(c, sub)
	c.Assert(snapshot.Snapshot, gc.Equals, true)
	c.Assert(snapshot.Changes(), gc.DeepEquals, []watcher.Change{{Key: "machine-0", Alive: false}})
	s.w.Set("machine-0", true)
	s.w.Set("machine-1", true)
	s.w.Set("machine-0", false)
	s.w.Set("machine-0", true)
	b := next(c, sub)
	c.Assert(b.Snapshot, gc.Equals, false)
	c.Assert(b.Changes(), gc.DeepEquals, []watcher.Change{
		{Key: "machine-0", Alive: true}, {Key: "machine-0", Alive: false}, {Key: "machine-0", Alive: true},
	})
	c.Assert(b.End, gc.Equals, s.w.Position())
}

func (s *watcherSuite) TestCoalescedChangesLeaveOutAKeyBackWhereItWas(c *gc.C) {
	sub := s.w.SubscribeWith(watcher.SubscribeConfig{Coalesce: true})
	defer sub.Close()
	next(c, sub)
	s.w.Set("machine-0", true)
	s.w.Set("machine-0", false)
	s.w.Set("machine-1", true)
	c.Assert(next(c, sub).Changes(), gc.DeepEquals, []watcher.Change{{Key: "machine-1", Alive: true}})
}

func (s *watcherSuite) TestAResumedSubscriptionGetsExactlyWhatItMissed(c *gc.C) {
	s.w.Set("machine-0", true)
	first := s.w.SubscribeWith(watcher.SubscribeConfig{})
	end := next(c, first).End
	first.Close()
	s.w.Set("machine-0", false)
	s.w.Set("machine-1", true)
	resumed := s.w.SubscribeWith(watcher.SubscribeConfig{After: end})
	defer resumed.Close()
	b := next(c, resumed)
	c.Assert(b.Snapshot, gc.Equals, false)
	c.Assert(b.Changes(), gc.DeepEquals, []watcher.Change{{Key: "machine-0", Alive: false}, {Key: "machine-1", Alive: true}})
	c.Assert(b.Events[1].Position, gc.Equals, b.End)

	// Resuming at the end answers at once, with nothing.
	atEnd := s.w.SubscribeWith(watcher.SubscribeConfig{After: b.End})
	defer atEnd.Close()
	c.Assert(next(c, atEnd).Events, gc.HasLen, 0)
}

func (s *watcherSuite) TestAPositionFromAnotherWatcherIsAReset(c *gc.C) {
	other := fakes.NewWatcher()
	defer other.Stop()
	other.Set("machine-9", true)
	s.w.Set("machine-0", true)
	sub := s.w.SubscribeWith(watcher.SubscribeConfig{After: other.Position()})
	defer sub.Close()
	b := next(c, sub)
	c.Assert(b.Snapshot, gc.Equals, true)
	c.Assert(b.Reset, gc.Equals, true)
	c.Assert(b.Changes(), gc.DeepEquals, []watcher.Change{{Key: "machine-0", Alive: true}})
}

func (s *watcherSuite) TestCloseFailsNextWithSubscriptionClosed(c *gc.C) {
	sub := s.w.SubscribeWith(watcher.SubscribeConfig{})
	next(c, sub)
	go sub.Close()
	_, err := sub.Next(context.Background())
	c.Assert(err, gc.Equals, watcher.ErrSubscriptionClosed)
}

func (s *watcherSuite) TestTheWatcherIsAWorker(c *gc.C) {
	w := fakes.NewWatcher()
	workertest.CheckAlive(agenttest.C(c), w)
	workertest.CleanKill(agenttest.C(c), w)
	select {
	case <-w.Dead():
	default:
		c.Fatalf("Dead not closed after Wait")
	}
	_, err := w.Alive("machine-0")
	c.Assert(err, gc.Equals, watcher.ErrStopped)
}

type batcherSuite struct{}

var _ = gc.Suite(&batcherSuite{})

func (s *batcherSuite) newPinger(c *gc.C, b *fakes.Batcher, period time.Duration) *pinger.Pinger {
	p, err := pinger.New(pinger.Config{
		Model: model, Key: "machine-0",
		Recorder: func() pinger.PingRecorder { return b }, Clock: agenttest.NewClock(), Period: period,
	})
	c.Assert(err, gc.IsNil)
	return p
}

func (s *batcherSuite) TestARealPingerPingsAndDiesIntoTheWatcher(c *gc.C) {
	b := fakes.NewBatcher(0)
	b.Watcher = fakes.NewWatcher()
	defer b.Watcher.Stop()
	p := s.newPinger(c, b, 0)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Pings(model, "machine-0"), gc.Equals, 1)
	c.Assert(b.Sync(), gc.IsNil)
	alive, err := b.Watcher.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)

	c.Assert(p.Disconnect(), gc.IsNil)
	c.Assert(b.Deaths(model, "machine-0"), gc.Equals, 1)
	c.Assert(b.Sync(), gc.IsNil)
	alive, err = b.Watcher.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)
}

func (s *batcherSuite) TestAPingerWithAnotherPeriodIsRefused(c *gc.C) {
	p := s.newPinger(c, fakes.NewBatcher(time.Second), 2*time.Second)
	c.Assert(errors.Is(p.Start(), errors.NotValid), gc.Equals, true)
}

func (s *batcherSuite) TestSetErrorFailsPings(c *gc.C) {
	b := fakes.NewBatcher(0)
	b.SetError(errors.New("boom"))
	p := s.newPinger(c, b, 0)
	c.Assert(p.Start(), gc.ErrorMatches, `cannot ping "machine-0": boom`)
}

func (s *batcherSuite) TestAnAgentNeedsNoDatabase(c *gc.C) {
	b := fakes.NewBatcher(0)
	b.Watcher = fakes.NewWatcher()
	defer b.Watcher.Stop()
	agent, err := presence.NewAgent(presence.AgentConfig{
		Key: "machine-0", Model: model, Batcher: b, Watcher: b.Watcher, Clock: agenttest.NewClock(),
	})
	c.Assert(err, gc.IsNil)
	p, err := agent.SetAgentPresence()
	c.Assert(err, gc.IsNil)
	defer p.Kill()
	alive, err := agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
}

func (s *batcherSuite) TestAKilledBatcherFailsAsTheRealOneDoes(c *gc.C) {
	b := fakes.NewBatcher(0)
	id, err := b.Register(nil, model, "machine-0")
	c.Assert(err, gc.IsNil)
	workertest.CheckAlive(agenttest.C(c), b)
	workertest.CleanKill(agenttest.C(c), b)
	c.Assert(b.Ping(id, 1), gc.Equals, pingbatcher.ErrStopped)
	c.Assert(b.Sync(), gc.Equals, pingbatcher.ErrStopped)
	_, err = b.Register(nil, model, "machine-1")
	c.Assert(err, gc.Equals, pingbatcher.ErrStopped)
}

type managerSuite struct{}

var _ = gc.Suite(&managerSuite{})

func (s *managerSuite) TestOneHolderAtATimeAndFencesRiseWithEachHolder(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	err := m.ClaimLeadership("mysql", "mysql/1", time.Minute)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true)
	first, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(m.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	c.Assert(errors.Is(first.Check(), leaseexpiry.ErrNotHeld), gc.Equals, true)
	c.Assert(m.ClaimLeadership("mysql", "mysql/1", time.Minute), gc.IsNil)
	second, err := m.CheckLeadership("mysql", "mysql/1")
	c.Assert(err, gc.IsNil)
	c.Assert(second.Fence() > first.Fence(), gc.Equals, true)
}

func (s *managerSuite) TestAClaimLapsesOnTheClockUnlessPinned(c *gc.C) {
	clk := agenttest.NewClock()
	m := fakes.NewManager(clk)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	c.Assert(m.PinLeadership("mysql", "machine-0"), gc.IsNil)
	clk.Advance(2 * time.Minute)
	c.Assert(m.Holder("mysql"), gc.Equals, "mysql/0")
	c.Assert(m.UnpinLeadership("mysql", "machine-0"), gc.IsNil)
	c.Assert(m.Holder("mysql"), gc.Equals, "")
	_, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true)
}

func (s *managerSuite) TestBlockReturnsWhenTheLeaseLapsesOnTheClock(c *gc.C) {
	clk := agenttest.NewClock()
	m := fakes.NewManager(clk)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	agenttest.WaitAdvance(c, clk, 59*time.Second, 1)
	select {
	case err := <-done:
		c.Fatalf("Block returned early: %v", err)
	default:
	}
	clk.Advance(time.Second)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Block did not return")
	}
}

func (s *managerSuite) TestAdvanceUntilNeedsNoTimerCount(c *gc.C) {
	clk := agenttest.NewClock()
	m := fakes.NewManager(clk)
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	returned := func() bool { return len(done) > 0 }
	c.Assert(fakes.AdvanceUntil(clk, 10*time.Second, 2*time.Minute, returned), gc.IsNil)
	c.Assert(<-done, gc.IsNil)
	c.Assert(clk.Now().Sub(agenttest.Epoch) >= time.Minute, gc.Equals, true)
	c.Assert(clk.Now().Sub(agenttest.Epoch) <= 70*time.Second, gc.Equals, true)

	// A condition that never holds ends at the limit.
	err := fakes.AdvanceUntil(clk, time.Second, 3*time.Second, func() bool { return false })
	c.Assert(errors.Is(err, errors.Timeout), gc.Equals, true)
}

func (s *managerSuite) TestTheManagerIsAWorker(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	workertest.CheckAlive(agenttest.C(c), m)
	workertest.CleanKill(agenttest.C(c), m)
	err := m.ClaimLeadership("mysql", "mysql/0", time.Minute)
	c.Assert(err, gc.Equals, leaseexpiry.ErrStopped)
}

func (s *managerSuite) TestStopFailsAWaitingBlock(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	m.Stop()
	select {
	case err := <-done:
		c.Assert(errors.Is(err, leaseexpiry.ErrStopped), gc.Equals, true)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Block did not return")
	}
}

func (s *managerSuite) TestBadNamesAndDurationsAreNotValid(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	for _, err := range []error{
		m.ClaimLeadership("mysql", "wordpress/0", time.Minute),
		m.ClaimLeadership("mysql", "mysql/0", 0),
		m.ClaimLeadership("mysql", "mysql/0", time.Hour),
		m.BlockUntilLeadershipReleased(""),
		m.PinLeadership("mysql", ""),
	} {
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
	}
}
