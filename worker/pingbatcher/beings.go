package pingbatcher

import (
	"context"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
)

// beingsBatch is how many beings documents one call writes: a full one is
// 50-65 KB, so each goes on its own, with a deadline of its own, and a
// rewrite of many on a slow database is taken piece by piece rather than
// timing out whole, again and again.
const beingsBatch = 1

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
