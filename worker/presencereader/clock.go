package presencereader

import (
	"time"

	"github.com/presencekit/presence/internal/schema"
)

// The writers' clocks: the skew the reader can show against each writer
// from the stamps in its ping documents, and how long a load may take
// before the reader suspects the database. Presence does not depend on
// the skew (writers are judged by their sequences): it is reported for
// operators, and for leases, which do assume clocks within ClockSkew.
//
// A writer stamps each ping document with its clock's reading when it
// takes the document to write; the write lands some time later, at the
// latest when the read that returns it ends. So the reader's clock at the
// end of that read, minus the stamp, bounds the skew (the reader's clock
// minus the writer's) from above, whatever the write's delay; nothing
// read bounds it from below, since a write may be delayed for any time.
// The reader therefore reports a skew only when the bound shows the
// writer's clock ahead of its own (a negative bound): with one clock, or
// a writer behind, the interval holds zero and it reports none.

// writerClock is what the reader measured of one writer's clock. It is
// owned by the loop goroutine.
type writerClock struct {
	lastAt  int64            // the newest stamp seen
	samples [8]time.Duration // the latest skew samples, a ring
	n       int
	warned  bool
}

// bound returns the smallest recent sample: the reader's clock minus the
// writer's, plus the write's and the read's delays, which are never
// negative, so the smallest sample is the closest upper bound.
func (wc *writerClock) bound() time.Duration {
	out := wc.samples[0]
	for _, d := range wc.samples[1:min(wc.n, len(wc.samples))] {
		out = min(out, d)
	}
	return out
}

// skew returns the skew the samples show, the reader's clock minus the
// writer's: the bound when it is negative (the writer is ahead by at
// least as much), else zero (the interval holds zero).
func (wc *writerClock) skew() time.Duration {
	return min(wc.bound(), 0)
}

// measureClocks takes a skew sample from every writer whose stamp is new
// since the last load, and logs once per writer whose clock is shown
// ahead of the reader's by more than a quarter of a Period: presence does
// not mind, but leases assume clocks within their ClockSkew. It logs only
// once a writer has written since the reader first saw it: a first stamp
// alone may be the last of a writer that is gone (a killed process that a
// restarted one reads). It must only be called from the loop goroutine.
func (r *Reader) measureClocks(res loadResult) {
	seen := res.rawEnd
	for writer, at := range res.stamps {
		wc := r.clocks[writer]
		if wc == nil {
			wc = &writerClock{}
			r.clocks[writer] = wc
		}
		if at <= wc.lastAt {
			continue
		}
		wc.lastAt = at
		wc.samples[wc.n%len(wc.samples)] = seen.Sub(time.Unix(0, at))
		wc.n++
		skew := wc.skew()
		if abs(skew) > r.config.Period/4 && wc.n > 1 && !wc.warned {
			wc.warned = true
			r.logf("%s: writer %s's clock is at least %v ahead of this reader's (presence does not mind; leases assume clocks within their ClockSkew)",
				r, writer, (-skew).Round(time.Millisecond))
		}
	}
	for writer := range r.clocks {
		if _, ok := r.view.writer[writer]; !ok {
			if _, now := res.stamps[writer]; !now {
				delete(r.clocks, writer)
			}
		}
	}
}

// maxSkew returns the largest clock skew measured against any writer. It
// must only be called from the loop goroutine.
func (r *Reader) maxSkew() time.Duration {
	var out time.Duration
	for _, wc := range r.clocks {
		if wc.n > 0 {
			out = max(out, abs(wc.skew()))
		}
	}
	return out
}

// skews returns the clock skew measured against each writer. It must
// only be called from the loop goroutine.
func (r *Reader) skews() map[string]time.Duration {
	out := make(map[string]time.Duration, len(r.clocks))
	for writer, wc := range r.clocks {
		if wc.n > 0 {
			out[writer] = wc.skew()
		}
	}
	return out
}

// abs returns the magnitude of d.
func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// stallAfter is how long a load may take before the reader treats it as
// a stall of the database, after which it holds deaths as after an
// outage.
func (r *Reader) stallAfter() time.Duration {
	return min(r.config.Period/2, minReadTimeout)
}

// slowAfter is how long a load may take before the reader counts it as
// time in which the database was too slow for writers to keep pace (see
// view.slowed): a quarter of a slot. A writer that keeps pace moves on
// every slot and is judged late after two, so its write has about half a
// slot, less its flush interval and the reader's sync, to land; a read
// that takes a quarter of a slot shows a database slow enough to eat that
// margin, since a write costs a server more than a read.
func (r *Reader) slowAfter() time.Duration {
	return min(schema.SlotLength(r.config.Period)/4, r.stallAfter())
}
