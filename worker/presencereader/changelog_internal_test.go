package presencereader

import (
	"fmt"
	"math/rand/v2"
	"time"

	gc "gopkg.in/check.v1"
)

// changeLogSuite checks the ring of a change log from the inside.
type changeLogSuite struct{}

var _ = gc.Suite(&changeLogSuite{})

var logEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func keysOf(events []Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, fmt.Sprintf("%s=%v@%d", e.Key, e.Alive, e.Position.Seq))
	}
	return out
}

func (s *changeLogSuite) TestTheLogKeepsTheNewestEntriesUpToItsLength(c *gc.C) {
	l := newChangeLog(100)
	for i := 0; i < 250; i++ {
		l.add(fmt.Sprintf("k%d", i%7), i%2 == 0, logEpoch)
	}
	c.Assert(l.n, gc.Equals, 100)
	c.Assert(len(l.ring), gc.Equals, 100)
	c.Assert(l.floor(), gc.Equals, uint64(150))
	c.Assert(l.holds(149), gc.Equals, false)
	c.Assert(l.holds(150), gc.Equals, true)
	c.Assert(l.holds(251), gc.Equals, false)
	// Following a key back through the wrapped ring finds what a scan
	// finds.
	for _, after := range []uint64{150, 200, 249} {
		byKey, ok := l.read(after, false, []string{"k3"}, map[string]bool{"k3": true}, false)
		c.Assert(ok, gc.Equals, true)
		var want []Event
		for seq := after + 1; seq <= l.last; seq++ {
			if (seq-1)%7 == 3 {
				want = append(want, Event{Change: Change{Key: "k3", Alive: (seq-1)%2 == 0}, Position: Position{View: l.id, Seq: seq}})
			}
		}
		c.Assert(keysOf(byKey), gc.DeepEquals, keysOf(want), gc.Commentf("after %d", after))
	}
}

func (s *changeLogSuite) TestPruningByAgeGivesMemoryBack(c *gc.C) {
	l := newChangeLog(10000)
	for i := 0; i < 5000; i++ {
		l.add(fmt.Sprintf("k%d", i), true, logEpoch)
	}
	l.add("late", true, logEpoch.Add(time.Minute))
	big := l.bytes()
	c.Assert(l.prunable(logEpoch.Add(time.Second)), gc.Equals, true)
	l.prune(logEpoch.Add(time.Second))
	c.Assert(l.n, gc.Equals, 1)
	c.Assert(l.floor(), gc.Equals, uint64(5000))
	c.Assert(len(l.latest), gc.Equals, 1)
	c.Assert(l.bytes() < big/50, gc.Equals, true, gc.Commentf("%d bytes of %d", l.bytes(), big))
	events, ok := l.read(5000, true, nil, nil, false)
	c.Assert(ok, gc.Equals, true)
	c.Assert(keysOf(events), gc.DeepEquals, []string{"late=true@5001"})
}

func (s *changeLogSuite) TestFollowingKeysBackFindsWhatAScanFinds(c *gc.C) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := newChangeLog(50)
	state := make(map[string]bool)
	for i := 0; i < 300; i++ {
		key := fmt.Sprintf("k%d", rng.IntN(6))
		state[key] = !state[key]
		l.add(key, state[key], logEpoch)
	}
	for _, keys := range [][]string{{"k1"}, {"k1", "k3"}, {"k0", "k2", "k5"}} {
		set := make(map[string]bool)
		for _, key := range keys {
			set[key] = true
		}
		for after := l.floor(); after <= l.last; after++ {
			for _, coalesce := range []bool{false, true} {
				c.Assert(keysOf(l.readKeys(after, keys, coalesce)), gc.DeepEquals, keysOf(l.scan(after, false, set, coalesce)),
					gc.Commentf("keys %v after %d coalesce %v", keys, after, coalesce))
			}
		}
	}
}
