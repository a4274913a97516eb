package pingbatcher

import (
	"slices"
	"time"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// The afterlife of a retired writer. Readers keep a writer's keys alive
// for a while after it stops moving on (its late bound, a Period or more):
// a writer that falls silent is dead by time, not at once. So a retired
// writer's documents keep every key it served alive for that long, and a
// Disconnect of one of those keys, whether its pinger still holds the
// retired writer's identity or has registered again with its successor,
// would be seen only when that bound runs out: as a silent death. While
// its afterlife lasts, a retired writer records those deaths in its
// latest slot's document (and the one before, if the latest may not have
// been written), written again with the death bits added: the same
// documents, idempotent, never created, so readers see the death within
// a flush and a sync without seeing the writer move on, and a document
// the pruner removed (a writer retired after a long pause) stays removed.

// maxAfterlives is the most retired writers a batcher keeps, the oldest
// going first: retirements are rare (a removed model, most indexes
// released, a pause or a clock stepped forward, a taken id), and an
// afterlife lasts two Periods at most.
const maxAfterlives = 4

// afterlife is a retired writer's state while readers may still hold its
// keys. It is guarded by PingBatcher.mu.
type afterlife struct {
	// w is the retired writer; it keeps its latest two slots, which
	// carry the deaths recorded after its retirement.
	w *writerState
	// successor is the writer that followed it.
	successor string
	// from and until are when the afterlife began and ends, by the
	// batcher's clock.
	from, until time.Time
	// unclaimed are the indexes the retired writer shows alive that no
	// registration with its successor has taken over (see claim).
	unclaimed map[entry][]uint32
	// heirs maps an index of the successor (the writer that followed
	// this one) to the index of this writer that its registration took
	// over.
	heirs map[uint32]uint32
	// moving are the indexes whose pingers pinged since the retirement,
	// were told their identity is unknown, and so register again.
	moving map[uint32]bool
}

// afterlifeOf returns how long a retired writer's afterlife lasts: as
// long as a reader that saw it on time holds its keys (a Period, and a
// sync), with half a Period and a flush to spare, but never more than
// two Periods.
func afterlifeOf(period, flush time.Duration) time.Duration {
	return min(period+period/2+flush, 2*period)
}

// bury starts the afterlife of old, a writer just retired for b.w, unless
// it never wrote a ping document. b.mu must be held.
func (b *PingBatcher) bury(old *writerState) {
	now := b.config.Clock.Now()
	b.afterlives = b.living(now)
	latest := old.find(old.lastSlot)
	if !old.registered || latest == nil {
		return
	}
	prev := old.find(old.lastSlot - 1)
	a := &afterlife{
		w:         old,
		successor: b.w.writer,
		from:      now,
		until:     now.Add(afterlifeOf(b.config.Period, b.config.FlushInterval)),
		unclaimed: make(map[entry][]uint32),
		heirs:     make(map[uint32]uint32),
		moving:    make(map[uint32]bool),
	}
	for i, e := range old.entries {
		index := uint32(i)
		if shows(latest, prev, index) {
			a.unclaimed[e] = append(a.unclaimed[e], index)
		}
	}
	// Only deaths are written: whatever else the latest slots had not
	// written yet stays unwritten. Deaths recorded while the flush that
	// retired the writer ran are still to be written.
	dirty := latest.dirty()
	old.slots = old.slots[:0]
	for _, s := range []*slotState{prev, latest} {
		if s != nil {
			s.written = s.version
			old.slots = append(old.slots, s)
		}
	}
	if dirty && slices.ContainsFunc(latest.dead, func(word uint64) bool { return word != 0 }) {
		latest.version++
		schema.ForEachBit(latest.dead, func(i int) { a.killIn(uint32(i), latest, prev) })
	}
	if len(b.afterlives) == maxAfterlives {
		b.afterlives = b.afterlives[1:]
	}
	b.afterlives = append(b.afterlives, a)
}

// killIn marks index dead in latest, and in prev too unless latest is
// surely written (an earlier document holds the key alive for readers
// that have not seen it).
func (a *afterlife) killIn(index uint32, latest, prev *slotState) {
	latest.kill(index)
	if prev != nil && a.w.writtenSlot < latest.slot && isSet(prev.alive, index) && !isSet(prev.dead, index) {
		prev.kill(index)
	}
}

// shows reports whether a reader that reads latest, and prev before it,
// holds index alive: pinged in latest, or in prev, and not disconnected
// since.
func shows(latest, prev *slotState, index uint32) bool {
	if isSet(latest.dead, index) {
		return false
	}
	if isSet(latest.alive, index) {
		return true
	}
	return prev != nil && isSet(prev.alive, index) && !isSet(prev.dead, index)
}

// living returns the afterlives not over at now. A clock that reads
// earlier than an afterlife's start was stepped back, by an unknown time:
// that afterlife ends. b.mu must be held.
func (b *PingBatcher) living(now time.Time) []*afterlife {
	kept := b.afterlives[:0]
	for _, a := range b.afterlives {
		if now.Before(a.until) && !now.Before(a.from) {
			kept = append(kept, a)
		}
	}
	clear(b.afterlives[len(kept):])
	return kept
}

// moved records that the pinger of id, an identity of a retired writer,
// pinged and was told its identity is unknown: it registers again at
// once, and its new index may take over its old one (see claim). b.mu
// must be held.
func (b *PingBatcher) moved(id pinger.Identity) {
	b.afterlives = b.living(b.config.Clock.Now())
	for _, a := range b.afterlives {
		if a.w.writer == id.Writer {
			a.moving[id.Index] = true
		}
	}
}

// claim takes over, for index of the current writer, newly handed out
// for e, the index of e that its predecessor still shows alive and whose
// pinger is registering again (see moved), unless index took one over
// before: its Disconnect must end both. It takes none when no such index
// or more than one is left: which pinger is registering is then not
// known, and taking another's index would have that pinger's key read
// dead, while it still pings, on this one's Disconnect; such a Disconnect
// is seen as a silent death instead, late but never false. b.mu must be
// held.
func (b *PingBatcher) claim(e entry, index uint32) {
	b.afterlives = b.living(b.config.Clock.Now())
	if len(b.afterlives) == 0 {
		return
	}
	a := b.afterlives[len(b.afterlives)-1]
	if a.successor != b.w.writer {
		return
	}
	if _, ok := a.heirs[index]; ok {
		return
	}
	var candidates []uint32
	for _, old := range a.unclaimed[e] {
		if a.moving[old] {
			candidates = append(candidates, old)
		}
	}
	if len(candidates) != 1 {
		return
	}
	a.heirs[index] = candidates[0]
	a.forget(e, candidates[0])
}

// mourn records the Disconnect of id in the afterlives: in that of id's
// writer if it is retired, and in those of the writers before it whose
// indexes id's registrations took over (see claim). It reports whether it
// recorded a death. b.mu must be held.
func (b *PingBatcher) mourn(id pinger.Identity) bool {
	b.afterlives = b.living(b.config.Clock.Now())
	writer, index, recorded := id.Writer, id.Index, false
	for i := len(b.afterlives) - 1; i >= 0; i-- {
		a := b.afterlives[i]
		switch {
		case a.w.writer == writer:
		case a.successor == writer:
			heir, ok := a.heirs[index]
			if !ok {
				return recorded
			}
			index = heir
		default:
			continue
		}
		if a.kill(id.Model, index) {
			recorded = true
		}
		writer = a.w.writer
	}
	return recorded
}

// kill marks index dead in the retired writer's latest slots if it names
// a key of model and they show it alive, and reports whether it did.
func (a *afterlife) kill(model string, index uint32) bool {
	latest, prev := a.w.find(a.w.lastSlot), a.w.find(a.w.lastSlot-1)
	if int(index) >= len(a.w.entries) || a.w.entries[index].model != model || !shows(latest, prev, index) {
		return false
	}
	a.killIn(index, latest, prev)
	a.forget(a.w.entries[index], index)
	return true
}

// forget removes index from the unclaimed indexes of e.
func (a *afterlife) forget(e entry, index uint32) {
	old := slices.DeleteFunc(a.unclaimed[e], func(o uint32) bool { return o == index })
	if len(old) == 0 {
		delete(a.unclaimed, e)
	} else {
		a.unclaimed[e] = old
	}
}

// snapshotAfterlives adds to out the latest slots' documents of every
// retired writer whose afterlife recorded deaths not yet written, stamped
// with now, to be written only if they exist. b.mu must be held.
func (b *PingBatcher) snapshotAfterlives(out *batch, now time.Time) {
	b.afterlives = b.living(now)
	for _, a := range b.afterlives {
		b.snapshotPings(out, a.w, a.w.persisted, now, false)
	}
}
