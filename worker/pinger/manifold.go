package pinger

import (
	"context"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/inputs"
	"github.com/presencekit/presence/internal/schema"
)

// ManifoldConfig holds the names of the inputs a pinger manifold reads,
// and the pinger's settings.
type ManifoldConfig struct {
	// ClockName is the input whose output is a clock.Clock. It must not
	// be empty.
	ClockName string

	// DatabaseName is the input whose output is a *mongo.Database. It
	// must not be empty.
	DatabaseName string

	// PingBatcherName is the input whose output is a PingRecorder (a
	// ping batcher manifold). It must not be empty.
	PingBatcherName string

	// Collection is the base collection's name. Empty means "presence".
	Collection string

	// Model is the key's model. It must be a valid model tag.
	Model names.ModelTag

	// Key is the key to keep alive. It must not be empty.
	Key string

	// Period is passed to Config; zero means the default.
	Period time.Duration

	// Logger is optional; nil means silent.
	Logger Logger

	// NewWorker makes and starts the worker; NewWorker in this package
	// fits. It must not be nil.
	NewWorker func(Config) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if err := config.names().Validate(); err != nil {
		return errors.Trace(err)
	}
	if config.PingBatcherName == "" {
		return errors.NotValidf("empty PingBatcherName")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if err := schema.ValidateKey(config.Key); err != nil {
		return errors.Trace(err)
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	if config.NewWorker == nil {
		return errors.NotValidf("nil NewWorker")
	}
	return nil
}

func (config ManifoldConfig) names() inputs.Names {
	return inputs.Names{ClockName: config.ClockName, DatabaseName: config.DatabaseName, Collection: config.Collection}
}

// NewWorker makes a Pinger and starts it, as a seam for
// ManifoldConfig.NewWorker.
func NewWorker(config Config) (worker.Worker, error) {
	p, err := New(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	if err := p.Start(); err != nil {
		return nil, errors.Trace(err)
	}
	return p, nil
}

// Manifold returns a dependency.Manifold that keeps config.Key alive
// through the ping batcher input. Its Output fills a **Pinger, or a
// pointer to any interface that *Pinger implements.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: append(config.names().Inputs(), config.PingBatcherName),
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := config.Validate(); err != nil {
				return nil, errors.Trace(err)
			}
			clk, base, err := config.names().Get(getter)
			if err != nil {
				return nil, errors.Trace(err)
			}
			var recorder PingRecorder
			if err := getter.Get(config.PingBatcherName, &recorder); err != nil {
				return nil, errors.Trace(err)
			}
			w, err := config.NewWorker(Config{
				Base:     base,
				Model:    config.Model,
				Key:      config.Key,
				Recorder: func() PingRecorder { return recorder },
				Clock:    clk,
				Period:   config.Period,
				Logger:   config.Logger,
			})
			return w, errors.Trace(err)
		},
		Output: inputs.Output[*Pinger]("*pinger.Pinger"),
	}
}
