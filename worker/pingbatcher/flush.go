package pingbatcher

import (
	"context"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

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
	b.notifier.changes.take(&b.stats.changes)
	now := b.config.Clock.Now()
	w := b.w
	w.tick(w.observe(schema.Slot(now, b.config.Period)))
	out := &batch{writer: w.writer}
	b.snapshotAfterlives(out, now)
	if w.lastSlot == 0 {
		return out // registered, never pinged: nothing to say yet
	}
	// After a failure every beings document is written again only if
	// the pruner may have removed them: it removes a writer's beings
	// only once the writer has not moved on for three Periods of the
	// pruner's time (six slots, less the clocks' rates), so a writer
	// that wrote within its latest four slots still has them. A rewrite after every failed
	// flush would make a slow database slower still.
	if b.stats.reassert && !b.stats.beingsLost && w.writtenSlot >= w.lastSlot-(schema.KeepSlots-2) {
		b.stats.reassert = false
	}
	reassert := b.stats.reassert
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
	b.snapshotPings(out, w, from, now, true)
	return out
}

// snapshotPings adds to out the ping document of every slot of w with
// changes not yet written, stamped with now, each carrying the entries of
// the indexes from from on (the keys its beings do not map yet), and
// created if create is set; else only a document that exists is written.
// b.mu must be held.
func (b *PingBatcher) snapshotPings(out *batch, w *writerState, from int, now time.Time, create bool) {
	fresh := entriesOf(w.entries[from:])
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
		doc := upsert(schema.PingID(s.slot, w.writer), fields).SetUpsert(create)
		if w.current(s) {
			out.pings = append(out.pings, doc)
		} else {
			out.oldPings = append(out.oldPings, doc)
		}
	}
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

func upsert(id string, fields bson.D) *mongo.UpdateOneModel {
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
// most of its indexes, or that names a removed model it no longer serves
// (see checkRemoved), is retired after a successful flush.
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
	// After the writes, so that a slow read delays no ping.
	b.checkRemoved(call)
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
	} else {
		b.retireRemoved()
	}
	return docs, nil
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

func (b *PingBatcher) failed(err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.failures++
	b.stats.reassert = true
	b.stats.lastError = err.Error()
	return err
}

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
