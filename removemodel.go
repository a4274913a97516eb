package presence

import (
	"context"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leasestore"
)

// RemoveModel removes model from db's presence and leases, in the
// collections that ManifoldsConfig names by default ("presence" and
// "leases"): see RemoveModelFrom.
func RemoveModel(ctx context.Context, db *mongo.Database, model names.ModelTag) error {
	if db == nil {
		return errors.NotValidf("nil database")
	}
	return errors.Trace(RemoveModelFrom(ctx, db.Collection(schema.DefaultBase), db.Collection(leasestore.DefaultCollection), model))
}

// RemoveModelFrom removes model from the presence under base and from
// the leases in leases, while the controllers keep running. Call it once
// the model's engine has stopped (see ModelHostManifold): its pingers,
// watchers and lease managers gone.
//
// Every term of every lease of the model is deleted, lease.RemoveBatch
// documents per call. The model's keys live in the documents of the
// controllers' writers, beside other models' keys, which a removal must
// not rewrite: instead the model is marked removed, and presenced's
// status and /status leave it out at once; the readers forget its keys
// within LogAge of their last ping (see worker/presencereader); a batcher
// retires its writer once it names the removed model and serves it no
// more (it reads the markers at most every six slots), and the pruner
// removes the old writer's documents. See also
// ModelHostConfig.PurgeRemoved. Markers of models that no document
// names any more are deleted by every call. No other model is touched:
// none of its keys can read dead for this.
//
// RemoveModelFrom is idempotent, and safe to call again after a failure.
// It fails with a NotValid error for a nil collection or a bad model,
// and with the database's error, annotated, otherwise.
func RemoveModelFrom(ctx context.Context, base, leases *mongo.Collection, model names.ModelTag) error {
	if leases == nil {
		return errors.NotValidf("nil lease collection")
	}
	if err := removePresence(ctx, base, model); err != nil {
		return errors.Trace(err)
	}
	_, err := lease.RemoveModel(ctx, leases, model.Id())
	return errors.Trace(err)
}

// removePresence marks model removed under base and forgets the markers
// that no document needs any more.
func removePresence(ctx context.Context, base *mongo.Collection, model names.ModelTag) error {
	if base == nil {
		return errors.NotValidf("nil base collection")
	}
	if err := schema.ValidateModel(model); err != nil {
		return errors.Trace(err)
	}
	if err := schema.MarkRemoved(ctx, base, model.Id(), time.Now()); err != nil {
		return errors.Trace(err)
	}
	_, err := schema.ForgetRemoved(ctx, base)
	return errors.Trace(err)
}
