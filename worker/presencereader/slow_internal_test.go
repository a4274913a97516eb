package presencereader

import (
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
)

// slowSuite checks, from the inside, how the reader judges writers while
// the database is slow but not stalled: its loads take longer than they
// should, and so do the writers' writes. Only the inside can make a load
// take a given time on a fake clock.
type slowSuite struct{}

var _ = gc.Suite(&slowSuite{})

const slowPeriod = 2 * time.Second

// slowReader returns a reader that knows writer w's key k and writer
// prompt's key j, both in model m, and a function that applies a load
// that started at at (from logEpoch) and took took, in which w's latest
// slot is slot and prompt moves on every slot of the reader's time. It
// never starts the reader's loop: the test is the loop.
func slowReader() (*Reader, func(at, took time.Duration, slot int64)) {
	r := &Reader{
		config: Config{Period: slowPeriod, MaxStall: 12 * slowPeriod}.withDefaults(),
		view:   newView(),
		clocks: make(map[string]*writerClock),
	}
	r.view.learn("w", 0, schema.NewEntries([]string{"m"}, []string{"k"}))
	r.view.learn("prompt", 0, schema.NewEntries([]string{"m"}, []string{"j"}))
	last := map[string]int64{"w": -1, "prompt": -1}
	bits := func(name string, slot int64) writerBits {
		moved := slot != last[name]
		last[name] = slot
		return writerBits{writer: name, slot: slot, moved: moved, aliveCur: []uint64{1}}
	}
	return r, func(at, took time.Duration, slot int64) {
		r.applied(loadResult{
			at: logEpoch.Add(at), took: took,
			writers: []writerBits{bits("w", slot), bits("prompt", int64(at/(slowPeriod/2)))},
		})
	}
}

// keepPace has both writers move on every slot for four slots, with
// prompt loads.
func keepPace(load func(at, took time.Duration, slot int64)) {
	for i := int64(0); i <= 4; i++ {
		load(time.Duration(i)*slowPeriod/2, 10*time.Millisecond, i)
	}
}

// slowDatabase has the loads from 4.1 s to 6 s each take 400 ms (a fifth
// of a Period: slower than a quarter slot, short of a stall), 1.6 s in
// all, while w stays in slot 4; after each it calls after.
func slowDatabase(load func(at, took time.Duration, slot int64), after func(at time.Duration)) {
	for at := 4100 * time.Millisecond; at < 6*time.Second; at += 500 * time.Millisecond {
		load(at, 400*time.Millisecond, 4)
		after(at)
	}
}

func (s *slowSuite) TestAWriterHeldUpByASlowDatabaseKeepsItsKeys(c *gc.C) {
	r, load := slowReader()
	keepPace(load)
	// From 4.1 s the database is slow, and w's write of its next slot,
	// due at 5 s, lands only at 6.3 s, 2.3 s after its last progress,
	// more than a Period. The other writer keeps pace, so that no
	// writer being on time is no excuse.
	slowDatabase(load, func(at time.Duration) {
		c.Assert(r.view.lookup("m", "k"), gc.Equals, true, gc.Commentf("at %v", at))
	})
	load(6100*time.Millisecond, 10*time.Millisecond, 4)
	c.Assert(r.view.lookup("m", "k"), gc.Equals, true)
	load(6300*time.Millisecond, 10*time.Millisecond, 6)
	c.Assert(r.view.lookup("m", "k"), gc.Equals, true)
	c.Assert(r.view.lookup("m", "j"), gc.Equals, true)
}

func (s *slowSuite) TestAWriterThatDiedWhileTheDatabaseWasSlowIsSeenDeadOnceTheSlowTimeHasPassed(c *gc.C) {
	r, load := slowReader()
	keepPace(load)
	// w dies after its progress at 4 s, and the database is slow from
	// 4.1 s. It keeps its keys for a Period and the 1.6 s of slow loads...
	slowDatabase(load, func(time.Duration) {})
	for at := 6 * time.Second; at < 7500*time.Millisecond; at += 100 * time.Millisecond {
		load(at, 10*time.Millisecond, 4)
		c.Assert(r.view.lookup("m", "k"), gc.Equals, true, gc.Commentf("at %v", at))
	}
	// ...and no longer.
	load(7700*time.Millisecond, 10*time.Millisecond, 4)
	c.Assert(r.view.lookup("m", "k"), gc.Equals, false)
	c.Assert(r.view.lookup("m", "j"), gc.Equals, true)
}

func (s *slowSuite) TestPromptLoadsExcuseNoWriter(c *gc.C) {
	r, load := slowReader()
	keepPace(load)
	// Loads of 200 ms, less than a quarter slot, are the database's
	// usual pace: a writer silent for a Period is late as before.
	for at := 4100 * time.Millisecond; at < 6100*time.Millisecond; at += 250 * time.Millisecond {
		load(at, 200*time.Millisecond, 4)
	}
	load(6100*time.Millisecond, 10*time.Millisecond, 4)
	c.Assert(r.view.lookup("m", "k"), gc.Equals, false)
}
