// Package enginekit holds small helpers for juju/worker/v4 dependency
// engines that every agent ends up writing: a worker that holds a value
// for a manifold's Output, a manifold that offers a ready value, and a way
// to read a running engine's output. They have no test-only dependencies,
// so a production main can use them; package agenttest offers the same for
// tests.
package enginekit

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/inputs"
)

// ValueManifold returns a manifold with no inputs whose worker runs until
// it is killed and whose Output fills a pointer to value's own type or to
// any interface value implements: how a test (or an engine) offers a
// ready value such as a *mongo.Database, a clock.Clock or a fake under a
// manifold name.
func ValueManifold(value any) dependency.Manifold {
	return dependency.Manifold{
		Start: func(context.Context, dependency.Getter) (worker.Worker, error) {
			if value == nil {
				return nil, errors.NotValidf("nil value")
			}
			return NewValueWorker(value, nil)
		},
		Output: ValueOutput,
	}
}

// ValueOutput is the Output of a manifold whose worker is a ValueWorker:
// it fills out, a pointer to the held value's type or to an interface the
// value implements, and otherwise returns an error naming both types.
func ValueOutput(in worker.Worker, out any) error {
	w, ok := in.(*ValueWorker)
	if !ok {
		return errors.Errorf("expected a value worker, got %T", in)
	}
	if !inputs.Assign(w.value, out) {
		return errors.Errorf("expected a pointer to %T or to an interface it implements, got %T", w.value, out)
	}
	return nil
}

// ValueWorker is a worker that does nothing but hold a value for a
// manifold's Output until it is killed (or, made by NewValueWorkerUntil,
// until what the value belongs to stops). It is safe for concurrent use.
type ValueWorker struct {
	catacomb catacomb.Catacomb
	value    any
}

// NewValueWorker returns a running ValueWorker holding value. When it is
// killed it calls onStop, if not nil, once, before Wait returns: where a
// value with resources of its own (a database client) is released.
func NewValueWorker(value any, onStop func()) (*ValueWorker, error) {
	return newValueWorker(value, nil, nil, onStop)
}

// NewValueWorkerUntil returns a running ValueWorker holding value that
// also stops, with err, as soon as dead is closed: how an engine offers a
// worker that runs elsewhere (another engine's) and learns of its end. A
// nil dead never closes.
func NewValueWorkerUntil(value any, dead <-chan struct{}, err error) (*ValueWorker, error) {
	return newValueWorker(value, dead, err, nil)
}

func newValueWorker(value any, dead <-chan struct{}, deadErr error, onStop func()) (*ValueWorker, error) {
	w := &ValueWorker{value: value}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "value",
		Site: &w.catacomb,
		Work: func() error {
			if onStop != nil {
				defer onStop()
			}
			select {
			case <-w.catacomb.Dying():
				return w.catacomb.ErrDying()
			case <-dead:
				return deadErr
			}
		},
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

// Value returns the value w holds.
func (w *ValueWorker) Value() any {
	return w.value
}

// Kill is part of the worker.Worker interface.
func (w *ValueWorker) Kill() {
	w.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (w *ValueWorker) Wait() error {
	return w.catacomb.Wait()
}

var probeSeq atomic.Int64

// stoppedPoll is how often Output looks whether the engine stopped.
const stoppedPoll = 50 * time.Millisecond

// Output waits until the manifold called name runs in engine and fills
// out from its Output, as a consumer's getter.Get would: out is a
// non-nil pointer to what the manifold outputs (or to an interface it
// implements). It installs a short-lived manifold of its own that
// uninstalls itself once it has the output, and fails after timeout, or
// when the engine stops first. Once it has returned it never writes to
// out: a probe that runs later finds it gave up and uninstalls itself.
func Output(engine *dependency.Engine, name string, out any, timeout time.Duration) error {
	target := reflect.ValueOf(out)
	if target.Kind() != reflect.Pointer || target.IsNil() {
		return errors.NotValidf("out %T (want a non-nil pointer)", out)
	}
	type result struct {
		value reflect.Value
		err   error
	}
	var gaveUp atomic.Bool
	defer gaveUp.Store(true)
	got := make(chan result, 1)
	probe := fmt.Sprintf("enginekit-output-%d", probeSeq.Add(1))
	err := engine.Install(probe, dependency.Manifold{
		Inputs: []string{name},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if gaveUp.Load() {
				return nil, dependency.ErrUninstall
			}
			value := reflect.New(target.Type().Elem())
			err := getter.Get(name, value.Interface())
			if errors.Is(err, dependency.ErrMissing) {
				// The engine starts this again once name runs.
				return nil, err
			}
			select {
			case got <- result{value: value, err: errors.Trace(err)}:
			default:
			}
			return nil, dependency.ErrUninstall
		},
	})
	if err != nil {
		return errors.Annotatef(err, "cannot wait for %q", name)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	poll := time.NewTicker(stoppedPoll)
	defer poll.Stop()
	for {
		select {
		case r := <-got:
			if r.err != nil {
				return errors.Annotatef(r.err, "cannot get the output of %q", name)
			}
			target.Elem().Set(r.value.Elem())
			return nil
		case <-timer.C:
			return errors.Timeoutf("output of %q after %v", name, timeout)
		case <-poll.C:
			if state := engine.Report()[dependency.KeyState]; state == "stopping" || state == "stopped" {
				return errors.Errorf("engine stopped before %q ran", name)
			}
		}
	}
}
