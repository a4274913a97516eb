package presencereader

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
)

const (
	// DefaultMaxStallPeriods is Config.MaxStall's default, in Periods.
	DefaultMaxStallPeriods = 12

	// DefaultLogLength is Config.LogLength's default: at 32 bytes an
	// entry, a model's change log holds at most about 320 KB.
	DefaultLogLength = 10000

	// DefaultLogAge is Config.LogAge's default.
	DefaultLogAge = 5 * time.Minute
)

// Logger is the logging a Reader needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a Reader needs.
type Config struct {
	// Base is the base presence collection. It must not be nil.
	Base *mongo.Collection

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// Period is the slot length, the same as the pingers' and the
	// batchers'; documents stamped with another are skipped. Zero means
	// schema.DefaultPeriod; it must not be negative.
	Period time.Duration

	// SyncInterval is the time between loads while the reader cannot
	// tail the notices (see NoPush), and the shortest time between two
	// loads it schedules itself. A load that takes longer
	// than SyncInterval (and than two seconds) fails. Zero means
	// schema.DefaultSyncInterval; it must not be negative.
	SyncInterval time.Duration

	// MaxStall is how long the reader holds the keys of late writers
	// while no writer at all is on time, which it takes for a stall of
	// the database (writes held up, say, by a majority write concern
	// waiting for a secondary) rather than for the death of every
	// controller at once; then their keys read dead. While any writer is
	// on time, a late writer's keys hold for one Period only (longer
	// for a writer that has lately been slow). Both are counted from the
	// writer's last progress, or from the end of the last stall or run
	// of failed loads if that is later: a writer is not judged by its
	// silence while the database was in trouble, and one the trouble
	// caught within its bound keeps its keys for MaxStall after it,
	// until it writes again. Zero means DefaultMaxStallPeriods Periods;
	// it must not be negative.
	MaxStall time.Duration

	// LogLength is how many changes the change log of each model keeps
	// at most, for subscribers that resume after a position (see
	// SubscribeConfig.After); the oldest go first. Zero means
	// DefaultLogLength; it must not be negative.
	LogLength int

	// LogAge is how long the change log of each model keeps a change;
	// loads prune older ones. It is also how long the view remembers a
	// dead key that no bit names (see the package comment). Zero means DefaultLogAge; it must not be
	// negative.
	LogAge time.Duration

	// OnLoad, if not nil, is called after every load, once the view is
	// updated and before the changes are handed to subscribers, from the
	// reader's goroutine, e.g. to feed metrics. It must return quickly.
	OnLoad func(LoadStats)

	// Wake, if not nil, makes the reader load at once (or as soon as the
	// load in flight ends) whenever it receives: a batcher in the same
	// process sends on it after every flush that its notice announces,
	// one that carries a Disconnect or a key coming up or that moves its
	// writer on to a new slot (see pingbatcher.WakeOnPrompt), so that
	// this process's watchers see them, silent deaths included, without
	// waiting for the notice to come round. Other processes' readers hear
	// of them from the notice (see NoPush).
	Wake <-chan struct{}

	// Self, if not nil, returns the writer id of the batcher whose
	// flushes Wake brings (see pingbatcher.Self): the reader skips that
	// writer's notices, which would only load again. It must be safe for
	// concurrent use.
	Self func() string

	// NoPush turns the push path off: the reader then reads every
	// SyncInterval and hears of other processes' prompt changes at its
	// next read (at once where the server has change streams). By
	// default it tails the notices that batchers append (see
	// schema.Notices) and reads when a notice comes and when time alone
	// may change what it reports, polling every SyncInterval only while
	// it cannot tail them. It is for measuring one against the other.
	NoPush bool
}

// LoadStats describes one load.
type LoadStats struct {
	// Took is how long the database took to answer, by the reader's
	// clock.
	Took time.Duration
	// Models, Writers and Keys are how many of each the reader knows;
	// Alive how many keys it reports alive.
	Models, Writers, Keys, Alive int
	// Changes is how many keys changed state.
	Changes int
	// Held is how many keys the load kept alive although it found no
	// live ping for them, because their writer was late or the database
	// had just stalled: detection is slower than usual while it is not
	// zero.
	Held int
	// Stalled is whether no writer was on time: the reader suspects
	// the database and holds every late writer's keys for MaxStall.
	Stalled bool
	// Skipped is how many documents the load skipped as invalid; the
	// reader remembers no more than that of them.
	Skipped int
	// MaxSkew is the largest clock difference that what the reader read
	// shows between its clock and any writer's (see Skews). Presence
	// does not depend on it; leases assume clocks within ClockSkew.
	MaxSkew time.Duration
	// Skews is the clock difference shown against each writer, by
	// writer id: the reader's clock minus the writer's, which the reads
	// bound from above only (a write may be delayed for any time), so it
	// is negative where the writer's clock is shown ahead by at least
	// that, and zero where the interval holds zero (one clock, or a
	// writer behind). It has one entry per controller, never per agent,
	// and is only set when OnLoad is: the caller owns it.
	Skews map[string]time.Duration
	// LogEntries is how many changes the change logs of every model
	// viewed hold, and LogBytes the memory they take, after the load.
	LogEntries, LogBytes int
	// LinesHeld is how many error lines the reader has held back since
	// it started: it logs one line per cause at most every LogEvery.
	LinesHeld int
	// Err is why the load failed, or nil.
	Err error
	// Push is whether the reader tailed the notices when the load
	// ended: it reads only when it must while it does, and polls every
	// SyncInterval while it does not. PushBreaks is how many times the
	// push path broke (or could not start) so far.
	Push       bool
	PushBreaks int
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	if config.SyncInterval < 0 {
		return errors.NotValidf("negative SyncInterval")
	}
	if config.MaxStall < 0 {
		return errors.NotValidf("negative MaxStall")
	}
	if config.LogLength < 0 {
		return errors.NotValidf("negative LogLength")
	}
	if config.LogAge < 0 {
		return errors.NotValidf("negative LogAge")
	}
	return nil
}

// withDefaults returns config with every zero field that has a default
// set to it.
func (config Config) withDefaults() Config {
	if config.Period == 0 {
		config.Period = schema.DefaultPeriod
	}
	if config.SyncInterval == 0 {
		config.SyncInterval = schema.DefaultSyncInterval
	}
	if config.MaxStall == 0 {
		config.MaxStall = DefaultMaxStallPeriods * config.Period
	}
	if config.LogLength == 0 {
		config.LogLength = DefaultLogLength
	}
	if config.LogAge == 0 {
		config.LogAge = DefaultLogAge
	}
	return config
}
