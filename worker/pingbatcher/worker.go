// Package pingbatcher coalesces the pings of many pingers in memory and
// writes them to MongoDB on a jittered schedule.
//
// For each model it serves, a PingBatcher is one writer (see
// internal/schema): it writes one ping document per model and slot, so the
// writes per flush grow with the number of models, never with the number of
// pingers. Every write is a whole-field upsert of a document only this
// batcher writes, so a retried or duplicated write does no harm, and several
// batchers (controllers) can share a database without losing pings or ever
// sharing an identity. A failed flush loses nothing: the pings stay pending
// and the next flush writes them.
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
	"github.com/juju/worker/v4/catacomb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	pcatacomb "github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// ErrStopped is returned by the methods of a PingBatcher that is stopping
// or stopped, unless it died with an error of its own.
const ErrStopped = errors.ConstError("ping batcher stopped")

// gapSlots is how many whole slots a model may go without a ping before
// its writer is retired: past that, the pruner may remove the writer's
// documents, so a new writer id is safer than reusing the old one.
const gapSlots = 2

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
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if config.FlushInterval < 0 {
		return errors.NotValidf("negative FlushInterval")
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
	rand      *rand.Rand

	// mu guards the fields below. It is never held across a database
	// call.
	mu     sync.Mutex
	models map[string]*modelState
	stats  stats
}

type stats struct {
	flushes, failures int64
	docsWritten       int64
	reassert          bool
	lastError         string
	indexesEnsured    bool
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
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, errors.Annotate(err, "cannot seed jitter")
	}
	b := &PingBatcher{
		config:    config,
		namespace: schema.Namespace(config.Base),
		pings:     schema.Pings(config.Base),
		beings:    schema.Beings(config.Base),
		syncs:     make(chan chan error),
		rand:      rand.New(rand.NewChaCha8(seed)),
		models:    make(map[string]*modelState),
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
	b := &PingBatcher{models: make(map[string]*modelState), syncs: make(chan chan error)}
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
	return pcatacomb.DeathError(&b.catacomb, ErrStopped)
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
	uuid := model.Id()
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.models[uuid]
	if m == nil {
		m = newModelState(uuid)
		b.models[uuid] = m
	}
	index := m.allocate(key)
	return pinger.Identity{Model: uuid, Writer: m.writer, Index: index}, nil
}

// Ping is part of the pinger.PingRecorder interface. It takes a lock and
// sets a bit; it allocates nothing once the slot's bitmap exists.
func (b *PingBatcher) Ping(id pinger.Identity, slot int64) error {
	if err := b.alive(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.models[id.Model]
	if m == nil || m.writer != id.Writer || !m.valid(id.Index) {
		return pinger.ErrUnknownIdentity
	}
	if m.lastSlot != 0 && slot > m.lastSlot+gapSlots {
		m.reset()
		return pinger.ErrUnknownIdentity
	}
	m.slotFor(slot).ping(id.Index)
	if slot > m.lastSlot {
		m.lastSlot = slot
	}
	return nil
}

// Dead is part of the pinger.PingRecorder interface.
func (b *PingBatcher) Dead(id pinger.Identity, slot int64) error {
	if err := b.alive(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.models[id.Model]
	if m == nil || m.writer != id.Writer || !m.valid(id.Index) || slot > m.lastSlot+gapSlots {
		return pinger.ErrUnknownIdentity
	}
	m.slotFor(slot).kill(id.Index)
	if slot > m.lastSlot {
		m.lastSlot = slot
	}
	return nil
}

// Release is part of the pinger.PingRecorder interface.
func (b *PingBatcher) Release(id pinger.Identity) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m := b.models[id.Model]; m != nil && m.writer == id.Writer {
		m.release(id.Index)
	}
}

// Report is part of the dependency.Reporter interface.
func (b *PingBatcher) Report() map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	models := make(map[string]any, len(b.models))
	for uuid, m := range b.models {
		pending := 0
		for _, s := range m.slots {
			if s.dirty() {
				pending++
			}
		}
		models[uuid] = map[string]any{
			"writer":        m.writer,
			"indexes":       len(m.keys),
			"pending-slots": pending,
		}
	}
	report := map[string]any{
		"flushes":      b.stats.flushes,
		"failures":     b.stats.failures,
		"docs-written": b.stats.docsWritten,
		"models":       models,
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
	timer := b.config.Clock.NewTimer(b.jittered())
	defer timer.Stop()
	ctx := b.catacomb.Context(context.Background())
	for {
		var waiters []chan error
		fired := false
		select {
		case <-b.catacomb.Dying():
			return b.catacomb.ErrDying()
		case reply := <-b.syncs:
			waiters = append(waiters, reply)
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
		docs, err := b.flush(ctx)
		if b.config.OnFlush != nil {
			b.config.OnFlush(FlushStats{Took: b.config.Clock.Now().Sub(started), Documents: docs, Err: err})
		}
		if err != nil && b.config.Logger != nil {
			b.config.Logger.Errorf("ping batcher: %v (pings kept for the next flush)", err)
		}
		for _, reply := range waiters {
			reply <- err
		}
		// Flushes start every (jittered) FlushInterval: the write's
		// own time does not stretch the interval.
		next := max(b.jittered()-b.config.Clock.Now().Sub(started), 0)
		if fired {
			timer.Reset(next)
		} else {
			pcatacomb.Rearm(timer, next)
		}
	}
}

// batch is what one flush writes, snapshotted under the lock.
type batch struct {
	arbiters       []mongo.WriteModel // first beings document of a new writer
	arbiterOf      []*modelState
	arbiterWriters []string
	beings         []mongo.WriteModel
	pings          []mongo.WriteModel
	marks          []func()
}

// snapshot collects every pending write. Beings and pings come from one
// lock acquisition, so no ping bit is written before its key.
func (b *PingBatcher) snapshot() *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := &batch{}
	reassert := b.stats.reassert
	for _, m := range b.models {
		if m.lastSlot == 0 {
			continue // registered, never pinged: nothing to say yet
		}
		n := len(m.keys)
		persist := !m.registered || reassert ||
			(n > m.persisted && (m.lastSlot > m.persistedSlot || n-m.persisted >= schema.FreshLimit))
		from := m.persisted
		if persist {
			b.snapshotBeings(out, m, reassert)
			from = n
		}
		fresh := append([]string{}, m.keys[from:n]...)
		for _, s := range m.slots {
			if !s.dirty() {
				continue
			}
			fields := bson.D{
				{Key: schema.FieldModel, Value: m.uuid},
				{Key: schema.FieldSlot, Value: s.slot},
				{Key: schema.FieldWriter, Value: m.writer},
				{Key: schema.FieldAlive, Value: bson.Binary{Data: schema.EncodeBits(nil, s.alive)}},
				{Key: schema.FieldDead, Value: bson.Binary{Data: schema.EncodeBits(nil, s.dead)}},
				{Key: schema.FieldFrom, Value: from},
				{Key: schema.FieldFresh, Value: fresh},
			}
			s, version := s, s.version
			out.marks = append(out.marks, func() { s.written = version })
			out.pings = append(out.pings, upsert(schema.PingID(m.uuid, s.slot, m.writer), fields))
		}
	}
	return out
}

// snapshotBeings adds m's beings documents to out: those from the first
// index not yet written, or all of them when the writer is new (its first
// document is the insert that proves its id unique) or after a failed
// flush (the pruner may have removed them meanwhile). b.mu must be held.
func (b *PingBatcher) snapshotBeings(out *batch, m *modelState, all bool) {
	n := len(m.keys)
	first := m.persisted / schema.ChunkSize
	if all || !m.registered {
		first = 0
	}
	for chunk := first; chunk*schema.ChunkSize < n; chunk++ {
		lo := chunk * schema.ChunkSize
		hi := min(lo+schema.ChunkSize, n)
		id := schema.BeingsID(m.uuid, m.writer, chunk)
		fields := bson.D{
			{Key: schema.FieldModel, Value: m.uuid},
			{Key: schema.FieldWriter, Value: m.writer},
			{Key: schema.FieldChunk, Value: chunk},
			{Key: schema.FieldSlot, Value: m.lastSlot},
			{Key: schema.FieldKeys, Value: append([]string(nil), m.keys[lo:hi]...)},
		}
		if chunk == 0 && !m.registered {
			doc := append(bson.D{{Key: schema.FieldID, Value: id}}, fields...)
			out.arbiters = append(out.arbiters, mongo.NewInsertOneModel().SetDocument(doc))
			out.arbiterOf = append(out.arbiterOf, m)
			out.arbiterWriters = append(out.arbiterWriters, m.writer)
			continue
		}
		out.beings = append(out.beings, upsert(id, fields))
	}
	writer, slot := m.writer, m.lastSlot
	out.marks = append(out.marks, func() {
		if m.writer == writer {
			m.persisted, m.persistedSlot = max(m.persisted, n), max(m.persistedSlot, slot)
		}
	})
}

func upsert(id string, fields bson.D) mongo.WriteModel {
	return mongo.NewUpdateOneModel().
		SetFilter(bson.D{{Key: schema.FieldID, Value: id}}).
		SetUpdate(bson.D{{Key: "$set", Value: fields}}).
		SetUpsert(true)
}

// flush writes every pending change: new writers' arbiter inserts first,
// then beings, then pings, so that a watcher never sees a bit whose key it
// cannot find. On failure nothing is marked written, and after any failure
// every beings document is written again, in case the pruner removed them
// while this batcher could not write.
func (b *PingBatcher) flush(ctx context.Context) (int, error) {
	if !b.stats.indexesEnsured {
		if err := schema.EnsureIndexes(ctx, b.config.Base); err != nil {
			return 0, b.failed(errors.Trace(err))
		}
		b.stats.indexesEnsured = true
	}
	out := b.snapshot()
	if len(out.arbiters) > 0 {
		if err := b.insertArbiters(ctx, out); err != nil {
			return 0, b.failed(err)
		}
	}
	if err := bulk(ctx, b.beings, out.beings); err != nil {
		return 0, b.failed(errors.Annotatef(err, "cannot write %d beings documents", len(out.beings)))
	}
	if err := bulk(ctx, b.pings, out.pings); err != nil {
		return 0, b.failed(errors.Annotatef(err, "cannot write %d ping documents", len(out.pings)))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, mark := range out.marks {
		mark()
	}
	for _, m := range b.models {
		m.prune()
	}
	docs := len(out.arbiters) + len(out.beings) + len(out.pings)
	b.stats.flushes++
	b.stats.reassert = false
	b.stats.docsWritten += int64(docs)
	return docs, nil
}

// insertArbiters inserts the first beings document of each new writer.
// A duplicate _id means another batcher has that writer id: the model
// starts again with a fresh writer, and its pingers register again.
func (b *PingBatcher) insertArbiters(ctx context.Context, out *batch) error {
	_, err := b.beings.BulkWrite(ctx, out.arbiters, options.BulkWrite().SetOrdered(false))
	taken := make(map[int]bool)
	if err != nil {
		var bulkErr mongo.BulkWriteException
		if !errors.As(err, &bulkErr) || bulkErr.WriteConcernError != nil {
			return errors.Annotate(err, "cannot register writers")
		}
		for _, we := range bulkErr.WriteErrors {
			if !mongo.IsDuplicateKeyError(we) {
				return errors.Annotate(err, "cannot register writers")
			}
			taken[we.Index] = true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, m := range out.arbiterOf {
		if m.writer != out.arbiterWriters[i] {
			continue // retired meanwhile
		}
		if taken[i] {
			if b.config.Logger != nil {
				b.config.Logger.Infof("ping batcher: writer id %s taken in model %s; choosing another", m.writer, m.uuid)
			}
			m.reset()
			continue
		}
		m.registered = true
	}
	if len(taken) > 0 {
		return errors.Errorf("%d writer ids taken; pingers will register again", len(taken))
	}
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

// bulk writes models in calls of at most schema.MaxBatch.
func bulk(ctx context.Context, coll *mongo.Collection, models []mongo.WriteModel) error {
	for len(models) > 0 {
		n := min(len(models), schema.MaxBatch)
		if _, err := coll.BulkWrite(ctx, models[:n], options.BulkWrite().SetOrdered(false)); err != nil {
			return errors.Trace(err)
		}
		models = models[n:]
	}
	return nil
}
