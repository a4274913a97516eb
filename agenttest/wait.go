package agenttest

import (
	"bytes"
	"runtime/pprof"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"
)

// Pauses between the looks of Retry and WaitFor: the first comes soon,
// for what is nearly done; later ones further apart, for what takes a
// database round trip or a restart, so that a long wait does not load a
// shared machine.
const (
	firstPause = time.Millisecond
	lastPause  = 100 * time.Millisecond
)

// Retry calls f until it returns nil, and then returns nil. Between calls
// it pauses on the wall clock, 1 ms at first, doubling up to 100 ms. Once
// timeout has passed since the first call, it returns f's last error,
// annotated with the time waited. f runs on the caller's goroutine; it is
// called at least once, however small timeout is.
//
// Retry is for what takes real time (a database restart, a flush on the
// real server); time that a test clock gives belongs to WaitAdvance and
// AdvanceUntil. It needs no *check.C, so that agenttest's own server code
// uses it too; in a test, assert on its result:
//
//	c.Assert(agenttest.Retry(agenttest.LongWait, b.Sync), gc.IsNil)
func Retry(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	pause := firstPause
	for {
		err := f()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return errors.Annotatef(err, "still failing after %v", timeout)
		}
		time.Sleep(pause)
		pause = min(2*pause, lastPause)
	}
}

// errNotYet is what WaitFor's condition gives Retry while it does not hold.
const errNotYet = errors.ConstError("condition does not hold")

// WaitFor calls cond until it returns true, pausing as Retry does, and
// fails the test (c.Fatalf, naming what) if timeout passes first, logging
// every goroutine's stack first so that a rare hang can be told from a
// slow machine. cond runs
// on the caller's goroutine, so it may assert. When the failure should
// show the state that was waited on, use Retry with an error that holds
// it.
func WaitFor(c *gc.C, timeout time.Duration, what string, cond func() bool) {
	err := Retry(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		c.Logf("goroutines when the wait gave up:\n%s", goroutines())
		c.Fatalf("never within %v: %s", timeout, what)
	}
}

// goroutines returns the stacks of every goroutine, those alike counted
// together.
func goroutines() string {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		return err.Error()
	}
	return buf.String()
}

// AdvanceUntil advances clk by step at a time until cond holds, and
// returns how far it moved clk: zero when cond held at once. cond runs on
// the caller's goroutine before the first step and after each one; it
// must bring about, synchronously, what it looks for (a flush, a load),
// because AdvanceUntil does not wait on the wall clock between steps for
// timers that fire elsewhere. The test fails if cond does not hold within
// LongWait of wall time.
//
// A test asserts on the result to bound when a thing happens: a key that
// must die exactly at MaxStall is
//
//	c.Assert(agenttest.AdvanceUntil(c, clk, period/2, dead), gc.Equals, maxStall)
func AdvanceUntil(c *gc.C, clk *testclock.Clock, step time.Duration, cond func() bool) time.Duration {
	c.Assert(step > 0, gc.Equals, true, gc.Commentf("AdvanceUntil needs a positive step, not %v", step))
	deadline := time.Now().Add(LongWait)
	var moved time.Duration
	for !cond() {
		if !time.Now().Before(deadline) {
			c.Fatalf("condition still false after advancing the clock %v, for %v", moved, LongWait)
		}
		clk.Advance(step)
		moved += step
	}
	return moved
}
