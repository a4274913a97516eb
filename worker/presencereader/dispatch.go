package presencereader

import (
	"time"
)

// Dispatch: how a load's changes reach the change logs, the Watch
// channels and the subscriptions, without the loop ever waiting for a
// consumer.

// firstDispatch sends the initial states that waited for the first load.
// It must only be called from the loop goroutine.
func (r *Reader) firstDispatch() {
	for _, req := range r.newWatches {
		s := req.view.senders[req.ch]
		g := r.registries[req.view.model]
		if s != nil && g != nil && contains(g.watchers[req.key], s) {
			s.enqueue(req.key, r.view.lookup(req.view.model, req.key), r.gen, true)
			r.touch(s)
		}
	}
	r.newWatches = nil
	for _, req := range r.newSubs {
		r.snapshot(req)
	}
	r.newSubs = nil
}

// log adds one change, applied at now, to its model's change log, if the
// model is viewed. The log stays locked until unlockLogs, so that the
// changes of a load are appended under one lock. It must only be called
// from the loop goroutine.
func (r *Reader) log(id int32, alive bool, now time.Time) {
	l := r.logs[r.view.owner[id].uuid]
	if l == nil {
		return
	}
	if !l.locked {
		l.mu.Lock()
		l.locked = true
		if !l.added {
			l.added = true
			r.openLogs = append(r.openLogs, l)
		}
	}
	l.add(r.view.keys[id], alive, now)
}

// unlockLogs releases the logs that log locked; no lock is held while
// OnLoad runs. It must only be called from the loop goroutine.
func (r *Reader) unlockLogs() {
	for _, l := range r.openLogs {
		if l.locked {
			l.locked = false
			l.mu.Unlock()
		}
	}
}

// dispatch hands one change to every channel that wants it, and names
// the subscriptions to its key for publishLogs to wake. None of them can
// block. It must only be called from the loop goroutine.
func (r *Reader) dispatch(id int32, alive bool) {
	m := r.view.owner[id]
	g := r.registries[m.uuid]
	if g == nil {
		return
	}
	key := r.view.keys[id]
	for _, s := range g.watchers[key] {
		s.enqueue(key, alive, r.gen, false)
		r.touch(s)
	}
	for _, sub := range g.keySubs[key] {
		if sub.woken != r.round {
			sub.woken = r.round
			r.toWake = append(r.toWake, sub)
		}
	}
}

// publishLogs wakes the subscribers of the logs that log added to: those
// to every key through the log, and those that dispatch named one by
// one. It must only be called from the loop goroutine.
func (r *Reader) publishLogs() {
	for _, l := range r.openLogs {
		l.added = false
		l.publish()
	}
	clear(r.openLogs)
	r.openLogs = r.openLogs[:0]
	for _, sub := range r.toWake {
		sub.wake()
	}
	clear(r.toWake)
	r.toWake = r.toWake[:0]
}

// pruneLogs removes the changes older than LogAge from every log, and the
// logs that no view has used for LogAge, on the reader's load ticks: it
// sets no timer of its own. It must only be called from the loop
// goroutine.
func (r *Reader) pruneLogs(now time.Time) {
	cutoff := now.Add(-r.config.LogAge)
	for model, l := range r.logs {
		if l.refs == 0 && l.unviewed.Before(cutoff) {
			delete(r.logs, model)
			continue
		}
		if l.prunable(cutoff) {
			l.mu.Lock()
			l.prune(cutoff)
			l.mu.Unlock()
		}
	}
}

// touch notes that s was handed a change by the load of this generation,
// for the Sync callers that wait for its delivery. It must only be called
// from the loop goroutine.
func (r *Reader) touch(s *sender) {
	if mark := r.answered + 1; s.touched != mark {
		s.touched = mark
		r.touched = append(r.touched, s)
	}
}
