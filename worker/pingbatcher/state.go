package pingbatcher

import (
	"math/bits"
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/presencekit/presence/internal/schema"
)

// gapSlots is how many whole slots the batcher may go without a ping or a
// flush (a process paused, a clock stepped forward) before its writer is
// retired: past that the pruner may soon judge the writer gone and remove
// its documents, so a new writer id is safer than reusing the old one;
// and a writer's sequence never moves on by more at once (see
// schema.MaxJump), which readers check.
const gapSlots = schema.MaxJump

// idleSlots is how many slots a writer with no live pinger goes on
// writing: its released keys' last pings count for two slots, and a
// reader needs one more to see them expire.
const idleSlots = 3

// compactAt is the fewest indexes a writer must have handed out before it
// is retired for having released most of them: its pingers register again
// with a fresh writer, whose documents hold only the live keys.
const compactAt = 4 * schema.ChunkSize

// entry is what one index names.
type entry struct {
	model, key string
}

// writerState is what a batcher holds as one writer: its id, the indexes
// it handed out, and the slots not yet written. It is guarded by
// PingBatcher.mu.
type writerState struct {
	writer string

	// registered is set once the writer's first beings document was
	// inserted: the insert is what proves the writer id unique.
	registered bool

	entries  []entry            // index -> (model, key)
	inUse    []bool             // index -> held by a pinger
	free     map[entry][]uint32 // (model, key) -> released indexes of it
	holders  map[entry]int      // (model, key) -> how many of its indexes are in use
	released int                // how many indexes are not in use

	// persisted is how many indexes the beings documents map, as of the
	// last flush that wrote them; the entries of later indexes travel in
	// the ping documents until then.
	persisted int

	// writtenSlot is the latest slot whose document a flush wrote.
	writtenSlot int64

	slots    []*slotState
	lastSlot int64 // the latest slot pinged, 0 before any ping

	// shift is added to every slot the writer is given, by its pingers
	// and by its own clock, so that its sequence never goes back: it
	// grows whenever the batcher sees its clock go back (see observe).
	// clockSlot is the slot the clock was in when it last looked.
	shift     int64
	clockSlot int64

	// idleFrom is lastSlot when the last index in use was released.
	idleFrom int64
}

// slotState is one ping document being built.
type slotState struct {
	slot        int64
	alive, dead []uint64
	version     uint64
	written     uint64
}

func newWriterState() *writerState {
	return &writerState{
		writer:  bson.NewObjectID().Hex(),
		free:    make(map[entry][]uint32),
		holders: make(map[entry]int),
	}
}

// allocate returns an index for e: one that e used before if any is
// free, else a new one.
func (w *writerState) allocate(e entry) uint32 {
	w.holders[e]++
	if free := w.free[e]; len(free) > 0 {
		index := free[len(free)-1]
		if len(free) == 1 {
			delete(w.free, e)
		} else {
			w.free[e] = free[:len(free)-1]
		}
		w.inUse[index] = true
		w.released--
		return index
	}
	index := uint32(len(w.entries))
	w.entries = append(w.entries, e)
	w.inUse = append(w.inUse, true)
	return index
}

// release frees index for reuse by the same (model, key).
func (w *writerState) release(index uint32) {
	if int(index) >= len(w.inUse) || !w.inUse[index] {
		return
	}
	w.inUse[index] = false
	w.released++
	if w.released == len(w.entries) {
		w.idleFrom = w.lastSlot
	}
	e := w.entries[index]
	w.free[e] = append(w.free[e], index)
	if w.holders[e]--; w.holders[e] <= 0 {
		delete(w.holders, e)
	}
}

// valid reports whether index is currently held for model.
func (w *writerState) valid(model string, index uint32) bool {
	return int(index) < len(w.inUse) && w.inUse[index] && w.entries[index].model == model
}

// wasteful reports whether most of the writer's indexes are released, so
// that its documents are mostly dead weight: a fresh writer would write
// only the live ones. A writer with none in use is not: it must go on for
// its idle slots (see tick), so that readers see its last keys expire
// from a writer that is on time.
func (w *writerState) wasteful() bool {
	return len(w.entries) >= compactAt && w.released*2 > len(w.entries) && w.released < len(w.entries)
}

// slotFor returns the state of slot, creating it if needed. w.slots stays
// in slot order.
func (w *writerState) slotFor(slot int64) *slotState {
	at := len(w.slots)
	for i, s := range w.slots {
		if s.slot == slot {
			return s
		}
		if s.slot > slot && i < at {
			at = i
		}
	}
	s := &slotState{slot: slot}
	w.slots = slices.Insert(w.slots, at, s)
	return s
}

// set sets bit index in words, growing it as needed.
func set(words []uint64, index uint32) ([]uint64, bool) {
	i := int(index / 64)
	for len(words) <= i {
		words = append(words, 0)
	}
	bit := uint64(1) << (index % 64)
	if words[i]&bit != 0 {
		return words, false
	}
	words[i] |= bit
	return words, true
}

// unset clears bit index in words.
func unset(words []uint64, index uint32) bool {
	i := int(index / 64)
	if i >= len(words) {
		return false
	}
	bit := uint64(1) << (index % 64)
	if words[i]&bit == 0 {
		return false
	}
	words[i] &^= bit
	return true
}

// ping marks index alive in s, clearing any death. It reports whether
// that set a bit, and whether it cleared a death.
func (s *slotState) ping(index uint32) (changed, revived bool) {
	s.alive, changed = set(s.alive, index)
	revived = unset(s.dead, index)
	if changed || revived {
		s.version++
	}
	return changed, revived
}

// find returns the state of slot, or nil.
func (w *writerState) find(slot int64) *slotState {
	for _, s := range w.slots {
		if s.slot == slot {
			return s
		}
	}
	return nil
}

// pingedIn reports whether index was pinged, and not disconnected since,
// in slot.
func (w *writerState) pingedIn(slot int64, index uint32) bool {
	s := w.find(slot)
	return s != nil && isSet(s.alive, index) && !isSet(s.dead, index)
}

// advance returns the state of slot; when slot is later than lastSlot it
// becomes lastSlot, and the live indexes of the old lastSlot are carried
// into it (see carry), whoever moves the writer on: a ping, a death or
// the flush's tick.
func (w *writerState) advance(slot int64) *slotState {
	s := w.slotFor(slot)
	if slot > w.lastSlot {
		if prev := w.find(w.lastSlot); prev != nil {
			w.carry(prev, s)
		}
		w.lastSlot = slot
	}
	return s
}

// observe takes the slot the batcher's clock is in, and returns it as a
// slot of the writer's sequence. When the clock has gone back since it
// last looked (an NTP step, a restored snapshot) the sequence does not: it
// moves on by one at once, and every slot given afterwards, by the clock
// or by the pingers (whose clocks are the batcher's), is shifted by as
// much as the clock went back. So the writer moves on every slot length
// of its clock, whatever the clock reads.
func (w *writerState) observe(clockSlot int64) int64 {
	if w.clockSlot != 0 && clockSlot < w.clockSlot {
		w.shift += w.clockSlot - clockSlot + 1
	}
	w.clockSlot = clockSlot
	return clockSlot + w.shift
}

// place returns the slot of the writer's sequence in which to file a ping
// or a death that a pinger computed as slot, now that the batcher's clock
// is in clockSlot: shifted as the clock was (see observe), never older
// than the one before the latest, which would file it where no reader
// looks (a pinger whose clock went back before the batcher saw it), and
// never newer than the slot the clock is in: a pinger that read its clock
// before a step back, and pings after the batcher saw the step, would
// otherwise be shifted past the present by as much as the clock went
// back, and a long step would retire the writer.
func (w *writerState) place(slot, clockSlot int64) int64 {
	now := w.observe(clockSlot)
	slot = min(slot+w.shift, now)
	if w.lastSlot != 0 && slot < w.lastSlot-1 {
		return w.lastSlot
	}
	return slot
}

// tick starts slot's document, empty if no pinger pinged in it yet, as
// soon as the slot begins (slot is the current one, by the batcher's
// clock): readers judge a writer's keys by its own latest two slots, so
// the writer moves on every slot while it has live pingers, and a key
// that stopped pinging is seen dead one slot later whether or not others
// ping. Once every pinger has gone it moves on for idleSlots more, so
// that readers see their last pings expire from a writer that is on time
// (a late writer's keys are held). After more than gapSlots slots without
// a ping or a flush (a paused process) it does nothing: the next ping
// retires the writer. Before the first ping it does nothing either.
func (w *writerState) tick(slot int64) {
	if w.lastSlot == 0 {
		return
	}
	if slot <= w.lastSlot || slot > w.lastSlot+gapSlots {
		return
	}
	if w.released == len(w.entries) && slot > w.idleFrom+idleSlots {
		return
	}
	w.advance(slot).version++
}

// carry marks alive in next every index alive in prev that a pinger still
// holds and nobody disconnected: a pinger whose own ping is late (its
// goroutine starved of CPU, its timer late) is not a dead agent while its
// batcher, in the same process, is on time. An index released (Stop,
// Kill) or disconnected is not carried, and its key times out as before.
func (w *writerState) carry(prev, next *slotState) {
	for i, word := range prev.alive {
		if i < len(prev.dead) {
			word &^= prev.dead[i]
		}
		for word != 0 {
			bit := uint32(bits.TrailingZeros64(word))
			word &= word - 1
			index := uint32(i)*64 + bit
			if int(index) < len(w.inUse) && w.inUse[index] && !isSet(next.dead, index) {
				next.ping(index)
			}
		}
	}
}

// isSet reports whether bit index is set in words.
func isSet(words []uint64, index uint32) bool {
	i := int(index / 64)
	return i < len(words) && words[i]&(1<<(index%64)) != 0
}

// kill marks index dead in s.
func (s *slotState) kill(index uint32) {
	var changed bool
	s.dead, changed = set(s.dead, index)
	if changed {
		s.version++
	}
}

// killFrom marks index dead in slot and in every later slot already
// started: a Disconnect computed its slot just before the writer moved
// on, and carried the index alive into the next one.
func (w *writerState) killFrom(slot int64, index uint32) {
	for _, s := range w.slots {
		if s.slot >= slot {
			s.kill(index)
		}
	}
}

// current reports whether s is one of the slots a reader may take for the
// writer's latest two, with a slot to spare for clock skew. An older one,
// left unwritten by a long failure, is still written, but after them.
func (w *writerState) current(s *slotState) bool {
	return s.slot >= w.lastSlot-schema.ReadSlots
}

// dirty reports whether s has changes not yet written.
func (s *slotState) dirty() bool {
	return s.version != s.written
}

// prune drops slots that are written and older than the latest but one:
// nobody will ping them again, and readers no longer read them.
func (w *writerState) prune() {
	kept := w.slots[:0]
	for _, s := range w.slots {
		if s.dirty() || s.slot >= w.lastSlot-1 {
			kept = append(kept, s)
		}
	}
	for i := len(kept); i < len(w.slots); i++ {
		w.slots[i] = nil
	}
	w.slots = kept
}
