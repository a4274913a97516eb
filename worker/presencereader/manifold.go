package presencereader

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/inputs"
)

// ManifoldConfig holds the names of the inputs a reader manifold reads,
// and the reader's settings.
type ManifoldConfig struct {
	// ClockName is the input whose output is a clock.Clock. It must not
	// be empty.
	ClockName string

	// DatabaseName is the input whose output is a *mongo.Database. It
	// must not be empty.
	DatabaseName string

	// Collection is the base collection's name. Empty means "presence".
	Collection string

	// Period and SyncInterval are passed to Config; zero means the
	// default. Neither may be negative.
	Period, SyncInterval time.Duration

	// LogLength and LogAge bound each model's change log (see Config);
	// zero means the default. Neither may be negative.
	LogLength int
	LogAge    time.Duration

	// Logger is optional; nil means silent.
	Logger Logger

	// NewWorker makes the worker; NewWorker in this package fits. It
	// must not be nil.
	NewWorker func(Config) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if err := config.names().Validate(); err != nil {
		return errors.Trace(err)
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	if config.SyncInterval < 0 {
		return errors.NotValidf("negative SyncInterval")
	}
	if config.LogLength < 0 {
		return errors.NotValidf("negative LogLength")
	}
	if config.LogAge < 0 {
		return errors.NotValidf("negative LogAge")
	}
	if config.NewWorker == nil {
		return errors.NotValidf("nil NewWorker")
	}
	return nil
}

func (config ManifoldConfig) names() inputs.Names {
	return inputs.Names{ClockName: config.ClockName, DatabaseName: config.DatabaseName, Collection: config.Collection}
}

// NewWorker is New as a seam for ManifoldConfig.NewWorker.
func NewWorker(config Config) (worker.Worker, error) {
	r, err := New(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return r, nil
}

// Manifold returns a dependency.Manifold that runs the controller's
// Reader. Its Output fills a **Reader, which watcher manifolds take.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: config.names().Inputs(),
		Start: inputs.Start(config.Validate, config.names(), func(clk clock.Clock, base *mongo.Collection) (Config, error) {
			return Config{
				Base:         base,
				Clock:        clk,
				Logger:       config.Logger,
				Period:       config.Period,
				SyncInterval: config.SyncInterval,
				LogLength:    config.LogLength,
				LogAge:       config.LogAge,
			}, nil
		}, config.NewWorker),
		Output: inputs.Output[*Reader]("*presencereader.Reader"),
	}
}
