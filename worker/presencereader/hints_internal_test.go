package presencereader

import (
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
)

// hintSuite checks how the view applies the changes notices carry ahead
// of the loads that confirm them, from the inside.
type hintSuite struct{}

var _ = gc.Suite(&hintSuite{})

const hintModel = "2a4b3c5d-0000-4000-8000-00000000000a"

// hintView returns a view in which writers a and b both name key k of
// hintModel with index 0, and a function that applies a load of
// generation gen whose latest slot of each writer has k alive as given
// (both writers on time).
func hintView() (*view, func(gen uint64, aAlive, bAlive bool) []change) {
	v := newView()
	for _, w := range []string{"a", "b"} {
		v.learn(w, 0, schema.NewEntries([]string{hintModel}, []string{"k"}))
	}
	const period = 2 * time.Second
	slot := int64(0)
	return v, func(gen uint64, aAlive, bAlive bool) []change {
		slot++
		bits := func(alive bool) []uint64 {
			if alive {
				return []uint64{1}
			}
			return nil
		}
		writers := []writerBits{
			{writer: "a", slot: slot, moved: true, aliveCur: bits(aAlive)},
			{writer: "b", slot: slot, moved: true, aliveCur: bits(bAlive)},
		}
		v.gen = gen
		return append([]change(nil), v.apply(writers, gen, false, logEpoch.Add(time.Duration(slot)*period/2), period, 12*period)...)
	}
}

func up(key string) schema.NoticeChange {
	return schema.NoticeChange{Model: hintModel, Key: key, Up: true}
}

func down(key string) schema.NoticeChange {
	return schema.NoticeChange{Model: hintModel, Key: key}
}

func (s *hintSuite) TestAKeyANoticeBringsUpIsAliveAtOnce(c *gc.C) {
	v, load := hintView()
	load(1, false, false)
	ch, ok := v.hint("a", up("k"), 1)
	c.Assert(ok, gc.Equals, true)
	c.Assert(ch.alive, gc.Equals, true)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
	// A key the view never met is alive too, in a model it never met.
	_, ok = v.hint("a", schema.NoticeChange{Model: "2a4b3c5d-0000-4000-8000-00000000000b", Key: "new", Up: true}, 1)
	c.Assert(ok, gc.Equals, true)
	c.Assert(v.lookup("2a4b3c5d-0000-4000-8000-00000000000b", "new"), gc.Equals, true)
}

func (s *hintSuite) TestALoadBegunBeforeTheNoticeDoesNotUndoItsChangeButALaterOneDoes(c *gc.C) {
	v, load := hintView()
	load(1, false, false)
	// A load (generation 2) is in flight when the notice comes: it may
	// have read before the flush.
	v.hint("a", up("k"), 2)
	c.Assert(load(2, false, false), gc.HasLen, 0)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
	// The load begun after it reads what the flush wrote: here, a
	// notice that no document backs, so the key is dead.
	c.Assert(load(3, false, false), gc.DeepEquals, []change{{id: 0, alive: false}})
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, false)
}

func (s *hintSuite) TestADisconnectANoticeCarriesMakesItsKeyDeadAtOnce(c *gc.C) {
	v, load := hintView()
	load(1, true, false)
	ch, ok := v.hint("a", down("k"), 1)
	c.Assert(ok, gc.Equals, true)
	c.Assert(ch.alive, gc.Equals, false)
	// A load begun before the flush still shows a's bit: the key stays
	// dead, and the load after agrees.
	c.Assert(load(1, true, false), gc.HasLen, 0)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, false)
	c.Assert(load(2, false, false), gc.HasLen, 0)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, false)
}

func (s *hintSuite) TestADisconnectLeavesAKeyThatAnotherWriterKeepsAlive(c *gc.C) {
	v, load := hintView()
	load(1, true, true)
	_, ok := v.hint("a", down("k"), 1)
	c.Assert(ok, gc.Equals, false)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
	// The control: once b's bit is gone, a's Disconnect counts.
	load(2, true, false)
	_, ok = v.hint("a", down("k"), 2)
	c.Assert(ok, gc.Equals, true)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, false)
}

func (s *hintSuite) TestADisconnectLeavesAKeyThatAnotherWritersNoticeBroughtUp(c *gc.C) {
	v, load := hintView()
	load(1, true, false)
	// The agent reconnects through b before a's Disconnect is heard;
	// a load begun before b's flush comes between.
	v.hint("b", up("k"), 2)
	load(2, true, false)
	_, ok := v.hint("a", down("k"), 2)
	c.Assert(ok, gc.Equals, false)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
}

func (s *hintSuite) TestADisconnectLeavesAKeyALateWriterHolds(c *gc.C) {
	v, load := hintView()
	load(1, true, true)
	id := v.models[hintModel].ids["k"]
	v.held[id] = v.epoch
	_, ok := v.hint("b", down("k"), 1)
	c.Assert(ok, gc.Equals, false)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
}

func (s *hintSuite) TestADisconnectLeavesKeysWhileLiveBitsNameUnknownIndexes(c *gc.C) {
	v, load := hintView()
	load(1, true, false)
	v.unknown = 1
	_, ok := v.hint("a", down("k"), 1)
	c.Assert(ok, gc.Equals, false)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
}

func (s *hintSuite) TestAHintFollowsItsKeyWhenOtherKeysAreForgotten(c *gc.C) {
	v := newView()
	v.learn("a", 0, schema.NewEntries([]string{hintModel, hintModel}, []string{"gone", "k"}))
	v.apply(nil, 1, false, logEpoch, time.Second, time.Minute)
	v.hint("a", up("k"), 2)
	c.Assert(v.models[hintModel].ids["k"], gc.Equals, int32(1))
	// "gone", dead and named by no writer any more, is forgotten; k's
	// id moves down, and its hint with it.
	delete(v.writer, "a")
	v.sweep(logEpoch.Add(time.Hour), time.Minute)
	v.sweep(logEpoch.Add(2*time.Hour), time.Minute)
	c.Assert(v.models[hintModel].ids, gc.DeepEquals, map[string]int32{"k": 0})
	c.Assert(v.hints, gc.DeepEquals, map[int32]hintMark{0: {after: 2, writer: "a"}})
	c.Assert(v.by, gc.DeepEquals, []string{"a"})
}

func (s *hintSuite) TestALoadBegunBeforeADisconnectThatShowsAnotherWriterAliveKeepsTheKey(c *gc.C) {
	v, load := hintView()
	load(1, true, false)
	// a's Disconnect comes while load 2 is in flight; that load finds
	// b's pinger alive too (b's flush came first, its notice later).
	_, ok := v.hint("a", down("k"), 2)
	c.Assert(ok, gc.Equals, true)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, false)
	c.Assert(load(2, true, true), gc.DeepEquals, []change{{id: 0, alive: true}})
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, true)
	// The control: once b's pinger is gone, a load begun before a's
	// Disconnect that finds only a's stale bit keeps the key dead.
	load(3, true, false)
	_, ok = v.hint("a", down("k"), 4)
	c.Assert(ok, gc.Equals, true)
	c.Assert(load(4, true, false), gc.HasLen, 0)
	c.Assert(v.lookup(hintModel, "k"), gc.Equals, false)
}
