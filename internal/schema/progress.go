package schema

import (
	"slices"
	"time"

	"github.com/juju/errors"
)

// A writer's sequence. The slot field of a writer's ping documents is not
// a time that others may compare with theirs: it is the writer's own
// sequence, which starts at the slot its clock is in when it starts and
// moves on by one for every slot length of its clock, and never goes back
// whatever its clock does (see pingbatcher). Readers and the pruner judge
// a writer by the progress of that sequence as they observe it on their
// own clocks (see Progress), so that presence needs nothing of another
// process's clock but its rate.

const (
	// MaxRate is the most any clock may run fast or slow: 1%.
	MaxRate = 0.01

	// MaxJump is the most a writer's sequence moves on at once: a
	// writer that finds its clock more slots on than that since it last
	// looked (a paused process, a clock stepped forward) starts afresh
	// with a new writer id instead.
	MaxJump = 4
)

// MaxAdvance returns the most a writer's sequence can move on while
// elapsed passes on an observer's clock, both clocks within MaxRate of
// the true rate: one slot for each slot length, one for a move the
// observer may not have seen yet, and MaxJump for a step of the writer's
// clock.
func MaxAdvance(elapsed, period time.Duration) int64 {
	slots := int64(0)
	if elapsed > 0 {
		slots = int64(float64(elapsed) * (1 + 3*MaxRate) / float64(SlotLength(period)))
	}
	return slots + MaxJump + 2
}

// Progress follows one writer's sequence as an observer sees it from
// successive reads, timed by the observer's own clock. Top is the
// writer's latest sequence that the observer believes, At when (by the
// observer's clock) it last moved on, and Confirmed whether the observer
// has seen it move on by a step the writer could have made. Its zero
// value has seen nothing. It is not safe for concurrent use, and is a
// value: a copy evolves on its own (the slice it holds is never
// modified in place).
type Progress struct {
	Top       int64
	At        time.Time
	Confirmed bool
	// seen is the sequences of the writer's documents in the last read.
	seen []int64
}

// Observe takes the sequences of the writer's documents that one read,
// started at now on the observer's clock, returned; period is the writers'
// Period. It returns the sequences it will not believe, beyond what the
// writer can have reached since Top moved on (see MaxAdvance), and
// whether Top moved.
//
// At first sight, Top is the highest sequence that has another within
// MaxJump+1 below it (a writer writes a document for every slot while it
// is live), or the highest of all. Until the observer has seen it move on
// by a plausible step, a sequence that appears anywhere else replaces it:
// a lone document that claimed a sequence the writer never wrote cannot
// hold its writer back for longer than a slot.
func (p *Progress) Observe(seqs []int64, now time.Time, period time.Duration) (rejected []int64, moved bool) {
	sorted := slices.Compact(slices.Sorted(slices.Values(seqs)))
	prev := p.seen
	p.seen = sorted
	if len(sorted) == 0 {
		return nil, false
	}
	if p.At.IsZero() {
		p.Top, p.At = firstTop(sorted), now
		return above(sorted, p.Top), true
	}
	limit := p.Top + MaxAdvance(now.Sub(p.At), period)
	replaced := false
	if !p.Confirmed {
		for _, s := range sorted {
			if _, found := slices.BinarySearch(prev, s); !found && (s > limit || s < p.Top-MaxJump) {
				p.Top, p.At, replaced, moved = s, now, true, true
				limit = s + MaxJump + 2
			}
		}
	}
	top := p.Top
	for _, s := range sorted {
		if s > top && s <= limit {
			top = s
		}
	}
	if top > p.Top {
		p.Top, p.At, moved = top, now, true
		p.Confirmed = p.Confirmed || !replaced
	}
	for _, s := range sorted {
		if s > limit {
			rejected = append(rejected, s)
		}
	}
	return rejected, moved
}

// firstTop returns the highest of sorted that has another within
// MaxJump+1 below it, or the highest of all.
func firstTop(sorted []int64) int64 {
	for i := len(sorted) - 1; i > 0; i-- {
		if sorted[i]-sorted[i-1] <= MaxJump+1 {
			return sorted[i]
		}
	}
	return sorted[len(sorted)-1]
}

// above returns the members of sorted greater than top.
func above(sorted []int64, top int64) []int64 {
	i, _ := slices.BinarySearch(sorted, top+1)
	if i == len(sorted) {
		return nil
	}
	return slices.Clone(sorted[i:])
}

// CheckID returns a NotValid error unless id is the _id that doc's slot
// and writer give: a document filed under another's _id is not what it
// claims to be.
func (doc PingDoc) CheckID(id string) error {
	if want := PingID(doc.Slot, doc.Writer); id != want {
		return errors.NotValidf("ping document %q claiming slot %d of writer %q", id, doc.Slot, doc.Writer)
	}
	return nil
}

// Observed is an observer's observed time: its clock's readings, moving
// on as the clock does but never back, so that a clock stepped back does
// not make the observer wait again for what it has already waited for.
// (A step forward is a gap between its looks, which an observer treats as
// a trouble of its own.) Its zero value has read nothing. It is not safe
// for concurrent use.
type Observed struct {
	now, raw time.Time
}

// At returns the observed time at raw, a reading of the observer's clock
// no earlier in its life than the last one it was given.
func (o *Observed) At(raw time.Time) time.Time {
	if o.now.IsZero() {
		o.now = raw
	} else {
		o.now = o.now.Add(max(raw.Sub(o.raw), 0))
	}
	o.raw = raw
	return o.now
}
