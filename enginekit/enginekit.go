// Package enginekit holds two small helpers for juju/worker/v4 dependency
// engines that every agent ends up writing: a manifold that offers a
// ready value, and a way to read a running engine's output. They have no
// test-only dependencies, so a production main can use them; package
// agenttest offers the same for tests.
package enginekit

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"

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
			return &valueWorker{Worker: workertest.NewErrorWorker(nil), value: value}, nil
		},
		Output: func(in worker.Worker, out any) error {
			w, ok := in.(*valueWorker)
			if !ok {
				return errors.Errorf("expected a value worker, got %T", in)
			}
			if !inputs.Assign(w.value, out) {
				return errors.Errorf("expected a pointer to %T or to an interface it implements, got %T", w.value, out)
			}
			return nil
		},
	}
}

type valueWorker struct {
	worker.Worker
	value any
}

var probeSeq atomic.Int64

// Output waits until the manifold called name runs in engine and
// fills out from its Output, as a consumer's getter.Get would: out is a
// pointer to what the manifold outputs (or to an interface it
// implements). It installs a short-lived manifold of its own that
// uninstalls itself once it has the output, and fails after timeout, or
// when the engine stops first.
func Output(engine *dependency.Engine, name string, out any, timeout time.Duration) error {
	got := make(chan error, 1)
	probe := fmt.Sprintf("enginekit-output-%d", probeSeq.Add(1))
	err := engine.Install(probe, dependency.Manifold{
		Inputs: []string{name},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			err := getter.Get(name, out)
			if errors.Is(err, dependency.ErrMissing) {
				// The engine starts this again once name runs.
				return nil, err
			}
			select {
			case got <- errors.Trace(err):
			default:
			}
			return nil, dependency.ErrUninstall
		},
	})
	if err != nil {
		return errors.Annotatef(err, "cannot wait for %q", name)
	}
	dead := make(chan struct{})
	go func() {
		_ = engine.Wait()
		close(dead)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		return errors.Annotatef(err, "cannot get the output of %q", name)
	case <-timer.C:
		return errors.Timeoutf("output of %q after %v", name, timeout)
	case <-dead:
		return errors.Errorf("engine stopped before %q ran", name)
	}
}
