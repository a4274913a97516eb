// Package pruner removes the presence documents that nobody can need any
// more, for every model of the database at once, so that storage stays
// O(live pingers + window).
//
// Ping documents older than the window (schema.KeepSlots slots before the
// current one) are deleted. Beings documents go once their writer has no
// ping document left in the window: a batcher retires a writer that went
// that long without a ping, and one that could not write for that long
// writes its beings again (and reads them back once a prune that read it
// as gone has had time to end). The pruner learns each writer, and how
// many beings documents it may have, from the ping documents it reads
// anyway, so a prune sends the beings nothing unless a writer has gone:
// beings documents are big, and on the embedded server every command on
// them reads them all (a filter on anything but one _id decodes them all,
// 1.5-2 s at 100,000 keys) and holds up every other write meanwhile. A
// prune costs three commands whatever the number of models, writers and
// keys, two when no writer has gone, and has a deadline.
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

	// mu guards what the prunes learnt of the writers.
	mu sync.Mutex
	// known holds, for every writer seen in a ping document whose
	// beings are not known to be deleted, how many beings documents it
	// may have.
	known map[string]int
	// sinceSweep counts the prunes since the last sweep, from
	// sweepEvery-sweepFirst at the start.
	sinceSweep int
}

// sweepEvery is how many prunes go by between two sweeps: a delete of the
// beings documents of every writer not live, whatever the ping documents
// said. It removes what the deletes by _id cannot know of: the beings of
// a writer that registered and wrote no ping document, of one that wrote
// beings a chunk beyond its last ping document, and those left by a
// pruner that stopped between its reads and its deletes. It scans every
// beings document, which on the embedded server takes 1.5-2 s at 100,000
// keys and slows every other command meanwhile: once an hour at the
// default Interval.
const sweepEvery = 120

// sweepFirst is the prune that sweeps first: not the first, so that a
// controller's start does not pay for it, but soon enough that a pruner
// restarted often still sweeps (five minutes at the default Interval).
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
	p := &Pruner{config: config, sinceSweep: sweepEvery - sweepFirst}
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

// Prune removes every ping document older than the window and the beings
// documents of writers that are gone, with three commands (see the
// package comment), or two when no writer has gone. It deletes no beings
// when it finds no writer live at all: the database (or every controller)
// was then away for longer than the window, and the writers that come
// back write pings before they are judged. It is safe to run while
// pingers write and concurrently with other prunes.
func (p *Pruner) Prune(ctx context.Context) (Stats, error) {
	var stats Stats
	oldest := schema.Slot(p.config.Clock.Now(), p.config.Period) - schema.KeepSlots
	pings := schema.Pings(p.config.Base)
	beings := schema.Beings(p.config.Base)

	seen, err := p.readWriters(ctx, pings)
	if err != nil {
		return stats, errors.Annotate(err, "cannot read writers")
	}
	live, gone, sweep := p.judge(seen, oldest)
	switch {
	case sweep:
		// Every writer not live.
		stats.Beings, err = deleteWhere(ctx, beings, bson.D{{Key: "$nin", Value: slices.Sorted(maps.Keys(live))}}, oldest)
	case chunkCount(gone) > maxPointDeletes:
		stats.Beings, err = deleteWhere(ctx, beings, bson.D{{Key: "$in", Value: slices.Sorted(maps.Keys(gone))}}, oldest)
	case len(gone) > 0:
		stats.Beings, err = deleteChunks(ctx, beings, gone)
	}
	if err != nil {
		return stats, errors.Annotate(err, "cannot remove beings of retired writers")
	}
	p.forget(gone)
	// The ping documents go last: until they do, the next prune learns
	// from them which beings remain to delete.
	res, err := pings.DeleteMany(ctx, bson.D{
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: oldest}}},
	})
	if err != nil {
		return stats, errors.Annotate(err, "cannot remove old pings")
	}
	stats.Pings = res.DeletedCount
	return stats, nil
}

// readBatch is how many ping documents the pruner asks for in one batch.
const readBatch = 10000

// writerSeen is what the ping documents say of one writer.
type writerSeen struct {
	// newest is its latest slot.
	newest int64
	// chunks is how many beings documents it may have.
	chunks int
}

// readWriters returns what the ping documents, old ones included, say of
// each writer. A document that is not one of ours is skipped and logged.
func (p *Pruner) readWriters(ctx context.Context, pings *mongo.Collection) (map[string]writerSeen, error) {
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
		return nil, errors.Trace(err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	seen := make(map[string]writerSeen)
	for cur.Next(ctx) {
		// Liveness needs the writer and the slot alone: a document
		// whose other fields this pruner cannot read (a corrupt one,
		// or a newer writer's) still says its writer is live.
		var head struct {
			Writer string `bson:"writer"`
			Slot   int64  `bson:"slot"`
		}
		if err := cur.Decode(&head); err != nil || head.Writer == "" {
			if err == nil {
				err = errors.NotValidf("ping document without writer")
			}
			p.skipped(cur.Current, err)
			continue
		}
		// Chunk 0 is the writer's registration: it has one however few
		// keys its pings name, and no more than that is known when the
		// rest of the document cannot be read.
		chunks := 1
		var doc schema.PingDoc
		err := cur.Decode(&doc)
		if err == nil {
			err = doc.Validate()
		}
		if err != nil {
			p.skipped(cur.Current, err)
		} else {
			chunks = max(1, (doc.FreshFrom+doc.Fresh.Len()+schema.ChunkSize-1)/schema.ChunkSize)
		}
		w, ok := seen[head.Writer]
		if !ok {
			w.newest = head.Slot
		}
		seen[head.Writer] = writerSeen{newest: max(w.newest, head.Slot), chunks: max(w.chunks, chunks)}
	}
	return seen, errors.Trace(cur.Err())
}

// skipped logs a ping document the pruner cannot read whole.
func (p *Pruner) skipped(doc bson.Raw, err error) {
	if p.config.Logger != nil {
		p.config.Logger.Errorf("presence pruner: skipped ping document %v: %v", doc.Lookup(schema.FieldID), err)
	}
}

// judge records what seen says of the writers and returns those live (a
// ping document in the window), those gone with how many beings
// documents each may have (none when no writer is live), and whether
// this prune sweeps instead, as sweepEvery says.
func (p *Pruner) judge(seen map[string]writerSeen, oldest int64) (live map[string]bool, gone map[string]int, sweep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known == nil {
		p.known = make(map[string]int)
	}
	live = make(map[string]bool)
	for writer, w := range seen {
		p.known[writer] = max(p.known[writer], w.chunks)
		if w.newest >= oldest {
			live[writer] = true
		}
	}
	if len(live) == 0 {
		return live, nil, false
	}
	gone = make(map[string]int)
	for writer, chunks := range p.known {
		if !live[writer] {
			gone[writer] = chunks
		}
	}
	p.sinceSweep++
	if p.sinceSweep >= sweepEvery {
		p.sinceSweep = 0
		sweep = true
	}
	return live, gone, sweep
}

// forget drops the writers whose beings are deleted.
func (p *Pruner) forget(gone map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for writer := range gone {
		delete(p.known, writer)
	}
}

// maxPointDeletes is the most beings documents a prune deletes one by one,
// each by its _id. The embedded server scans the beings in SQLite for each
// (0.1-0.2 s at 100,000 keys), and decodes them all for a delete by any
// other filter (1.5-2 s): a writer or two of a few chunks go by _id, a
// big one with one filtered delete. On MongoDB both use an index.
const maxPointDeletes = 8

// chunkCount returns how many beings documents the writers gone names may
// have.
func chunkCount(gone map[string]int) int {
	n := 0
	for _, chunks := range gone {
		n += chunks
	}
	return n
}

// deleteChunks deletes the beings documents of the writers gone names, in
// one command, each by its _id and each writer's from its last chunk down:
// a writer that comes back and writes them again, from its first chunk up,
// while they go, loses its first chunk if it loses any, and that is the
// one it reads back (see schema.PruneTimeout).
func deleteChunks(ctx context.Context, beings *mongo.Collection, gone map[string]int) (int64, error) {
	var deletes []mongo.WriteModel
	for _, writer := range slices.Sorted(maps.Keys(gone)) {
		for chunk := gone[writer] - 1; chunk >= 0; chunk-- {
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
// the writers that match writers (a condition on the writer field) and
// were last written before the window.
func deleteWhere(ctx context.Context, beings *mongo.Collection, writers bson.D, oldest int64) (int64, error) {
	res, err := beings.DeleteMany(ctx, bson.D{
		{Key: schema.FieldWriter, Value: writers},
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: oldest}}},
	})
	if err != nil {
		return 0, errors.Trace(err)
	}
	return res.DeletedCount, nil
}
