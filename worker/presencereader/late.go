package presencereader

import (
	"time"

	"github.com/presencekit/presence/internal/schema"
)

// How the view judges late writers: each writer's pace, the bound for
// which a late writer keeps its keys, and the database's troubles (a
// stall, a run of failed loads) whose silence is held against no writer.
// Everything here is owned by the reader's loop goroutine, as the view
// is.

// paceGaps is how many of a writer's latest progress gaps set its pace.
const paceGaps = 8

// progressed records that the writer reached slot at now, and the gap
// since its previous progress or the end of the database's last trouble,
// whichever is later, unless it is coming back from a trouble that caught
// it: the time it took to catch up is not its pace.
func (wk *writerKeys) progressed(slot int64, now, troubleEnded time.Time) {
	if !wk.progressAt.IsZero() && !wk.caught {
		since := wk.progressAt
		if since.Before(troubleEnded) {
			since = troubleEnded
		}
		wk.gaps[wk.n%paceGaps] = now.Sub(since)
		wk.n++
	}
	wk.slot, wk.progressAt, wk.caught, wk.excused = slot, now, false, 0
}

// slowed records that a load ending at now took d, more than the
// reader's loads should (see Reader.slowAfter) but not so long that it
// counts as a stall: the database was slow for that long, and a writer's
// write, which reaches the reader through the same database, may have
// been held as long as the read. So d is not counted in any writer's
// silence: each writer's last progress moves on by d, never past now, and
// by at most stall in all since it last moved on. A writer that died
// meanwhile is seen dead that much later: a slow database delays
// detection, it does not make deaths.
func (v *view) slowed(d, stall time.Duration, now time.Time) {
	for _, wk := range v.writer {
		e := min(d, stall-wk.excused, max(now.Sub(wk.progressAt), 0))
		if e <= 0 {
			continue
		}
		wk.progressAt = wk.progressAt.Add(e)
		wk.excused += e
	}
}

// lateBound returns how long a late writer keeps its keys after its last
// progress: bound, or one and a half times the longest of its latest
// progress gaps if that is longer (a slow writer is not a dead one:
// detection slows down instead), but never more than stall. A writer
// that keeps pace moves on every slot, half a Period, so its bound stays
// a Period.
func (wk *writerKeys) lateBound(bound, stall time.Duration) time.Duration {
	most := max(stall, bound)
	slowest := time.Duration(0)
	for _, g := range wk.gaps {
		slowest = max(slowest, min(g, most))
	}
	return min(max(bound, slowest+slowest/2), most)
}

// troubleBegins records that a trouble of the database began at t,
// unless one is going on, and marks the writers it caught within their
// bounds (see writerKeys.lateBound).
func (v *view) troubleBegins(t time.Time, bound, stall time.Duration) {
	if v.troubleStarted.After(v.troubleEnded) {
		return
	}
	v.troubleStarted = t
	for _, wk := range v.writer {
		if t.Sub(wk.progressAt) < wk.lateBound(bound, stall) {
			wk.caught = true
		}
	}
}

// troubleEnds records that the database came back at t: writers are
// not judged by their silence before it.
func (v *view) troubleEnds(t time.Time) {
	if t.After(v.troubleEnded) {
		v.troubleEnded = t
	}
}

// holdLate marks the entities of every writer that is late or absent
// (not true in present) and has made progress within its late bound (see
// writerKeys.lateBound), or within stall when no writer is on time or no
// writer has moved on a slot or more after it: a writer is dead by its
// own silence only when another one showed, by writing when its own next
// write was due, that the database took writes meanwhile. (Writers held
// up together go late one or two loads apart, as the reader happened to
// see them move on last; the first is no deader than the others.)
// Progress is counted from the end of the last trouble at the latest: a
// writer could not write while the database stalled or failed the
// reader too. And a writer that was within its bound when the trouble
// began, and has not written since it ended, gets stall from its end, as
// if the stall went on for it: after a long stall a controller may need
// several seconds more than the others to write again (connections to
// make anew, a flush's deadline to run out), which is no sign of its
// death. One that died meanwhile is seen stall after the trouble.
func (v *view) holdLate(present map[string]bool, now time.Time, bound, stall time.Duration) {
	onTime := false
	for _, ok := range present {
		onTime = onTime || ok
	}
	stalled := !onTime && len(v.writer) > 0
	var latest time.Time
	for _, wk := range v.writer {
		if wk.progressAt.After(latest) {
			latest = wk.progressAt
		}
	}
	switch {
	case stalled && !v.stalled:
		v.troubleBegins(now, bound, stall)
	case v.stalled && !stalled:
		v.troubleEnds(now)
	}
	v.stalled = stalled
	for name, wk := range v.writer {
		if present[name] {
			continue
		}
		since, limit := wk.progressAt, stall
		if !stalled && latest.Sub(wk.progressAt) >= schema.SlotLength(bound) {
			limit = wk.lateBound(bound, stall)
		}
		if since.Before(v.troubleEnded) {
			since = v.troubleEnded
			if wk.caught {
				limit = stall
				wk.caught = now.Sub(since) < stall
			}
		}
		if now.Sub(since) >= limit {
			continue
		}
		for index, id := range wk.ids {
			// A death the late writer recorded itself is not held: it
			// has no pinger of that key left to keep it alive, whoever
			// else recorded the key's death too.
			if id >= 0 && !wk.recorded(index, v.epoch) {
				v.held[id] = v.epoch
			}
		}
	}
}

// forget drops writers not seen since generation before that made no
// progress since stale, nor had a trouble of the database to excuse
// them since, by when their keys no longer hold.
func (v *view) forget(before uint64, stale time.Time) {
	if !v.troubleEnded.Before(stale) {
		return
	}
	for name, wk := range v.writer {
		if wk.seen < before && wk.progressAt.Before(stale) {
			delete(v.writer, name)
		}
	}
}
