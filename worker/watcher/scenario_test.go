package watcher_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/watcher"
)

// scenarioSuite runs the presence scenarios of juju's original suite,
// rewritten for batched, slot-per-writer storage, against a real
// MongoDB-wire server.
type scenarioSuite struct {
	fixture
}

var _ = gc.Suite(&scenarioSuite{})

func (s *scenarioSuite) TestWorkflow(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	pa := s.newPinger(c, b, s.base, modelA, "a")
	pb := s.newPinger(c, b, s.base, modelA, "b")
	chA, chB := make(chan watcher.Change), make(chan watcher.Change)

	// Initial state: nobody alive.
	w.Watch("a", chA)
	w.Watch("b", chB)
	assertChange(c, chA, watcher.Change{Key: "a", Alive: false})
	assertChange(c, chB, watcher.Change{Key: "b", Alive: false})

	// Alive on start.
	c.Assert(pa.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	w.StartSync()
	assertChange(c, chA, watcher.Change{Key: "a", Alive: true})
	assertNoChange(c, chB)

	// No event on a quiet sync.
	w.StartSync()
	assertNoChange(c, chA)
	assertNoChange(c, chB)

	// Unwatch hides changes.
	w.Unwatch("b", chB)
	c.Assert(pb.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	w.StartSync()
	assertNoChange(c, chB)

	// Watching again gives the current value.
	w.Watch("b", chB)
	assertChange(c, chB, watcher.Change{Key: "b", Alive: true})

	// Disconnect gives dead at the next sync.
	c.Assert(pa.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	w.StartSync()
	assertChange(c, chA, watcher.Change{Key: "a", Alive: false})

	// Stop gives dead only once the pings time out: the writer, with no
	// live pinger left, goes on to the next slots to say so.
	c.Assert(pb.Stop(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	w.StartSync()
	assertNoChange(c, chB)
	s.clock.Advance(period)
	c.Assert(b.Sync(), gc.IsNil)
	w.StartSync()
	assertChange(c, chB, watcher.Change{Key: "b", Alive: false})
}

func (s *scenarioSuite) TestThousandPingersEveryOtherDisconnected(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	pingers := make(map[string]interface {
		Start() error
		Disconnect() error
	})
	for i := 0; i < 1000; i++ {
		key := fmt.Sprint(i)
		p := s.newPinger(c, b, s.base, modelA, key)
		c.Assert(p.Start(), gc.IsNil)
		pingers[key] = p
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	for i := 0; i < 1000; i++ {
		assertAlive(c, w, fmt.Sprint(i), true)
	}
	for i := 1; i < 1000; i += 2 {
		c.Assert(pingers[fmt.Sprint(i)].Disconnect(), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	for i := 0; i < 1000; i++ {
		assertAlive(c, w, fmt.Sprint(i), i%2 == 0)
	}
}

func (s *scenarioSuite) TestExpiryAtTheWindowEdge(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	a, err := b.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	other, err := b.Register(s.base, modelA, "other")
	c.Assert(err, gc.IsNil)
	// The clock starts on a slot boundary: a pings once, at the start of
	// its slot, and its pinger stops (releasing its index, or the
	// batcher would carry it), so that it counts for exactly one Period;
	// another key keeps its writer going.
	start := schema.Slot(s.clock.Now(), period)
	c.Assert(b.Ping(a, start), gc.IsNil)
	c.Assert(b.Ping(other, start), gc.IsNil)
	b.Release(a)
	c.Assert(b.Sync(), gc.IsNil)

	s.clock.Advance(period - time.Nanosecond)
	c.Assert(b.Ping(other, schema.Slot(s.clock.Now(), period)), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)

	s.clock.Advance(time.Nanosecond)
	c.Assert(b.Ping(other, schema.Slot(s.clock.Now(), period)), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", false)
	assertAlive(c, w, "other", true)
}

func (s *scenarioSuite) TestAWriterThatStopsIsDeadAfterAPeriodWithoutProgressWhileAnotherWrites(c *gc.C) {
	b := s.newBatcher(c, s.base)
	other := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	a, err := b.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	o, err := other.Register(s.base, modelA, "other")
	c.Assert(err, gc.IsNil)
	pingAndLoad := func() {
		c.Assert(other.Ping(o, schema.Slot(s.clock.Now(), period)), gc.IsNil)
		c.Assert(other.Sync(), gc.IsNil)
		c.Assert(w.Refresh(), gc.IsNil)
	}
	c.Assert(b.Ping(a, schema.Slot(s.clock.Now(), period)), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	pingAndLoad()
	assertAlive(c, w, "a", true)
	// The controller goes away: its writer writes nothing more. Its
	// keys keep their state while it may only be slow...
	c.Assert(b.Stop(), gc.IsNil)
	s.clock.Advance(period / 2)
	pingAndLoad()
	assertAlive(c, w, "a", true)
	// ...and are dead once it has made no progress for a whole Period
	// while the other writer kept on time.
	s.clock.Advance(period / 2)
	pingAndLoad()
	assertAlive(c, w, "a", false)
	assertAlive(c, w, "other", true)
}

func (s *scenarioSuite) TestWhenNoWriterIsOnTimeKeysHoldForMaxStall(c *gc.C) {
	b := s.newBatcher(c, s.base)
	var last presencereader.LoadStats
	w, err := watcher.New(watcher.Config{
		Base: s.base, Model: modelA, Clock: s.clock, Period: period, SyncInterval: never, NoPush: true,
		OnLoad: func(stats presencereader.LoadStats) { last = stats },
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	a, err := b.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	c.Assert(b.Ping(a, schema.Slot(s.clock.Now(), period)), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	// The only writer writes nothing more: the reader takes it for a
	// stall of the database (writes held up), not the death of every
	// controller, for MaxStall...
	c.Assert(b.Stop(), gc.IsNil)
	maxStall := presencereader.DefaultMaxStallPeriods * period
	s.clock.Advance(maxStall - time.Nanosecond)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	c.Assert(last.Stalled, gc.Equals, true)
	c.Assert(last.Held, gc.Equals, 1)
	// ...and then reports its keys dead: every controller may be gone.
	s.clock.Advance(time.Nanosecond)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", false)
}

func (s *scenarioSuite) TestModelsAreIsolated(c *gc.C) {
	b := s.newBatcher(c, s.base)
	wa := s.newWatcher(c, s.base, modelA)
	wb := s.newWatcher(c, s.base, modelB)
	pa := s.newPinger(c, b, s.base, modelA, "same-key")
	c.Assert(pa.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(wa.Refresh(), gc.IsNil)
	c.Assert(wb.Refresh(), gc.IsNil)
	assertAlive(c, wa, "same-key", true)
	assertAlive(c, wb, "same-key", false)

	pb := s.newPinger(c, b, s.base, modelB, "same-key")
	c.Assert(pb.Start(), gc.IsNil)
	c.Assert(pa.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(wa.Refresh(), gc.IsNil)
	c.Assert(wb.Refresh(), gc.IsNil)
	assertAlive(c, wa, "same-key", false)
	assertAlive(c, wb, "same-key", true)
}

func (s *scenarioSuite) TestKeyRestartedInALoopIsNeverSeenDead(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	p := s.newPinger(c, b, s.base, modelA, "a")
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	done := make(chan error, 1)
	go func() {
		for i := 0; i < 200; i++ {
			if err := p.Stop(); err != nil {
				done <- err
				return
			}
			if err := p.Start(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for checks, finished := 0, false; !finished || checks < 20; checks++ {
		select {
		case err := <-done:
			c.Assert(err, gc.IsNil)
			finished = true
		default:
		}
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(w.Refresh(), gc.IsNil)
		assertAlive(c, w, "a", true)
	}
}

func (s *scenarioSuite) TestSyncBlocksUntilTheEventIsDelivered(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	p := s.newPinger(c, b, s.base, modelA, "a")
	ch := make(chan watcher.Change)
	w.Watch("a", ch)
	assertChange(c, ch, watcher.Change{Key: "a", Alive: false})
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	done := make(chan struct{})
	go func() {
		w.Sync()
		close(done)
	}()
	select {
	case <-done:
		c.Fatalf("Sync returned before the change was delivered")
	case <-time.After(agenttest.ShortWait):
	}
	assertChange(c, ch, watcher.Change{Key: "a", Alive: true})
	select {
	case <-done:
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Sync did not return after delivery")
	}
}

func (s *scenarioSuite) TestUnwatchDropsQueuedEvents(c *gc.C) {
	w := s.newWatcher(c, s.base, modelA)
	ch := make(chan watcher.Change)
	for i := 0; i < 100; i++ {
		w.Watch(fmt.Sprint(i), ch)
	}
	for i := 1; i < 100; i += 2 {
		w.Unwatch(fmt.Sprint(i), ch)
	}
	seen := make(map[string]bool)
	for i := 0; i < 50; i++ {
		select {
		case change := <-ch:
			c.Assert(change.Alive, gc.Equals, false)
			seen[change.Key] = true
		case <-time.After(agenttest.LongWait):
			c.Fatalf("only %d changes", i)
		}
	}
	assertNoChange(c, ch)
	for i := 0; i < 100; i += 2 {
		c.Check(seen[fmt.Sprint(i)], gc.Equals, true, gc.Commentf("key %d", i))
	}
}

func (s *scenarioSuite) TestOneUnreadChannelDoesNotDelayAnother(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	stuck := make(chan watcher.Change)
	ch := make(chan watcher.Change)
	w.Watch("a", stuck)
	w.Watch("b", ch)
	assertChange(c, ch, watcher.Change{Key: "b", Alive: false})

	pa := s.newPinger(c, b, s.base, modelA, "a")
	pb := s.newPinger(c, b, s.base, modelA, "b")
	c.Assert(pa.Start(), gc.IsNil)
	c.Assert(pb.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertChange(c, ch, watcher.Change{Key: "b", Alive: true})

	c.Assert(pb.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertChange(c, ch, watcher.Change{Key: "b", Alive: false})
	assertAlive(c, w, "a", true)
}

func (s *scenarioSuite) TestKeyIsAliveWhileAnyOfItsPingersIs(c *gc.C) {
	base2 := s.NewDB(c).Collection("presence")
	b1 := s.newBatcher(c, s.base)
	b2 := s.newBatcher(c, base2)
	w := s.newWatcher(c, s.base, modelA)
	ch := make(chan watcher.Change, 10)
	w.Watch("agent", ch)
	assertChange(c, ch, watcher.Change{Key: "agent", Alive: false})

	// The agent is connected through two controllers, then drops the
	// first: it must not flap dead.
	p1 := s.newPinger(c, b1, s.base, modelA, "agent")
	p2 := s.newPinger(c, b2, base2, modelA, "agent")
	c.Assert(p1.Start(), gc.IsNil)
	c.Assert(p2.Start(), gc.IsNil)
	c.Assert(b1.Sync(), gc.IsNil)
	c.Assert(b2.Sync(), gc.IsNil)
	w.Sync()
	assertChange(c, ch, watcher.Change{Key: "agent", Alive: true})

	c.Assert(p1.Disconnect(), gc.IsNil)
	c.Assert(b1.Sync(), gc.IsNil)
	w.Sync()
	assertNoChange(c, ch)
	assertAlive(c, w, "agent", true)

	c.Assert(p2.Disconnect(), gc.IsNil)
	c.Assert(b2.Sync(), gc.IsNil)
	w.Sync()
	assertChange(c, ch, watcher.Change{Key: "agent", Alive: false})
}

func (s *scenarioSuite) TestTwoBatchersAndTwoWatchersOnSeparateClientsAgree(c *gc.C) {
	base2 := s.NewDB(c).Collection("presence")
	base3 := s.NewDB(c).Collection("presence")
	b1 := s.newBatcher(c, s.base)
	b2 := s.newBatcher(c, base2)
	w1 := s.newWatcher(c, s.base, modelA)
	w2 := s.newWatcher(c, base3, modelA)

	var ps []interface{ Disconnect() error }
	for i := 0; i < 100; i++ {
		b, base := b1, s.base
		if i >= 50 {
			b, base = b2, base2
		}
		p := s.newPinger(c, b, base, modelA, fmt.Sprint(i))
		c.Assert(p.Start(), gc.IsNil)
		ps = append(ps, p)
	}
	for i := 0; i < 100; i += 4 {
		c.Assert(ps[i].Disconnect(), gc.IsNil)
	}
	c.Assert(b1.Sync(), gc.IsNil)
	c.Assert(b2.Sync(), gc.IsNil)
	c.Assert(w1.Refresh(), gc.IsNil)
	c.Assert(w2.Refresh(), gc.IsNil)
	for i := 0; i < 100; i++ {
		key := fmt.Sprint(i)
		assertAlive(c, w1, key, i%4 != 0)
		assertAlive(c, w2, key, i%4 != 0)
	}
}

func (s *scenarioSuite) TestNewKeysAreLearnedFromPingDocumentsAlone(c *gc.C) {
	b := s.newBatcher(c, s.base)
	var counter agenttest.CommandCounter
	w := s.newWatcher(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence"), modelA)
	first := s.newPinger(c, b, s.base, modelA, "first")
	c.Assert(first.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "first", true)

	counter.Reset()
	second := s.newPinger(c, b, s.base, modelA, "second")
	c.Assert(second.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "second", true)
	c.Assert(counter.CountOn("find", "presence.pings"), gc.Equals, 1)
	c.Assert(counter.CountOn("find", "presence.beings"), gc.Equals, 0)
}

func (s *scenarioSuite) TestAWatcherStartedLaterFindsEveryKey(c *gc.C) {
	b := s.newBatcher(c, s.base)
	early := s.newPinger(c, b, s.base, modelA, "early")
	c.Assert(early.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	late := s.newPinger(c, b, s.base, modelA, "late")
	c.Assert(late.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	w := s.newWatcher(c, s.base, modelA)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "early", true)
	assertAlive(c, w, "late", true)
}

func (s *scenarioSuite) TestWatchChannelNeverEndsOnAStaleValue(c *gc.C) {
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	p := s.newPinger(c, b, s.base, modelA, "a")
	ch := make(chan watcher.Change)
	w.Watch("a", ch)
	last := (<-ch).Alive
	received := make(chan watcher.Change, 100)
	stop := make(chan struct{})
	defer close(stop)
	// A slow reader: it takes its time over every change, so that the
	// next one waits in flight while the key flaps.
	go func() {
		for {
			select {
			case change := <-ch:
				received <- change
				time.Sleep(100 * time.Millisecond)
			case <-stop:
				return
			}
		}
	}()
	alive := false
	for flaps := 1; flaps <= 6; flaps++ {
		for i := 0; i < flaps; i++ {
			if alive {
				c.Assert(p.Disconnect(), gc.IsNil)
			} else {
				c.Assert(p.Start(), gc.IsNil)
			}
			alive = !alive
			c.Assert(b.Sync(), gc.IsNil)
			c.Assert(w.Refresh(), gc.IsNil)
		}
		// Whatever the reader got in between, it ends on the truth.
		for quiet := false; !quiet; {
			select {
			case change := <-received:
				last = change.Alive
			case <-time.After(300 * time.Millisecond):
				quiet = true
			}
		}
		c.Assert(last, gc.Equals, alive, gc.Commentf("after %d flaps", flaps))
	}
}

func (s *scenarioSuite) TestWatchOfABadKeyOrANilChannelIsLoggedAndIgnored(c *gc.C) {
	logger := &agenttest.Logger{}
	w, err := watcher.New(watcher.Config{
		Base: s.base, Model: modelA, Clock: s.clock, Period: period, SyncInterval: never, NoPush: true, Logger: logger,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	ch := make(chan watcher.Change, 1)
	w.Watch("", ch)
	w.Watch("a", nil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertNoChange(c, ch)
	ignored := 0
	for _, line := range logger.Entries() {
		if strings.Contains(line, "ignoring Watch") {
			ignored++
		}
	}
	c.Assert(ignored, gc.Equals, 2, gc.Commentf("%q", logger.Entries()))
	// The watcher serves everyone else as before.
	w.Watch("a", ch)
	assertChange(c, ch, watcher.Change{Key: "a", Alive: false})
}

func (s *scenarioSuite) TestWritersReturningFromAStallOneByOneKillNobody(c *gc.C) {
	b1 := s.newBatcher(c, s.base)
	b2 := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	a, err := b1.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	b, err := b2.Register(s.base, modelA, "b")
	c.Assert(err, gc.IsNil)
	write := func(batcher interface {
		Ping(pinger.Identity, int64) error
		Sync() error
	}, id pinger.Identity) {
		c.Assert(batcher.Ping(id, schema.Slot(s.clock.Now(), period)), gc.IsNil)
		c.Assert(batcher.Sync(), gc.IsNil)
	}
	write(b1, a)
	write(b2, b)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	assertAlive(c, w, "b", true)
	// Every write is held up for two Periods: nobody is on time.
	s.clock.Advance(2 * period)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	assertAlive(c, w, "b", true)
	// The first writer gets through; the second is a flush behind. Its
	// key must not die for the stall's sake...
	write(b1, a)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "b", true)
	s.clock.Advance(period / 4)
	write(b1, a)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "b", true)
	// ...but a writer that stays silent a Period after the others are
	// back is judged as usual.
	s.clock.Advance(period)
	write(b1, a)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	assertAlive(c, w, "b", false)
}

// twoControllers returns two controllers' batchers and a watcher of
// modelA, with keys "a" and "other" registered at the first.
func (s *scenarioSuite) twoControllers(c *gc.C) (b1, b2 *pingbatcher.PingBatcher, w *watcher.Watcher, a1, other pinger.Identity) {
	b1 = s.newBatcher(c, s.base)
	b2 = s.newBatcher(c, s.base)
	w = s.newWatcher(c, s.base, modelA)
	var err error
	a1, err = b1.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	other, err = b1.Register(s.base, modelA, "other")
	c.Assert(err, gc.IsNil)
	return b1, b2, w, a1, other
}

func (s *scenarioSuite) TestADisconnectElsewhereDoesNotKillAKeyALateWriterHasAlive(c *gc.C) {
	// The agent is connected through two controllers; the one that
	// keeps it alive is a little late when the other records the
	// Disconnect of its own connection.
	b1, b2, w, a1, other := s.twoControllers(c)
	a2, err := b2.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	slot := func() int64 { return schema.Slot(s.clock.Now(), period) }
	both := func() {
		for _, p := range []struct {
			b  *pingbatcher.PingBatcher
			id pinger.Identity
		}{{b1, a1}, {b1, other}, {b2, a2}} {
			c.Assert(p.b.Ping(p.id, slot()), gc.IsNil)
		}
		c.Assert(b1.Sync(), gc.IsNil)
		c.Assert(b2.Sync(), gc.IsNil)
	}
	both()
	c.Assert(w.Refresh(), gc.IsNil)
	s.clock.Advance(period / 2)
	both()
	s.clock.Advance(period / 4)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	// Two slots on, b2 is late (but within a Period of its last
	// progress) when b1 records the Disconnect.
	s.clock.Advance(3 * period / 4)
	c.Assert(b1.Ping(other, slot()), gc.IsNil)
	c.Assert(b1.Disconnect(a1, slot()), gc.IsNil)
	c.Assert(b1.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)
	// b2 stays silent: once it has made no progress for a Period, its
	// keys are judged dead like any other's.
	s.clock.Advance(period / 2)
	c.Assert(b1.Ping(other, slot()), gc.IsNil)
	c.Assert(b1.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", false)
}

func (s *scenarioSuite) TestADisconnectElsewhereWaitsWhileAnotherWritersKeysAreUnknown(c *gc.C) {
	// The agent is alive through b1, which the reader knows, when it
	// connects through b2 too; the reader cannot read b2's beings (here
	// they are gone; a beings read that times out does the same), so
	// b2's live bit names no key it knows. b1 then records the
	// Disconnect of its own connection.
	b1, b2, w, a1, other := s.twoControllers(c)
	slot := func() int64 { return schema.Slot(s.clock.Now(), period) }
	c.Assert(b1.Ping(a1, slot()), gc.IsNil)
	c.Assert(b1.Ping(other, slot()), gc.IsNil)
	c.Assert(b1.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)

	a2, err := b2.Register(s.base, modelA, "a")
	c.Assert(err, gc.IsNil)
	c.Assert(b2.Ping(a2, slot()), gc.IsNil)
	c.Assert(b2.Sync(), gc.IsNil)
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	_, err = schema.Beings(s.base).DeleteMany(ctx, bson.D{{Key: schema.FieldWriter, Value: a2.Writer}})
	c.Assert(err, gc.IsNil)
	c.Assert(b1.Disconnect(a1, slot()), gc.IsNil)
	c.Assert(b1.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	assertAlive(c, w, "a", true)

	// Unknown keys hold deaths for MaxStall at most (a part of the
	// database is failing): past it, a recorded death counts although
	// b2's bit is still unknown.
	held := agenttest.AdvanceUntil(c, s.clock, period/2, func() bool {
		c.Assert(b1.Ping(other, slot()), gc.IsNil)
		c.Assert(b2.Ping(a2, slot()), gc.IsNil)
		c.Assert(b1.Sync(), gc.IsNil)
		c.Assert(b2.Sync(), gc.IsNil)
		c.Assert(w.Refresh(), gc.IsNil)
		alive, err := w.Alive("a")
		c.Assert(err, gc.IsNil)
		return !alive
	})
	c.Assert(held, gc.Equals, presencereader.DefaultMaxStallPeriods*period)
}
