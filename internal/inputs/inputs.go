// Package inputs fetches the dependency-engine inputs that every presence
// manifold shares: a clock and a database, from which it derives the base
// collection.
package inputs

import (
	"context"
	"reflect"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
)

// Names are the input names a presence manifold reads.
type Names struct {
	// ClockName is the input whose output is a clock.Clock.
	ClockName string
	// DatabaseName is the input whose output is a *mongo.Database.
	DatabaseName string
	// Collection names the base collection; empty means
	// schema.DefaultBase.
	Collection string
}

// Validate returns a NotValid error naming the first empty input name.
func (n Names) Validate() error {
	if n.ClockName == "" {
		return errors.NotValidf("empty ClockName")
	}
	if n.DatabaseName == "" {
		return errors.NotValidf("empty DatabaseName")
	}
	return nil
}

// Inputs returns the names as a manifold's Inputs.
func (n Names) Inputs() []string {
	return []string{n.ClockName, n.DatabaseName}
}

// Get fetches the clock and the base collection.
func (n Names) Get(getter dependency.Getter) (clock.Clock, *mongo.Collection, error) {
	var clk clock.Clock
	if err := getter.Get(n.ClockName, &clk); err != nil {
		return nil, nil, errors.Trace(err)
	}
	var db *mongo.Database
	if err := getter.Get(n.DatabaseName, &db); err != nil {
		return nil, nil, errors.Trace(err)
	}
	if clk == nil {
		return nil, nil, errors.NotValidf("nil clock from %q", n.ClockName)
	}
	if db == nil {
		return nil, nil, errors.NotValidf("nil database from %q", n.DatabaseName)
	}
	name := n.Collection
	if name == "" {
		name = schema.DefaultBase
	}
	return clk, db.Collection(name), nil
}

// Start returns a dependency.StartFunc that validates the manifold's
// config, gets the clock and the base collection, and starts the worker
// that newWorker makes from the config that build returns.
func Start[C any](validate func() error, names Names, build func(clock.Clock, *mongo.Collection) (C, error), newWorker func(C) (worker.Worker, error)) dependency.StartFunc {
	return func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
		if err := validate(); err != nil {
			return nil, errors.Trace(err)
		}
		clk, base, err := names.Get(getter)
		if err != nil {
			return nil, errors.Trace(err)
		}
		config, err := build(clk, base)
		if err != nil {
			return nil, errors.Trace(err)
		}
		w, err := newWorker(config)
		return w, errors.Trace(err)
	}
}

// Output returns a dependency.OutputFunc that hands the worker, which must
// be a T, to a *T or to a pointer to any interface that T implements (a
// consumer's narrow interface, or a fake's); name is T's name for the
// errors, which name both the expected and the actual types.
func Output[T any](name string) dependency.OutputFunc {
	return func(in worker.Worker, out any) error {
		w, ok := in.(T)
		if !ok {
			return errors.Errorf("expected %s, got %T", name, in)
		}
		if !Assign(w, out) {
			return errors.Errorf("expected *%s or a pointer to an interface it implements, got %T", name, out)
		}
		return nil
	}
}

// Assign sets *out to value when out is a non-nil pointer to value's own
// type or to an interface value implements, and reports whether it did:
// what an Output needs to hand a worker to consumers that ask for a
// narrow interface of their own. An interface that includes
// worker.Worker's methods is refused: a consumer gets what the worker
// offers, never the power to kill it or wait for it.
func Assign(value, out any) bool {
	target := reflect.ValueOf(out)
	v := reflect.ValueOf(value)
	if target.Kind() != reflect.Pointer || target.IsNil() || !v.Type().AssignableTo(target.Elem().Type()) {
		return false
	}
	if t := target.Elem().Type(); t.Kind() == reflect.Interface && t.Implements(workerType) {
		return false
	}
	target.Elem().Set(v)
	return true
}

var workerType = reflect.TypeFor[worker.Worker]()
