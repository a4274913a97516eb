// Package pruner removes the presence documents that nobody can need any
// more, for every model of the database at once, so that storage stays
// O(live pingers + window).
//
// Clocks. A writer's slots are its own sequence (see schema.Progress), so
// the pruner never compares them with its clock. It judges each writer by
// what it sees across its own prunes, timed by its own observed clock (its
// readings, never going back): a writer has moved on when a prune finds a
// ping document of it at a sequence the previous prune did not, and one
// the writer can have reached since the pruner last saw it move on. A
// writer is gone once it has not moved on across at least two prunes and
// three Periods of the pruner's time (goneAfter), which a live writer,
// moving on every slot, never allows. A gap between two prunes longer than
// the pruner's pace (gapLimit: its process paused, its clock stepped
// forward) is a trouble of its own, as is a failed read: nobody's silence
// during it counts, so a step of its clock forward by less adds at most
// that to a silence, and a step back only delays. Only elapsed times on the
// pruner's clock are compared, so only its rate matters.
//
// What goes. The ping documents of a live writer below its believed latest
// sequence less schema.KeepSlots (readers read each writer's latest two);
// none until the pruner has seen the writer move on once, so that a lone
// document taken for its latest at first sight deletes nothing. A
// document above the believed latest (a sequence the writer cannot have
// reached, written by an earlier version whose clock was ahead, say) stays
// until the writer passes it or is gone. Every document of a gone writer
// goes, its beings first (from the ping documents the pruner learns each
// writer and how many beings documents it may have) and its ping documents
// last, so that until they go the next prune knows what remains. A batcher
// whose writes failed for long enough that it may have been judged gone
// writes its beings again and reads them back (see pingbatcher).
//
// So a dead controller's documents go within Interval + max(2 Interval,
// 3 Period + Interval) of its last write, or of the pruner's start if that
// is later (90 s with the defaults), plus the prunes' own time; a failed
// prune, a gap or a step back of the pruner's clock adds up to an Interval
// each, and so does the prune that takes the beings census.
//
// The beings documents are big, and on the embedded server every command
// on them reads them all (a filter on anything but one _id decodes them
// all, 1.5-2 s at 100,000 keys) and holds up every other write meanwhile,
// so a prune sends them nothing unless a writer has gone. Beings that no
// ping document names (a writer that registered and died before its first
// ping, a prune that stopped between its deletes) are found by a census,
// every sweepEvery prunes: it reads which writers without ping documents
// have beings, and a later prune, once they have stayed without any for
// two prunes and three Periods, deletes those beings up to the slot the
// census saw (a writer that comes back writes its beings again with a
// later slot). A prune costs three commands at most whatever the number of
// models, writers and keys: a read of the ping documents, a delete of
// beings or the census, and a delete of ping documents by _id; two when no
// writer has gone, one when nothing is old enough to go. It has a deadline. When it finds no writer live at all
// (the database, or every controller, was away) it deletes nothing.
package pruner

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// DefaultInterval is the time between prunes when Interval is zero.
const DefaultInterval = 30 * time.Second

// Logger is the logging a Pruner needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a Pruner needs.
type Config struct {
	// Base is the base presence collection. It must not be nil.
	Base *mongo.Collection

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Interval is the time between prunes. Zero means DefaultInterval;
	// it must not be negative.
	Interval time.Duration

	// Period is the slot length, the same as the pingers'. Zero means
	// schema.DefaultPeriod; it must not be negative.
	Period time.Duration

	// Logger is optional; nil means silent.
	Logger Logger
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.Interval < 0 {
		return errors.NotValidf("negative Interval")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	return nil
}

// Stats says what one Prune removed.
type Stats struct {
	// Pings is the number of ping documents removed.
	Pings int64
	// Beings is the number of beings documents removed.
	Beings int64
}

// Pruner prunes every Interval; Prune also runs on demand.
type Pruner struct {
	config   Config
	catacomb catacomb.Catacomb

	// mu guards what the prunes learnt (see judge.go).
	mu sync.Mutex
	judgement
}

// sweepEvery is how many prunes go by between two beings censuses, which
// find what the deletes by the ping documents cannot know of: the beings
// of a writer that registered and wrote no ping document, of one that
// wrote beings a chunk beyond its last ping document, and those left by a
// pruner that stopped between its reads and its deletes. A census reads
// every beings document, which on the embedded server takes 1.5-2 s at
// 100,000 keys and slows every other command meanwhile, and so does the
// delete that follows it: once an hour at the default Interval.
const sweepEvery = 120

// sweepFirst is the prune that takes the first census: not the first, so
// that a controller's start does not pay for it, but soon enough that a
// pruner restarted often still sweeps (five minutes at the default
// Interval).
const sweepFirst = 10

// New starts a Pruner. Its first prune is one Interval after the start.
func New(config Config) (*Pruner, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if config.Interval == 0 {
		config.Interval = DefaultInterval
	}
	if config.Period == 0 {
		config.Period = schema.DefaultPeriod
	}
	p := &Pruner{config: config}
	p.sinceSweep = sweepEvery - sweepFirst
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "presence pruner",
		Site: &p.catacomb,
		Work: p.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return p, nil
}

// Kill is part of the worker.Worker interface.
func (p *Pruner) Kill() {
	p.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (p *Pruner) Wait() error {
	return p.catacomb.Wait()
}

func (p *Pruner) loop() error {
	timer := p.config.Clock.NewTimer(p.config.Interval)
	defer timer.Stop()
	for {
		select {
		case <-p.catacomb.Dying():
			return p.catacomb.ErrDying()
		case <-timer.Chan():
			stats, err := p.pruneWithin(schema.PruneTimeout(p.config.Period))
			switch {
			case err != nil && p.config.Logger != nil:
				// A failed prune only delays the next; the
				// database may be briefly away.
				p.config.Logger.Errorf("presence pruner: %v", err)
			case p.config.Logger != nil:
				p.config.Logger.Debugf("presence pruner: removed %d ping and %d beings documents", stats.Pings, stats.Beings)
			}
			timer.Reset(p.config.Interval)
		}
	}
}

// pruneWithin prunes with a deadline of timeout, giving up at once when
// the pruner starts dying.
func (p *Pruner) pruneWithin(timeout time.Duration) (Stats, error) {
	ctx, cancel := catacomb.Call(&p.catacomb, timeout)
	defer cancel()
	return p.Prune(ctx)
}

// Prune removes the ping documents of live writers below their windows,
// and every document of the writers that are gone (see the package
// comment), with three commands at most. It deletes nothing when it finds
// no writer live at all: the database (or every controller) was then
// away, and the writers that come back write pings before they are
// judged. It is safe to run while pingers write and concurrently with
// other prunes.
func (p *Pruner) Prune(ctx context.Context) (Stats, error) {
	var stats Stats
	now := p.begin()
	defer p.end()
	pings := schema.Pings(p.config.Base)
	beings := schema.Beings(p.config.Base)

	read, err := p.readWriters(ctx, pings)
	if err != nil {
		p.troubled()
		return stats, errors.Annotate(err, "cannot read writers")
	}
	plan := p.judge(read, now)
	switch {
	case plan.census:
		census, err := readCensus(ctx, beings, read)
		p.recordCensus(census, err == nil, now)
		if err != nil {
			return stats, errors.Annotate(err, "cannot take the census of beings")
		}
	case len(plan.swept) > 0 || chunkCount(plan.gone) > maxPointDeletes:
		stats.Beings, err = deleteWhere(ctx, beings, plan)
	case len(plan.gone) > 0:
		stats.Beings, err = deleteChunks(ctx, beings, plan.gone)
	}
	if err != nil {
		return stats, errors.Annotate(err, "cannot remove beings of gone writers")
	}
	// The ping documents go last: until they do, the next prune learns
	// from them which beings remain to delete.
	if len(plan.pings) > 0 {
		res, err := pings.DeleteMany(ctx, bson.D{
			{Key: schema.FieldID, Value: bson.D{{Key: "$in", Value: plan.pings}}},
		})
		if err != nil {
			return stats, errors.Annotate(err, "cannot remove ping documents")
		}
		stats.Pings = res.DeletedCount
	}
	p.forget(plan.forget)
	return stats, nil
}

// readBatch is how many ping documents the pruner asks for in one batch.
const readBatch = 10000

// pingHead is what the pruner reads of one ping document.
type pingHead struct {
	id   bson.RawValue
	slot int64
	// valid is set when the document's _id is the one its slot and
	// writer give: only those count as the writer's sequence.
	valid bool
}

// writerRead is what one read of the ping documents says of one writer.
type writerRead struct {
	docs []pingHead
	// chunks is how many beings documents it may have.
	chunks int
}

// skippedDoc names a ping document the pruner could not read whole.
type skippedDoc struct {
	id  string
	err error
}

// pingsRead is what one read of the ping documents says.
type pingsRead struct {
	writers map[string]*writerRead
	skipped []skippedDoc
}

// readWriters returns what the ping documents say of each writer, and
// names those it cannot read whole.
func (p *Pruner) readWriters(ctx context.Context, pings *mongo.Collection) (pingsRead, error) {
	out := pingsRead{writers: make(map[string]*writerRead)}
	// Without their bitmaps the documents are small: one batch holds
	// those of a thousand writers, so the read is one command. (The
	// embedded server sizes its batch by the request: a far larger one
	// costs it seconds.)
	cur, err := pings.Find(ctx, bson.D{}, options.Find().SetBatchSize(readBatch).SetProjection(bson.D{
		{Key: schema.FieldWriter, Value: 1},
		{Key: schema.FieldSlot, Value: 1},
		{Key: schema.FieldFrom, Value: 1},
		{Key: schema.FieldFresh, Value: 1},
	}))
	if err != nil {
		return out, errors.Trace(err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		id := cur.Current.Lookup(schema.FieldID)
		skip := func(err error) {
			out.skipped = append(out.skipped, skippedDoc{id: id.String(), err: err})
		}
		// Progress needs the writer and the slot alone: a document
		// whose other fields this pruner cannot read (a corrupt one,
		// or a newer writer's) still says its writer moved on.
		var head struct {
			Writer string `bson:"writer"`
			Slot   int64  `bson:"slot"`
		}
		if err := cur.Decode(&head); err != nil || head.Writer == "" {
			if err == nil {
				err = errors.NotValidf("ping document without writer")
			}
			skip(err)
			continue
		}
		doc := schema.PingDoc{Writer: head.Writer, Slot: head.Slot}
		idString, _ := id.StringValueOK()
		checkErr := doc.CheckID(idString)
		if checkErr != nil {
			skip(checkErr)
		}
		// Chunk 0 is the writer's registration: it has one however few
		// keys its pings name, and no more than that is known when the
		// rest of the document cannot be read.
		chunks := 1
		err := cur.Decode(&doc)
		if err == nil {
			err = doc.Validate()
		}
		if err != nil {
			skip(err)
		} else {
			chunks = max(1, (doc.FreshFrom+doc.Fresh.Len()+schema.ChunkSize-1)/schema.ChunkSize)
		}
		w := out.writers[head.Writer]
		if w == nil {
			w = &writerRead{}
			out.writers[head.Writer] = w
		}
		w.docs = append(w.docs, pingHead{id: id, slot: head.Slot, valid: checkErr == nil})
		w.chunks = max(w.chunks, chunks)
	}
	return out, errors.Trace(cur.Err())
}

// maxPointDeletes is the most beings documents a prune deletes one by one,
// each by its _id. The embedded server scans the beings in SQLite for each
// (0.1-0.2 s at 100,000 keys), and decodes them all for a delete by any
// other filter (1.5-2 s): a writer or two of a few chunks go by _id, a
// big one with one filtered delete. On MongoDB both use an index.
const maxPointDeletes = 8

// chunkCount returns how many beings documents the writers gone names may
// have.
func chunkCount(gone map[string]goneWriter) int {
	n := 0
	for _, w := range gone {
		n += w.chunks
	}
	return n
}

// deleteChunks deletes the beings documents of the writers gone names, in
// one command, each by its _id and each writer's from its last chunk down:
// a writer that comes back and writes them again, from its first chunk up,
// while they go, loses its first chunk if it loses any, and that is the
// one it reads back (see schema.PruneTimeout).
func deleteChunks(ctx context.Context, beings *mongo.Collection, gone map[string]goneWriter) (int64, error) {
	var deletes []mongo.WriteModel
	for _, writer := range slices.Sorted(maps.Keys(gone)) {
		for chunk := gone[writer].chunks - 1; chunk >= 0; chunk-- {
			deletes = append(deletes, mongo.NewDeleteOneModel().SetFilter(bson.D{{Key: schema.FieldID, Value: schema.BeingsID(writer, chunk)}}))
		}
	}
	res, err := beings.BulkWrite(ctx, deletes)
	if err != nil {
		return 0, errors.Trace(err)
	}
	return res.DeletedCount, nil
}

// deleteWhere deletes, with one filtered delete, the beings documents of
// the writers that plan says are gone or swept, each writer's only up to
// the slot its last document the pruner saw was in: a writer that comes
// back writes its beings again with a later slot.
func deleteWhere(ctx context.Context, beings *mongo.Collection, plan plan) (int64, error) {
	upTo := maps.Clone(plan.swept)
	if upTo == nil {
		upTo = make(map[string]int64)
	}
	for writer, w := range plan.gone {
		upTo[writer] = w.top
	}
	var or bson.A
	for _, writer := range slices.Sorted(maps.Keys(upTo)) {
		or = append(or, bson.D{
			{Key: schema.FieldWriter, Value: writer},
			{Key: schema.FieldSlot, Value: bson.D{{Key: "$lte", Value: upTo[writer]}}},
		})
	}
	res, err := beings.DeleteMany(ctx, bson.D{{Key: "$or", Value: or}})
	if err != nil {
		return 0, errors.Trace(err)
	}
	return res.DeletedCount, nil
}

// readCensus returns, for every writer with beings documents and no ping
// document in read, the highest slot of its beings, with one command.
func readCensus(ctx context.Context, beings *mongo.Collection, read pingsRead) (map[string]int64, error) {
	present := slices.Sorted(maps.Keys(read.writers))
	cur, err := beings.Find(ctx, bson.D{
		{Key: schema.FieldWriter, Value: bson.D{{Key: "$nin", Value: present}}},
	}, options.Find().SetBatchSize(readBatch).SetProjection(bson.D{
		{Key: schema.FieldWriter, Value: 1},
		{Key: schema.FieldSlot, Value: 1},
	}))
	if err != nil {
		return nil, errors.Trace(err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	out := make(map[string]int64)
	for cur.Next(ctx) {
		var head struct {
			Writer string `bson:"writer"`
			Slot   int64  `bson:"slot"`
		}
		if err := cur.Decode(&head); err != nil || head.Writer == "" {
			continue // not one of ours: nothing to delete
		}
		if slot, ok := out[head.Writer]; !ok || head.Slot > slot {
			out[head.Writer] = head.Slot
		}
	}
	return out, errors.Trace(cur.Err())
}
