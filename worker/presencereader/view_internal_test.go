package presencereader

import (
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
)

// viewSuite checks how the view judges late writers, from the inside.
type viewSuite struct{}

var _ = gc.Suite(&viewSuite{})

// twoWriters returns a view that knows writer's key k and a prompt
// writer's key j, both in model m, and a function that applies a load at
// at (from logEpoch) in which writer's latest slot is slot, and the prompt
// writer moves on every slot of the reader's time. A writer's sequence
// has moved on when its slot differs from the last load's; the view
// judges it late by itself.
func twoWriters(writer string, period, stall time.Duration) (*view, func(at time.Duration, slot int64)) {
	v := newView()
	v.learn(writer, 0, schema.NewEntries([]string{"m"}, []string{"k"}))
	v.learn("prompt", 0, schema.NewEntries([]string{"m"}, []string{"j"}))
	var gen uint64
	last := map[string]int64{writer: -1, "prompt": -1}
	bits := func(name string, slot int64) writerBits {
		moved := slot != last[name]
		last[name] = slot
		return writerBits{writer: name, slot: slot, moved: moved, aliveCur: []uint64{1}}
	}
	return v, func(at time.Duration, slot int64) {
		gen++
		writers := []writerBits{bits(writer, slot), bits("prompt", int64(at/(period/2)))}
		v.apply(writers, gen, false, logEpoch.Add(at), period, stall)
	}
}

func (s *viewSuite) TestALateWriterThatHasBeenSlowKeepsItsKeysForItsOwnPace(c *gc.C) {
	const period = 2 * time.Second
	const stall = 12 * period
	v, load := twoWriters("slow", period, stall)
	// The slow writer moves on every 3 s, more than a Period apart.
	load(0, 0)
	load(3*time.Second, 3)
	load(6*time.Second, 6)
	c.Assert(v.lookup("m", "k"), gc.Equals, true)
	// Then it is late: 2.5 s after its last progress, more than a
	// Period, it still holds its key...
	load(8500*time.Millisecond, 6)
	c.Assert(v.lookup("m", "k"), gc.Equals, true)
	// ...until one and a half times its slowest gap, 4.5 s, has passed.
	load(10600*time.Millisecond, 6)
	c.Assert(v.lookup("m", "k"), gc.Equals, false)
	c.Assert(v.lookup("m", "j"), gc.Equals, true)
}

func (s *viewSuite) TestALateWriterThatKeptPaceHoldsItsKeysForAPeriod(c *gc.C) {
	const period = 2 * time.Second
	v, load := twoWriters("w", period, 12*period)
	for i := int64(0); i <= 4; i++ {
		load(time.Duration(i)*period/2, i)
	}
	load(3*period-period/10, 4)
	c.Assert(v.lookup("m", "k"), gc.Equals, true)
	load(3*period+period/10, 4)
	c.Assert(v.lookup("m", "k"), gc.Equals, false)
}

func (s *viewSuite) TestAWriterThatComesBackFromAnOutageLongAfterTheOthersKeepsItsKeys(c *gc.C) {
	const period = 2 * time.Second
	const stall = 12 * period
	v, load := twoWriters("late", period, stall)
	for i := int64(0); i <= 4; i++ {
		load(time.Duration(i)*period/2, i)
	}
	// The reader's loads fail for 30 s, as they do when the server
	// stops; then one writer is on time at once, the other takes three
	// Periods more (its connections to make anew, a flush's deadline
	// to run out).
	v.troubleBegins(logEpoch.Add(2500*time.Millisecond), period, stall)
	v.troubleEnds(logEpoch.Add(32 * time.Second))
	for at := 32 * time.Second; at < 38*time.Second; at += period / 2 {
		load(at, 4)
		c.Assert(v.lookup("m", "k"), gc.Equals, true, gc.Commentf("at %v", at))
	}
	load(38*time.Second, 38)
	c.Assert(v.lookup("m", "k"), gc.Equals, true)

	// Once it has written again, it is judged by its pace as before.
	load(38*time.Second+period+period/2, 38)
	c.Assert(v.lookup("m", "k"), gc.Equals, false)
}

func (s *viewSuite) TestWritersHeldUpTogetherKeepTheirKeysThoughOneWasSeenMovingOnALoadEarlier(c *gc.C) {
	const period = 2 * time.Second
	v := newView()
	v.learn("a", 0, schema.NewEntries([]string{"m"}, []string{"k"}))
	v.learn("b", 0, schema.NewEntries([]string{"m"}, []string{"j"}))
	var gen uint64
	last := map[string]int64{"a": -1, "b": -1}
	bits := func(name string, slot int64) writerBits {
		moved := slot != last[name]
		last[name] = slot
		return writerBits{writer: name, slot: slot, moved: moved, aliveCur: []uint64{1}}
	}
	load := func(at time.Duration, a, b int64) {
		gen++
		v.apply([]writerBits{bits("a", a), bits("b", b)}, gen, false, logEpoch.Add(at), period, 12*period)
	}
	// Both writers move on every slot, b's progress seen a load (250
	// ms) after a's, until every write is held up from 4 s to 7 s: a
	// reaches slot 4, b's write of it is held, and b goes late 0.75 s
	// before a.
	slot := func(at time.Duration) int64 { return int64(at / (period / 2)) }
	for at := time.Duration(0); at < 7*time.Second; at += 250 * time.Millisecond {
		load(at, slot(min(at, 4*time.Second)), slot(min(at, 4*time.Second)-250*time.Millisecond))
		c.Assert(v.lookup("m", "k"), gc.Equals, true, gc.Commentf("at %v", at))
		c.Assert(v.lookup("m", "j"), gc.Equals, true, gc.Commentf("at %v", at))
	}
	load(7*time.Second, 7, 7)
	c.Assert(v.lookup("m", "k"), gc.Equals, true)

	// The same, but b goes on writing: a's silence is its own, and its
	// key is dead once its late bound has passed since its last
	// progress: one and a half times its slowest gap (the 3 s hold).
	for at := 7250 * time.Millisecond; at < 11750*time.Millisecond; at += 250 * time.Millisecond {
		load(at, 7, slot(at-250*time.Millisecond))
	}
	c.Assert(v.lookup("m", "k"), gc.Equals, false)
	c.Assert(v.lookup("m", "j"), gc.Equals, true)
}

func (s *viewSuite) TestALateWritersRecordedDeathCountsThoughAnotherWriterRecordedItToo(c *gc.C) {
	const period = 2 * time.Second
	// The key's agent is connected through two controllers: a slow one,
	// moving on every 3 s, and a prompt one. At 8.7 s the slow one, last
	// moved on at 6 s, is late but within its late bound (4.5 s), which
	// holds its keys; the prompt one records the key's Disconnect. If
	// the slow one does not (the positive control), the key is held
	// alive; if it records it too, the key is dead, whichever writer
	// the load names last.
	for _, order := range [][]string{{"slow", "prompt"}, {"prompt", "slow"}} {
		for _, slowRecords := range []bool{false, true} {
			v := newView()
			for _, w := range order {
				v.learn(w, 0, schema.NewEntries([]string{"m"}, []string{"k"}))
			}
			var gen uint64
			last := map[string]int64{"slow": -1, "prompt": -1}
			load := func(at time.Duration, dead map[string]bool) {
				gen++
				slots := map[string]int64{"slow": int64(at/(3*time.Second)) * 3, "prompt": int64(at / (period / 2))}
				writers := make([]writerBits, len(order))
				for i, w := range order {
					wb := writerBits{writer: w, slot: slots[w], moved: slots[w] != last[w], aliveCur: []uint64{1}}
					if dead[w] {
						wb.aliveCur, wb.deadCur = nil, []uint64{1}
					}
					last[w] = slots[w]
					writers[i] = wb
				}
				v.apply(writers, gen, false, logEpoch.Add(at), period, 12*period)
			}
			for at := time.Duration(0); at <= 8500*time.Millisecond; at += period / 4 {
				load(at, nil)
			}
			c.Assert(v.lookup("m", "k"), gc.Equals, true)
			load(8700*time.Millisecond, map[string]bool{"prompt": true, "slow": slowRecords})
			comment := gc.Commentf("order %v, the slow writer records the death: %v", order, slowRecords)
			c.Check(v.lookup("m", "k"), gc.Equals, !slowRecords, comment)
			c.Check(v.holding, gc.Equals, map[bool]int{false: 1, true: 0}[slowRecords], comment)
		}
	}
}
