package leasestore

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/inputs"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
)

// DefaultCollection is the lease collection's name when Collection is
// empty.
const DefaultCollection = "leases"

// ManifoldConfig holds the names of the inputs a lease-store manifold
// reads, and the store's settings.
type ManifoldConfig struct {
	// ClockName is the input whose output is a clock.Clock. It must not
	// be empty.
	ClockName string

	// DatabaseName is the input whose output is a *mongo.Database. It
	// must not be empty.
	DatabaseName string

	// Collection is the lease collection's name. Empty means
	// DefaultCollection.
	Collection string

	// Namespace is passed to Config; empty means DefaultNamespace.
	Namespace string

	// Model is passed to Config: the zero tag (a controller's store)
	// means every model, a set tag limits the store to that model. A set
	// tag must be valid.
	Model names.ModelTag

	// ClockSkew and MaxDuration are passed to the lease client; zero
	// means its defaults. Neither may be negative, and MaxDuration must
	// be the same for every controller sharing the collection.
	ClockSkew, MaxDuration time.Duration

	// MaxSleep, PruneEvery and CallTimeout are passed to Config; zero
	// values mean its defaults. None may be negative.
	MaxSleep    time.Duration
	PruneEvery  int
	CallTimeout time.Duration

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
	if config.Model != (names.ModelTag{}) {
		if err := schema.ValidateModel(config.Model); err != nil {
			return errors.Trace(err)
		}
	}
	if config.ClockSkew < 0 {
		return errors.NotValidf("negative ClockSkew")
	}
	if config.MaxDuration < 0 {
		return errors.NotValidf("negative MaxDuration")
	}
	if config.MaxSleep < 0 {
		return errors.NotValidf("negative MaxSleep")
	}
	if config.PruneEvery < 0 {
		return errors.NotValidf("negative PruneEvery")
	}
	if config.CallTimeout < 0 {
		return errors.NotValidf("negative CallTimeout")
	}
	if config.NewWorker == nil {
		return errors.NotValidf("nil NewWorker")
	}
	return nil
}

func (config ManifoldConfig) names() inputs.Names {
	collection := config.Collection
	if collection == "" {
		collection = DefaultCollection
	}
	return inputs.Names{ClockName: config.ClockName, DatabaseName: config.DatabaseName, Collection: collection}
}

// NewWorker is New as a seam for ManifoldConfig.NewWorker.
func NewWorker(config Config) (worker.Worker, error) {
	s, err := New(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return s, nil
}

// Manifold returns a dependency.Manifold that runs a controller's lease
// store over the database input. Its Output fills a **Store, or a pointer
// to any interface that *Store implements (a consumer's narrow interface,
// such as *leaseexpiry.Store), and nothing else.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: config.names().Inputs(),
		Start: inputs.Start(config.Validate, config.names(), func(clk clock.Clock, coll *mongo.Collection) (Config, error) {
			client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clk, ClockSkew: config.ClockSkew, MaxDuration: config.MaxDuration, Logger: config.Logger})
			return Config{
				Client:      client,
				Clock:       clk,
				Namespace:   config.Namespace,
				Model:       config.Model,
				MaxSleep:    config.MaxSleep,
				PruneEvery:  config.PruneEvery,
				CallTimeout: config.CallTimeout,
				Logger:      config.Logger,
			}, errors.Trace(err)
		}, config.NewWorker),
		Output: inputs.Output[*Store]("*leasestore.Store"),
	}
}
