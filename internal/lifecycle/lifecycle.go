// Package lifecycle holds the small helpers that every worker built on
// catacomb needs: the error to answer callers with once it is dying, and
// a timer reset that is safe with test clocks.
package lifecycle

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4/catacomb"
	"gopkg.in/tomb.v2"
)

// DeathError returns the error that a worker's public methods should
// return once c is dying: the error it is dying with, or stopped when it is
// stopping cleanly.
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
