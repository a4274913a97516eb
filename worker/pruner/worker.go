// Package pruner removes the presence documents that nobody can need any
// more, for every model of the database at once, so that storage stays
// O(live pingers + window).
//
// Ping documents older than the window (schema.KeepSlots slots before the
// current one) are deleted. Beings documents go once their writer has no
// ping document left in the window and they were last written before it:
// a batcher retires a writer that went that long without a ping, so a
// removed writer never writes again. A prune costs three commands whatever
// the number of models, writers and keys, and each has a deadline.
package pruner

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4/catacomb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	pcatacomb "github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// DefaultInterval is the time between prunes when Interval is zero.
const DefaultInterval = 30 * time.Second

// minTimeout is the shortest deadline a prune gets.
const minTimeout = 2 * time.Second

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

	// mu guards what decides whether a prune deletes beings.
	mu sync.Mutex
	// live holds the writers live at the last prune that read them; nil
	// until one did, or after a beings delete failed.
	live map[string]bool
	// skipped counts the prunes since the last beings delete.
	skipped int
}

// sweepEvery bounds the prunes in a row that delete no beings: a prune
// deletes the beings of retired writers only when a writer live at the
// previous prune is gone, on its first prune, and at least every
// sweepEvery prunes (for a writer that came and went between two, or
// whose beings were written a slot after its last pings). The delete
// needs a scan of every beings document on a server without an index on
// their writer (the embedded one: 1.5-1.8 s at 100,000 keys), which
// slows every other command meanwhile.
const sweepEvery = 10

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
			stats, err := p.pruneWithin(max(p.config.Period/2, minTimeout))
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
	ctx, cancel := pcatacomb.Call(&p.catacomb, timeout)
	defer cancel()
	return p.Prune(ctx)
}

// Prune removes every ping document older than the window and the beings
// documents of writers that are gone, with three commands, or two when no
// writer has gone since the last prune (see sweepEvery) or none is live. It is safe to
// run while pingers write and concurrently with other prunes.
func (p *Pruner) Prune(ctx context.Context) (Stats, error) {
	var stats Stats
	oldest := schema.Slot(p.config.Clock.Now(), p.config.Period) - schema.KeepSlots
	pings := schema.Pings(p.config.Base)
	beings := schema.Beings(p.config.Base)

	res, err := pings.DeleteMany(ctx, bson.D{
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: oldest}}},
	})
	if err != nil {
		return stats, errors.Annotate(err, "cannot remove old pings")
	}
	stats.Pings = res.DeletedCount

	live, err := liveWriters(ctx, pings)
	if err != nil {
		return stats, errors.Annotate(err, "cannot read live writers")
	}
	if len(live) == 0 || !p.beingsDue(live) {
		// With no writer live at all, the database (or every
		// controller) was away for longer than the window: the writers
		// that come back write pings before they are judged, and
		// their beings stay meanwhile.
		return stats, nil
	}
	res, err = beings.DeleteMany(ctx, bson.D{
		{Key: schema.FieldWriter, Value: bson.D{{Key: "$nin", Value: append([]string{}, slices.Collect(maps.Keys(live))...)}}},
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: oldest}}},
	})
	if err != nil {
		p.mu.Lock()
		p.live = nil
		p.mu.Unlock()
		return stats, errors.Annotate(err, "cannot remove beings of retired writers")
	}
	stats.Beings = res.DeletedCount
	return stats, nil
}

// beingsDue records live as the live writers and reports whether this
// prune deletes beings, as sweepEvery's comment says.
func (p *Pruner) beingsDue(live map[string]bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	due := p.live == nil || p.skipped+1 >= sweepEvery
	for w := range p.live {
		if !live[w] {
			due = true
		}
	}
	p.live = live
	if due {
		p.skipped = 0
	} else {
		p.skipped++
	}
	return due
}

// liveWriters returns the writers that have a ping document in the
// window. It projects rather than using the distinct command, which the
// embedded server rejects when the context has a deadline.
func liveWriters(ctx context.Context, pings *mongo.Collection) (map[string]bool, error) {
	cur, err := pings.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: schema.FieldWriter, Value: 1}}))
	if err != nil {
		return nil, errors.Trace(err)
	}
	var docs []struct {
		Writer string `bson:"writer"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, errors.Trace(err)
	}
	live := make(map[string]bool, len(docs))
	for _, doc := range docs {
		live[doc.Writer] = true
	}
	return live, nil
}
