package presencereader

import (
	"fmt"

	"github.com/presencekit/presence/internal/schema"
)

// Hints: the prompt changes that another writer's notice carries (see
// schema.NoticeChange), which the reader applies as soon as the notice
// comes, before the load that the notice asks for confirms them. A
// notice is appended only once its flush is written, so a load that
// begins after the notice came reads what it says; a load that began
// before it may not, and does not undo it (see view.hint). A key that
// came up is alive at once; a Disconnect makes its key dead at once only
// where the loads would: when no other writer keeps the key alive, no
// late writer holds it, and the view can name every live bit. Everything
// else is left to the load, which the notice asks for all the same.

// maxPendingHints bounds the changes waiting for the loop: beyond it
// they are dropped, and the loads that their notices ask for bring them.
const maxPendingHints = 8 * schema.NoticeMaxChanges

// hint is one change a notice of writer carries.
type hint struct {
	writer string
	change schema.NoticeChange
}

// addHints queues the changes of doc, a notice of another writer, for the
// loop; if they do not validate, it records why instead, for the loop to
// log.
func (p *pushState) addHints(doc schema.NoticeDoc) {
	if len(doc.Changes) == 0 {
		return
	}
	if err := doc.ValidateChanges(); err != nil {
		p.refuse(fmt.Sprintf("writer %q: %v", doc.Writer, err))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range doc.Changes {
		if len(p.hints) >= maxPendingHints {
			p.hintsDropped++
			continue
		}
		p.hints = append(p.hints, hint{writer: doc.Writer, change: c})
	}
}

// refuse records that a notice's changes were refused, and why, for the
// loop to name (the latest of those since it last looked) and count.
func (p *pushState) refuse(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused = append(p.refused[:0], why)
	p.hintsRefused++
}

// hintsTaken is what takeHints returns.
type hintsTaken struct {
	hints []hint
	// refused is why the latest notice refused since the last call was
	// refused, or "".
	refused string
	// dropped and refusedNotices count the changes dropped for want of
	// room and the notices refused, since the reader started.
	dropped, refusedNotices int
}

// takeHints returns the queued changes, oldest first, with what became
// of the others.
func (p *pushState) takeHints() hintsTaken {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := hintsTaken{hints: p.hints, dropped: p.hintsDropped, refusedNotices: p.hintsRefused}
	p.hints = nil
	if len(p.refused) > 0 {
		out.refused = p.refused[0]
		p.refused = p.refused[:0]
	}
	return out
}

// applyHints applies the changes that notices brought since the last
// call, and dispatches the changes of state they make. Before the first
// load there is no view to apply them to, and the first load brings
// them. It must only be called from the loop goroutine.
func (r *Reader) applyHints() {
	taken := r.push.takeHints()
	if len(taken.hints) == 0 && taken.refused == "" {
		return
	}
	if taken.refused != "" {
		r.logf("%s: skipping a notice's changes that do not read as a writer writes them (the load it asks for decides): %s", r, taken.refused)
	}
	if !r.loaded {
		taken.hints = nil
	}
	r.hintChanges = r.hintChanges[:0]
	for _, h := range taken.hints {
		if c, ok := r.view.hint(h.writer, h.change, r.gen); ok {
			r.hintChanges = append(r.hintChanges, c)
		}
	}
	r.hintsTaken += len(taken.hints)
	r.statsMu.Lock()
	r.stats["notice-changes"] = r.hintsTaken
	r.stats["notice-changes-dropped"] = taken.dropped
	r.stats["notices-refused"] = taken.refusedNotices
	r.statsMu.Unlock()
	if len(r.hintChanges) == 0 {
		return
	}
	now := r.observe(r.config.Clock.Now())
	for _, c := range r.hintChanges {
		r.log(c.id, c.alive, now)
	}
	r.unlockLogs()
	r.round++
	for _, c := range r.hintChanges {
		r.dispatch(c.id, c.alive)
	}
	r.publishLogs()
}

// hint applies c, a change that writer's notice carries, ahead of the
// load that confirms it, and returns the change of state it makes, if
// any. Loads that began no later than the one of generation after (the
// latest begun when the notice was taken) may not have read the flush
// the notice follows: until a later one is applied, they do not undo
// what the hint decided (see apply). A key that came up is alive, and
// counts as kept alive by writer. A Disconnect makes its key dead unless
// a writer other than writer keeps it alive (by the last apply or by a
// hint since), a late writer holds it, or live bits of the last apply
// named indexes the view cannot name: then the load decides.
func (v *view) hint(writer string, c schema.NoticeChange, after uint64) (change, bool) {
	m := v.models[c.Model]
	if c.Up {
		if m == nil {
			m = v.model(c.Model)
		}
		id := v.id(m, c.Key)
		v.stampedBy(id, writer)
		v.hints[id] = hintMark{after: after, writer: writer}
		return v.set(id, true)
	}
	if m == nil {
		return change{}, false
	}
	id, ok := m.ids[c.Key]
	if !ok || v.held[id] == v.epoch || v.unknown > 0 {
		return change{}, false
	}
	if v.stamp[id] == v.epoch && v.by[id] != writer {
		return change{}, false
	}
	v.stamp[id], v.by[id] = 0, ""
	v.hints[id] = hintMark{after: after, writer: writer}
	return v.set(id, false)
}

// hintMark is what the view remembers of the latest hint about an
// entity: the generation of the latest load begun when it came, and the
// writer whose notice carried it.
type hintMark struct {
	after  uint64
	writer string
}

// keepHints makes the apply of the load of generation v.gen keep what the
// hints that came after that load began decided, and forgets the others:
// an entity a hint brought up counts as kept alive by its writer, and
// one a hint brought down is not kept alive by that writer's bits, which
// the load may have read from before its flush; but a live bit of
// another writer in the load brings it back (the hint is forgotten). It
// must be called between mark and the entities' new states.
func (v *view) keepHints() {
	for id, h := range v.hints {
		switch {
		case h.after < v.gen:
			delete(v.hints, id)
		case v.alive[id]:
			v.stampedBy(id, h.writer)
		case v.stamp[id] != v.epoch:
		case v.by[id] == h.writer:
			v.stamp[id], v.by[id] = 0, ""
		default:
			// Another writer's live bit: a key is alive while any
			// of its pingers is, and the load says so.
			delete(v.hints, id)
		}
	}
}

// kept reports whether a hint that came after the load being applied
// began decided entity id's state (see keepHints).
func (v *view) kept(id int) bool {
	h, ok := v.hints[int32(id)]
	return ok && h.after >= v.gen
}

// manyWriters is what view.by holds for an entity that more than one
// writer keeps alive.
const manyWriters = "\x00many"

// stampedBy stamps entity id as kept alive by writer in the current
// epoch, beside any writer that already did.
func (v *view) stampedBy(id int32, writer string) {
	switch {
	case v.stamp[id] != v.epoch:
		v.by[id] = writer
	case v.by[id] != writer:
		v.by[id] = manyWriters
	}
	v.stamp[id] = v.epoch
}

// set reports entity id alive or dead, and returns the change if its
// state changed.
func (v *view) set(id int32, alive bool) (change, bool) {
	if v.alive[id] == alive {
		return change{}, false
	}
	v.alive[id] = alive
	if alive {
		v.owner[id].alive++
	} else {
		v.owner[id].alive--
	}
	return change{id: id, alive: alive}, true
}
