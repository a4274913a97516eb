package presence

import (
	"context"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/enginekit"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

// ErrControllerWorkerStopped is what the manifolds of ControllerOutputs
// stop with when the controller worker they offer stops: the nested engine
// then waits for a new one.
const ErrControllerWorkerStopped = errors.ConstError("controller worker stopped")

// ControllerOutputs are the outputs of a running controller set, offered
// to the model sets of a nested engine. Juju runs each model's workers in
// an engine of its own, started by a controller worker that has the
// controller set's outputs as inputs; that worker puts
// ControllerOutputs.Manifolds beside each model's ModelManifolds, so that
// stopping one model's engine leaves every other model alone.
type ControllerOutputs struct {
	// Prefix is the controller set's Prefix: the model sets'
	// ControllerPrefix.
	Prefix string

	// DatabaseName is the name the database is offered under: the
	// model sets' DatabaseName. It must not be empty.
	DatabaseName string

	// ClockName, if not empty, is the name the clock is offered under
	// (not prefixed): the model sets' ClockName. Empty means ClockName,
	// the constant, after Prefix.
	ClockName string

	// Database, Clock, PingBatcher, Reader and LeaseStore are the
	// controller's. None may be nil.
	Database    *mongo.Database
	Clock       clock.Clock
	PingBatcher *pingbatcher.PingBatcher
	Reader      *presencereader.Reader
	LeaseStore  *leasestore.Store
}

// Validate returns a NotValid error naming the first bad field.
func (o ControllerOutputs) Validate() error {
	switch {
	case o.DatabaseName == "":
		return errors.NotValidf("empty DatabaseName")
	case o.Database == nil:
		return errors.NotValidf("nil Database")
	case o.Clock == nil:
		return errors.NotValidf("nil Clock")
	case o.PingBatcher == nil:
		return errors.NotValidf("nil PingBatcher")
	case o.Reader == nil:
		return errors.NotValidf("nil Reader")
	case o.LeaseStore == nil:
		return errors.NotValidf("nil LeaseStore")
	}
	return nil
}

// Manifolds returns manifolds that offer the outputs under the names that
// ModelManifolds expects. The batcher's, the reader's and the lease
// store's stop with ErrControllerWorkerStopped once that worker stops, so the model
// workers that depend on them stop too. Outputs fill a pointer to the
// value's type or to any interface it implements (a *pinger.PingRecorder
// for the batcher, say). Invalid outputs give manifolds whose start fails
// with the validation error.
func (o ControllerOutputs) Manifolds() dependency.Manifolds {
	offer := func(value any, dead <-chan struct{}) dependency.Manifold {
		return dependency.Manifold{
			Start: func(context.Context, dependency.Getter) (worker.Worker, error) {
				if err := o.Validate(); err != nil {
					return nil, errors.Trace(err)
				}
				return enginekit.NewValueWorkerUntil(value, dead, ErrControllerWorkerStopped)
			},
			Output: enginekit.ValueOutput,
		}
	}
	var batcherDead, readerDead, storeDead <-chan struct{}
	if o.PingBatcher != nil {
		batcherDead = o.PingBatcher.Dead()
	}
	if o.Reader != nil {
		readerDead = o.Reader.Dead()
	}
	if o.LeaseStore != nil {
		storeDead = o.LeaseStore.Dead()
	}
	clockName := o.ClockName
	if clockName == "" {
		clockName = o.Prefix + ClockName
	}
	return dependency.Manifolds{
		o.DatabaseName:             offer(o.Database, nil),
		clockName:                  offer(o.Clock, nil),
		o.Prefix + PingBatcherName: offer(o.PingBatcher, batcherDead),
		o.Prefix + ReaderName:      offer(o.Reader, readerDead),
		o.Prefix + LeaseStoreName:  offer(o.LeaseStore, storeDead),
	}
}
