package pingbatcher

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
)

// Logger is the logging a PingBatcher needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Infof(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a PingBatcher needs.
type Config struct {
	// Base is the base presence collection; the batcher writes to the
	// collections derived from it. It must not be nil.
	Base *mongo.Collection

	// FlushInterval is the mean time between writes; each interval is
	// jittered by ±20% so that controllers do not write in step. Zero
	// means one second; it must not be negative.
	FlushInterval time.Duration

	// Period is the slot length, the same as the pingers' and the
	// readers'. It is stamped in every ping document so that readers can
	// check it, and half of it bounds every flush. Zero means ten
	// seconds; it must not be negative.
	Period time.Duration

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// OnFlush, if not nil, is called after every flush, from the
	// batcher's goroutine, e.g. to feed metrics. It must return quickly.
	OnFlush func(FlushStats)
}

// FlushStats describes one flush.
type FlushStats struct {
	// Took is how long the flush took, by the batcher's clock.
	Took time.Duration
	// Documents is how many documents it wrote; zero when it failed.
	Documents int
	// Err is why it failed, or nil.
	Err error
	// Prompt is set when the flush was asked for at once: it carries a
	// Disconnect or a key coming up, which a reader in the same process
	// may want to load at once (see presencereader.Config.Wake).
	Prompt bool
	// Moved is set when the flush wrote the writer's first document of
	// a slot later than any it wrote before (or the first of a new
	// writer): its sequence moved on, and with it every reader's
	// judgement of its keys (a key that stopped pinging reads dead once
	// its writer has moved on twice), which a reader in the same process
	// may want to load at once too.
	Moved bool
	// Writer is the writer id the batcher writes as (it changes when the
	// writer is retired): a reader in the same process skips the notices
	// of its flushes, which Wake already brought (see
	// presencereader.Config.Self).
	Writer string
}

// WakeOnPrompt returns an OnFlush that sends on wake, without blocking,
// after every flush that succeeded and that its notice announces (see
// schema.Notices): a prompt one, or one that moved the writer on to a new
// slot. It then calls next if it is not nil. With wake as a reader's
// Config.Wake, that reader loads at once what a Disconnect or a key
// coming up wrote, and its own writer's every move, which is what a
// silent death waits for, without waiting for the notices to come round
// (a tailable cursor may bring them late: the embedded server's replays
// its whole backlog now and then).
func WakeOnPrompt(wake chan<- struct{}, next func(FlushStats)) func(FlushStats) {
	return func(stats FlushStats) {
		if (stats.Prompt || stats.Moved) && stats.Err == nil {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		if next != nil {
			next(stats)
		}
	}
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if config.FlushInterval < 0 {
		return errors.NotValidf("negative FlushInterval")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	return nil
}

// withDefaults returns config with each zero duration set to its
// documented default.
func (config Config) withDefaults() Config {
	if config.FlushInterval == 0 {
		config.FlushInterval = schema.DefaultFlushInterval
	}
	if config.Period == 0 {
		config.Period = schema.DefaultPeriod
	}
	return config
}
