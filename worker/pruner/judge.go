package pruner

import (
	"maps"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/presencekit/presence/internal/schema"
)

// judgement is what the prunes learnt of the writers and of the pruner's
// own clock. Pruner.mu guards it.
type judgement struct {
	// writers holds what the prunes saw of every writer that has a ping
	// document.
	writers map[string]*writerState
	// observed is the pruner's observed time, on which lastEnd is when
	// the last prune ended.
	observed schema.Observed
	lastEnd  time.Time
	// trouble is set when a read failed or the prunes paused (see
	// begin): the next prune that reads holds nobody's silence meanwhile
	// against them.
	trouble bool
	// named holds the ping documents the last read could not read whole,
	// each logged once.
	named map[string]bool
	// sinceSweep counts the prunes since the last census, from
	// sweepEvery-sweepFirst at the start; census is the last census,
	// until a prune deletes what it found.
	sinceSweep int
	census     *census
}

// writerState is what the prunes saw of one writer.
type writerState struct {
	// progress follows its sequence, from the sequences each prune
	// found that the previous one had not.
	progress schema.Progress
	// seqs is the sequences of its documents that the last prune read.
	seqs []int64
	// since is when, on the pruner's observed clock, its silence began:
	// the prune that last saw it move on, or the end of a trouble.
	since time.Time
	// stale counts the prunes since then.
	stale int
	// chunks is how many beings documents it may have.
	chunks int
}

// census is what a census of the beings found: the highest slot of the
// beings of each writer that had no ping document, when it was taken on
// the observed clock, and how many prunes have judged since.
type census struct {
	slots  map[string]int64
	at     time.Time
	prunes int
}

// goneWriter is what a prune deletes of a gone writer's beings: how many
// documents it may have, and the slot it was last seen in.
type goneWriter struct {
	chunks int
	top    int64
}

// plan is what a prune deletes, as judge decides.
type plan struct {
	// census is set when the prune takes a census of the beings instead
	// of deleting any.
	census bool
	// gone holds the writers whose beings go; swept, the writers a
	// census found with beings and no ping document since, with the
	// slot up to which their beings go.
	gone  map[string]goneWriter
	swept map[string]int64
	// pings is the _ids of the ping documents that go, and forget the
	// writers whose every document goes.
	pings  []bson.RawValue
	forget []string
}

// maxPingDeletes is the most ping documents one prune deletes: a delete
// names each by its _id, and its command must stay well within the
// server's limit however many documents a database holds.
const maxPingDeletes = readBatch

// gapLimit is the longest time between two prunes that the pruner takes
// for its own pace: an Interval, a quarter more and half a slot. A longer
// one (its process paused, its clock stepped forward) is a trouble of its
// own.
func (p *Pruner) gapLimit() time.Duration {
	return p.config.Interval + p.config.Interval/4 + schema.SlotLength(p.config.Period)/2
}

// goneAfter is how long, on the pruner's observed clock, a writer must
// not move on, across at least two prunes, before it is gone: three
// Periods, six of its slots.
func (p *Pruner) goneAfter() time.Duration {
	return 3 * p.config.Period
}

// begin starts a prune, and returns its start on the observed clock. A
// gap since the last prune ended longer than gapLimit (a step of the
// clock forward, or a pause) is a trouble.
func (p *Pruner) begin() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.observed.At(p.config.Clock.Now())
	if !p.lastEnd.IsZero() && now.Sub(p.lastEnd) > p.gapLimit() {
		p.trouble = true
	}
	return now
}

// end records the end of a prune.
func (p *Pruner) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastEnd = p.observed.At(p.config.Clock.Now())
}

// troubled records a failed read of the ping documents.
func (p *Pruner) troubled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trouble = true
}

// judge records what read, which a prune that began at now made, says of
// the writers, and returns what the prune deletes.
func (p *Pruner) judge(read pingsRead, now time.Time) plan {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logSkipped(read.skipped)
	if p.writers == nil {
		p.writers = make(map[string]*writerState)
	}
	if p.trouble {
		// Nobody's silence during the trouble counts.
		p.trouble = false
		for _, w := range p.writers {
			w.since, w.stale = now, 0
		}
		if p.census != nil {
			p.census.at, p.census.prunes = now, 0
		}
	}
	for writer, r := range read.writers {
		w := p.writers[writer]
		if w == nil {
			w = &writerState{since: now}
			p.writers[writer] = w
		}
		w.observe(r, now, p.config.Period)
	}
	live := 0
	for writer, w := range p.writers {
		switch {
		case read.writers[writer] == nil:
			// Its documents went (another pruner judged it gone).
			delete(p.writers, writer)
		case !p.gone(w, now):
			live++
		}
	}
	var out plan
	if live == 0 {
		return out
	}
	out.swept = p.sweep(read, now)
	p.sinceSweep++
	if p.census == nil && out.swept == nil && p.sinceSweep >= sweepEvery {
		// The census is this prune's command on the beings: gone
		// writers' documents go at the next.
		p.sinceSweep = 0
		out.census = true
	}
	out.gone = make(map[string]goneWriter)
	for _, writer := range slices.Sorted(maps.Keys(p.writers)) {
		w, r := p.writers[writer], read.writers[writer]
		if p.gone(w, now) {
			if out.census {
				continue
			}
			out.gone[writer] = goneWriter{chunks: w.chunks, top: w.top(r)}
			if out.addPings(r, func(pingHead) bool { return true }) {
				out.forget = append(out.forget, writer)
			}
			continue
		}
		if !w.progress.Confirmed {
			// A lone document may have been taken for its latest
			// at first sight: none goes until it has moved on.
			continue
		}
		below := w.progress.Top - schema.KeepSlots
		out.addPings(r, func(doc pingHead) bool { return doc.slot < below })
	}
	return out
}

// observe takes what one read, begun at now, found of the writer.
func (w *writerState) observe(r *writerRead, now time.Time, period time.Duration) {
	var seqs []int64
	for _, doc := range r.docs {
		if doc.valid {
			seqs = append(seqs, doc.slot)
		}
	}
	seqs = slices.Compact(slices.Sorted(slices.Values(seqs)))
	var fresh []int64
	for _, s := range seqs {
		if _, found := slices.BinarySearch(w.seqs, s); !found {
			fresh = append(fresh, s)
		}
	}
	w.seqs = seqs
	w.chunks = max(w.chunks, r.chunks)
	// A document read before is no news, whatever its sequence: one
	// beyond what the writer could reach when it appeared is never
	// believed later, and a writer held back by one it believed still
	// moves on by writing others.
	rejected, _ := w.progress.Observe(fresh, now, period)
	if len(fresh) > len(rejected) {
		w.since, w.stale = now, 0
	} else {
		w.stale++
	}
}

// top returns the slot up to which a gone writer's beings go: its latest
// believed sequence, or its highest slot if it has none.
func (w *writerState) top(r *writerRead) int64 {
	if !w.progress.At.IsZero() {
		return w.progress.Top
	}
	var top int64
	for _, doc := range r.docs {
		top = max(top, doc.slot)
	}
	return top
}

// gone reports whether w has not moved on across two prunes and
// goneAfter by now. p.mu must be held.
func (p *Pruner) gone(w *writerState, now time.Time) bool {
	return w.stale >= 2 && now.Sub(w.since) >= p.goneAfter()
}

// sweep returns the writers the census found with beings and no ping
// document, if they have had none since across two prunes and goneAfter
// by now (the census is then done with), or nil. p.mu must be held.
func (p *Pruner) sweep(read pingsRead, now time.Time) map[string]int64 {
	c := p.census
	if c == nil {
		return nil
	}
	c.prunes++
	if c.prunes < 2 || now.Sub(c.at) < p.goneAfter() {
		return nil
	}
	p.census = nil
	var out map[string]int64
	for writer, slot := range c.slots {
		if read.writers[writer] == nil {
			if out == nil {
				out = make(map[string]int64)
			}
			out[writer] = slot
		}
	}
	return out
}

// addPings adds to the plan the _ids of r's documents that keep says go,
// up to maxPingDeletes in all, and reports whether every one of them
// went in.
func (out *plan) addPings(r *writerRead, keep func(pingHead) bool) bool {
	for _, doc := range r.docs {
		if !keep(doc) {
			continue
		}
		if len(out.pings) >= maxPingDeletes {
			return false
		}
		out.pings = append(out.pings, doc.id)
	}
	return true
}

// recordCensus records a census taken at now, or has the next prune take
// one again if it failed.
func (p *Pruner) recordCensus(slots map[string]int64, ok bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ok {
		p.sinceSweep = sweepEvery
		return
	}
	p.census = &census{slots: slots, at: now}
}

// forget drops the writers whose documents are deleted.
func (p *Pruner) forget(writers []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, writer := range writers {
		delete(p.writers, writer)
	}
}

// logSkipped logs, once each, the ping documents the pruner cannot read
// whole, and forgets those no longer there. p.mu must be held.
func (p *Pruner) logSkipped(skipped []skippedDoc) {
	named := make(map[string]bool, len(skipped))
	for _, doc := range skipped {
		if !p.named[doc.id] && !named[doc.id] && p.config.Logger != nil {
			p.config.Logger.Errorf("presence pruner: skipped ping document %s: %v", doc.id, doc.err)
		}
		named[doc.id] = true
	}
	p.named = named
}
