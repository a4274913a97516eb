package fakes

import (
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
)

// settle is how long, on the wall clock, AdvanceUntil gives the code
// under test to react to a step before it takes the next.
const settle = 5 * time.Millisecond

// AdvanceUntil advances clk by step at a time until done returns true,
// letting the code under test react after each step, so that a test
// needs no count of the timers that code waits on (which
// testclock.Clock.WaitAdvance does): a timer made after a step still
// fires at a later one. It returns nil as soon as done holds, having
// advanced by the fewest steps it saw needed, and a Timeout error once
// it has advanced by limit without done holding. done is called from
// the caller's goroutine and must not block.
func AdvanceUntil(clk *testclock.Clock, step, limit time.Duration, done func() bool) error {
	if step <= 0 {
		return errors.NotValidf("non-positive step %v", step)
	}
	for advanced := time.Duration(0); ; advanced += step {
		for deadline := time.Now().Add(settle); ; {
			if done() {
				return nil
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(settle / 10)
		}
		if advanced >= limit {
			return errors.Timeoutf("condition after advancing %v", advanced)
		}
		clk.Advance(step)
	}
}
