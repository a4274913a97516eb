package presence

import (
	"context"
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/enginekit"
)

// databaseStopTimeout bounds the disconnect when a database worker stops.
const databaseStopTimeout = 2 * time.Second

// DatabaseManifold returns a manifold, for engines that have none yet,
// that connects to the MongoDB at uri with the official driver, pings it,
// outputs the database dbName as a *mongo.Database, and disconnects when
// it stops. Options given are applied after the URI, e.g. timeouts.
func DatabaseManifold(uri, dbName string, opts ...*options.ClientOptions) dependency.Manifold {
	return dependency.Manifold{
		Start: func(ctx context.Context, _ dependency.Getter) (worker.Worker, error) {
			if uri == "" {
				return nil, errors.NotValidf("empty MongoDB URI")
			}
			if dbName == "" {
				return nil, errors.NotValidf("empty database name")
			}
			client, err := mongo.Connect(append([]*options.ClientOptions{options.Client().ApplyURI(uri)}, opts...)...)
			if err != nil {
				return nil, errors.Annotate(err, "cannot connect to MongoDB")
			}
			if err := client.Ping(ctx, nil); err != nil {
				_ = client.Disconnect(context.Background())
				return nil, errors.Annotate(err, "cannot reach MongoDB")
			}
			w, err := enginekit.NewValueWorker(client.Database(dbName), func() {
				ctx, cancel := context.WithTimeout(context.Background(), databaseStopTimeout)
				defer cancel()
				_ = client.Disconnect(ctx)
			})
			if err != nil {
				_ = client.Disconnect(context.Background())
				return nil, errors.Trace(err)
			}
			return w, nil
		},
		Output: func(in worker.Worker, out any) error {
			w, ok := in.(*enginekit.ValueWorker)
			if !ok {
				return errors.Errorf("expected a database worker, got %T", in)
			}
			db, ok := w.Value().(*mongo.Database)
			if !ok {
				return errors.Errorf("expected a database worker, got one holding %T", w.Value())
			}
			target, ok := out.(**mongo.Database)
			if !ok {
				return errors.Errorf("expected **mongo.Database, got %T", out)
			}
			*target = db
			return nil
		},
	}
}
