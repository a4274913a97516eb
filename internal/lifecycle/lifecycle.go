// Package lifecycle holds the small helpers that every worker built on
// catacomb needs when it answers a caller after it started dying.
package lifecycle

import (
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
