package watcher_test

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/watcher"
)

type subscriptionSuite struct {
	fixture
}

var _ = gc.Suite(&subscriptionSuite{})

func next(c *gc.C, sub watcher.Subscription) []watcher.Change {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	changes, err := sub.Next(ctx)
	c.Assert(err, gc.IsNil)
	sort.Slice(changes, func(i, j int) bool { return changes[i].Key < changes[j].Key })
	return changes
}

func assertNoNext(c *gc.C, sub watcher.Subscription) {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.ShortWait)
	defer cancel()
	changes, err := sub.Next(ctx)
	c.Assert(err, gc.Equals, context.DeadlineExceeded, gc.Commentf("got %v", changes))
}

func (s *subscriptionSuite) TestFirstNextIsTheSnapshotThenDeltas(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	pa := s.newPinger(c, b, s.base, modelA, "a")
	c.Assert(pa.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)

	sub := w.Subscribe("a", "b")
	defer sub.Close()
	c.Assert(next(c, sub), gc.DeepEquals, []watcher.Change{{Key: "a", Alive: true}, {Key: "b", Alive: false}})
	assertNoNext(c, sub)

	pb := s.newPinger(c, b, s.base, modelA, "b")
	c.Assert(pb.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	c.Assert(next(c, sub), gc.DeepEquals, []watcher.Change{{Key: "b", Alive: true}})
}

func (s *subscriptionSuite) TestSubscribeToEveryKey(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	sub := w.Subscribe()
	defer sub.Close()
	c.Assert(next(c, sub), gc.HasLen, 0)

	p := s.newPinger(c, b, s.base, modelA, "new-agent")
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	c.Assert(next(c, sub), gc.DeepEquals, []watcher.Change{{Key: "new-agent", Alive: true}})
}

func (s *subscriptionSuite) TestUnreadSubscriptionKeepsOneChangePerKey(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	unread := w.Subscribe("a")
	defer unread.Close()
	read := w.Subscribe("a")
	defer read.Close()
	c.Assert(next(c, read), gc.DeepEquals, []watcher.Change{{Key: "a", Alive: false}})

	// Flap the key many times; the reader of one subscription sees every
	// step, the unread one keeps only the latest state.
	for i := 0; i < 10; i++ {
		p := s.newPinger(c, b, s.base, modelA, "a")
		c.Assert(p.Start(), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(w.Refresh(), gc.IsNil)
		c.Assert(next(c, read), gc.DeepEquals, []watcher.Change{{Key: "a", Alive: true}})
		c.Assert(p.Disconnect(), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(w.Refresh(), gc.IsNil)
		c.Assert(next(c, read), gc.DeepEquals, []watcher.Change{{Key: "a", Alive: false}})
	}
	c.Assert(next(c, unread), gc.DeepEquals, []watcher.Change{{Key: "a", Alive: false}})
}

func (s *subscriptionSuite) TestNextFailsAfterClose(c *gc.C) {
	w := s.newWatcher(c, s.base, modelA)
	sub := w.Subscribe("a")
	sub.Close()
	sub.Close()
	_, err := sub.Next(context.Background())
	c.Assert(err, gc.Equals, watcher.ErrSubscriptionClosed)
}

func (s *subscriptionSuite) TestNextFailsWhenTheWatcherStops(c *gc.C) {
	w := s.newWatcher(c, s.base, modelA)
	sub := w.Subscribe("a")
	next(c, sub)
	done := make(chan error, 1)
	go func() {
		_, err := sub.Next(context.Background())
		done <- err
	}()
	c.Assert(w.Stop(), gc.IsNil)
	select {
	case err := <-done:
		c.Assert(err, gc.Equals, watcher.ErrStopped)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Next did not return")
	}
}

func (s *subscriptionSuite) TestSubscribeWithAnInvalidKeyFails(c *gc.C) {
	w := s.newWatcher(c, s.base, modelA)
	_, err := w.Subscribe("").Next(context.Background())
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
}

func (s *subscriptionSuite) TestDeadWatcherFailsEverything(c *gc.C) {
	w := watcher.NewDeadWatcher(errors.New("boom"))
	c.Assert(w.Wait(), gc.ErrorMatches, "boom")
	c.Assert(w.Err(), gc.ErrorMatches, "boom")
	_, err := w.Alive("a")
	c.Assert(err, gc.ErrorMatches, "boom")
	_, err = w.Subscribe("a").Next(context.Background())
	c.Assert(err, gc.ErrorMatches, "boom")
	c.Assert(w.Refresh(), gc.ErrorMatches, "boom")
	w.Sync()
	w.StartSync()
	ch := make(chan watcher.Change, 1)
	w.Watch("a", ch)
	assertNoChange(c, ch)
}

func (s *subscriptionSuite) TestManySubscriptionsOneNeverRead(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	stuck := w.Subscribe()
	defer stuck.Close()
	var subs []watcher.Subscription
	for i := 0; i < 100; i++ {
		sub := w.Subscribe(fmt.Sprint(i))
		defer sub.Close()
		next(c, sub)
		subs = append(subs, sub)
	}
	for i := 0; i < 100; i++ {
		p := s.newPinger(c, b, s.base, modelA, fmt.Sprint(i))
		c.Assert(p.Start(), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	for i, sub := range subs {
		c.Assert(next(c, sub), gc.DeepEquals, []watcher.Change{{Key: fmt.Sprint(i), Alive: true}})
	}
}

func (s *subscriptionSuite) TestSubscribingToKeysNobodyWritesCostsNothingOnceClosed(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	p := s.newPinger(c, b, s.base, modelA, "a")
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	var made []string
	for i := 0; i < 2000; i++ {
		made = append(made, fmt.Sprintf("made-up-%d", i))
	}
	sub := w.Subscribe(made...)
	c.Assert(next(c, sub), gc.HasLen, 2000)
	c.Assert(w.Report()["keys"], gc.Equals, 1)
	c.Assert(w.Report()["subscriptions"], gc.Equals, 1)
	sub.Close()
	c.Assert(w.Refresh(), gc.IsNil)
	report := w.Report()
	c.Assert(report["keys"], gc.Equals, 1)
	c.Assert(report["subscriptions"], gc.IsNil)
	c.Assert(report["watched-keys"], gc.IsNil)
}

func (s *subscriptionSuite) TestAResumedSubscriptionGetsWhatItMissed(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	sub := w.SubscribeWith(watcher.SubscribeConfig{})
	first, err := sub.NextBatch(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(first.Snapshot, gc.Equals, true)
	// The subscriber goes away, keeping its position as a string (in
	// a URL, say); a key flaps meanwhile.
	sub.Close()
	kept := first.End.String()
	p := s.newPinger(c, b, s.base, modelA, "a")
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	c.Assert(p.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)

	after, err := watcher.ParsePosition(kept)
	c.Assert(err, gc.IsNil)
	sub = w.SubscribeWith(watcher.SubscribeConfig{After: after})
	defer sub.Close()
	resumed, err := sub.NextBatch(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(resumed.Reset, gc.Equals, false)
	c.Assert(resumed.Changes(), gc.DeepEquals, []watcher.Change{{Key: "a", Alive: true}, {Key: "a", Alive: false}})
	c.Assert(resumed.End, gc.Equals, w.Position())

	_, err = watcher.ParsePosition("not a position")
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}

func (s *subscriptionSuite) TestAPrivateReadersLogTakesTheWatchersBounds(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w, err := watcher.New(watcher.Config{Base: s.base, Model: modelA, Clock: s.clock, Period: period, SyncInterval: never, NoPush: true, LogLength: 1})
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { workertest.CleanKill(agenttest.C(c), w) })
	c.Assert(w.Refresh(), gc.IsNil)
	kept := w.Position()
	for _, key := range []string{"a", "b"} {
		p := s.newPinger(c, b, s.base, modelA, key)
		c.Assert(p.Start(), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(w.Refresh(), gc.IsNil)
	}
	c.Assert(w.Report()["log-entries"], gc.Equals, 1)
	sub := w.SubscribeWith(watcher.SubscribeConfig{After: kept})
	defer sub.Close()
	batch, err := sub.NextBatch(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(batch.Reset, gc.Equals, true)
	c.Assert(batch.Changes(), gc.HasLen, 2)
}
