package agenttest

import (
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
)

// SkewClock is a clock.Clock that disagrees with a base clock the way a
// real host's clock disagrees with true time: it reads an offset ahead of
// (or, negative, behind) the base, its offset can be stepped at any moment
// (Step: an NTP correction, a resumed VM), and it drifts (SetDrift: its
// oscillator runs a little fast or slow). The base is a testclock for
// tests that move time by hand, or clock.WallClock for stress tests with
// real delays.
//
// Now is base time plus the offset plus the drift accumulated since the
// drift was last set. Timers (After, AfterFunc, NewTimer and a timer's
// Reset) wait on the base clock for the duration scaled by the drift, as a
// host's timers count its own oscillator's ticks: a 1s timer of a clock
// that runs 1% fast fires after about 990ms of base time. Steps do not move
// timers, as a step of a host's wall clock does not move timers that count
// monotonic time; a timer fires when the base says, whatever Now then
// reads. The value sent on a timer's channel is the base clock's time.
//
// Its methods are safe for concurrent use.
type SkewClock struct {
	base clock.Clock

	mu sync.Mutex
	// origin is the base time when the drift was last set, and offset
	// the difference from base time at origin; drift is the rate.
	origin time.Time
	offset time.Duration
	drift  float64
}

var _ clock.Clock = (*SkewClock)(nil)

// MaxDrift is the largest drift rate a SkewClock accepts, either way: far
// beyond any real oscillator (a few parts per million to a few per cent),
// and small enough that a scaled duration never overflows.
const MaxDrift = 0.5

// NewSkewClock returns a clock that reads offset ahead of base (behind it
// when offset is negative) and drifts at rate drift: 0.01 gains 10ms per
// second of base time, -0.01 loses as much. It fails with a NotValid error
// for a nil base or a drift beyond MaxDrift either way.
func NewSkewClock(base clock.Clock, offset time.Duration, drift float64) (*SkewClock, error) {
	if base == nil {
		return nil, errors.NotValidf("nil base clock")
	}
	if err := validDrift(drift); err != nil {
		return nil, errors.Trace(err)
	}
	return &SkewClock{base: base, origin: base.Now(), offset: offset, drift: drift}, nil
}

func validDrift(drift float64) error {
	if !(drift >= -MaxDrift && drift <= MaxDrift) {
		return errors.NotValidf("drift %v (must be in [%v, %v])", drift, -MaxDrift, MaxDrift)
	}
	return nil
}

// Now is part of the clock.Clock interface: the base clock's time plus
// Offset.
func (c *SkewClock) Now() time.Time {
	b := c.base.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.Add(c.offsetAt(b))
}

// offsetAt returns the difference from base time at base time b. The
// caller must hold mu.
func (c *SkewClock) offsetAt(b time.Time) time.Duration {
	return c.offset + time.Duration(float64(b.Sub(c.origin))*c.drift)
}

// Offset returns how far the clock reads ahead of its base now (negative:
// behind).
func (c *SkewClock) Offset() time.Duration {
	b := c.base.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offsetAt(b)
}

// Step moves the clock's reading by d at once, forward or (negative d)
// back, as NTP steps a host's clock. Timers already set are not moved.
func (c *SkewClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// SetDrift makes the clock drift at rate from now on, keeping the offset
// it has accumulated so far. It fails with a NotValid error for a rate
// beyond MaxDrift either way, and then changes nothing.
func (c *SkewClock) SetDrift(rate float64) error {
	if err := validDrift(rate); err != nil {
		return errors.Trace(err)
	}
	b := c.base.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset, c.origin, c.drift = c.offsetAt(b), b, rate
	return nil
}

// baseDuration returns how long d of this clock's time lasts on the base
// clock at the current drift.
func (c *SkewClock) baseDuration(d time.Duration) time.Duration {
	c.mu.Lock()
	drift := c.drift
	c.mu.Unlock()
	if d <= 0 || drift == 0 {
		return d
	}
	return time.Duration(float64(d) / (1 + drift))
}

// After is part of the clock.Clock interface.
func (c *SkewClock) After(d time.Duration) <-chan time.Time {
	return c.base.After(c.baseDuration(d))
}

// AfterFunc is part of the clock.Clock interface.
func (c *SkewClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return &skewTimer{clock: c, Timer: c.base.AfterFunc(c.baseDuration(d), f)}
}

// NewTimer is part of the clock.Clock interface.
func (c *SkewClock) NewTimer(d time.Duration) clock.Timer {
	return &skewTimer{clock: c, Timer: c.base.NewTimer(c.baseDuration(d))}
}

// At is part of the clock.Clock interface. As for the wall clock's
// alarms, the wait is the time from now until t, measured when the alarm
// is set: a later step does not move it.
func (c *SkewClock) At(t time.Time) <-chan time.Time {
	return c.After(c.until(t))
}

// AtFunc is part of the clock.Clock interface; see At.
func (c *SkewClock) AtFunc(t time.Time, f func()) clock.Alarm {
	return &skewAlarm{clock: c, Timer: c.AfterFunc(c.until(t), f)}
}

// NewAlarm is part of the clock.Clock interface; see At.
func (c *SkewClock) NewAlarm(t time.Time) clock.Alarm {
	return &skewAlarm{clock: c, Timer: c.NewTimer(c.until(t))}
}

// until returns the time from the clock's now until t, never negative.
func (c *SkewClock) until(t time.Time) time.Duration {
	return max(t.Sub(c.Now()), 0)
}

// skewAlarm is an alarm made of a skewTimer.
type skewAlarm struct {
	clock *SkewClock
	clock.Timer
}

// Reset is part of the clock.Alarm interface.
func (a *skewAlarm) Reset(t time.Time) bool {
	return a.Timer.Reset(a.clock.until(t))
}

// skewTimer is a base clock's timer whose Reset scales its duration.
type skewTimer struct {
	clock *SkewClock
	clock.Timer
}

// Reset is part of the clock.Timer interface.
func (t *skewTimer) Reset(d time.Duration) bool {
	return t.Timer.Reset(t.clock.baseDuration(d))
}
