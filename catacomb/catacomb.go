// Package catacomb is github.com/juju/worker/v4/catacomb for presencekit's
// workers, plus the small helpers every one of them needs: the error its
// public methods answer with once it is dying, a timer re-arm that is safe
// with juju/clock's test clock, and database contexts that are bound both by
// a deadline and by the worker's life.
//
// It builds on upstream's catacomb and never replaces it: Catacomb, Plan and
// Invoke are upstream's own, re-exported, so that a worker imports this one
// package for the catacomb and its helpers alike.
package catacomb

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4/catacomb"
	"gopkg.in/tomb.v2"
)

// DeathError returns the error that a worker's public methods should
// return once c is dying: the error it is dying with, or stopped when it is
// stopping cleanly (or not dying at all).
func DeathError(c *catacomb.Catacomb, stopped error) error {
	err := c.Err()
	if err == nil || err == tomb.ErrStillAlive || err == tomb.ErrDying {
		return stopped
	}
	return err
}

// Rearm moves a pending t to fire after d. A t that already fired is left
// alone: its value is still to be received, and whoever receives it
// resets it. Reset on a fired, unreceived juju/clock test timer would arm
// it a second time, and its second firing would block the test clock's
// Advance for good.
func Rearm(t clock.Timer, d time.Duration) {
	if t.Stop() {
		t.Reset(d)
	}
}

// Call returns a context for one database call of the worker that owns c:
// it is cancelled when the worker starts dying and when timeout passes,
// whichever comes first. A zero or negative timeout means no deadline
// beyond the worker's life. The caller must call the returned cancel
// function as soon as the call returns.
//
// The deadline is on the wall clock, not on the worker's injected clock: it
// bounds a call that runs in real time on a real server (a stalled call
// becomes a failed one), whatever a test clock says. Work that is timed
// (schedules, expiries, slots) must still come from the injected clock.
func Call(c *catacomb.Catacomb, timeout time.Duration) (context.Context, context.CancelFunc) {
	return CallFrom(context.Background(), c, timeout)
}

// CallFrom is Call for a call made on behalf of a caller with a context
// of its own: the context is also cancelled when parent is. It keeps
// nothing once cancel is called, whatever the number of distinct parents
// (the catacomb's own Context caches one child per parent).
func CallFrom(parent context.Context, c *catacomb.Catacomb, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	if timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, timeout)
		cancel = join(cancelTimeout, cancel)
	}
	stop := context.AfterFunc(c.Context(context.Background()), cancel)
	return ctx, join(func() { stop() }, cancel)
}

// join returns a function that calls every one of fs.
func join(fs ...func()) func() {
	return func() {
		for _, f := range fs {
			f()
		}
	}
}

// Catacomb is upstream's catacomb.Catacomb, re-exported so that a worker
// imports one catacomb package, this one, for both the type and the
// helpers around it. Its zero value is ready for Invoke.
type Catacomb = catacomb.Catacomb

// Plan is upstream's catacomb.Plan: the site, the work and the workers a
// catacomb is to look after.
type Plan = catacomb.Plan

// Invoke runs plan.Work on plan.Site in a goroutine of its own, exactly as
// upstream's catacomb.Invoke does (it is that function).
func Invoke(plan Plan) error {
	return catacomb.Invoke(plan)
}
