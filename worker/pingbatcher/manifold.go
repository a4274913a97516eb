package pingbatcher

import (
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/inputs"
)

// ManifoldConfig holds the names of the inputs a ping batcher manifold
// reads, and the batcher's settings.
type ManifoldConfig struct {
	// ClockName is the input whose output is a clock.Clock. It must not
	// be empty.
	ClockName string

	// DatabaseName is the input whose output is a *mongo.Database. It
	// must not be empty.
	DatabaseName string

	// Collection is the base collection's name. Empty means "presence".
	Collection string

	// FlushInterval and Period are passed to Config; zero means the
	// default. Neither may be negative.
	FlushInterval, Period time.Duration

	// Logger is optional; nil means silent.
	Logger Logger

	// NewWorker makes the worker; New fits. It must not be nil.
	NewWorker func(Config) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if err := config.names().Validate(); err != nil {
		return errors.Trace(err)
	}
	if config.FlushInterval < 0 {
		return errors.NotValidf("negative FlushInterval")
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

// NewWorker is New as a seam for ManifoldConfig.NewWorker.
func NewWorker(config Config) (worker.Worker, error) {
	b, err := New(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return b, nil
}

// Manifold returns a dependency.Manifold that runs a PingBatcher. Its
// Output fills a **PingBatcher, or a pointer to any interface that
// *PingBatcher implements: *pinger.PingRecorder, *presence.Batcher or a
// consumer's own.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: config.names().Inputs(),
		Start: inputs.Start(config.Validate, config.names(), func(clk clock.Clock, base *mongo.Collection) (Config, error) {
			return Config{
				Base:          base,
				FlushInterval: config.FlushInterval,
				Period:        config.Period,
				Clock:         clk,
				Logger:        config.Logger,
			}, nil
		}, config.NewWorker),
		Output: inputs.Output[*PingBatcher]("*pingbatcher.PingBatcher"),
	}
}
