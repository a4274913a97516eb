package presencereader

import (
	"math/bits"
	"time"

	"github.com/presencekit/presence/internal/schema"
)

// writerBits is one writer's bitmaps for its latest two slots, as a load
// read them.
type writerBits struct {
	writer string
	// slot is the writer's latest slot, in its own sequence; moved is
	// set when the load saw its sequence move on (or saw it first). late
	// is set by the apply when the writer has not moved on for a Period
	// of the reader's observed time.
	slot  int64
	moved bool
	late  bool
	// aliveCur, deadCur are the latest slot's bitmaps; alivePrev,
	// deadPrev the slot's before it.
	aliveCur, deadCur, alivePrev, deadPrev []uint64
}

// writerKeys maps a writer's indexes to entity ids, and tracks its
// progress.
type writerKeys struct {
	ids  []int32 // index -> entity id; -1 where none is known
	seen uint64  // the last load generation the writer appeared in
	// prog is the writer's sequence as the loads judged it.
	prog schema.Progress
	// slot is the latest slot the writer was seen in, and progressAt
	// when, by the reader's clock, it was first seen there, moved on by
	// the slow loads since (see slowed), which excused that much of its
	// silence.
	slot       int64
	progressAt time.Time
	excused    time.Duration
	// gaps are the writer's latest times between two progresses (the
	// database's troubles left out), a ring: a writer that has been
	// slow is given the time it has lately needed (see lateBound).
	gaps [paceGaps]time.Duration
	n    int
	// caught is set when a trouble of the database began while the
	// writer was within its bound, until it progresses again or the
	// stall bound after the trouble has run out (see holdLate).
	caught bool
	// gone is a bitmap of the indexes whose deaths the writer's latest
	// two slots record, as the apply of epoch goneIn read them: each
	// writer's own, since several may record the death of one key (see
	// holdLate).
	gone   []uint64
	goneIn uint32
}

// recorded reports whether the writer's latest two slots, as the apply of
// epoch read them, record the death of index.
func (wk *writerKeys) recorded(index int, epoch uint32) bool {
	if wk.goneIn != epoch {
		return false
	}
	w := index / 64
	return w < len(wk.gone) && wk.gone[w]&(1<<(index%64)) != 0
}

// change is an entity whose reported state changed.
type change struct {
	id    int32
	alive bool
}

// model is what the view knows of one model: its keys, each an entity.
type model struct {
	uuid string
	ids  map[string]int32 // key -> entity id
	all  []int32          // every entity id of the model, for snapshots
	// alive counts the model's entities reported alive.
	alive int
}

// view is the reader's knowledge: every (model, key) entity that a writer
// has named, the state it reports for each, and which writer index names
// which entity. It is owned by the reader's loop goroutine.
type view struct {
	models map[string]*model
	keys   []string // entity id -> key
	owner  []*model // entity id -> its model
	alive  []bool   // entity id -> reported state
	stamp  []uint32 // entity id -> epoch in which a live index was found
	dead   []uint32 // entity id -> epoch in which a disconnected index was found
	held   []uint32 // entity id -> epoch in which a late writer held it
	// by is, by entity id, the writer whose live bit or hint stamped it
	// in the epoch of its stamp, or manyWriters.
	by []string
	// hints are the entities whose state a notice's change decided
	// lately (see hint), and gen is the generation of the load being
	// applied: an apply does not undo a hint that came after its load
	// began.
	hints map[int32]hintMark
	gen   uint64
	// seen is, by entity id, when a sweep last found the entity alive
	// or named by a bit (Unix nanoseconds by the reader's clock; zero
	// until the first sweep after it was learnt): see sweep.
	seen   []int64
	epoch  uint32
	writer map[string]*writerKeys

	changes []change
	// drop and refs are sweep's, kept between calls for their memory.
	drop, refs []bool
	present    map[string]bool // writer -> on time, for the current apply
	// unknown counts the live bits of the last apply that named no
	// known entity; refetch lists the writers they came from.
	unknown int
	refetch map[string]bool
	// wanted are the indexes of those live bits, by writer: the only
	// forgotten indexes that learn maps again.
	wanted map[string]map[int]bool
	// unknownSince is when the applies began to meet live bits with no
	// known key, zero while they meet none.
	unknownSince time.Time
	// stalled is set by the last apply when it knew writers and none of
	// them was on time; holding counts the keys it kept alive that only
	// a late writer's silence would have made dead.
	stalled bool
	holding int
	// troubleStarted and troubleEnded are when the database's last
	// trouble began and ended: a stall (no writer on time) or a run of
	// failed or stalled loads; zero before any, and troubleEnded is
	// before troubleStarted while it lasts. A writer's silence during a
	// trouble is not held against it (see holdLate).
	troubleStarted, troubleEnded time.Time
}

func newView() *view {
	return &view{
		models:  make(map[string]*model),
		writer:  make(map[string]*writerKeys),
		refetch: make(map[string]bool),
		wanted:  make(map[string]map[int]bool),
		present: make(map[string]bool),
		hints:   make(map[int32]hintMark),
	}
}

// model returns the model named uuid, adding it if it is new.
func (v *view) model(uuid string) *model {
	m := v.models[uuid]
	if m == nil {
		m = &model{uuid: uuid, ids: make(map[string]int32)}
		v.models[uuid] = m
	}
	return m
}

// lookup returns the state of key in the model named uuid; a key the
// view never met is dead.
func (v *view) lookup(uuid, key string) bool {
	if m := v.models[uuid]; m != nil {
		if id, ok := m.ids[key]; ok {
			return v.alive[id]
		}
	}
	return false
}

// id returns the entity id of key in m, adding it if it is new.
func (v *view) id(m *model, key string) int32 {
	if id, ok := m.ids[key]; ok {
		return id
	}
	id := int32(len(v.keys))
	m.ids[key] = id
	m.all = append(m.all, id)
	v.keys = append(v.keys, key)
	v.owner = append(v.owner, m)
	v.alive = append(v.alive, false)
	v.stamp = append(v.stamp, 0)
	v.dead = append(v.dead, 0)
	v.held = append(v.held, 0)
	v.by = append(v.by, "")
	v.seen = append(v.seen, 0)
	return id
}

// learn records that writer's indexes from first on name the entities of
// e, which must be valid.
func (v *view) learn(writer string, first int, e schema.Entries) {
	wk := v.writer[writer]
	if wk == nil {
		wk = &writerKeys{}
		v.writer[writer] = wk
	}
	for len(wk.ids) < first+e.Len() {
		wk.ids = append(wk.ids, -1)
	}
	var last *model
	for i, key := range e.Keys {
		if key == "" || (wk.ids[first+i] == forgotten && !v.wanted[writer][first+i]) {
			continue
		}
		uuid := e.Models[e.Model[i]]
		if last == nil || last.uuid != uuid {
			last = v.model(uuid)
		}
		wk.ids[first+i] = v.id(last, key)
	}
}

// progress returns a copy of each writer's sequence as judged so far, for
// a load to judge on from.
func (v *view) progress() map[string]schema.Progress {
	out := make(map[string]schema.Progress, len(v.writer))
	for name, wk := range v.writer {
		if !wk.prog.At.IsZero() {
			out[name] = wk.prog
		}
	}
	return out
}

// judged records each writer's sequence as a load judged it.
func (v *view) judged(progress map[string]schema.Progress) {
	for name, p := range progress {
		wk := v.writer[name]
		if wk == nil {
			wk = &writerKeys{}
			v.writer[name] = wk
		}
		wk.prog = p
	}
}

// known returns, for each writer, how many indexes it knows, or -1 where
// the last apply met a live bit it could not name; a load fetches beings
// for writers whose bits go beyond that.
func (v *view) known() map[string]int {
	out := make(map[string]int, len(v.writer))
	for name, wk := range v.writer {
		out[name] = len(wk.ids)
		if v.refetch[name] {
			out[name] = -1
		}
	}
	return out
}

// apply works out every entity's state from one load, at now by the
// reader's clock, and returns those whose reported state changes.
//
// A writer is judged by its own latest two slots, never by comparing
// them with the reader's clock: a key is alive while any of its indexes
// is, pinged in its writer's latest slot and not disconnected since, or,
// with no word in that slot, pinged in the one before and not
// disconnected there. A writer that is late (its sequence has not moved
// on for bound of the reader's observed time) or absent is judged by time
// only: its keys keep their state until it has made no progress for
// bound, or for one and a half times its slowest recent progress if that
// is longer (for stall when every writer is late at once, which points at
// the reader or the database rather than at the writers); the deaths it
// recorded itself still count. When hold is set, a
// key that went quiet without a recorded death keeps its state too: the
// load may have come before writers caught up after an outage. While
// live bits name indexes whose keys are not known yet (their beings could
// not be read: part of the database is failing), no key dies, a recorded
// death included: any of them may be an index that keeps it alive; after
// stall of that, deaths count again. The returned slice is reused by the next call.
func (v *view) apply(writers []writerBits, gen uint64, hold bool, now time.Time, bound, stall time.Duration) []change {
	v.epoch++
	if v.epoch == 0 {
		clear(v.stamp)
		clear(v.dead)
		clear(v.held)
		for _, wk := range v.writer {
			wk.goneIn = 0
		}
		v.epoch = 1
	}
	v.unknown = 0
	clear(v.refetch)
	clear(v.wanted)
	present := v.present
	clear(present)
	for i := range writers {
		wb := &writers[i]
		wk := v.writer[wb.writer]
		if wk == nil {
			wk = &writerKeys{slot: wb.slot, progressAt: now}
			v.writer[wb.writer] = wk
		}
		wk.seen = gen
		if wb.moved || wk.progressAt.IsZero() {
			wk.progressed(wb.slot, now, v.troubleEnded)
		}
		wb.late = now.Sub(wk.progressAt) >= bound
		present[wb.writer] = !wb.late
		v.mark(wb, wk)
	}
	v.holdLate(present, now, bound, stall)
	v.keepHints()
	unresolved := v.unresolved(now, stall)
	v.changes = v.changes[:0]
	v.holding = 0
	for id := range v.keys {
		now := v.stamp[id] == v.epoch
		if now == v.alive[id] || v.kept(id) {
			continue
		}
		// A key a late writer may still have alive keeps its state
		// even when another writer recorded its Disconnect: it is
		// alive while any of its pingers is. So does every key while
		// live bits name keys not known yet. After a failed read
		// (hold), recorded deaths count.
		if !now && (v.held[id] == v.epoch || unresolved || (hold && v.dead[id] != v.epoch)) {
			v.holding++
			continue
		}
		c, _ := v.set(int32(id), now)
		v.changes = append(v.changes, c)
	}
	return v.changes
}

// unresolved reports whether the apply met live bits with no known key,
// for less than bound so far.
func (v *view) unresolved(now time.Time, bound time.Duration) bool {
	if v.unknown == 0 {
		v.unknownSince = time.Time{}
		return false
	}
	if v.unknownSince.IsZero() {
		v.unknownSince = now
	}
	return now.Sub(v.unknownSince) < bound
}

// mark stamps the entities that wb says are alive (unless its writer is
// late) and those it says disconnected, and records the latter in wk.
func (v *view) mark(wb *writerBits, wk *writerKeys) {
	n := max(len(wb.aliveCur), len(wb.deadCur), len(wb.alivePrev), len(wb.deadPrev))
	wk.gone, wk.goneIn = wk.gone[:0], v.epoch
	for w := 0; w < n; w++ {
		ac, dc := word(wb.aliveCur, w), word(wb.deadCur, w)
		ap, dp := word(wb.alivePrev, w), word(wb.deadPrev, w)
		live := ^dc & (ac | (^dp & ap))
		gone := dc | (dp &^ ac)
		wk.gone = append(wk.gone, gone)
		for live != 0 && !wb.late {
			index := w*64 + bits.TrailingZeros64(live)
			live &= live - 1
			if id := entityOf(wk, index); id >= 0 {
				v.stampedBy(id, wb.writer)
			} else {
				v.unknown++
				v.want(wb.writer, index)
			}
		}
		for gone != 0 {
			index := w*64 + bits.TrailingZeros64(gone)
			gone &= gone - 1
			if id := entityOf(wk, index); id >= 0 {
				v.dead[id] = v.epoch
			}
		}
	}
}

func word(words []uint64, i int) uint64 {
	if i < len(words) {
		return words[i]
	}
	return 0
}

func entityOf(wk *writerKeys, index int) int32 {
	if wk == nil || index >= len(wk.ids) {
		return -1
	}
	return wk.ids[index]
}

// highest returns the highest index set in any of wb's bitmaps, or -1.
func highest(wb writerBits) int {
	top := -1
	for _, words := range [][]uint64{wb.aliveCur, wb.deadCur, wb.alivePrev, wb.deadPrev} {
		for i := len(words) - 1; i >= 0; i-- {
			if words[i] != 0 {
				top = max(top, i*64+63-bits.LeadingZeros64(words[i]))
				break
			}
		}
	}
	return top
}
