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
package pingbatcher

import (
	"context"
	crand "crypto/rand"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// ErrStopped is returned by the methods of a PingBatcher that is stopping
// or stopped, unless it died with an error of its own.
const ErrStopped = errors.ConstError("ping batcher stopped")

// gapSlots is how many whole slots the batcher may go without a ping or a
// flush (a process paused, say) before its writer is retired: past that
// the pruner may soon remove the writer's documents (it keeps
// schema.KeepSlots), so a new writer id is safer than reusing the old one.
const gapSlots = 4

// idleSlots is how many slots a writer with no live pinger goes on
// writing: its released keys' last pings count for two slots, and a
// reader needs one more to see them expire.
const idleSlots = 3

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
// or a key coming up asks for: a burst of them shares one flush.
const minKickGap = 50 * time.Millisecond

// compactAt is the fewest indexes a writer must have handed out before it
// is retired for having released most of them: its pingers register again
// with a fresh writer, whose documents hold only the live keys.
const compactAt = 4 * schema.ChunkSize

// Logger is the logging a PingBatcher needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Infof(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a PingBatcher needs.
type Config struct {
	// Base is the base presence collection; the batcher writes to the
	// collections derived from it. It must not be nil.
	Base *mongo.Collection

	// FlushInterval is the mean time between writes; each interval is
	// jittered by ±20% so that controllers do not write in step. Zero
	// means schema.DefaultFlushInterval; it must not be negative.
	FlushInterval time.Duration

	// Period is the slot length, the same as the pingers' and the
	// readers'. It is stamped in every ping document so that readers can
	// check it, and half of it bounds every flush. Zero means
	// schema.DefaultPeriod; it must not be negative.
	Period time.Duration

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// OnFlush, if not nil, is called after every flush, from the
	// batcher's goroutine, e.g. to feed metrics. It must return quickly.
	OnFlush func(FlushStats)
}

// FlushStats describes one flush.
type FlushStats struct {
	// Took is how long the flush took, by the batcher's clock.
	Took time.Duration
	// Documents is how many documents it wrote; zero when it failed.
	Documents int
	// Err is why it failed, or nil.
	Err error
	// Prompt is set when the flush was asked for at once: it carries a
	// Disconnect or a key coming up, which a reader in the same process
	// may want to load at once (see presencereader.Config.Wake).
	Prompt bool
}

// WakeOnPrompt returns an OnFlush that sends on wake, without blocking,
// after every prompt flush that succeeded, and then calls next if it is
// not nil: with wake as a reader's Config.Wake, that reader loads what a
// Disconnect or a key coming up wrote at once.
func WakeOnPrompt(wake chan<- struct{}, next func(FlushStats)) func(FlushStats) {
	return func(stats FlushStats) {
		if stats.Prompt && stats.Err == nil {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		if next != nil {
			next(stats)
		}
	}
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if config.FlushInterval < 0 {
		return errors.NotValidf("negative FlushInterval")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	return nil
}

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

	// A flush whose pings carry its new keys leaves its beings write
	// running (see flush), one at a time: beingsBusy is set while one
	// runs, beingsDone receives its result, and beingsWaiters are the
	// Syncs that wait for it. Only the loop goroutine uses them;
	// beingsRunning lets the loop's end wait for the write.
	beingsBusy    bool
	beingsDone    chan error
	beingsWaiters []chan error
	beingsRunning sync.WaitGroup

	// mu guards the fields below. It is never held across a database
	// call.
	mu    sync.Mutex
	w     *writerState
	stats stats
}

type stats struct {
	flushes, failures int64
	retired           int64
	slowFlushes       int64
	behind            bool
	docsWritten       int64
	reassert          bool
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
	prompted       bool
	lastError      string
	indexesEnsured bool
}

// New starts a PingBatcher. It does not touch the database until its first
// flush.
func New(config Config) (*PingBatcher, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if config.FlushInterval == 0 {
		config.FlushInterval = schema.DefaultFlushInterval
	}
	if config.Period == 0 {
		config.Period = schema.DefaultPeriod
	}
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
	if b.config.Period == 0 {
		return schema.DefaultPeriod
	}
	return b.config.Period
}

// Register is part of the pinger.PingRecorder interface.
func (b *PingBatcher) Register(base *mongo.Collection, model names.ModelTag, key string) (pinger.Identity, error) {
	if base == nil {
		return pinger.Identity{}, errors.NotValidf("nil base collection")
	}
	if err := schema.ValidateModel(model); err != nil {
		return pinger.Identity{}, errors.Trace(err)
	}
	if err := schema.ValidateKey(key); err != nil {
		return pinger.Identity{}, errors.Trace(err)
	}
	if ns := schema.Namespace(base); ns != b.namespace {
		return pinger.Identity{}, errors.NotValidf("base collection %q (this batcher writes %q)", ns, b.namespace)
	}
	if err := b.alive(); err != nil {
		return pinger.Identity{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.w.entries) >= schema.MaxIndex && len(b.w.free[entry{model: model.Id(), key: key}]) == 0 {
		return pinger.Identity{}, errors.Errorf("cannot register %q: this batcher holds %d keys, the most one writer may", key, schema.MaxIndex)
	}
	index := b.w.allocate(entry{model: model.Id(), key: key})
	return pinger.Identity{Model: model.Id(), Writer: b.w.writer, Index: index}, nil
}

// Ping is part of the pinger.PingRecorder interface. It takes a lock and
// sets a bit; it allocates nothing once the slot's bitmap exists.
func (b *PingBatcher) Ping(id pinger.Identity, slot int64) error {
	if err := b.alive(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.w
	if w.writer != id.Writer || !w.valid(id.Model, id.Index) {
		return pinger.ErrUnknownIdentity
	}
	if w.lastSlot != 0 && slot > w.lastSlot+gapSlots {
		b.retire("no ping for %d slots", slot-w.lastSlot)
		return pinger.ErrUnknownIdentity
	}
	if changed, revived := w.advance(slot).ping(id.Index); revived || (changed && !w.pingedIn(slot-1, id.Index)) {
		// The key is coming up, not just pinging a new slot: write
		// it soon rather than at the next flush.
		b.soon()
	}
	return nil
}

// Disconnect is part of the pinger.PingRecorder interface.
func (b *PingBatcher) Disconnect(id pinger.Identity, slot int64) error {
	if err := b.alive(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.w
	if w.writer != id.Writer || !w.valid(id.Model, id.Index) || slot > w.lastSlot+gapSlots {
		return pinger.ErrUnknownIdentity
	}
	w.advance(slot)
	w.killFrom(slot, id.Index)
	b.soon()
	return nil
}

// soon asks the loop for a flush now, at most one per minKickGap. It
// never blocks. b.mu must be held.
func (b *PingBatcher) soon() {
	b.stats.prompted = true
	select {
	case b.kick <- struct{}{}:
	default:
	}
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
// that every pinger registers again. b.mu must be held.
func (b *PingBatcher) retire(format string, args ...any) {
	if b.config.Logger != nil {
		b.config.Logger.Debugf("ping batcher: retiring writer %s: "+format, append([]any{b.w.writer}, args...)...)
	}
	b.w = newWriterState()
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
		"writer":          b.w.writer,
		"indexes":         len(b.w.entries),
		"released":        b.w.released,
		"pending-slots":   pending,
		"flushes":         b.stats.flushes,
		"failures":        b.stats.failures,
		"docs-written":    b.stats.docsWritten,
		"writers-retired": b.stats.retired,
		"slow-flushes":    b.stats.slowFlushes,
	}
	if b.stats.lastError != "" {
		report["last-error"] = b.stats.lastError
	}
	return report
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
	var lastStart time.Time
	nextAt := b.config.Clock.Now().Add(first)
	kickGap := min(minKickGap, b.config.FlushInterval)
	for {
		var waiters []chan error
		fired := false
		select {
		case <-b.catacomb.Dying():
			return b.catacomb.ErrDying()
		case err := <-b.beingsDone:
			b.beingsWritten(err)
			continue
		case reply := <-b.syncs:
			waiters = append(waiters, reply)
		case <-b.kick:
			now := b.config.Clock.Now()
			if wait := kickGap - now.Sub(lastStart); wait > 0 {
				// Too soon after the last flush: bring the next one
				// forward instead.
				if due := now.Add(wait); due.Before(nextAt) {
					catacomb.Rearm(timer, wait)
					nextAt = due
				}
				continue
			}
		case <-timer.Chan():
			fired = true
		}
		// Coalesce the Sync calls that are already waiting.
	drain:
		for {
			select {
			case reply := <-b.syncs:
				waiters = append(waiters, reply)
			default:
				break drain
			}
		}
		started := b.config.Clock.Now()
		lastStart = started
		b.prompt = false
		docs, err := b.flushWithin(b.flushTimeout())
		took := b.config.Clock.Now().Sub(started)
		if err != nil && b.prompt {
			// What asked for it is written by a later flush, which
			// must wake the reader in its turn.
			b.mu.Lock()
			b.stats.prompted = true
			b.mu.Unlock()
		}
		if b.config.OnFlush != nil {
			b.config.OnFlush(FlushStats{Took: took, Documents: docs, Err: err, Prompt: b.prompt})
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
		// Flushes start every (jittered) FlushInterval: the write's
		// own time does not stretch the interval.
		next := max(b.jittered()-b.config.Clock.Now().Sub(started), 0)
		nextAt = b.config.Clock.Now().Add(next)
		if fired {
			timer.Reset(next)
		} else {
			catacomb.Rearm(timer, next)
		}
	}
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

// maxFresh is the most new keys a flush's ping documents carry when they
// go before the beings that hold them: twice the number that makes a
// writer persist its beings at once, well within what readers accept.
const maxFresh = 2 * schema.FreshLimit

// batch is what one flush writes, snapshotted under the lock.
type batch struct {
	arbiter mongo.WriteModel // first beings document of a new writer
	writer  string
	beings  []mongo.WriteModel
	pings   []mongo.WriteModel
	// oldPings are the documents of slots a long failure left
	// unwritten that no reader judges the writer by any more (see
	// writerState.current): they go after pings, in calls of their own,
	// so that the flush after a stall puts the writer on time with its
	// first call.
	oldPings []mongo.WriteModel
	marks    []func() // mark the ping documents written
	persist  func()   // marks the beings documents written, if any

	// pingsFirst is set when the pings carry every key the beings add:
	// the pings then go first, and the beings write runs on beside the
	// flushes that follow (see startBeings), so that a slow beings write
	// (or a database that fails big writes) does not keep a live writer
	// from progressing.
	pingsFirst bool

	// rewrite is set when the beings are every beings document, written
	// again after a failure; failures is the failure count when they
	// were snapshotted. Their write ends the rewriting only if no
	// failure came meanwhile (see rewritten).
	rewrite  bool
	failures int64

	// waitBeings is set when this flush must write beings while a
	// write of them runs; nothing else in the batch is set.
	waitBeings bool
}

// snapshot collects every pending write. Beings and pings come from one
// lock acquisition. While a beings write runs (busy) it writes no beings,
// and its pings carry every key not yet persisted; one that must write
// beings (a new writer's, or more new keys than the pings may carry) says
// so with waitBeings instead. A rewrite after a failure waits until the
// running write ends.
func (b *PingBatcher) snapshot(busy bool) *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prompt = b.prompt || b.stats.prompted
	b.stats.prompted = false
	b.tick()
	w := b.w
	out := &batch{writer: w.writer}
	if w.lastSlot == 0 {
		return out // registered, never pinged: nothing to say yet
	}
	// After a failure every beings document is written again only if
	// the pruner may have removed them: it removes a writer's beings
	// only once none of its ping documents is left in its window, so a
	// writer whose pings were written within the window (less two slots
	// for clock skew) still has them. A rewrite after every failed
	// flush would make a slow database slower still.
	if b.stats.reassert && !b.stats.beingsLost && w.writtenSlot >= w.lastSlot-(schema.KeepSlots-2) {
		b.stats.reassert = false
	}
	reassert := b.stats.reassert
	now := b.config.Clock.Now()
	n := len(w.entries)
	persist := !w.registered || reassert || n-w.persisted >= schema.FreshLimit
	from := w.persisted
	// The pings go first, carrying the new keys, when they can carry
	// them all: a beings write (a whole chunk, slow on a big one; every
	// chunk after a failure) then never delays a Disconnect, a new key's
	// first ping or the writer's progress. After a long failure the
	// pruner may have removed the beings, and a reader that does not
	// know this writer's keys yet meets live bits it cannot name: it
	// holds every death until the rewrite lands, rather than report one
	// it cannot judge.
	if busy && persist {
		if !w.registered || n-w.persisted > maxFresh {
			return &batch{writer: w.writer, waitBeings: true}
		}
		persist = false
	}
	out.pingsFirst = persist && w.registered && n-w.persisted <= maxFresh
	if persist {
		b.snapshotBeings(out, reassert)
		out.rewrite, out.failures = reassert, b.stats.failures
		if !out.pingsFirst {
			from = n
		}
	}
	fresh := entriesOf(w.entries[from:n])
	for _, s := range w.slots {
		if !s.dirty() {
			continue
		}
		fields := bson.D{
			{Key: schema.FieldSlot, Value: s.slot},
			{Key: schema.FieldWriter, Value: w.writer},
			{Key: schema.FieldPeriod, Value: int64(b.config.Period)},
			{Key: schema.FieldAt, Value: now.UnixNano()},
			{Key: schema.FieldAlive, Value: bson.Binary{Data: schema.EncodeBits(nil, s.alive)}},
			{Key: schema.FieldDead, Value: bson.Binary{Data: schema.EncodeBits(nil, s.dead)}},
			{Key: schema.FieldFrom, Value: from},
			{Key: schema.FieldFresh, Value: fresh},
		}
		s, version := s, s.version
		out.marks = append(out.marks, func() {
			s.written = version
			w.writtenSlot = max(w.writtenSlot, s.slot)
		})
		doc := upsert(schema.PingID(s.slot, w.writer), fields)
		if w.current(s) {
			out.pings = append(out.pings, doc)
		} else {
			out.oldPings = append(out.oldPings, doc)
		}
	}
	return out
}

// tick starts the current slot's document, empty if no pinger pinged in
// it yet, as soon as the slot begins: readers judge a writer's keys by its
// own latest two slots, so the writer moves on every slot while it has
// live pingers, and a key that stopped pinging is seen dead one slot
// later whether or not others ping. Once every pinger has gone it moves
// on for idleSlots more, so that readers see their last pings expire
// from a writer that is on time (a late writer's keys are held). After
// more than gapSlots slots without a ping or a flush (a paused process)
// it does nothing: the next ping retires the writer. b.mu must be held.
func (b *PingBatcher) tick() {
	w := b.w
	if w.lastSlot == 0 {
		return
	}
	slot := schema.Slot(b.config.Clock.Now(), b.config.Period)
	if slot <= w.lastSlot || slot > w.lastSlot+gapSlots {
		return
	}
	if w.released == len(w.entries) && slot > w.idleFrom+idleSlots {
		return
	}
	w.advance(slot).version++
}

// entriesOf returns the schema form of a run of entries.
func entriesOf(run []entry) schema.Entries {
	models := make([]string, len(run))
	keys := make([]string, len(run))
	for i, e := range run {
		models[i], keys[i] = e.model, e.key
	}
	return schema.NewEntries(models, keys)
}

// snapshotBeings adds the writer's beings documents to out: those from the
// first index not yet written, or all of them when the writer is new (its
// first document is the insert that proves its id unique) or after a
// failed flush (the pruner may have removed them meanwhile). b.mu must be
// held.
func (b *PingBatcher) snapshotBeings(out *batch, all bool) {
	w := b.w
	n := len(w.entries)
	first := w.persisted / schema.ChunkSize
	if all || !w.registered {
		first = 0
	}
	for chunk := first; chunk*schema.ChunkSize < n; chunk++ {
		lo := chunk * schema.ChunkSize
		hi := min(lo+schema.ChunkSize, n)
		id := schema.BeingsID(w.writer, chunk)
		fields := bson.D{
			{Key: schema.FieldWriter, Value: w.writer},
			{Key: schema.FieldChunk, Value: chunk},
			{Key: schema.FieldSlot, Value: w.lastSlot},
			{Key: schema.FieldEntries, Value: entriesOf(w.entries[lo:hi])},
		}
		if chunk == 0 && !w.registered {
			out.arbiter = mongo.NewInsertOneModel().SetDocument(append(bson.D{{Key: schema.FieldID, Value: id}}, fields...))
			continue
		}
		out.beings = append(out.beings, upsert(id, fields))
	}
	out.persist = func() {
		w.persisted = max(w.persisted, n)
	}
}

func upsert(id string, fields bson.D) mongo.WriteModel {
	return mongo.NewUpdateOneModel().
		SetFilter(bson.D{{Key: schema.FieldID, Value: id}}).
		SetUpdate(bson.D{{Key: "$set", Value: fields}}).
		SetUpsert(true)
}

// flushWithin flushes with a deadline of timeout for each database call
// (a flush of many new keys makes several), and gives up at once when the
// batcher starts dying.
func (b *PingBatcher) flushWithin(timeout time.Duration) (int, error) {
	return b.flush(func() (context.Context, context.CancelFunc) {
		return catacomb.Call(&b.catacomb, timeout)
	})
}

// caller returns the context of one database call, and its cancel.
type caller func() (context.Context, context.CancelFunc)

// do runs f with a context of its own from call.
func (call caller) do(f func(context.Context) error) error {
	ctx, cancel := call()
	defer cancel()
	return f(ctx)
}

// flush writes every pending change: a new writer's arbiter insert first,
// then beings, then pings, so that a reader never sees a bit whose key it
// cannot find; or the pings first when they carry the keys the beings
// add (see maxFresh), and then the beings on beside the flushes that
// follow (see startBeings), so that a slow beings write does not delay
// the pings. On failure nothing is marked written, and after failures
// as long as the pruner's window every beings document is written
// again, in case the pruner removed them while this batcher could not
// write. A writer that has released
// most of its indexes is retired after a successful flush.
func (b *PingBatcher) flush(call caller) (int, error) {
	if !b.stats.indexesEnsured {
		if err := call.do(func(ctx context.Context) error { return schema.EnsureIndexes(ctx, b.config.Base) }); err != nil {
			return 0, b.failed(errors.Trace(err))
		}
		b.stats.indexesEnsured = true
	}
	b.checkBeings(call)
	out := b.snapshot(b.beingsBusy)
	if out.waitBeings {
		// This flush must write beings while another write of them
		// runs: it waits for that one, so that two never race. Its
		// calls end when the catacomb dies.
		b.beingsWritten(<-b.beingsDone)
		out = b.snapshot(false)
	}
	docs := len(out.beings) + len(out.pings) + len(out.oldPings)
	if out.arbiter != nil {
		docs++
		if err := call.do(func(ctx context.Context) error { return b.insertArbiter(ctx, out) }); err != nil {
			return 0, b.failed(err)
		}
	}
	writeBeings := func() error {
		err := bulk(call, b.beings, out.beings, beingsBatch, false)
		return errors.Annotatef(err, "cannot write %d beings documents", len(out.beings))
	}
	// In slot order, so that a reader that sees a writer's new slot also
	// sees the last version of the one before.
	writePings := func() error {
		err := bulk(call, b.pings, out.pings, schema.MaxBatch, true)
		if err == nil {
			err = bulk(call, b.pings, out.oldPings, schema.MaxBatch, true)
		}
		return errors.Annotatef(err, "cannot write %d ping documents", len(out.pings)+len(out.oldPings))
	}
	if out.pingsFirst {
		if err := writePings(); err != nil {
			return 0, b.failed(err)
		}
		b.startBeings(writeBeings, out)
	} else {
		if err := writeBeings(); err != nil {
			return 0, b.failed(err)
		}
		if err := writePings(); err != nil {
			return 0, b.failed(err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.markWritten(out, !out.pingsFirst) {
		// Retired while the flush ran: what it wrote is the old
		// writer's, and the new one starts from scratch.
		return docs, nil
	}
	if !out.pingsFirst {
		b.rewritten(out)
	}
	b.w.prune()
	b.stats.flushes++
	b.stats.docsWritten += int64(docs)
	if b.w.wasteful() {
		b.retire("%d of %d indexes released", b.w.released, len(b.w.entries))
	}
	return docs, nil
}

// startBeings runs write, out's beings write, on a goroutine of its own:
// out's pings, written, carry its keys meanwhile, and the flushes that
// follow carry them until it ends (see snapshot), so that a slow beings
// write (a whole chunk) delays no Disconnect or first ping. Its result
// comes to the loop on beingsDone. It must only be called from the loop
// goroutine.
func (b *PingBatcher) startBeings(write func() error, out *batch) {
	b.beingsBusy = true
	b.beingsRunning.Add(1)
	go func() {
		defer b.beingsRunning.Done()
		err := write()
		b.mu.Lock()
		if b.w.writer == out.writer {
			switch {
			case err == nil:
				out.persist()
				b.rewritten(out)
			case out.rewrite:
				// The pings that went first put the writer on time,
				// which would end the rewriting: it must go on.
				b.stats.beingsLost = true
			}
		}
		b.mu.Unlock()
		b.beingsDone <- err
	}()
}

// rewritten ends the rewriting of every beings document after a failure
// once out, which rewrote them all, is written, unless a failure came
// after its snapshot: the pruner may have removed them since. Either way
// it has the rewrite read back (see checkBeings). b.mu must be held.
func (b *PingBatcher) rewritten(out *batch) {
	if !out.rewrite {
		return
	}
	if b.stats.failures == out.failures {
		b.stats.reassert, b.stats.beingsLost = false, false
	}
	b.stats.checkAt = b.config.Clock.Now().Add(schema.PruneTimeout(b.config.Period))
	b.stats.checkWriter = out.writer
}

// checkBeings reads back, once its time has come, the first beings
// document of a rewrite after a long failure. A prune that read the
// writer as gone before its pings came back may have deleted what the
// rewrite wrote; it deletes from the last chunk down while the rewrite
// writes from the first up, so it deletes the first chunk if it deletes
// any. A missing one makes the next flush rewrite them all. A failed
// read is tried again at the next flush: it never fails the flush.
func (b *PingBatcher) checkBeings(call caller) {
	b.mu.Lock()
	at, writer := b.stats.checkAt, b.stats.checkWriter
	b.mu.Unlock()
	if at.IsZero() || b.config.Clock.Now().Before(at) {
		return
	}
	err := call.do(func(ctx context.Context) error {
		return b.beings.FindOne(ctx, bson.D{{Key: schema.FieldID, Value: schema.BeingsID(writer, 0)}}).Err()
	})
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		if b.config.Logger != nil {
			b.config.Logger.Debugf("ping batcher: cannot read back the beings of writer %s: %v", writer, err)
		}
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stats.checkWriter != writer || !b.stats.checkAt.Equal(at) {
		return // a newer rewrite or a new writer meanwhile
	}
	b.stats.checkAt, b.stats.checkWriter = time.Time{}, ""
	if err != nil && b.w.writer == writer {
		b.stats.reassert, b.stats.beingsLost = true, true
		if b.config.Logger != nil {
			b.config.Logger.Infof("ping batcher: the beings of writer %s were removed while they were written again; writing them again", writer)
		}
	}
}

// beingsWritten takes the result of the beings write that startBeings
// ran, and answers the Syncs that waited for it. It must only be called
// from the loop goroutine.
func (b *PingBatcher) beingsWritten(err error) {
	b.beingsBusy = false
	// The flush that started the write succeeded, and brought the
	// deadline back; a write that timed out raises it again for the
	// rewrite that follows.
	b.adaptTimeout(err)
	if err != nil {
		err = b.failed(err)
		if b.config.Logger != nil {
			b.config.Logger.Errorf("ping batcher: %v (written again at the next flush)", err)
		}
	}
	for _, reply := range b.beingsWaiters {
		reply <- err
	}
	b.beingsWaiters = nil
}

// markWritten marks out's ping documents written, and its beings too if
// persisted is set, unless the writer was retired while the flush ran,
// and reports whether it was not. b.mu must be held.
func (b *PingBatcher) markWritten(out *batch, persisted bool) bool {
	if b.w.writer != out.writer {
		return false
	}
	for _, mark := range out.marks {
		mark()
	}
	if persisted && out.persist != nil {
		out.persist()
	}
	return true
}

// insertArbiter inserts the first beings document of a new writer. A
// duplicate _id means another batcher has that writer id: the batcher
// starts again with a fresh writer, and its pingers register again.
func (b *PingBatcher) insertArbiter(ctx context.Context, out *batch) error {
	_, err := b.beings.BulkWrite(ctx, []mongo.WriteModel{out.arbiter})
	taken := false
	if err != nil {
		var bulkErr mongo.BulkWriteException
		if !errors.As(err, &bulkErr) || bulkErr.WriteConcernError != nil || !mongo.IsDuplicateKeyError(err) {
			return errors.Annotate(err, "cannot register writer")
		}
		taken = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.w.writer != out.writer {
		return nil // retired meanwhile
	}
	if taken {
		b.retire("its id is taken")
		return errors.Errorf("writer id %s taken; pingers will register again", out.writer)
	}
	b.w.registered = true
	return nil
}

func (b *PingBatcher) failed(err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.failures++
	b.stats.reassert = true
	b.stats.lastError = err.Error()
	return err
}

// beingsBatch is how many beings documents one call writes: a full one is
// 50-65 KB, so each goes on its own, with a deadline of its own, and a
// rewrite of many on a slow database is taken piece by piece rather than
// timing out whole, again and again.
const beingsBatch = 1

// bulk writes models in calls of at most size, each with a context of its
// own from call, in order if ordered is set.
func bulk(call caller, coll *mongo.Collection, models []mongo.WriteModel, size int, ordered bool) error {
	for len(models) > 0 {
		n := min(len(models), size)
		err := call.do(func(ctx context.Context) error {
			_, err := coll.BulkWrite(ctx, models[:n], options.BulkWrite().SetOrdered(ordered))
			return err
		})
		if err != nil {
			return errors.Trace(err)
		}
		models = models[n:]
	}
	return nil
}
