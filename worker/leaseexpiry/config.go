package leaseexpiry

import (
	"context"
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

// CallTimeout bounds each database call a manager makes itself (checks,
// releases, pins); the calls of its store have their own deadline.
const CallTimeout = 5 * time.Second

// Store is the shared view of leases that managers stand on: one per
// controller, serving every model's manager, so that lease reads and
// writes per tick do not grow with the number of models.
// *leasestore.Store implements it. Its methods must be safe for
// concurrent use and must not block once it stops.
type Store interface {
	// Leases returns model's leases by name as of the store's latest
	// successful read (with what was written through it since applied),
	// the time that read began (zero before the first) and its place
	// in the order reads began in (1 for the first, 0 before any), and a
	// channel closed once a newer view replaces this one. The map is the
	// caller's own.
	Leases(model string) (leases map[string]lease.Info, readAt time.Time, readSeq uint64, changed <-chan struct{})

	// ReadsBegun returns how many reads the store has begun: a view
	// whose readSeq is higher comes from a read begun after the call,
	// whatever the clock says.
	ReadsBegun() uint64

	// Claim claims or extends a lease in the store's next batch of
	// claims, granted by the store's next read after its insert (see
	// lease.Client.ClaimMany for its errors).
	Claim(ctx context.Context, claim lease.Claim) (lease.Info, error)

	// Read returns a lease's latest term from the database, as the
	// store's next read that begins after the call finds it: what a
	// leadership check needs.
	Read(ctx context.Context, key lease.Key) (lease.Info, error)

	// Refresh asks the store for a read soon, without waiting for it.
	Refresh()

	// Client returns the lease client the store uses, for single-lease
	// calls: releases and pins.
	Client() lease.Client
}

// ManagerConfig holds what NewManager needs.
type ManagerConfig struct {
	// Store is the controller's shared lease view. When it is nil,
	// NewManager runs a private store over Client for the model, with
	// MaxSleep and PruneEvery, and stops it with the manager.
	Store Store

	// Client stores the leases. It is used, and must not be nil, only
	// when Store is nil.
	Client lease.Client

	// Clock gives the time. It must be the clock the store's client
	// uses, and must not be nil.
	Clock clock.Clock

	// Model is the model whose applications' leadership is managed. It
	// must be a valid model tag.
	Model names.ModelTag

	// MaxSleep is the longest a private store (Store nil) waits between
	// looks at the leases: leases released through other managers are
	// noticed within it. Zero means DefaultMaxSleep; it must not be
	// negative.
	MaxSleep time.Duration

	// MaxDuration is the longest claim accepted. Zero means
	// DefaultMaxDuration; it must not be negative.
	MaxDuration time.Duration

	// PruneEvery is how many ticks of a private store (Store nil) pass
	// between removals of superseded terms. Zero means
	// DefaultPruneEvery; it must not be negative.
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
	if config.Store == nil && config.Client == nil {
		return errors.NotValidf("nil Store and nil Client")
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
