package watcher_test

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/watcher"
)

// outageSuite stops and restarts the database under running workers.
type outageSuite struct {
	fixture
}

var _ = gc.Suite(&outageSuite{})

func (s *outageSuite) TestDatabaseOutageGivesNoDeathAndLosesNoPings(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot stop an external MongoDB")
	}
	logger := &agenttest.Logger{}
	b := s.newBatcher(c, s.base)
	w, err := watcher.New(watcher.Config{
		Base: s.base, Model: modelA, Clock: s.clock, Logger: logger,
		Period: period, SyncInterval: never, NoPush: true,
	})
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { w.Kill(); c.Check(w.Wait(), gc.IsNil) })
	p := s.newPinger(c, b, s.base, modelA, "a")
	ch := make(chan watcher.Change, 10)
	w.Watch("a", ch)
	assertChange(c, ch, watcher.Change{Key: "a", Alive: false})
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	w.Sync()
	assertChange(c, ch, watcher.Change{Key: "a", Alive: true})
	firstSlot := schema.Slot(s.clock.Now(), period)

	c.Assert(s.Server.Stop(), gc.IsNil)
	// Three periods pass while the database is away; the pinger keeps
	// pinging into the batcher's memory. Three timers wait: the pinger's,
	// the batcher's and the watcher's.
	for i := 0; i < 6; i++ {
		agenttest.WaitAdvance(c, s.clock, period/2, 3)
	}
	c.Assert(b.Sync(), gc.NotNil)
	c.Assert(w.Refresh(), gc.NotNil)
	assertAlive(c, w, "a", true)
	c.Assert(logger.Entries(), gc.Not(gc.HasLen), 0)

	c.Assert(s.Server.Start(), gc.IsNil)
	// The watcher reads before the batcher has written what it buffered:
	// the current window is empty, and still nobody dies. The driver
	// needs a moment to notice that the server is back.
	c.Assert(agenttest.Retry(agenttest.LongWait, w.Refresh), gc.IsNil)
	assertAlive(c, w, "a", true)
	c.Assert(agenttest.Retry(agenttest.LongWait, b.Sync), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	assertNoChange(c, ch)

	// Every slot pinged during the outage was written.
	lastSlot := schema.Slot(s.clock.Now(), period)
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	cur, err := schema.Pings(s.base).Find(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	var docs []schema.PingDoc
	c.Assert(cur.All(ctx, &docs), gc.IsNil)
	var got []int64
	for _, doc := range docs {
		got = append(got, doc.Slot)
	}
	for slot := firstSlot; slot <= lastSlot; slot++ {
		c.Check(got, containsSlot, slot)
	}

	// The channel that saw no death sees one: the pinger stops without
	// a word, and its key dies once its pings are a Period old.
	c.Assert(p.Stop(), gc.IsNil)
	step := period / 4
	died := agenttest.AdvanceUntil(c, s.clock, step, func() bool {
		c.Assert(b.Sync(), gc.IsNil)
		w.Sync()
		select {
		case change := <-ch:
			c.Assert(change, gc.Equals, watcher.Change{Key: "a", Alive: false})
			return true
		default:
			return false
		}
	})
	c.Assert(died <= period+step, gc.Equals, true, gc.Commentf("death seen %v after the pinger stopped", died))
}

type containsSlotChecker struct{ *gc.CheckerInfo }

var containsSlot gc.Checker = containsSlotChecker{&gc.CheckerInfo{Name: "containsSlot", Params: []string{"obtained", "slot"}}}

func (containsSlotChecker) Check(params []any, _ []string) (bool, string) {
	slots, _ := params[0].([]int64)
	want, _ := params[1].(int64)
	for _, s := range slots {
		if s == want {
			return true, ""
		}
	}
	return false, ""
}
