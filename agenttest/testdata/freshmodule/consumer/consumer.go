// Package consumer is a user's worker logic: it leads only while its agent is alive.
package consumer

import (
	"time"

	"github.com/juju/errors"

	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/watcher"
)

// LeadIfAlive claims leadership of application for unit while key is alive.
func LeadIfAlive(w watcher.PresenceWatcher, m leaseexpiry.Manager, key, application, unit string) (bool, error) {
	alive, err := w.Alive(key)
	if err != nil || !alive {
		return false, errors.Trace(err)
	}
	err = m.ClaimLeadership(application, unit, time.Minute)
	if errors.Is(err, leaseexpiry.ErrClaimDenied) {
		return false, nil
	}
	return err == nil, errors.Trace(err)
}
