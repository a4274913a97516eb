package watcher

import (
	"context"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/inputs"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/presencereader"
)

// ManifoldConfig holds the name of the reader a watcher manifold reads,
// and the model it watches.
type ManifoldConfig struct {
	// ReaderName is the input whose output is the controller's
	// *presencereader.Reader. It must not be empty.
	ReaderName string

	// Model is the model to watch. It must be a valid model tag.
	Model names.ModelTag

	// Logger is optional; nil means silent.
	Logger Logger

	// NewWorker makes the worker; NewWorker in this package fits. It
	// must not be nil.
	NewWorker func(Config) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if config.ReaderName == "" {
		return errors.NotValidf("empty ReaderName")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.NewWorker == nil {
		return errors.NotValidf("nil NewWorker")
	}
	return nil
}

// NewWorker is New as a seam for ManifoldConfig.NewWorker.
func NewWorker(config Config) (worker.Worker, error) {
	w, err := New(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

// Manifold returns a dependency.Manifold that runs one model's Watcher
// over the controller's reader. Its Output fills a **Watcher.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{config.ReaderName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := config.Validate(); err != nil {
				return nil, errors.Trace(err)
			}
			var reader *presencereader.Reader
			if err := getter.Get(config.ReaderName, &reader); err != nil {
				return nil, errors.Trace(err)
			}
			if reader == nil {
				return nil, errors.NotValidf("nil reader from %q", config.ReaderName)
			}
			w, err := config.NewWorker(Config{Reader: reader, Model: config.Model, Logger: config.Logger})
			return w, errors.Trace(err)
		},
		Output: inputs.Output[*Watcher]("*watcher.Watcher"),
	}
}
