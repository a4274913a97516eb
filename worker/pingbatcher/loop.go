package pingbatcher

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
)

// minFlushTimeout is the shortest deadline a flush gets, however short
// the Period: a write of many new keys must be able to finish.
const minFlushTimeout = time.Second

// maxFlushTimeoutPeriods bounds, in Periods, the deadline of the flushes
// that follow a flush that timed out: each such failure doubles the
// deadline up to this, so that on a slow database a big write (a new
// writer's beings) finishes in the end instead of timing out forever; a
// flush that succeeds brings it back.
const maxFlushTimeoutPeriods = 2

// minKickGap is the shortest time between two flushes that a Disconnect
// or a key coming up asks for: a burst of them shares one flush, and a
// storm of them makes at most 50 flushes a second (fewer where a flush
// takes longer, as a flush that runs collects what comes meanwhile). It
// is what a change may wait before it is written, so it is kept short:
// at 50 ms it was most of what another controller waited for a change,
// at p99 (issue 28).
const minKickGap = 20 * time.Millisecond

// soon asks the loop for a flush now, at most one per minKickGap. It
// never blocks. b.mu must be held.
func (b *PingBatcher) soon() {
	b.stats.prompted = true
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *PingBatcher) jittered() time.Duration {
	f := b.config.FlushInterval
	return time.Duration(float64(f) * (0.8 + 0.4*b.rand.Float64()))
}

func (b *PingBatcher) loop() error {
	first := b.jittered()
	timer := b.config.Clock.NewTimer(first)
	defer timer.Stop()
	// A beings write left running ends with the loop: its calls end
	// when the catacomb dies.
	defer b.beingsRunning.Wait()
	// So does a notice left running (see notify).
	defer b.noticeRunning.Wait()
	sched := schedule{
		timer:   timer,
		nextAt:  b.config.Clock.Now().Add(first),
		kickGap: min(minKickGap, b.config.FlushInterval),
	}
	for {
		var waiters []chan error
		fired := false
		select {
		case <-b.catacomb.Dying():
			return b.catacomb.ErrDying()
		case err := <-b.beingsDone:
			b.beingsWritten(err)
			continue
		case res := <-b.noticeDone:
			b.noticed(res)
			continue
		case reply := <-b.syncs:
			waiters = append(waiters, reply)
		case <-b.kick:
			if !sched.kicked(b.config.Clock.Now()) {
				continue
			}
		case <-timer.Chan():
			fired = true
		}
		started := b.flushFor(b.coalesce(waiters))
		sched.flushed(started, b.config.Clock.Now(), b.jittered(), fired)
	}
}

// schedule is when the loop flushes next: a jittered FlushInterval after
// the last flush started, or sooner when kicked, but no sooner than
// kickGap after it. It must only be used from the loop goroutine.
type schedule struct {
	timer     clock.Timer
	nextAt    time.Time // when timer fires
	lastStart time.Time // when the last flush started
	kickGap   time.Duration
}

// kicked reports whether a kick at now may flush at once. A kick too soon
// after the last flush brings the next one forward instead, to kickGap
// after the last, and never puts it later. A clock that reads earlier
// than when the last flush started has been stepped back: how long ago
// that was is unknown, and the kick flushes (a flush more is harmless).
func (s *schedule) kicked(now time.Time) bool {
	since := now.Sub(s.lastStart)
	wait := s.kickGap - since
	if wait <= 0 || since < 0 {
		return true
	}
	if due := now.Add(wait); due.Before(s.nextAt) {
		catacomb.Rearm(s.timer, wait)
		s.nextAt = due
	}
	return false
}

// flushed sets the next flush interval after started, when the flush that
// ended at now started: flushes start every (jittered) FlushInterval, and
// the write's own time does not stretch it. A clock stepped back during
// the flush (now before started) does not stretch it either: the flush
// counts as instant, rather than as having taken minus the step, which
// would put the next flush off by as much as the step. fired says whether
// the timer fired and was received.
func (s *schedule) flushed(started, now time.Time, interval time.Duration, fired bool) {
	s.lastStart = started
	if now.Before(started) {
		s.lastStart = now
	}
	next := max(interval-max(now.Sub(started), 0), 0)
	s.nextAt = now.Add(next)
	if fired {
		s.timer.Reset(next)
	} else {
		catacomb.Rearm(s.timer, next)
	}
}

// coalesce adds to waiters the Syncs already waiting: the flush about to
// start serves them too. It must only be called from the loop goroutine.
func (b *PingBatcher) coalesce(waiters []chan error) []chan error {
	for {
		select {
		case reply := <-b.syncs:
			waiters = append(waiters, reply)
		default:
			return waiters
		}
	}
}

// flushFor flushes, reports the flush (OnFlush, the log, the deadline and
// the pace) and answers waiters, the Syncs it serves: at once, or when the
// beings write it left running ends. It returns when the flush started.
// It must only be called from the loop goroutine.
func (b *PingBatcher) flushFor(waiters []chan error) time.Time {
	started := b.config.Clock.Now()
	b.prompt = false
	before := b.written()
	docs, err := b.flushWithin(b.flushTimeout())
	took := b.config.Clock.Now().Sub(started)
	moved := err == nil && b.written().movedOn(before)
	if err != nil && b.prompt {
		// What asked for it is written by a later flush, which
		// must wake the reader in its turn.
		b.mu.Lock()
		b.stats.prompted = true
		b.mu.Unlock()
	}
	if b.config.OnFlush != nil {
		b.config.OnFlush(FlushStats{Took: took, Documents: docs, Err: err, Prompt: b.prompt, Moved: moved, Writer: b.writer()})
	}
	if err == nil {
		b.notify(b.prompt, len(waiters) > 0)
	}
	if err != nil && b.config.Logger != nil {
		b.config.Logger.Errorf("ping batcher: %v (pings kept for the next flush)", err)
	}
	b.adaptTimeout(err)
	if docs > 0 || err != nil {
		b.checkPace(took)
	}
	if b.beingsBusy && err == nil {
		// A Sync returns once the beings are written too.
		b.beingsWaiters = append(b.beingsWaiters, waiters...)
		waiters = nil
	}
	for _, reply := range waiters {
		reply <- err
	}
	return started
}

// flushTimeout returns the deadline of each call of the next flush: half
// a Period (at least minFlushTimeout), or more after timeouts (see
// adaptTimeout).
func (b *PingBatcher) flushTimeout() time.Duration {
	return max(b.timeout, b.config.Period/2, minFlushTimeout)
}

// adaptTimeout doubles the next flush's deadline after a flush that timed
// out, up to maxFlushTimeoutPeriods Periods, and brings it back after one
// that succeeded.
func (b *PingBatcher) adaptTimeout(err error) {
	switch {
	case err == nil:
		b.timeout = 0
	case mongo.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		b.timeout = min(2*b.flushTimeout(), maxFlushTimeoutPeriods*b.config.Period)
	}
}

// checkPace counts a flush that wrote, or tried to, and took longer than
// a flush interval, and says so in the log the first time after one that
// kept pace:
// detection slows down, and readers hold the writer's keys rather than
// report them dead, but an operator should know. It must only be called
// from the loop goroutine.
func (b *PingBatcher) checkPace(took time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if took <= b.config.FlushInterval {
		b.stats.behind = false
		return
	}
	b.stats.slowFlushes++
	if !b.stats.behind && b.config.Logger != nil {
		b.config.Logger.Errorf("ping batcher: falling behind: a flush took %v of a %v flush interval (%v period)",
			took.Round(time.Millisecond), b.config.FlushInterval, b.config.Period)
	}
	b.stats.behind = true
}
