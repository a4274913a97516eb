package presencerecorder

import (
	"context"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/inputs"
)

// ManifoldConfig holds the name of the clock input and whether this agent
// is an API server.
type ManifoldConfig struct {
	// ClockName is the input whose output is a clock.Clock. It must not
	// be empty.
	ClockName string

	// APIServer enables the recorder; other agents get a disabled one.
	APIServer bool

	// NewWorker makes the worker; NewRecorderWorker fits. It must not be
	// nil.
	NewWorker func(WorkerConfig) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if config.ClockName == "" {
		return errors.NotValidf("empty ClockName")
	}
	if config.NewWorker == nil {
		return errors.NotValidf("nil NewWorker")
	}
	return nil
}

// NewRecorderWorker is NewWorker as a seam for ManifoldConfig.NewWorker.
func NewRecorderWorker(config WorkerConfig) (worker.Worker, error) {
	w, err := NewWorker(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

// Manifold returns a dependency.Manifold that runs a recorder Worker. Its
// Output fills a *Recorder, or a pointer to any interface the recorder
// implements.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{config.ClockName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := config.Validate(); err != nil {
				return nil, errors.Trace(err)
			}
			var clk clock.Clock
			if err := getter.Get(config.ClockName, &clk); err != nil {
				return nil, errors.Trace(err)
			}
			w, err := config.NewWorker(WorkerConfig{Clock: clk, APIServer: config.APIServer})
			return w, errors.Trace(err)
		},
		Output: func(in worker.Worker, out any) error {
			w, ok := in.(*Worker)
			if !ok {
				return errors.Errorf("expected *presencerecorder.Worker, got %T", in)
			}
			if !inputs.Assign(w.Recorder(), out) {
				return errors.Errorf("expected *presencerecorder.Recorder or a pointer to an interface it implements, got %T", out)
			}
			return nil
		},
	}
}
