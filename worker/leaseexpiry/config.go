package leaseexpiry

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
)

const (
	// Namespace is the lease namespace of application leadership.
	Namespace = "application-leadership"

	// DefaultMaxSleep is the longest the manager sleeps between looks at
	// the leases, when MaxSleep is zero.
	DefaultMaxSleep = time.Second

	// DefaultMaxDuration is the longest claim accepted when MaxDuration
	// is zero.
	DefaultMaxDuration = 5 * time.Minute

	// DefaultPruneEvery is how many ticks pass between removals of
	// superseded terms, when PruneEvery is zero.
	DefaultPruneEvery = 10
)

// Logger is the logging a Manager needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// ManagerConfig holds what NewManager needs.
type ManagerConfig struct {
	// Client stores the leases. It must not be nil.
	Client lease.Client

	// Clock gives the time. It must be the clock the Client uses, and
	// must not be nil.
	Clock clock.Clock

	// Model is the model whose applications' leadership is managed. It
	// must be a valid model tag.
	Model names.ModelTag

	// MaxSleep is the longest the manager waits between looks at the
	// leases: leases released through other managers are noticed within
	// it. Zero means DefaultMaxSleep; it must not be negative.
	MaxSleep time.Duration

	// MaxDuration is the longest claim accepted. Zero means
	// DefaultMaxDuration; it must not be negative.
	MaxDuration time.Duration

	// PruneEvery is how many ticks pass between removals of superseded
	// terms. Zero means DefaultPruneEvery; it must not be negative.
	PruneEvery int

	// ReleaseOnStop releases every lease claimed through this manager
	// when it stops cleanly, so that successors take over at once. It
	// is off by default: a manager restarted by its engine then keeps
	// its units' leadership until their leases expire.
	ReleaseOnStop bool

	// Logger is optional; nil means silent.
	Logger Logger
}

// Validate returns a NotValid error naming the first bad field.
func (config ManagerConfig) Validate() error {
	if config.Client == nil {
		return errors.NotValidf("nil Client")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.MaxSleep < 0 {
		return errors.NotValidf("negative MaxSleep")
	}
	if config.MaxDuration < 0 {
		return errors.NotValidf("negative MaxDuration")
	}
	if config.PruneEvery < 0 {
		return errors.NotValidf("negative PruneEvery")
	}
	return nil
}

func (config ManagerConfig) withDefaults() ManagerConfig {
	if config.MaxSleep == 0 {
		config.MaxSleep = DefaultMaxSleep
	}
	if config.MaxDuration == 0 {
		config.MaxDuration = DefaultMaxDuration
	}
	if config.PruneEvery == 0 {
		config.PruneEvery = DefaultPruneEvery
	}
	return config
}
