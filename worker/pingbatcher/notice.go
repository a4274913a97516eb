package pingbatcher

import (
	"sync/atomic"
	"time"

	"github.com/juju/errors"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// notifier is what the batcher remembers of the notices it appends (see
// schema.Notices): other controllers' readers load when one comes, so
// they hear a prompt change, and a writer's progress, at once. Only the
// loop goroutine uses it.
type notifier struct {
	// announced is the latest progress a notice announced.
	announced written
	// prompt is set while a prompt flush's notice is still to append.
	prompt bool
	// changes are the prompt changes that the flushes since the last
	// notice took (see changeList), and written those of them that a
	// flush has written: the next notice carries these.
	changes, written changeList
	// due is set by a flush that succeeded and not yet announced.
	due bool
	// busy is set while a notice is appended (see startNotice); sent
	// is the progress it announces, and sentPrompt whether it was
	// prompt, for when it ends.
	busy       bool
	sent       written
	sentPrompt bool
	// failing is set while appends fail, so that a failure is logged
	// once.
	failing bool
	// sinceTrim counts the notices appended since the last trim, and
	// trimmedAt is when that was.
	sinceTrim int
	trimmedAt time.Time
}

// noticeResult is how the append of a notice ended: its error, and when
// it trimmed the collection after it, if it did.
type noticeResult struct {
	err       error
	trimmedAt time.Time
}

// changeList is a run of prompt changes of one writer, within the
// bounds of one notice (schema.NoticeMaxChanges and
// schema.NoticeMaxChangeBytes): a change beyond them is left out, and
// readers load it.
type changeList struct {
	writer  string
	changes schema.NoticeChanges
	bytes   int
}

// add appends c, a change of writer's, if it fits; changes of an
// earlier writer are dropped (a writer retired meanwhile).
func (l *changeList) add(writer string, c schema.NoticeChange) {
	if writer != l.writer {
		*l = changeList{writer: writer}
	}
	if len(l.changes) >= schema.NoticeMaxChanges || l.bytes+c.Size() > schema.NoticeMaxChangeBytes {
		return
	}
	l.changes = append(l.changes, c)
	l.bytes += c.Size()
}

// take appends the changes of from, of from's writer, to l, and empties
// from.
func (l *changeList) take(from *changeList) {
	for _, c := range from.changes {
		l.add(from.writer, c)
	}
	*from = changeList{}
}

// noteChange records that the key w names with index came up (up) or
// was disconnected, for the notice of the flush that writes it. A
// Disconnect of a key that another of w's indexes still holds (its
// agent reconnected through this controller before the old connection
// went) is no change of the key's: readers take a notice's Disconnect
// to mean that the writer no longer keeps the key alive. b.mu must be
// held.
func (b *PingBatcher) noteChange(w *writerState, index uint32, up bool) {
	e := w.entries[index]
	if !up && w.holders[e] > 1 {
		return
	}
	b.stats.changes.add(w.writer, schema.NoticeChange{Model: e.model, Key: e.key, Up: up})
}

// trimEvery is how many notices a batcher appends between two trims of
// the collection (see schema.TrimNotices), which come at most once a
// FlushInterval unless maxUntrimmed notices came since the last: where
// the server does not cap it, the collection holds at most
// NoticesKept + maxUntrimmed notices for each controller, for two
// commands every trimEvery notices at rest and two every maxUntrimmed
// notices in a storm of changes (at 50 flushes a second, about three
// trims a second rather than twelve). A trim is a write, and on the
// embedded server writes wait for each other (SQLite takes them one at a
// time): a trim after every fourth of 20 notices a second delayed the
// flushes after it.
const (
	trimEvery    = 4
	maxUntrimmed = 4 * trimEvery
)

// notify appends one notice after a flush that succeeded, if the flush
// carried a prompt change (prompt) or wrote the writer's first document
// of a slot, or if an earlier notice failed: at most one a flush. The
// notice carries the prompt changes the flush wrote (see changeList),
// those of its current writer only. A notice that fails is appended by
// the next flush, without the changes it carried (readers load on it
// all the same); a reader that misses one still sees what it announced
// at its next scheduled read.
//
// The notice is appended beside the flushes that follow, one at a time:
// a notice costs two or three round trips (four with a trim), and on a
// slow database a loop that waited for them wrote its next slot a second
// late, which readers took for its death. A flush that comes while one
// is appended leaves its notice to be appended when that one ends (see
// noticed). A flush that Syncs wait for (wait) appends its notice before
// it answers them, so that what a Sync wrote has been announced when it
// returns. It must only be called from the loop goroutine.
func (b *PingBatcher) notify(prompt, wait bool) {
	n := &b.notifier
	n.prompt = n.prompt || prompt
	n.written.take(&n.changes)
	n.due = true
	b.startNotice()
	for wait && n.busy {
		b.noticed(<-b.noticeDone)
	}
}

// startNotice starts appending the notice a flush left due, unless one
// is being appended: on a goroutine of its own, whose result comes to
// the loop on noticeDone. It must only be called from the loop
// goroutine.
func (b *PingBatcher) startNotice() {
	n := &b.notifier
	if n.busy || !n.due {
		return
	}
	n.due = false
	now := b.written()
	if !now.movedOn(n.announced) && !n.prompt {
		return
	}
	doc := schema.NoticeDoc{Writer: now.writer, Slot: now.slot, Prompt: n.prompt}
	if n.written.writer == now.writer {
		doc.Changes = n.written.changes
	}
	n.written = changeList{}
	n.busy, n.sent, n.sentPrompt, n.prompt = true, now, n.prompt, false
	clockNow, timeout := b.config.Clock.Now(), b.flushTimeout()
	trim := n.sinceTrim+1 >= maxUntrimmed || (n.sinceTrim+1 >= trimEvery && clockNow.Sub(n.trimmedAt) >= b.config.FlushInterval)
	b.noticeRunning.Add(1)
	go func() {
		defer b.noticeRunning.Done()
		var res noticeResult
		if res.err = b.appendNotice(doc, timeout); res.err == nil && trim {
			b.trimNotices(timeout)
			res.trimmedAt = clockNow
		}
		b.noticeDone <- res
	}()
}

// noticed takes the result of the notice startNotice appended, and
// starts the one a flush left due meanwhile. It must only be called
// from the loop goroutine.
func (b *PingBatcher) noticed(res noticeResult) {
	n := &b.notifier
	n.busy = false
	if res.err != nil {
		n.prompt = n.prompt || n.sentPrompt
		b.mu.Lock()
		b.stats.noticeFailures++
		b.mu.Unlock()
		if !n.failing && b.config.Logger != nil {
			b.config.Logger.Errorf("ping batcher: %v (other controllers see this writer at their next scheduled read; retried at the next flush)", res.err)
		}
		n.failing = true
	} else {
		if n.failing && b.config.Logger != nil {
			b.config.Logger.Infof("ping batcher: notices are appended again")
		}
		n.announced, n.failing = n.sent, false
		n.sinceTrim++
		if !res.trimmedAt.IsZero() {
			n.sinceTrim, n.trimmedAt = 0, res.trimmedAt
		}
	}
	b.startNotice()
}

// written is how far a writer's documents have got: its id, and the
// latest slot a flush wrote of it (zero before any).
type written struct {
	writer string
	slot   int64
}

// written returns how far the current writer's documents have got.
func (b *PingBatcher) written() written {
	b.mu.Lock()
	defer b.mu.Unlock()
	return written{writer: b.w.writer, slot: b.w.writtenSlot}
}

// movedOn reports whether w is further on than since: a later slot of
// the same writer, or a slot of another (a writer retired meanwhile).
func (w written) movedOn(since written) bool {
	return w.slot > 0 && (w.writer != since.writer || w.slot > since.slot)
}

// trimNotices trims the notices collection to its bound, within timeout
// (a flush's deadline, see flushTimeout). A failure is counted, logged at
// debug and left to the next trim: the notices only grow meanwhile.
func (b *PingBatcher) trimNotices(timeout time.Duration) {
	ctx, cancel := catacomb.Call(&b.catacomb, timeout)
	defer cancel()
	trimmed, err := schema.TrimNotices(ctx, b.config.Base)
	b.mu.Lock()
	b.stats.noticesTrimmed += trimmed
	if err != nil {
		b.stats.noticeTrimFailures++
	}
	b.mu.Unlock()
	if err != nil && b.config.Logger != nil {
		b.config.Logger.Debugf("ping batcher: %v (trimmed again later)", err)
	}
}

// appendNotice appends doc, within timeout (a flush's deadline, see
// flushTimeout), creating the notices collection first: every time, since
// an insert into a collection that was dropped would make an uncapped
// one, which readers cannot tail and nothing bounds. The creation of a
// collection that exists fails at once.
func (b *PingBatcher) appendNotice(doc schema.NoticeDoc, timeout time.Duration) error {
	ctx, cancel := catacomb.Call(&b.catacomb, timeout)
	defer cancel()
	if err := schema.EnsureNotices(ctx, b.config.Base); err != nil {
		return errors.Trace(err)
	}
	_, err := schema.Notices(b.config.Base).InsertOne(ctx, doc)
	return errors.Annotate(err, "cannot append a notice")
}

// writer returns the writer id the batcher writes as.
func (b *PingBatcher) writer() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.writer
}

// Self remembers the writer id a batcher writes as, from its flushes,
// for a reader in the same process: that reader skips the notices of
// its own batcher's prompt flushes, which its Wake already brought (see
// presencereader.Config.Self). Its methods are safe for concurrent use;
// its zero value is ready and names no writer.
type Self struct {
	writer atomic.Pointer[string]
}

// OnFlush returns an OnFlush that records the writer of every flush and
// then calls next if it is not nil.
func (s *Self) OnFlush(next func(FlushStats)) func(FlushStats) {
	return func(stats FlushStats) {
		if stats.Writer != "" {
			s.writer.Store(&stats.Writer)
		}
		if next != nil {
			next(stats)
		}
	}
}

// Writer returns the writer id of the latest flush, or "" before any.
func (s *Self) Writer() string {
	if w := s.writer.Load(); w != nil {
		return *w
	}
	return ""
}
