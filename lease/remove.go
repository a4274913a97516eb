package lease

import (
	"context"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// RemoveBatch is the most term documents one call of RemoveModel's
// deletes: a model with many leases is removed in bounded steps.
const RemoveBatch = 32

// RemoveModel deletes every term of every lease of model from coll,
// RemoveBatch documents per call, and returns how many it deleted. It is
// idempotent. It must only be called once nobody claims the model's
// leases any more (its engine stopped): a term claimed meanwhile may
// survive, and a model whose leases were removed must not be used again
// under the same UUID, as its fences would start again from zero.
func RemoveModel(ctx context.Context, coll *mongo.Collection, model string) (int, error) {
	if coll == nil {
		return 0, errors.NotValidf("nil Collection")
	}
	if model == "" {
		return 0, errors.NotValidf("empty model")
	}
	deleted := 0
	for {
		ids, err := termIDs(ctx, coll, model)
		if err != nil || len(ids) == 0 {
			return deleted, errors.Trace(err)
		}
		res, err := coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return deleted, errors.Annotatef(err, "cannot remove the leases of model %s", model)
		}
		if res.DeletedCount == 0 {
			return deleted, nil // deleted by another call meanwhile
		}
		deleted += int(res.DeletedCount)
	}
}

// termIDs returns the _ids of up to RemoveBatch terms of model's leases.
func termIDs(ctx context.Context, coll *mongo.Collection, model string) (bson.A, error) {
	cur, err := coll.Find(ctx, bson.D{{Key: "model", Value: model}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetLimit(RemoveBatch))
	if err != nil {
		return nil, errors.Annotatef(err, "cannot read the leases of model %s", model)
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	var ids bson.A
	for cur.Next(ctx) {
		ids = append(ids, cur.Current.Lookup("_id"))
	}
	return ids, errors.Annotatef(cur.Err(), "cannot read the leases of model %s", model)
}
