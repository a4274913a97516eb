package presencereader

import (
	"time"

	"github.com/presencekit/presence/internal/schema"
)

// Applying a load: the view's new states, the outage and stall
// bookkeeping, the answers to the callers that waited for the load, and
// what Report and OnLoad show. Everything here runs on the loop
// goroutine.

// forgetAfter is how many successful loads a writer may be absent from
// before the reader forgets its indexes.
const forgetAfter = 16

// finishLoad applies a load, dispatches the changes and answers the
// callers that waited for it. It must only be called from the loop
// goroutine.
func (r *Reader) finishLoad(res loadResult) {
	var changes []change
	r.checkGap(res)
	if res.err != nil {
		r.failed(res)
	} else {
		changes = r.applied(res)
	}
	r.reportSkipped(res.skipped)
	if res.beingsErr != nil {
		r.logf("%s: %v (the next load fetches the rest)", r, res.beingsErr)
	}
	// The changes go into the logs first, so that OnLoad sees what they
	// hold; subscribers are woken for them once they are published,
	// after OnLoad.
	now := res.at.Add(res.took)
	r.pruneLogs(now)
	for _, c := range changes {
		r.log(c.id, c.alive, now)
	}
	r.unlockLogs()
	alive, logEntries, logBytes := r.record(res)
	if r.config.OnLoad != nil {
		r.config.OnLoad(LoadStats{
			Took: res.took, Models: len(r.view.models), Writers: len(r.view.writer),
			Keys: len(r.view.keys), Alive: alive, Changes: len(changes), Skipped: len(res.skipped),
			Held: r.view.holding, Stalled: r.view.stalled,
			MaxSkew: r.maxSkew(), Skews: r.skews(), LogEntries: logEntries, LogBytes: logBytes, LinesHeld: r.lines.Held(), Err: res.err,
			Push: r.pushing(), PushBreaks: r.pushBreaks(),
		})
	}
	r.round++
	for _, c := range changes {
		r.dispatch(c.id, c.alive)
	}
	r.publishLogs()
	if r.justLoaded {
		r.justLoaded = false
		r.firstDispatch()
	}
	// The senders touched since the last answer: by this load, and by
	// the hints applied while it ran, whose changes it then found none
	// of.
	for _, waiter := range r.curWaiters {
		waiter.respond(syncResult{err: res.err, gen: r.gen, senders: touchedBy(r.touched, waiter.view)})
	}
	r.curWaiters = nil
	clear(r.touched)
	r.touched = r.touched[:0]
	r.answered++
	for _, req := range r.pendingAlive {
		req.respond(r.alive(req.model, req.key))
	}
	r.pendingAlive = nil
}

// touchedBy returns the senders of v among touched.
func touchedBy(touched []*sender, v *View) []*sender {
	if v == nil {
		return nil
	}
	var out []*sender
	for _, s := range touched {
		if s.owner == v {
			out = append(out, s)
		}
	}
	return out
}

// checkGap treats a gap between the end of the last load and the start
// of res longer than gapLimit as a trouble of the reader's own, as it
// treats a failed load: the reader did not look meanwhile (its process
// was paused, or its clock stepped forward), so nobody's silence then is
// held against a writer, and the writers within their bounds when it
// began keep their keys until they move on again. It must only be called
// from the loop goroutine.
func (r *Reader) checkGap(res loadResult) {
	if !r.lastLoadEnd.IsZero() && res.at.Sub(r.lastLoadEnd) > r.gapLimit() {
		r.view.troubleBegins(r.lastLoadEnd, r.config.Period, r.config.MaxStall)
		r.failing = true
	}
	r.lastLoadEnd = res.at.Add(res.took)
}

// gapLimit is the longest gap between two loads that the reader takes
// for its own pace: the gap it planned (a SyncInterval at least, see
// nextLoad) and a quarter of a slot. A step of its clock forward by less
// adds at most that to a writer's silence, which its late bound (a
// Period, two slots) has room for (see schedule.go).
func (r *Reader) gapLimit() time.Duration {
	return max(r.config.SyncInterval, r.planned) + schema.SlotLength(r.config.Period)/4
}

// failed records a failed load: the view is kept, and the trouble it
// marks holds late writers' keys. It must only be called from the loop
// goroutine.
func (r *Reader) failed(res loadResult) {
	r.lastErr = res.err
	r.failing = true
	r.view.troubleBegins(res.at, r.config.Period, r.config.MaxStall)
	r.failures++
	r.logf("%s: %v (keeping the last view)", r, res.err)
}

// applied applies a successful load to the view and returns the entities
// whose state changed, for finishLoad to dispatch. The slice is reused by
// the next load. It must only be called from the loop goroutine.
func (r *Reader) applied(res loadResult) []change {
	// A load that stalled (and those that failed before it) may have
	// kept the batchers from writing too: they get a Period from the end
	// of the first load that came back promptly or succeeded, not from
	// its start, to catch up before a quiet key counts as dead.
	if r.failing || res.took > r.stallAfter() {
		r.failing = false
		r.healthySince = res.at.Add(res.took)
		r.view.troubleBegins(res.at, r.config.Period, r.config.MaxStall)
		r.view.troubleEnds(r.healthySince)
	} else if res.took > r.slowAfter() {
		r.view.slowed(res.took, r.config.MaxStall, res.at.Add(res.took))
	}
	r.lastErr = nil
	r.view.judged(res.progress)
	for _, doc := range res.beings {
		r.view.learn(doc.Writer, doc.Chunk*schema.ChunkSize, doc.Entries)
	}
	for writer, f := range res.fresh {
		r.view.learn(writer, f.from, f.entries)
	}
	r.measureClocks(res)
	hold := !r.healthySince.IsZero() && res.at.Before(r.healthySince.Add(r.config.Period))
	now := res.at.Add(res.took)
	wasStalled := r.view.stalled
	// Writers are aged by successful loads only: an outage of any
	// length must not make the reader forget a writer it will see
	// again, and then fetch all of its beings anew.
	r.okLoads++
	r.view.gen = res.gen
	changes := r.view.apply(res.writers, r.okLoads, hold, now, r.config.Period, r.config.MaxStall)
	if r.view.stalled != wasStalled {
		if r.view.stalled {
			r.logf("%s: no writer is on time: suspecting the database, holding the keys of late writers for up to %v", r, r.config.MaxStall)
		} else {
			r.logf("%s: a writer is on time again", r)
		}
	}
	if r.view.unknown > 0 && r.config.Logger != nil {
		r.config.Logger.Debugf("%s: %d live indexes with no known key; fetching beings again", r, r.view.unknown)
	}
	if r.okLoads > forgetAfter {
		r.view.forget(r.okLoads-forgetAfter, now.Add(-max(r.config.MaxStall, r.config.Period)))
	}
	r.view.sweep(now, r.config.LogAge)
	if !r.loaded {
		r.loaded = true
		r.justLoaded = true
		return nil
	}
	return changes
}

// record updates what Report shows and returns how many keys are alive,
// and how many entries and bytes the change logs hold. It must only be
// called from the loop goroutine.
func (r *Reader) record(res loadResult) (alive, logEntries, logBytes int) {
	for _, m := range r.view.models {
		alive += m.alive
	}
	for _, l := range r.logs {
		logEntries += l.n
		logBytes += l.bytes()
	}
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	r.stats["loads"] = r.gen
	r.stats["models"] = len(r.view.models)
	r.stats["keys"] = len(r.view.keys)
	r.stats["alive"] = alive
	r.stats["writers"] = len(r.view.writer)
	r.stats["views"] = r.views
	r.stats["subscriptions"] = r.subCount
	r.stats["skipped-documents"] = r.skippedNow
	r.stats["log-lines-held"] = r.lines.Held()
	r.stats["max-clock-skew"] = r.maxSkew().String()
	r.stats["failures"] = r.failures
	r.stats["held"] = r.view.holding
	r.stats["stalled"] = r.view.stalled
	r.stats["last-load"] = res.took.String()
	r.stats["log-entries"] = logEntries
	r.stats["log-bytes"] = logBytes
	r.recordPush()
	if res.err != nil {
		r.stats["last-error"] = res.err.Error()
	} else {
		delete(r.stats, "last-error")
	}
	return alive, logEntries, logBytes
}
