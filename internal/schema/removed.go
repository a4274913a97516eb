package schema

import (
	"context"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Removed models: a model's keys live in the documents of the writers
// that served it, beside other models' keys, so removing a model cannot
// delete them without rewriting documents that their writers own. Instead
// a removal inserts a marker, one small document per model whose _id is
// the model's UUID, that readers of the deployment (presenced status)
// honour at once; the marker goes once no writer's document names the
// model any more (its writers retired and were pruned).

// RemovedBatch is the most documents one removal call deletes.
const RemovedBatch = 32

// Removed returns the collection of removal markers under base.
func Removed(base *mongo.Collection) *mongo.Collection {
	return base.Database().Collection(base.Name() + ".removed")
}

// MarkRemoved records that model was removed, at at. It is idempotent:
// marking a model twice keeps the first time.
func MarkRemoved(ctx context.Context, base *mongo.Collection, model string, at time.Time) error {
	_, err := Removed(base).UpdateOne(ctx,
		bson.D{{Key: FieldID, Value: model}},
		bson.D{{Key: "$setOnInsert", Value: bson.D{{Key: FieldAt, Value: at.UnixNano()}}}},
		options.UpdateOne().SetUpsert(true))
	return errors.Annotatef(err, "cannot mark model %s removed", model)
}

// RemovedModels returns the models marked removed under base.
func RemovedModels(ctx context.Context, base *mongo.Collection) (map[string]bool, error) {
	cur, err := Removed(base).Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: FieldID, Value: 1}}))
	if err != nil {
		return nil, errors.Annotate(err, "cannot read removed models")
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	out := make(map[string]bool)
	for cur.Next(ctx) {
		if id, ok := cur.Current.Lookup(FieldID).StringValueOK(); ok {
			out[id] = true
		}
	}
	return out, errors.Annotate(cur.Err(), "cannot read removed models")
}

// NamedModels returns the models that any valid beings or ping document
// under base names keys of.
func NamedModels(ctx context.Context, base *mongo.Collection) (map[string]bool, error) {
	out := make(map[string]bool)
	learn := func(e Entries) {
		for _, m := range e.Models {
			out[m] = true
		}
	}
	if err := EachDocument(ctx, Beings(base), nil, func(raw bson.Raw) {
		if doc, err := DecodeBeings(raw); err == nil {
			learn(doc.Entries)
		}
	}); err != nil {
		return nil, errors.Trace(err)
	}
	err := EachDocument(ctx, Pings(base), nil, func(raw bson.Raw) {
		if doc, err := DecodePing(raw); err == nil {
			learn(doc.Fresh)
		}
	})
	return out, errors.Trace(err)
}

// ForgetRemoved deletes the markers of removed models that no document
// under base names any more, RemovedBatch at a time, and returns how many
// it deleted.
func ForgetRemoved(ctx context.Context, base *mongo.Collection) (int, error) {
	removed, err := RemovedModels(ctx, base)
	if err != nil || len(removed) == 0 {
		return 0, errors.Trace(err)
	}
	named, err := NamedModels(ctx, base)
	if err != nil {
		return 0, errors.Trace(err)
	}
	var gone bson.A
	for model := range removed {
		if !named[model] {
			gone = append(gone, model)
		}
	}
	deleted := 0
	for len(gone) > 0 {
		n := min(len(gone), RemovedBatch)
		res, err := Removed(base).DeleteMany(ctx, bson.D{{Key: FieldID, Value: bson.D{{Key: "$in", Value: gone[:n]}}}})
		if err != nil {
			return deleted, errors.Annotate(err, "cannot forget removed models")
		}
		deleted += int(res.DeletedCount)
		gone = gone[n:]
	}
	return deleted, nil
}

// EachDocument calls f with every document of coll that filter (nil:
// every one) selects, one at a time.
func EachDocument(ctx context.Context, coll *mongo.Collection, filter bson.D, f func(bson.Raw)) error {
	if filter == nil {
		filter = bson.D{}
	}
	cur, err := coll.Find(ctx, filter)
	if err != nil {
		return errors.Annotatef(err, "cannot read %s", coll.Name())
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	for cur.Next(ctx) {
		f(cur.Current)
	}
	return errors.Annotatef(cur.Err(), "cannot read %s", coll.Name())
}
