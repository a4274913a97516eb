package presence

import (
	"context"
	"maps"
	"sort"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/enginekit"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/presencerecorder"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// The names of the controller set's manifolds (ControllerManifolds),
// before any Prefix. A controller runs one of each, whatever the number of
// models it hosts. The set has no clock manifold when its config names
// the engine's own (ClockName).
const (
	ClockName       = "presence-clock"
	PingBatcherName = "presence-ping-batcher"
	ReaderName      = "presence-reader"
	PrunerName      = "presence-pruner"
	LeaseStoreName  = "presence-lease-store"
)

// The names of a model set's manifolds (ModelManifolds), before its
// Prefix.
const (
	PingerName           = "presence-pinger"
	AgentName            = "presence-agent"
	WatcherName          = "presence-watcher"
	LeaseManagerName     = "presence-lease-manager"
	PresenceRecorderName = "presence-recorder"
)

// Logger is the logging the manifolds need; dependency.Logger fits.
type Logger interface {
	Tracef(string, ...any)
	Debugf(string, ...any)
	Infof(string, ...any)
	Errorf(string, ...any)
}

// ControllerManifoldsConfig configures the controller set: one clock, one
// ping batcher, one presence reader, one pruner and one lease store
// serving every model.
type ControllerManifoldsConfig struct {
	// DatabaseName is the input whose Output is a *mongo.Database, a
	// manifold of your engine (DatabaseManifold makes one). It must not
	// be empty.
	DatabaseName string

	// ClockName, if not empty, is the input whose Output is a
	// clock.Clock: the engine's own clock manifold, which the workers
	// then use. It is not prefixed, and the set adds no clock of its
	// own.
	ClockName string

	// Clock gives the workers the time when ClockName is empty: the set
	// adds a clock manifold (named ClockName, the constant, after
	// Prefix) that outputs it. It must not be nil then.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// Prefix is put before every manifold name; empty means none.
	// DatabaseName and ClockName are not prefixed.
	Prefix string

	// Collection is the base presence collection's name; empty means
	// "presence". LeaseCollection is the lease collection's name; empty
	// means "leases".
	Collection, LeaseCollection string

	// FlushInterval, Period, SyncInterval and PruneInterval tune the
	// workers; zero means each worker's documented default. None may be
	// negative. Period must be the same for every process sharing the
	// database, and for the model sets' pingers.
	FlushInterval, Period, SyncInterval, PruneInterval time.Duration

	// LeaseClockSkew and LeaseMaxDuration are the lease client's
	// ClockSkew and MaxDuration (see package lease); zero means its
	// defaults. Neither may be negative, and LeaseMaxDuration must be
	// the same for every controller sharing the lease collection.
	LeaseClockSkew, LeaseMaxDuration time.Duration

	// ChangeLogLength and ChangeLogAge bound each model's change log,
	// which lets subscribers resume after a position (the reader's
	// LogLength and LogAge); zero means its defaults, and neither may
	// be negative.
	ChangeLogLength int
	ChangeLogAge    time.Duration

	// OnFlush and OnLoad, if not nil, are passed to the ping batcher
	// and the reader, e.g. to feed metrics.
	OnFlush func(pingbatcher.FlushStats)
	OnLoad  func(presencereader.LoadStats)
}

// Validate returns a NotValid error naming the first bad field.
func (config ControllerManifoldsConfig) Validate() error {
	if config.DatabaseName == "" {
		return errors.NotValidf("empty DatabaseName")
	}
	if config.ClockName == "" && config.Clock == nil {
		return errors.NotValidf("nil Clock and empty ClockName")
	}
	if config.ChangeLogLength < 0 {
		return errors.NotValidf("negative ChangeLogLength")
	}
	return errors.Trace(validateDurations(map[string]time.Duration{
		"FlushInterval":    config.FlushInterval,
		"Period":           config.Period,
		"SyncInterval":     config.SyncInterval,
		"PruneInterval":    config.PruneInterval,
		"LeaseClockSkew":   config.LeaseClockSkew,
		"LeaseMaxDuration": config.LeaseMaxDuration,
		"ChangeLogAge":     config.ChangeLogAge,
	}))
}

// clockName returns the name of the clock input of the set's workers.
func (config ControllerManifoldsConfig) clockName() string {
	if config.ClockName != "" {
		return config.ClockName
	}
	return config.Prefix + ClockName
}

// ControllerManifolds returns the controller set: the clock, and on the
// database input the ping batcher, the presence reader, the pruner and the
// lease store. A controller installs it once; every model set names it
// (see ModelManifoldsConfig.ControllerPrefix). Consumers get a
// *pingbatcher.PingBatcher (or a presence.Batcher), a
// *presencereader.Reader and a *leasestore.Store from Output. Whatever
// the number of models, the set writes one ping document per flush, sends
// one query per sync (two when keys are new), three commands per prune,
// one lease read per lease tick, and batches every model's claims and
// expiries into one insert each.
//
// A config that does not validate gives manifolds whose start fails with
// the validation error, so that the engine reports it.
func ControllerManifolds(config ControllerManifoldsConfig) dependency.Manifolds {
	var logger Logger
	if config.Logger != nil {
		logger = config.Logger
	}
	name := func(n string) string { return config.Prefix + n }
	clockName := config.clockName()
	// The batcher wakes the reader after a flush that carries a
	// Disconnect or a key coming up, or that moves its writer on to a
	// new slot, so that this controller's watchers see it (a silent
	// death included) at once, without waiting for the notice to come
	// round; the channel outlives restarts of either.
	wake := make(chan struct{}, 1)
	self := &pingbatcher.Self{}
	manifolds := dependency.Manifolds{
		name(PingBatcherName): holdable(guard(config.Validate, pingbatcher.Manifold(pingbatcher.ManifoldConfig{
			ClockName:     clockName,
			DatabaseName:  config.DatabaseName,
			Collection:    config.Collection,
			FlushInterval: config.FlushInterval,
			Period:        config.Period,
			Logger:        logger,
			NewWorker: func(c pingbatcher.Config) (worker.Worker, error) {
				c.OnFlush = pingbatcher.WakeOnPrompt(wake, self.OnFlush(config.OnFlush))
				return pingbatcher.NewWorker(c)
			},
		}))),
		name(ReaderName): holdable(guard(config.Validate, presencereader.Manifold(presencereader.ManifoldConfig{
			ClockName:    clockName,
			DatabaseName: config.DatabaseName,
			Collection:   config.Collection,
			Period:       config.Period,
			SyncInterval: config.SyncInterval,
			LogLength:    config.ChangeLogLength,
			LogAge:       config.ChangeLogAge,
			Logger:       logger,
			NewWorker: func(c presencereader.Config) (worker.Worker, error) {
				c.OnLoad, c.Wake, c.Self = config.OnLoad, wake, self.Writer
				return presencereader.NewWorker(c)
			},
		}))),
		name(PrunerName): guard(config.Validate, pruner.Manifold(pruner.ManifoldConfig{
			ClockName:    clockName,
			DatabaseName: config.DatabaseName,
			Collection:   config.Collection,
			Interval:     config.PruneInterval,
			Period:       config.Period,
			Logger:       logger,
			NewWorker:    pruner.NewWorker,
		})),
		name(LeaseStoreName): holdable(guard(config.Validate, leasestore.Manifold(leasestore.ManifoldConfig{
			ClockName:    clockName,
			DatabaseName: config.DatabaseName,
			Collection:   config.LeaseCollection,
			ClockSkew:    config.LeaseClockSkew,
			MaxDuration:  config.LeaseMaxDuration,
			Logger:       logger,
			NewWorker:    leasestore.NewWorker,
		}))),
	}
	if config.ClockName == "" {
		manifolds[clockName] = clockManifold(config.Clock)
	}
	return manifolds
}

// ModelManifoldsConfig configures one model's set, which stands on a
// controller set.
type ModelManifoldsConfig struct {
	// ControllerPrefix is the Prefix of the controller set that the
	// model set uses: its inputs are the controller set's clock, ping
	// batcher, reader and lease store under their names with this
	// prefix. Empty means none.
	ControllerPrefix string

	// ClockName, if not empty, is the clock input (not prefixed): the
	// engine's own clock manifold, as in ControllerManifoldsConfig.
	// Empty means the controller set's own clock manifold, which a
	// controller set built with a ClockName does not have: give both
	// sets the same ClockName.
	ClockName string

	// DatabaseName is the input whose Output is a *mongo.Database. It
	// must not be empty.
	DatabaseName string

	// Model is the model the set serves. It must be a valid model tag.
	Model names.ModelTag

	// Prefix is put before every manifold name of the set; one engine
	// holding several models' sets needs a different one per model.
	// Empty means none.
	Prefix string

	// Logger is optional; nil means silent.
	Logger Logger

	// AgentKey, if not empty, adds a pinger that keeps this key alive:
	// the agent's own presence.
	AgentKey string

	// APIServer enables the presence recorder; other agents get a
	// disabled one.
	APIServer bool

	// Collection is the base presence collection's name; empty means
	// "presence".
	Collection string

	// Period is the pinger's slot length. Zero means the controller
	// set's (its ping batcher's), which is what almost every set wants;
	// another value must equal it, or the pinger fails to start with a
	// NotValid error. It must not be negative.
	Period time.Duration

	// MaxClaimDuration and ReleaseOnStop are the lease manager's
	// MaxDuration and ReleaseOnStop (see worker/leaseexpiry); zero
	// values mean its defaults. MaxClaimDuration must not be negative.
	MaxClaimDuration time.Duration
	ReleaseOnStop    bool
}

// Validate returns a NotValid error naming the first bad field.
func (config ModelManifoldsConfig) Validate() error {
	if config.DatabaseName == "" {
		return errors.NotValidf("empty DatabaseName")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.AgentKey != "" {
		if err := schema.ValidateKey(config.AgentKey); err != nil {
			return errors.Annotate(err, "AgentKey")
		}
	}
	return errors.Trace(validateDurations(map[string]time.Duration{
		"Period":           config.Period,
		"MaxClaimDuration": config.MaxClaimDuration,
	}))
}

// clockName returns the name of the clock input of the set's workers.
func (config ModelManifoldsConfig) clockName() string {
	if config.ClockName != "" {
		return config.ClockName
	}
	return config.ControllerPrefix + ClockName
}

// ModelManifolds returns one model's set: the watcher (a view over the
// controller's reader, with no query of its own), the lease manager (fed
// by the controller's lease store, with no read of its own), the presence
// recorder and, with AgentKey, the agent's pinger (through the
// controller's batcher) and its Agent. Consumers get a
// watcher.PresenceWatcher, a leaseexpiry.Manager, a
// presencerecorder.Recorder, a *pinger.Pinger and a presence.Agent from
// Output, or any narrower interface of their own. A consumer that gets
// AgentName's output before it looks sees the agent's own key alive from
// its first look (see AgentManifold). The set can be installed while the
// controller set runs, in the same engine or in a nested one that offers
// the controller set's outputs under the same names. A dependency engine
// has no way to uninstall manifolds: a set that must go with its model
// runs in a nested engine of its own, which ModelHostManifold starts and
// stops as models come and go.
func ModelManifolds(config ModelManifoldsConfig) dependency.Manifolds {
	var logger Logger
	if config.Logger != nil {
		logger = config.Logger
	}
	name := func(n string) string { return config.Prefix + n }
	controller := func(n string) string { return config.ControllerPrefix + n }
	manifolds := dependency.Manifolds{
		name(WatcherName): guard(config.Validate, watcher.Manifold(watcher.ManifoldConfig{
			ReaderName: controller(ReaderName),
			Model:      config.Model,
			Logger:     logger,
			NewWorker:  watcher.NewWorker,
		})),
		name(LeaseManagerName): guard(config.Validate, leaseexpiry.Manifold(leaseexpiry.ManifoldConfig{
			ClockName:     config.clockName(),
			StoreName:     controller(LeaseStoreName),
			Model:         config.Model,
			MaxDuration:   config.MaxClaimDuration,
			ReleaseOnStop: config.ReleaseOnStop,
			Logger:        logger,
			NewWorker:     leaseexpiry.NewWorker,
		})),
		name(PresenceRecorderName): presencerecorder.Manifold(presencerecorder.ManifoldConfig{
			ClockName: config.clockName(),
			APIServer: config.APIServer,
			NewWorker: presencerecorder.NewRecorderWorker,
		}),
	}
	if config.AgentKey != "" {
		manifolds[name(PingerName)] = guard(config.Validate, pinger.Manifold(pinger.ManifoldConfig{
			ClockName:       config.clockName(),
			DatabaseName:    config.DatabaseName,
			PingBatcherName: controller(PingBatcherName),
			Collection:      config.Collection,
			Model:           config.Model,
			Key:             config.AgentKey,
			Period:          config.Period,
			Logger:          logger,
			NewWorker:       pinger.NewWorker,
		}))
		manifolds[name(AgentName)] = guard(config.Validate, AgentManifold(AgentManifoldConfig{
			ClockName:    config.clockName(),
			DatabaseName: config.DatabaseName,
			BatcherName:  controller(PingBatcherName),
			WatcherName:  name(WatcherName),
			PingerName:   name(PingerName),
			Collection:   config.Collection,
			Model:        config.Model,
			Key:          config.AgentKey,
		}))
	}
	return manifolds
}

// ManifoldsConfig configures a controller set and one model's set
// together, for a process that serves a single model.
type ManifoldsConfig struct {
	// DatabaseName is the input whose Output is a *mongo.Database, a
	// manifold of your engine (DatabaseManifold makes one). It must not
	// be empty.
	DatabaseName string

	// Model is the model whose presence and leadership the set serves.
	// It must be a valid model tag.
	Model names.ModelTag

	// ClockName, if not empty, is the engine's own clock manifold (not
	// prefixed), and the set adds no clock of its own; Clock is then
	// unused.
	ClockName string

	// Clock gives the workers the time when ClockName is empty. It must
	// not be nil then.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// Prefix is put before every manifold name (and the clock's).
	// Empty means none; DatabaseName and ClockName are not prefixed.
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

	// LeaseClockSkew and LeaseMaxDuration configure the lease store's
	// client, MaxClaimDuration and ReleaseOnStop the lease manager; see
	// ControllerManifoldsConfig and ModelManifoldsConfig.
	LeaseClockSkew, LeaseMaxDuration, MaxClaimDuration time.Duration
	ReleaseOnStop                                      bool

	// ChangeLogLength and ChangeLogAge bound each model's change log;
	// see ControllerManifoldsConfig.
	ChangeLogLength int
	ChangeLogAge    time.Duration

	// OnFlush and OnLoad, if not nil, are passed to the ping batcher
	// and the reader, e.g. to feed metrics.
	OnFlush func(pingbatcher.FlushStats)
	OnLoad  func(presencereader.LoadStats)
}

func (config ManifoldsConfig) controller() ControllerManifoldsConfig {
	return ControllerManifoldsConfig{
		DatabaseName:     config.DatabaseName,
		ClockName:        config.ClockName,
		Clock:            config.Clock,
		LeaseClockSkew:   config.LeaseClockSkew,
		LeaseMaxDuration: config.LeaseMaxDuration,
		ChangeLogLength:  config.ChangeLogLength,
		ChangeLogAge:     config.ChangeLogAge,
		Logger:           config.Logger,
		Prefix:           config.Prefix,
		Collection:       config.Collection,
		LeaseCollection:  config.LeaseCollection,
		FlushInterval:    config.FlushInterval,
		Period:           config.Period,
		SyncInterval:     config.SyncInterval,
		PruneInterval:    config.PruneInterval,
		OnFlush:          config.OnFlush,
		OnLoad:           config.OnLoad,
	}
}

func (config ManifoldsConfig) model() ModelManifoldsConfig {
	return ModelManifoldsConfig{
		ControllerPrefix: config.Prefix,
		ClockName:        config.ClockName,
		MaxClaimDuration: config.MaxClaimDuration,
		ReleaseOnStop:    config.ReleaseOnStop,
		DatabaseName:     config.DatabaseName,
		Model:            config.Model,
		Prefix:           config.Prefix,
		Logger:           config.Logger,
		AgentKey:         config.AgentKey,
		APIServer:        config.APIServer,
		Collection:       config.Collection,
		Period:           config.Period,
	}
}

// Validate returns a NotValid error naming the first bad field.
func (config ManifoldsConfig) Validate() error {
	if err := config.controller().Validate(); err != nil {
		return errors.Trace(err)
	}
	return errors.Trace(config.model().Validate())
}

// Manifolds returns a controller set and one model's set in one, for a
// process that serves a single model: ControllerManifolds and
// ModelManifolds with the same Prefix. A controller that hosts several
// models installs ControllerManifolds once and ModelManifolds per model
// instead.
func Manifolds(config ManifoldsConfig) dependency.Manifolds {
	manifolds := ControllerManifolds(config.controller())
	maps.Copy(manifolds, ModelManifolds(config.model()))
	for name, m := range manifolds {
		if name != config.controller().clockName() {
			manifolds[name] = guard(config.Validate, m)
		}
	}
	return manifolds
}

// validateDurations returns a NotValid error naming the first negative
// duration.
func validateDurations(durations map[string]time.Duration) error {
	names := make([]string, 0, len(durations))
	for name := range durations {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if durations[name] < 0 {
			return errors.NotValidf("negative %s", name)
		}
	}
	return nil
}

// guard makes m's start fail with validate's error, if any.
func guard(validate func() error, m dependency.Manifold) dependency.Manifold {
	start := m.Start
	m.Start = func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
		if err := validate(); err != nil {
			return nil, errors.Trace(err)
		}
		return start(ctx, getter)
	}
	return m
}

// clockManifold outputs clk as a clock.Clock (or as any interface it
// implements).
func clockManifold(clk clock.Clock) dependency.Manifold {
	return guard(func() error {
		if clk == nil {
			return errors.NotValidf("nil Clock")
		}
		return nil
	}, enginekit.ValueManifold(clk))
}
