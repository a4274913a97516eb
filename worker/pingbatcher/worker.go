// Package pingbatcher coalesces the pings of many pingers in memory and
// writes them to MongoDB on a jittered schedule.
//
// A PingBatcher serves every model of its controller as one writer (see
// internal/schema): it writes one ping document per slot, so a flush costs
// one write command (two when new keys are written) whatever the number of
// models and pingers. Every write is a whole-field upsert of a document only this
// batcher writes, so a retried or duplicated write does no harm, and several
// batchers (controllers) can share a database without losing pings or ever
// sharing an identity. A failed flush loses nothing: the pings stay pending
// and the next flush writes them (those of the slots readers still read).
// Every flush has a deadline of half a Period (at least a second), so a
// stalled write is a failed one: it is written again, and with every
// beings document if it failed for as long as the pruner's window, in
// case the pruner removed them meanwhile.
//
// A writer's slots form a sequence that never goes back (see
// internal/schema): the slots a batcher is given, by its clock and by its
// pingers (whose clock is the batcher's), are shifted on whenever the
// batcher sees its clock go back, and a ping computed in a slot older
// than the writer's latest two goes into its latest. So a writer moves on
// every slot length of its clock whether the clock is stepped, ahead or
// behind, and readers judge it by that progress on their own clocks. A
// clock stepped forward by more than schema.MaxJump slots looks like a
// paused process: the writer is retired and its pingers register again.
package pingbatcher

import (
	crand "crypto/rand"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// ErrStopped is returned by the methods of a PingBatcher that is stopping
// or stopped, unless it died with an error of its own.
const ErrStopped = errors.ConstError("ping batcher stopped")

// PingBatcher records pings for many pingers and writes them in batches.
// It implements pinger.PingRecorder. Its methods are safe for concurrent
// use.
type PingBatcher struct {
	config    Config
	catacomb  catacomb.Catacomb
	namespace string
	pings     *mongo.Collection
	beings    *mongo.Collection
	syncs     chan chan error
	kick      chan struct{}
	// prompt says whether the flush running took stats.prompted (see
	// snapshot). Only the loop goroutine uses it.
	prompt bool
	rand   *rand.Rand

	// timeout is the deadline of each call of the next flush; only the
	// loop goroutine uses it.
	timeout time.Duration

	// removedCheck is when the removal markers may be read again (see
	// checkRemoved); only the loop goroutine uses it.
	removedCheck time.Time

	// A flush whose pings carry its new keys leaves its beings write
	// running (see flush), one at a time: beingsBusy is set while one
	// runs, beingsDone receives its result, and beingsWaiters are the
	// Syncs that wait for it. Only the loop goroutine uses them;
	// beingsRunning lets the loop's end wait for the write.
	beingsBusy    bool
	beingsDone    chan error
	beingsWaiters []chan error
	beingsRunning sync.WaitGroup

	// notifier is what the notices appended so far announced; only the
	// loop goroutine uses it. A notice is appended on a goroutine of its
	// own (see notify), one at a time: noticeDone receives its result,
	// and noticeRunning lets the loop's end wait for it.
	notifier      notifier
	noticeDone    chan noticeResult
	noticeRunning sync.WaitGroup

	// mu guards the fields below. It is never held across a database
	// call.
	mu    sync.Mutex
	w     *writerState
	stats stats
	// afterlives are the retired writers whose keys readers may still
	// hold, oldest first (see afterlife.go).
	afterlives []*afterlife
}

// stats is what the batcher counts for its Report, and the state of the
// flush after a failure that the loop shares with the beings write. It is
// guarded by PingBatcher.mu.
type stats struct {
	flushes, failures int64
	retired           int64
	slowFlushes       int64
	behind            bool
	docsWritten       int64
	// reassert is set by a failure: the next flush writes every beings
	// document again if the pruner may have removed them (see snapshot).
	reassert bool
	// checkAt, when not zero, is when the first beings document of
	// writer checkWriter, written again after a long failure, is read
	// back (see checkBeings).
	checkAt     time.Time
	checkWriter string
	// beingsLost is set when that read found the document gone, or a
	// rewrite failed after the pings that went before it: the rewrite
	// then goes ahead however recent the writer's pings.
	beingsLost bool
	// prompted is set by soon, and taken by the snapshot that carries
	// what asked for it.
	prompted bool
	// changes are the prompt changes made since the last snapshot, for
	// the notice of the flush that writes them (see noteChange).
	changes        changeList
	lastError      string
	indexesEnsured bool
	// noticeFailures counts the notices that could not be appended.
	noticeFailures int64
	// noticesTrimmed counts the notices this batcher's trims deleted,
	// and noticeTrimFailures the trims that failed (see trimNotices).
	noticesTrimmed, noticeTrimFailures int64
	// retireRemoved, when not empty, is a writer that checkRemoved found
	// naming removedModel, a removed model it no longer serves: it is
	// retired after the flush (see retireRemoved).
	retireRemoved, removedModel string
}

// New starts a PingBatcher. It does not touch the database until its first
// flush.
func New(config Config) (*PingBatcher, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	config = config.withDefaults()
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, errors.Annotate(err, "cannot seed jitter")
	}
	b := &PingBatcher{
		config:     config,
		namespace:  schema.Namespace(config.Base),
		pings:      schema.Pings(config.Base),
		beings:     schema.Beings(config.Base),
		syncs:      make(chan chan error),
		kick:       make(chan struct{}, 1),
		rand:       rand.New(rand.NewChaCha8(seed)),
		w:          newWriterState(),
		beingsDone: make(chan error, 1),
		noticeDone: make(chan noticeResult, 1),
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "ping batcher",
		Site: &b.catacomb,
		Work: b.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return b, nil
}

// NewDeadPingBatcher returns a PingBatcher that is already dead with err:
// every method fails with it. It stands in for a batcher that could not be
// made.
func NewDeadPingBatcher(err error) *PingBatcher {
	b := &PingBatcher{w: newWriterState(), syncs: make(chan chan error), kick: make(chan struct{}, 1)}
	_ = catacomb.Invoke(catacomb.Plan{
		Name: "dead ping batcher",
		Site: &b.catacomb,
		Work: func() error { return err },
	})
	_ = b.catacomb.Wait()
	return b
}

// Kill is part of the worker.Worker interface.
func (b *PingBatcher) Kill() {
	b.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (b *PingBatcher) Wait() error {
	return b.catacomb.Wait()
}

// Dead returns a channel that is closed once the batcher has stopped.
func (b *PingBatcher) Dead() <-chan struct{} {
	return b.catacomb.Dead()
}

// Stop kills the batcher and waits for it to stop. Pings not yet written
// are not written.
func (b *PingBatcher) Stop() error {
	b.Kill()
	return b.Wait()
}

// Sync asks for a flush now and blocks until it is done, returning its
// error. Concurrent calls share one flush; everything recorded before the
// call is written when it returns nil.
func (b *PingBatcher) Sync() error {
	reply := make(chan error, 1)
	select {
	case b.syncs <- reply:
	case <-b.catacomb.Dying():
		return b.deadErr()
	}
	select {
	case err := <-reply:
		return errors.Trace(err)
	case <-b.catacomb.Dying():
		return b.deadErr()
	}
}

func (b *PingBatcher) deadErr() error {
	return catacomb.DeathError(&b.catacomb, ErrStopped)
}

// alive reports whether the batcher still accepts pings.
func (b *PingBatcher) alive() error {
	select {
	case <-b.catacomb.Dying():
		return b.deadErr()
	default:
		return nil
	}
}

// Period returns the slot length the batcher writes with. It is part of
// the pinger.PingRecorder interface.
func (b *PingBatcher) Period() time.Duration {
	// A dead batcher's config is zero.
	return b.config.withDefaults().Period
}

// Register is part of the pinger.PingRecorder interface; a nil base means
// the batcher's own.
func (b *PingBatcher) Register(base *mongo.Collection, model names.ModelTag, key string) (pinger.Identity, error) {
	if err := schema.ValidateModel(model); err != nil {
		return pinger.Identity{}, errors.Trace(err)
	}
	if err := schema.ValidateKey(key); err != nil {
		return pinger.Identity{}, errors.Trace(err)
	}
	if base != nil {
		if ns := schema.Namespace(base); ns != b.namespace {
			return pinger.Identity{}, errors.NotValidf("base collection %q (this batcher writes %q)", ns, b.namespace)
		}
	}
	if err := b.alive(); err != nil {
		return pinger.Identity{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.w.entries) >= schema.MaxIndex && len(b.w.free[entry{model: model.Id(), key: key}]) == 0 {
		return pinger.Identity{}, errors.Errorf("cannot register %q: this batcher holds %d keys, the most one writer may", key, schema.MaxIndex)
	}
	e := entry{model: model.Id(), key: key}
	index := b.w.allocate(e)
	b.claim(e, index)
	return pinger.Identity{Model: model.Id(), Writer: b.w.writer, Index: index}, nil
}

// Ping is part of the pinger.PingRecorder interface. It takes a lock and
// sets a bit; it allocates nothing once the slot's bitmap exists.
func (b *PingBatcher) Ping(id pinger.Identity, slot int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	w, err := b.holder(id)
	if err != nil {
		if errors.Is(err, pinger.ErrUnknownIdentity) {
			b.moved(id)
		}
		return err
	}
	slot = w.place(slot, schema.Slot(b.config.Clock.Now(), b.config.Period))
	if w.lastSlot != 0 && slot > w.lastSlot+gapSlots {
		b.retire("no ping for %d slots", slot-w.lastSlot)
		b.moved(id)
		return pinger.ErrUnknownIdentity
	}
	if changed, revived := w.advance(slot).ping(id.Index); revived || (changed && !w.pingedIn(slot-1, id.Index)) {
		// The key is coming up, not just pinging a new slot: write
		// it soon rather than at the next flush.
		b.noteChange(w, id.Index, true)
		b.soon()
	}
	return nil
}

// Disconnect is part of the pinger.PingRecorder interface.
func (b *PingBatcher) Disconnect(id pinger.Identity, slot int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	w, err := b.holder(id)
	if errors.Is(err, pinger.ErrUnknownIdentity) && b.mourn(id) {
		// A retired writer's identity, whose key its documents
		// still show alive.
		b.soon()
		return nil
	}
	if err != nil {
		return err
	}
	slot = w.place(slot, schema.Slot(b.config.Clock.Now(), b.config.Period))
	if slot > w.lastSlot+gapSlots {
		if w.lastSlot == 0 {
			return pinger.ErrUnknownIdentity
		}
		// As a ping would, this retires the writer; its afterlife
		// records the death in the documents readers still read.
		b.retire("no ping for %d slots", slot-w.lastSlot)
		if !b.mourn(id) {
			return pinger.ErrUnknownIdentity
		}
		b.soon()
		return nil
	}
	w.advance(slot)
	w.killFrom(slot, id.Index)
	b.mourn(id)
	b.noteChange(w, id.Index, false)
	b.soon()
	return nil
}

// holder returns the writer state that holds id: it fails with the
// batcher's death error once it is dying, and with
// pinger.ErrUnknownIdentity if id is not held by the current writer.
// b.mu must be held.
func (b *PingBatcher) holder(id pinger.Identity) (*writerState, error) {
	if err := b.alive(); err != nil {
		return nil, err
	}
	if w := b.w; w.writer == id.Writer && w.valid(id.Model, id.Index) {
		return w, nil
	}
	return nil, pinger.ErrUnknownIdentity
}

// Release is part of the pinger.PingRecorder interface.
func (b *PingBatcher) Release(id pinger.Identity) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.w.writer == id.Writer {
		b.w.release(id.Index)
	}
}

// retire gives the batcher a new writer id and forgets every index, so
// that every pinger registers again; the old writer's afterlife records
// the Disconnects of the keys its documents still show alive (see bury).
// b.mu must be held.
func (b *PingBatcher) retire(format string, args ...any) {
	if b.config.Logger != nil {
		b.config.Logger.Debugf("ping batcher: retiring writer %s: "+format, append([]any{b.w.writer}, args...)...)
	}
	old := b.w
	b.w = newWriterState()
	b.bury(old)
	b.stats.retired++
}

// Report is part of the dependency.Reporter interface.
func (b *PingBatcher) Report() map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	pending := 0
	for _, s := range b.w.slots {
		if s.dirty() {
			pending++
		}
	}
	report := map[string]any{
		"writer":               b.w.writer,
		"indexes":              len(b.w.entries),
		"released":             b.w.released,
		"pending-slots":        pending,
		"flushes":              b.stats.flushes,
		"failures":             b.stats.failures,
		"docs-written":         b.stats.docsWritten,
		"writers-retired":      b.stats.retired,
		"slow-flushes":         b.stats.slowFlushes,
		"notice-failures":      b.stats.noticeFailures,
		"notices-trimmed":      b.stats.noticesTrimmed,
		"notice-trim-failures": b.stats.noticeTrimFailures,
	}
	if b.stats.lastError != "" {
		report["last-error"] = b.stats.lastError
	}
	return report
}
