// Package enginekit holds two small helpers for juju/worker/v4 dependency
// engines that every agent ends up writing: a manifold that offers a
// ready value, and a way to read a running engine's output. They have no
// test-only dependencies, so a production main can use them; package
// agenttest offers the same for tests.
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
