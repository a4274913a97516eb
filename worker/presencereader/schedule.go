package presencereader

import (
	"time"

	"github.com/presencekit/presence/internal/schema"
)

// When the reader reads. Without push (Config.NoPush, or while the
// notices cannot be tailed) it reads every SyncInterval. With push it
// reads when a notice comes (a prompt change, or a writer's new slot),
// and otherwise only when the view's judgement may change with time
// alone: at the moment a writer's sequence would become late, or its
// keys would stop being held (see writerKeys.lateBound), and at least
// every restInterval. While anything is held for time (a trouble of the
// database, keys held for a late writer, live bits with no known key,
// deaths held after an outage) it reads every SyncInterval, as without
// push.
//
// Why fewer reads make no live writer late: a writer is late when its
// sequence has not moved on for a Period of the reader's observed time
// since the reader first saw it move (progressAt). Reading less often
// can only make the reader see a move later, never earlier, so
// progressAt can only be later and a writer only look less late, never
// more; and the read that judges a writer late is the one at or after
// its deadline, which sees every document written before it. With push,
// every writer announces its moves, so progressAt is as prompt as a
// poll's (a notice's latency rather than up to a SyncInterval; for the
// reader's own writer, whose notices a cursor behind a backlog may bring
// a second or more late, Config.Wake's at once), and
// the read at the deadline makes a silent death seen as soon as before:
// within Period + flush + sync. A notice lost costs only promptness: the
// read at the deadline (or restInterval) sees the move, and a read that
// sees a writer move judges it on time whatever the time.
//
// What the reader cannot tell from its own clock is a step forward of
// that clock while it waits: a gap between loads longer than planned
// by more than a quarter of a slot is a trouble of its own (see
// checkGap), and restInterval is a quarter of a slot too, so a step the
// reader does not notice is at most half a slot (a SyncInterval and a
// quarter of a slot before push). A live writer moves on within a slot
// (3% more for the clocks' rates) and a jittered FlushInterval of its
// last move, so against its late bound of two slots an unnoticed step of
// half a slot still leaves it 0.47 of a slot for its flush: 2.35 s at
// the default Period, for a flush of 1.2 s at most.

// restInterval is the longest the reader waits between two reads with
// push working: a quarter of a slot, but never less than SyncInterval.
func (r *Reader) restInterval() time.Duration {
	return max(schema.SlotLength(r.config.Period)/4, r.config.SyncInterval)
}

// nextLoad returns how long after res ended the next load is due, and
// records it as the planned gap for checkGap. It must only be called
// from the loop goroutine, after res was applied.
func (r *Reader) nextLoad(res loadResult) time.Duration {
	fast := max(r.config.SyncInterval-res.took, 0)
	end := res.at.Add(res.took)
	next := fast
	if r.calm(res, end) {
		next = r.restInterval()
		for _, wk := range r.view.writer {
			if wk.progressAt.IsZero() {
				continue
			}
			for _, bound := range []time.Duration{r.config.Period, wk.lateBound(r.config.Period, r.config.MaxStall)} {
				if due := wk.progressAt.Add(bound).Sub(end); due > 0 {
					next = min(next, due)
				}
			}
		}
		next = max(next, fast)
	}
	r.planned = next
	return next
}

// calm reports whether the reader may read only when it must after res
// (see nextLoad): push works, and nothing is held for time. It must only
// be called from the loop goroutine.
func (r *Reader) calm(res loadResult, end time.Time) bool {
	if !r.pushing() || res.err != nil || res.beingsErr != nil || !r.loaded || r.failing {
		return false
	}
	v := r.view
	if v.holding > 0 || v.stalled || v.unknown > 0 || !v.unknownSince.IsZero() {
		return false
	}
	if !r.healthySince.IsZero() && end.Before(r.healthySince.Add(r.config.Period)) {
		return false
	}
	for _, wk := range v.writer {
		if wk.caught {
			return false
		}
	}
	return true
}
