package leaseexpiry

import (
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/inputs"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
)

// DefaultCollection is the lease collection's name when Collection is
// empty.
const DefaultCollection = "leases"

// ManifoldConfig holds the names of the inputs a leadership manifold
// reads, and the manager's settings.
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

	// Model is the model whose leadership is managed. It must be a valid
	// model tag.
	Model names.ModelTag

	// ClockSkew is passed to the lease client; zero means its default.
	// It must not be negative.
	ClockSkew time.Duration

	// MaxSleep, MaxDuration and ReleaseOnStop are passed to
	// ManagerConfig; zero values mean its defaults.
	MaxSleep, MaxDuration time.Duration
	ReleaseOnStop         bool

	// Logger is optional; nil means silent.
	Logger Logger

	// NewWorker makes the worker; NewWorker in this package fits. It
	// must not be nil.
	NewWorker func(ManagerConfig) (worker.Worker, error)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldConfig) Validate() error {
	if err := config.names().Validate(); err != nil {
		return errors.Trace(err)
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.ClockSkew < 0 {
		return errors.NotValidf("negative ClockSkew")
	}
	if config.MaxSleep < 0 {
		return errors.NotValidf("negative MaxSleep")
	}
	if config.MaxDuration < 0 {
		return errors.NotValidf("negative MaxDuration")
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

// NewWorker is NewManager as a seam for ManifoldConfig.NewWorker.
func NewWorker(config ManagerConfig) (worker.Worker, error) {
	m, err := NewManager(config)
	if err != nil {
		return nil, errors.Trace(err)
	}
	return m, nil
}

// Manifold returns a dependency.Manifold that runs a leadership manager
// over the database input. Its Output fills a *Manager, and nothing else.
func Manifold(config ManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: config.names().Inputs(),
		Start: inputs.Start(config.Validate, config.names(), func(clk clock.Clock, coll *mongo.Collection) (ManagerConfig, error) {
			client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clk, ClockSkew: config.ClockSkew})
			return ManagerConfig{
				Client:        client,
				Clock:         clk,
				Model:         config.Model,
				MaxSleep:      config.MaxSleep,
				MaxDuration:   config.MaxDuration,
				ReleaseOnStop: config.ReleaseOnStop,
				Logger:        config.Logger,
			}, errors.Trace(err)
		}, config.NewWorker),
		Output: inputs.Output[Manager]("leaseexpiry.Manager"),
	}
}
