package main

import (
	"context"
	"sync"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencerecorder"
	"github.com/presencekit/presence/worker/watcher"
)

// outputs is what one model's manifold set gives its consumers.
type outputs struct {
	base     *mongo.Collection
	batcher  *pingbatcher.PingBatcher
	watcher  *watcher.Watcher
	manager  leaseexpiry.Manager
	recorder presencerecorder.Recorder
}

// registry holds the current outputs of every model's set. The engine
// replaces them when it restarts workers; the simulation and the HTTP
// handlers always use the latest.
type registry struct {
	models []names.ModelTag

	mu      sync.Mutex
	current []outputs
	changed chan struct{}
}

func newRegistry(models []names.ModelTag) *registry {
	return &registry{models: models, current: make([]outputs, len(models)), changed: make(chan struct{})}
}

func (r *registry) set(i int, o outputs) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current[i] = o
	close(r.changed)
	r.changed = make(chan struct{})
}

// get returns model i's outputs and a channel closed when any changes.
func (r *registry) get(i int) (outputs, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current[i], r.changed
}

// waitReady blocks until every model has outputs.
func (r *registry) waitReady(ctx context.Context) error {
	for {
		ready := true
		var changed <-chan struct{}
		for i := range r.models {
			var o outputs
			o, changed = r.get(i)
			ready = ready && o.watcher != nil
		}
		if ready {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// modelIndex returns the index of the model whose UUID is uuid, or which is
// the decimal index given, or -1.
func (r *registry) modelIndex(id string) int {
	for i, m := range r.models {
		if m.Id() == id || id == itoa(i) {
			return i
		}
	}
	return -1
}

// publisher returns a manifold that publishes model i's outputs.
func (r *registry) publisher(i int, prefix string) dependency.Manifold {
	inputs := []string{
		databaseName,
		presence.PingBatcherName, prefix + presence.WatcherName,
		prefix + presence.LeaseManagerName, prefix + presence.PresenceRecorderName,
	}
	return dependency.Manifold{
		Inputs: inputs,
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			var o outputs
			var db *mongo.Database
			for j, out := range []any{&db, &o.batcher, &o.watcher, &o.manager, &o.recorder} {
				if err := getter.Get(inputs[j], out); err != nil {
					return nil, errors.Trace(err)
				}
			}
			o.base = db.Collection(baseCollection)
			r.set(i, o)
			return newHoldWorker()
		},
	}
}

// holdWorker does nothing until it is killed.
type holdWorker struct {
	catacomb catacomb.Catacomb
}

func newHoldWorker() (worker.Worker, error) {
	w := &holdWorker{}
	err := catacomb.Invoke(catacomb.Plan{
		Name: "hold",
		Site: &w.catacomb,
		Work: func() error {
			<-w.catacomb.Dying()
			return w.catacomb.ErrDying()
		},
	})
	return w, errors.Trace(err)
}

// Kill is part of the worker.Worker interface.
func (w *holdWorker) Kill() { w.catacomb.Kill(nil) }

// Wait is part of the worker.Worker interface.
func (w *holdWorker) Wait() error { return w.catacomb.Wait() }
