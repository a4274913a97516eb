package agenttest

import (
	"time"

	"github.com/juju/clock/testclock"
	gc "gopkg.in/check.v1"
)

// Epoch is a round instant for test clocks: slot arithmetic in tests is
// easier to read when the clock starts on a whole hour.
var Epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// NewClock returns a test clock set to Epoch.
func NewClock() *testclock.Clock {
	return testclock.NewClock(Epoch)
}

// WaitTimers blocks until exactly n timers wait on clk (testclock counts
// them exactly), without moving its time, and fails the test if that does
// not happen within LongWait. Use it to know that the code under test has
// reached its next wait.
func WaitTimers(c *gc.C, clk *testclock.Clock, n int) {
	err := clk.WaitAdvance(0, LongWait, n)
	c.Assert(err, gc.IsNil, gc.Commentf("waiting for %d timers", n))
}

// WaitAdvance advances clk by d once exactly n timers wait on it, so that
// the code under test cannot miss the advance, and fails the test if they
// do not appear within LongWait.
func WaitAdvance(c *gc.C, clk *testclock.Clock, d time.Duration, n int) {
	err := clk.WaitAdvance(d, LongWait, n)
	c.Assert(err, gc.IsNil, gc.Commentf("advancing %v with %d timers", d, n))
}

// AdvanceTo advances clk to t once exactly n timers wait on it.
func AdvanceTo(c *gc.C, clk *testclock.Clock, t time.Time, n int) {
	d := t.Sub(clk.Now())
	c.Assert(d >= 0, gc.Equals, true, gc.Commentf("cannot advance backwards to %v from %v", t, clk.Now()))
	WaitAdvance(c, clk, d, n)
}
