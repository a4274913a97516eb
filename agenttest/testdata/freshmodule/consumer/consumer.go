// Package consumer is a user's worker logic: it leads only while its agent is alive.
package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"

	"github.com/presencekit/presence"

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

// Manifold runs LeadIfAlive once in a model's engine, over the model's
// watcher and lease manager, and sends the outcome to results.
func Manifold(key, application, unit string, results chan<- string) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{presence.WatcherName, presence.LeaseManagerName},
		Start: func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
			var w watcher.PresenceWatcher
			if err := getter.Get(presence.WatcherName, &w); err != nil {
				return nil, err
			}
			var m leaseexpiry.Manager
			if err := getter.Get(presence.LeaseManagerName, &m); err != nil {
				return nil, err
			}
			led, err := LeadIfAlive(w, m, key, application, unit)
			if err != nil {
				return nil, err
			}
			select {
			case results <- fmt.Sprintf("%s leads: %v", unit, led):
			case <-ctx.Done():
			}
			return workertest.NewErrorWorker(nil), nil
		},
	}
}
