package presencereader

import (
	"time"
)

// The writers' clocks: the skew the reader measures against each writer
// from the stamps in its ping documents, and how long a load may take
// before the reader suspects the database.

// writerClock is what the reader measured of one writer's clock. It is
// owned by the loop goroutine.
type writerClock struct {
	lastAt  int64            // the newest stamp seen
	samples [8]time.Duration // the latest skew samples, a ring
	n       int
	warned  bool
}

// skew returns the smallest recent sample: the reader's clock minus the
// writer's, plus the write's and the read's delays, which are never
// negative, so the smallest sample is the closest bound.
func (wc *writerClock) skew() time.Duration {
	out := wc.samples[0]
	for _, d := range wc.samples[1:min(wc.n, len(wc.samples))] {
		out = min(out, d)
	}
	return out
}

// measureClocks takes a skew sample from every writer whose stamp is new
// since the last load, and warns once per writer whose clock is more than
// a quarter of a Period away from the reader's: at half a Period its live
// keys would start to read dead. It warns only once a writer has written
// since the reader first saw it: a first stamp alone may be the last of
// a writer that is gone (a killed process that a restarted one reads), and
// its age is no skew. It must only be called from the loop goroutine.
func (r *Reader) measureClocks(res loadResult) {
	seen := res.at.Add(res.took)
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
			r.logf("%s: writer %s's clock is about %v behind this reader's (negative: ahead); at half a Period (%v) its live keys would read dead",
				r, writer, skew.Round(time.Millisecond), r.config.Period/2)
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
