package leaseexpiry

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/inputs"
	"github.com/presencekit/presence/internal/schema"
)

// ManifoldConfig holds the names of the inputs a leadership manifold
// reads, and the manager's settings.
type ManifoldConfig struct {
	// ClockName is the input whose output is a clock.Clock. It must not
	// be empty.
	ClockName string

	// StoreName is the input whose output is a Store: the controller's
	// lease store (worker/leasestore's manifold). It must not be empty.
	StoreName string

	// Model is the model whose leadership is managed. It must be a valid
	// model tag.
	Model names.ModelTag

	// MaxDuration and ReleaseOnStop are passed to ManagerConfig; zero
	// values mean its defaults. MaxDuration must not be negative.
	MaxDuration   time.Duration
	ReleaseOnStop bool

	// Logger is optional; nil means silent.
	Logger Logger

	// NewWorker makes the worker; NewWorker in this package fits. It
	// must not be nil.
	NewWorker func(ManagerConfig) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if config.ClockName == "" {
		return errors.NotValidf("empty ClockName")
	}
	if config.StoreName == "" {
		return errors.NotValidf("empty StoreName")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.MaxDuration < 0 {
		return errors.NotValidf("negative MaxDuration")
	}
	if config.NewWorker == nil {
		return errors.NotValidf("nil NewWorker")
	}
	return nil
}

// NewWorker is NewManager as a seam for ManifoldConfig.NewWorker.
func NewWorker(config ManagerConfig) (worker.Worker, error) {
	m, err := NewManager(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return m, nil
}

// Manifold returns a dependency.Manifold that runs a leadership manager
// for one model over the store input. Its Output fills a *Manager (the
// interface) or a pointer to any narrower interface of the consumer's own
// that the manager implements, never the worker itself; anything else is
// an error naming both types.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{config.ClockName, config.StoreName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := config.Validate(); err != nil {
				return nil, errors.Trace(err)
			}
			var clk clock.Clock
			if err := getter.Get(config.ClockName, &clk); err != nil {
				return nil, errors.Trace(err)
			}
			var store Store
			if err := getter.Get(config.StoreName, &store); err != nil {
				return nil, errors.Trace(err)
			}
			w, err := config.NewWorker(ManagerConfig{
				Store:         store,
				Clock:         clk,
				Model:         config.Model,
				MaxDuration:   config.MaxDuration,
				ReleaseOnStop: config.ReleaseOnStop,
				Logger:        config.Logger,
			})
			return w, errors.Trace(err)
		},
		Output: inputs.Output[Manager]("leaseexpiry.Manager"),
	}
}
