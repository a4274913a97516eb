package presencereader

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// watchChanges wakes the loop whenever a ping document is written, where
// the server has change streams (a MongoDB replica set), so that a
// Disconnect or a key coming up is seen within the time of one read
// rather than of one SyncInterval. Where it has none (a standalone
// server, the embedded one) it says so once and returns: the reader
// polls every SyncInterval, as it does beside a stream anyway, so a
// stream that misses an event never delays detection beyond a sync. A
// stream that ends with an error after bringing news is opened again at
// once; one that brought none, or a failed reopening, leaves the reader
// polling until it is restarted. It returns when ctx ends.
// It sets no timer, so that it adds nothing to a test clock.
func (r *Reader) watchChanges(ctx context.Context) {
	// Only the fact of a write matters: the load reads what it wrote.
	pipeline := mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"insert", "update", "replace"}}}}}}},
		{{Key: "$project", Value: bson.D{{Key: "_id", Value: 1}}}},
	}
	for ctx.Err() == nil {
		stream, err := r.openStream(ctx, pipeline)
		if err != nil {
			if ctx.Err() == nil && r.config.Logger != nil {
				r.config.Logger.Debugf("%s: no change stream (%v); polling every %v", r, err, r.config.SyncInterval)
			}
			return
		}
		events := 0
		for stream.Next(ctx) {
			events++
			select {
			case r.wakes <- struct{}{}:
			default:
			}
		}
		err = stream.Err()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), minReadTimeout)
		_ = stream.Close(closeCtx)
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		if r.config.Logger != nil {
			r.config.Logger.Debugf("%s: change stream ended after %d events: %v", r, events, err)
		}
		if events == 0 {
			// A stream that fails at once would fail in a loop.
			return
		}
	}
}

// openStream opens a change stream on the ping documents within a load's
// deadline.
func (r *Reader) openStream(ctx context.Context, pipeline mongo.Pipeline) (*mongo.ChangeStream, error) {
	ctx, cancel := context.WithTimeout(ctx, max(r.config.SyncInterval, minReadTimeout))
	defer cancel()
	return r.pings.Watch(ctx, pipeline, options.ChangeStream().SetMaxAwaitTime(r.config.SyncInterval))
}
