package presence

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/catacomb"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencerecorder"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// The names of the manifolds that Manifolds returns, before any Prefix.
const (
	ClockName            = "presence-clock"
	PingBatcherName      = "presence-ping-batcher"
	PingerName           = "presence-pinger"
	WatcherName          = "presence-watcher"
	PrunerName           = "presence-pruner"
	LeaseStoreName       = "lease-store"
	LeaseManagerName     = "lease-manager"
	PresenceRecorderName = "presence-recorder"
)

// Logger is the logging the manifolds need; dependency.Logger fits.
type Logger interface {
	Tracef(string, ...any)
	Debugf(string, ...any)
	Infof(string, ...any)
	Errorf(string, ...any)
}

// ManifoldsConfig configures the whole set of presence manifolds for one
// model.
type ManifoldsConfig struct {
	// DatabaseName is the input whose Output is a *mongo.Database, a
	// manifold of your engine (DatabaseManifold makes one). It must not
	// be empty.
	DatabaseName string

	// Model is the model whose presence and leadership the set serves.
	// It must be a valid model tag.
	Model names.ModelTag

	// Clock gives the workers the time. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// Prefix is put before every manifold name (and the clock's), so
	// that one engine can hold the sets of several models. Empty means
	// none; DatabaseName is not prefixed.
	Prefix string

	// AgentKey, if not empty, adds a pinger that keeps this key alive:
	// the agent's own presence.
	AgentKey string

	// APIServer enables the presence recorder; other agents get a
	// disabled one.
	APIServer bool

	// Collection is the base presence collection's name; empty means
	// "presence". LeaseCollection is the lease collection's name; empty
	// means "leases".
	Collection, LeaseCollection string

	// FlushInterval, Period, SyncInterval and PruneInterval tune the
	// workers; zero means each worker's documented default. None may be
	// negative. Period must be the same for every process sharing the
	// database.
	FlushInterval, Period, SyncInterval, PruneInterval time.Duration

	// OnFlush and OnLoad, if not nil, are passed to the ping batcher
	// and the watcher, e.g. to feed metrics.
	OnFlush func(pingbatcher.FlushStats)
	OnLoad  func(watcher.LoadStats)
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldsConfig) Validate() error {
	if config.DatabaseName == "" {
		return errors.NotValidf("empty DatabaseName")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.AgentKey != "" {
		if err := schema.ValidateKey(config.AgentKey); err != nil {
			return errors.Annotate(err, "AgentKey")
		}
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"FlushInterval", config.FlushInterval},
		{"Period", config.Period},
		{"SyncInterval", config.SyncInterval},
		{"PruneInterval", config.PruneInterval},
	} {
		if d.value < 0 {
			return errors.NotValidf("negative %s", d.name)
		}
	}
	return nil
}

// Manifolds returns the presence and leadership manifolds for one model,
// wired so that an engine starts and restarts them in dependency order:
// the clock, then the ping batcher, the watcher, the pruner and the lease
// store on the database input, the lease manager on the lease store, the
// pinger (with AgentKey) on the batcher, and the presence recorder on the
// clock. The lease store of this set reads this model's leases only; a
// controller's store (leasestore.ManifoldConfig with no Model) reads every
// model's at once and can serve every model's manager instead. Consumers get a
// *pingbatcher.PingBatcher, a *watcher.Watcher, a leaseexpiry.Manager, a
// presencerecorder.Recorder and a *pinger.Pinger from Output.
//
// A config that does not validate gives manifolds whose start fails with
// the validation error, so that the engine reports it.
func Manifolds(config ManifoldsConfig) dependency.Manifolds {
	var logger pingbatcher.Logger
	if config.Logger != nil {
		logger = config.Logger
	}
	name := func(n string) string { return config.Prefix + n }
	clockName := name(ClockName)
	manifolds := dependency.Manifolds{
		clockName: clockManifold(config.Clock),
		name(PingBatcherName): guard(config, pingbatcher.Manifold(pingbatcher.ManifoldConfig{
			ClockName:     clockName,
			DatabaseName:  config.DatabaseName,
			Collection:    config.Collection,
			FlushInterval: config.FlushInterval,
			Logger:        logger,
			NewWorker: func(c pingbatcher.Config) (worker.Worker, error) {
				c.OnFlush = config.OnFlush
				return pingbatcher.NewWorker(c)
			},
		})),
		name(WatcherName): guard(config, watcher.Manifold(watcher.ManifoldConfig{
			ClockName:    clockName,
			DatabaseName: config.DatabaseName,
			Collection:   config.Collection,
			Model:        config.Model,
			Period:       config.Period,
			SyncInterval: config.SyncInterval,
			Logger:       logger,
			NewWorker: func(c watcher.Config) (worker.Worker, error) {
				c.OnLoad = config.OnLoad
				return watcher.NewWorker(c)
			},
		})),
		name(PrunerName): guard(config, pruner.Manifold(pruner.ManifoldConfig{
			ClockName:    clockName,
			DatabaseName: config.DatabaseName,
			Collection:   config.Collection,
			Model:        config.Model,
			Interval:     config.PruneInterval,
			Period:       config.Period,
			Logger:       logger,
			NewWorker:    pruner.NewWorker,
		})),
		name(LeaseStoreName): guard(config, leasestore.Manifold(leasestore.ManifoldConfig{
			ClockName:    clockName,
			DatabaseName: config.DatabaseName,
			Collection:   config.LeaseCollection,
			Model:        config.Model,
			Logger:       logger,
			NewWorker:    leasestore.NewWorker,
		})),
		name(LeaseManagerName): guard(config, leaseexpiry.Manifold(leaseexpiry.ManifoldConfig{
			ClockName: clockName,
			StoreName: name(LeaseStoreName),
			Model:     config.Model,
			Logger:    logger,
			NewWorker: leaseexpiry.NewWorker,
		})),
		name(PresenceRecorderName): presencerecorder.Manifold(presencerecorder.ManifoldConfig{
			ClockName: clockName,
			APIServer: config.APIServer,
			NewWorker: presencerecorder.NewRecorderWorker,
		}),
	}
	if config.AgentKey != "" {
		manifolds[name(PingerName)] = guard(config, pinger.Manifold(pinger.ManifoldConfig{
			ClockName:       clockName,
			DatabaseName:    config.DatabaseName,
			PingBatcherName: name(PingBatcherName),
			Collection:      config.Collection,
			Model:           config.Model,
			Key:             config.AgentKey,
			Period:          config.Period,
			Logger:          logger,
			NewWorker:       pinger.NewWorker,
		}))
	}
	return manifolds
}

// guard makes m's start fail with config's validation error, if any.
func guard(config ManifoldsConfig, m dependency.Manifold) dependency.Manifold {
	start := m.Start
	m.Start = func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
		if err := config.Validate(); err != nil {
			return nil, errors.Trace(err)
		}
		return start(ctx, getter)
	}
	return m
}

// clockManifold outputs clk as a clock.Clock.
func clockManifold(clk clock.Clock) dependency.Manifold {
	return dependency.Manifold{
		Start: func(context.Context, dependency.Getter) (worker.Worker, error) {
			if clk == nil {
				return nil, errors.NotValidf("nil Clock")
			}
			return newValueWorker(clk)
		},
		Output: func(in worker.Worker, out any) error {
			w, ok := in.(*valueWorker)
			if !ok {
				return errors.Errorf("expected a clock worker, got %T", in)
			}
			target, ok := out.(*clock.Clock)
			if !ok {
				return errors.Errorf("expected *clock.Clock, got %T", out)
			}
			*target = w.value.(clock.Clock)
			return nil
		},
	}
}

// valueWorker holds a value for a manifold's Output until it is killed.
type valueWorker struct {
	catacomb catacomb.Catacomb
	value    any
	onStop   func()
}

func newValueWorker(value any) (*valueWorker, error) {
	return newValueWorkerWithStop(value, nil)
}

func newValueWorkerWithStop(value any, onStop func()) (*valueWorker, error) {
	w := &valueWorker{value: value, onStop: onStop}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "value",
		Site: &w.catacomb,
		Work: func() error {
			<-w.catacomb.Dying()
			if w.onStop != nil {
				w.onStop()
			}
			return w.catacomb.ErrDying()
		},
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

// Kill is part of the worker.Worker interface.
func (w *valueWorker) Kill() {
	w.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (w *valueWorker) Wait() error {
	return w.catacomb.Wait()
}
