package presencereader

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/presencekit/presence/internal/schema"
)

// The push path. Every writer appends a notice to a capped collection
// when it flushes a prompt change or moves on to a new slot (see
// schema.Notices and pingbatcher); the reader keeps a tailable,
// awaitData cursor on it and loads as soon as a notice of another
// writer comes (its own batcher's flushes that a notice announces wake it
// through Config.Wake). While the cursor works the reader reads only when it
// must (see nextLoad); while it is broken the reader polls every
// SyncInterval, as it did before notices existed.
//
// The cursor breaks in many ways: the server restarts (the cursor is
// gone), the collection is dropped or rolls past the cursor, a getMore
// times out, the server has no capped collections or tailable cursors.
// Each break is logged once and counted, and the reader polls until a
// cursor opens again, from the newest notice, when it loads at once: a
// notice the break lost costs nothing that load does not bring. The
// goroutine that tails sets no timer: it retries when the loop asks it
// to (see retryPush), so that it adds nothing to a test clock.

// noticeAwait is how long a getMore of the notices cursor waits for a
// notice: one getMore every noticeAwait at rest.
const noticeAwait = 2 * time.Second

// pushRetry is how long the reader polls after a break before it tries
// to open a cursor again.
const pushRetry = time.Second

// errNoNotices says that the notices collection is missing or empty: no
// batcher has appended one yet (the reader writes nothing, so it waits
// for one).
const errNoNotices = errors.ConstError("no notices yet")

// pushState is the state of the push path, shared by the goroutine that
// tails the notices and the loop. Its methods are safe for concurrent use.
type pushState struct {
	mu sync.Mutex
	// working is set while a cursor is open; broken from a break (or a
	// failure to open one) until a cursor opens again.
	working bool
	broken  bool
	breaks  int
	notices int
	lastErr string
	// last is the _id of the newest notice taken (an ObjectID in hex).
	last string
	// hints are the changes of other writers' notices that the loop has
	// yet to apply, hintsDropped those dropped for want of room, and
	// refused why a notice's changes were refused (see addHints).
	hints                      []hint
	hintsDropped, hintsRefused int
	refused                    []string
	brokenAt                   time.Time // by the loop's observed clock, when it saw the break
	retry                      chan struct{}
}

// status returns whether the cursor works, how many times it broke, how
// many notices it brought and the last break's error.
func (p *pushState) status() (working bool, breaks, notices int, lastErr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.working, p.breaks, p.notices, p.lastErr
}

// newest returns the _id of the newest notice taken, or "" before any.
func (p *pushState) newest() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// tailNotices follows the notices collection until ctx ends, waking the
// loop for every notice of another writer, and reopening the cursor
// after every break when the loop asks for it.
func (r *Reader) tailNotices(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.tailOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case clientGone(err):
			// The reader's client was disconnected: the reader is
			// being stopped with it, and polls meanwhile.
			r.pushWaits()
			return
		case errors.Is(err, errNoNotices):
			r.pushWaits()
		default:
			r.pushBroke(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.push.retry:
		}
	}
}

// tailOnce opens a cursor on the notices and follows it until it breaks,
// and returns why.
func (r *Reader) tailOnce(ctx context.Context) error {
	cur, err := r.openNotices(ctx)
	if err != nil {
		return errors.Trace(err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), minReadTimeout)
		defer cancel()
		_ = cur.Close(closeCtx)
	}()
	r.push.took(cur.Current, false)
	r.pushWorks()
	for {
		next, err := r.nextNotice(ctx, cur)
		if err != nil {
			return errors.Trace(err)
		}
		if next == nil {
			continue
		}
		own := r.ownNotice(*next)
		if !own {
			r.push.addHints(*next)
			r.wakeLoop()
		}
		r.push.took(cur.Current, true)
		if own {
			// No load is asked for it (Wake brought its flush), so
			// Report names it at once rather than from the next load.
			r.statsMu.Lock()
			r.recordPush()
			r.statsMu.Unlock()
		}
	}
}

// took records that the notice raw was taken, after the loop was woken
// for it if it had to be (Report names it from the next load on, so
// that once it does, no load for it is still to be asked for). counted
// is unset for the notice a cursor opens on, which is older than the
// cursor, and which is recorded before the cursor wakes the loop.
func (p *pushState) took(raw bson.Raw, counted bool) {
	id := "?"
	if v, err := raw.LookupErr("_id"); err == nil {
		if oid, ok := v.ObjectIDOK(); ok {
			id = oid.Hex()
		} else {
			id = v.String()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = id
	if counted {
		p.notices++
	}
}

// nextNotice waits one getMore for the next notice, and returns it, or
// nil if none came; an error when the cursor broke.
func (r *Reader) nextNotice(ctx context.Context, cur *mongo.Cursor) (*schema.NoticeDoc, error) {
	callCtx, cancel := context.WithTimeout(ctx, noticeAwait+minReadTimeout)
	defer cancel()
	if !cur.TryNext(callCtx) {
		if err := cur.Err(); err != nil {
			return nil, errors.Annotate(err, "notices cursor failed")
		}
		if cur.ID() == 0 {
			return nil, errors.New("notices cursor closed by the server")
		}
		return nil, nil
	}
	// One that is not a writer's still says that something was written.
	if len(cur.Current) > maxNoticeBytes {
		r.push.refuse(fmt.Sprintf("notice %v: %d bytes (at most %d)", cur.Current.Lookup(schema.FieldID), len(cur.Current), maxNoticeBytes))
		return &schema.NoticeDoc{Writer: "?"}, nil
	}
	var doc schema.NoticeDoc
	if err := cur.Decode(&doc); err != nil {
		r.push.refuse(fmt.Sprintf("notice %v: %v", cur.Current.Lookup(schema.FieldID), err))
		return &schema.NoticeDoc{Writer: "?"}, nil
	}
	return &doc, nil
}

// maxNoticeBytes is the longest notice the reader decodes: room for the
// most changes a writer puts in one (see schema.NoticeMaxChanges and
// NoticeMaxChangeBytes), twice over. A longer one is not a writer's,
// and its changes are not worth the memory they would take; it still
// says that something was written.
const maxNoticeBytes = 2 * (schema.NoticeMaxChangeBytes + schema.NoticeMaxChanges*64)

// ownNotice reports whether doc needs no load: a notice of this
// process's own batcher, whose flush Config.Wake brought at once (a
// prompt one, or its writer's move to a new slot). The cursor may bring
// it late, behind a backlog, which is why the reader does not wait for
// it.
func (r *Reader) ownNotice(doc schema.NoticeDoc) bool {
	return r.config.Self != nil && doc.Writer == r.config.Self()
}

// openNotices opens a tailable, awaitData cursor on the notices and
// brings it to the newest, which it takes: the load that follows brings
// what that and every older notice announced. The cursor's batches are
// of one notice: the embedded server closes a tailable cursor whose first
// batch is shorter than its batch size, which is also why it fails with
// errNoNotices while there is none (the batchers create the collection;
// the reader writes nothing). It starts at the oldest notice and steps
// over those before the newest it read first, rather than skipping them
// in the query: the embedded server runs a tailable cursor's query again,
// skip and all, for every getMore, so a cursor opened with a skip loses
// its place once older notices are trimmed (schema.TrimNotices). The
// notices are few, so the steps are too.
func (r *Reader) openNotices(ctx context.Context) (*mongo.Cursor, error) {
	callCtx, cancel := context.WithTimeout(ctx, max(r.config.SyncInterval, minReadTimeout))
	defer cancel()
	ids, err := schema.NoticeIDs(callCtx, r.config.Base)
	if err != nil {
		return nil, errors.Trace(err)
	}
	if len(ids) == 0 {
		return nil, errNoNotices
	}
	newest := ids[len(ids)-1]
	notices := schema.Notices(r.config.Base)
	cur, err := notices.Find(ctx, bson.D{}, options.Find().
		SetCursorType(options.TailableAwait).SetBatchSize(1).SetMaxAwaitTime(noticeAwait))
	if err != nil {
		return nil, errors.Annotate(err, "cannot tail notices")
	}
	for {
		if !cur.TryNext(callCtx) {
			err := errors.New("the cursor ended before the newest notice")
			if cur.Err() != nil {
				err = cur.Err()
			}
			_ = cur.Close(context.WithoutCancel(callCtx))
			return nil, errors.Annotate(err, "cannot tail notices")
		}
		if cur.Current.Lookup(schema.FieldID).Equal(newest) {
			return cur, nil
		}
	}
}

// pushWorks records that a cursor is open, and wakes the loop, which
// loads at once (a notice may have been lost while it was broken) and
// reads only when it must from then on.
func (r *Reader) pushWorks() {
	r.push.mu.Lock()
	broken := r.push.broken
	r.push.working, r.push.broken = true, false
	r.push.mu.Unlock()
	if broken && r.config.Logger != nil {
		r.config.Logger.Debugf("%s: tailing notices again; reading when a writer says so", r)
	}
	r.wakeLoop()
}

// pushBroke records that the cursor broke, or could not open, with err:
// the first failure since a cursor worked (or since the reader started)
// is counted and logged once; failed reopenings are not. The loop is
// woken so that it polls from now on.
func (r *Reader) pushBroke(err error) {
	r.push.mu.Lock()
	counted := !r.push.broken
	r.push.working, r.push.broken = false, true
	if counted {
		r.push.breaks++
		r.push.lastErr = err.Error()
	}
	r.push.mu.Unlock()
	if counted {
		r.logf("%s: no push: %v; polling every %v until the notices can be tailed again", r, err, r.config.SyncInterval)
	}
	r.wakeLoop()
}

// pushWaits records that no cursor is open, for no fault of the push
// path (no notice yet, or the client gone): it is neither counted nor
// logged, and the reader polls from its next read on. It does not wake
// the loop: a load on a client that is gone would only fail.
func (r *Reader) pushWaits() {
	r.push.mu.Lock()
	defer r.push.mu.Unlock()
	r.push.working = false
}

// wakeLoop makes the loop load now, without blocking.
func (r *Reader) wakeLoop() {
	select {
	case r.wakes <- struct{}{}:
	default:
	}
}

// retryPush asks the goroutine that tails the notices to try again once
// no cursor has been open for pushRetry of the observed time now.
// It must only be called from the loop goroutine.
func (r *Reader) retryPush(now time.Time) {
	if r.config.NoPush {
		return
	}
	r.push.mu.Lock()
	defer r.push.mu.Unlock()
	if r.push.working {
		r.push.brokenAt = time.Time{}
		return
	}
	if r.push.brokenAt.IsZero() {
		r.push.brokenAt = now
	}
	if now.Sub(r.push.brokenAt) < pushRetry {
		return
	}
	select {
	case r.push.retry <- struct{}{}:
		r.push.brokenAt = time.Time{}
	default:
	}
}

// pushing reports whether the push path works, so that the reader may
// read only when it must. It is safe for concurrent use.
func (r *Reader) pushing() bool {
	if r.config.NoPush {
		return false
	}
	working, _, _, _ := r.push.status()
	return working
}

// pushBreaks returns how many times the push path broke.
func (r *Reader) pushBreaks() int {
	_, breaks, _, _ := r.push.status()
	return breaks
}

// recordPush puts the push path's state in what Report shows. r.statsMu
// must be held.
func (r *Reader) recordPush() {
	working, breaks, notices, lastErr := r.push.status()
	path := "polling"
	switch {
	case r.config.NoPush:
		path = "off"
	case working:
		path = "notices"
	}
	r.stats["push"] = path
	r.stats["push-breaks"] = breaks
	r.stats["notices"] = notices
	if lastErr != "" {
		r.stats["push-last-break"] = lastErr
	}
	if last := r.push.newest(); last != "" {
		r.stats["last-notice"] = last
	}
}

// clientGone reports whether err says that the reader's client was
// disconnected, for good.
func clientGone(err error) bool {
	return errors.Is(err, mongo.ErrClientDisconnected) || errors.Is(err, topology.ErrServerClosed) || errors.Is(err, topology.ErrTopologyClosed)
}
