// Package pruner removes the presence documents of one model that nobody
// can need any more, so that storage stays O(live pingers + window).
//
// Ping documents older than the window (schema.KeepSlots slots before the
// current one) are deleted. Beings documents go once their writer has no
// ping document left in the window and they were last written before it:
// a batcher retires a writer that went that long without a ping, so a
// removed writer never writes again. Every query and delete names the
// model, so pruning one model never touches another's documents.
package pruner

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/catacomb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

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

	// Model is the model to prune. It must be a valid model tag.
	Model names.ModelTag

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
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
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

// Pruner prunes one model every Interval; Prune also runs on demand.
type Pruner struct {
	config   Config
	catacomb catacomb.Catacomb
}

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
	ctx := p.catacomb.Context(context.Background())
	for {
		select {
		case <-p.catacomb.Dying():
			return p.catacomb.ErrDying()
		case <-timer.Chan():
			stats, err := p.Prune(ctx)
			switch {
			case err != nil && p.config.Logger != nil:
				// A failed prune only delays the next; the
				// database may be briefly away.
				p.config.Logger.Errorf("presence pruner for %s: %v", p.config.Model.Id(), err)
			case p.config.Logger != nil:
				p.config.Logger.Debugf("presence pruner for %s: removed %d ping and %d beings documents",
					p.config.Model.Id(), stats.Pings, stats.Beings)
			}
			timer.Reset(p.config.Interval)
		}
	}
}

// Prune removes the model's ping documents older than the window and the
// beings documents of writers that are gone. It is safe to run while
// pingers write and concurrently with other prunes.
func (p *Pruner) Prune(ctx context.Context) (Stats, error) {
	var stats Stats
	uuid := p.config.Model.Id()
	oldest := schema.Slot(p.config.Clock.Now(), p.config.Period) - schema.KeepSlots
	pings := schema.Pings(p.config.Base)
	beings := schema.Beings(p.config.Base)

	res, err := pings.DeleteMany(ctx, bson.D{
		{Key: schema.FieldModel, Value: uuid},
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: oldest}}},
	})
	if err != nil {
		return stats, errors.Annotate(err, "cannot remove old pings")
	}
	stats.Pings = res.DeletedCount

	live, err := distinctWriters(ctx, pings, bson.D{{Key: schema.FieldModel, Value: uuid}})
	if err != nil {
		return stats, errors.Annotate(err, "cannot read live writers")
	}
	known, err := distinctWriters(ctx, beings, bson.D{{Key: schema.FieldModel, Value: uuid}})
	if err != nil {
		return stats, errors.Annotate(err, "cannot read writers")
	}
	var gone bson.A
	for writer := range known {
		if !live[writer] {
			gone = append(gone, writer)
		}
	}
	if len(gone) == 0 {
		return stats, nil
	}
	res, err = beings.DeleteMany(ctx, bson.D{
		{Key: schema.FieldModel, Value: uuid},
		{Key: schema.FieldWriter, Value: bson.D{{Key: "$in", Value: gone}}},
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: oldest}}},
	})
	if err != nil {
		return stats, errors.Annotate(err, "cannot remove beings of retired writers")
	}
	stats.Beings = res.DeletedCount
	return stats, nil
}

// distinctWriters returns the writers of the documents matching filter.
// It projects rather than using the distinct command, which the embedded
// server rejects when the context has a deadline.
func distinctWriters(ctx context.Context, coll *mongo.Collection, filter bson.D) (map[string]bool, error) {
	cur, err := coll.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: schema.FieldWriter, Value: 1}}))
	if err != nil {
		return nil, errors.Trace(err)
	}
	var docs []struct {
		Writer string `bson:"writer"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, errors.Trace(err)
	}
	out := make(map[string]bool, len(docs))
	for _, doc := range docs {
		out[doc.Writer] = true
	}
	return out, nil
}
