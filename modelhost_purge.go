package presence

import (
	"time"

	"github.com/juju/names/v5"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/leasestore"
)

const (
	// purgeTimeout bounds one purge of a removed model (see
	// ModelHostConfig.PurgeRemoved), on the wall clock.
	purgeTimeout = time.Minute

	// purgeRetry is how long a model host waits, on its clock, before it
	// tries again the purges that failed.
	purgeRetry = 30 * time.Second
)

// purgeCollections returns the names of the collections that
// PurgeRemoved purges: the configured ones, or the defaults.
func (config ModelHostConfig) purgeCollections() (base, leases string) {
	base, leases = config.Collection, config.LeaseCollection
	if base == "" {
		base = schema.DefaultBase
	}
	if leases == "" {
		leases = leasestore.DefaultCollection
	}
	return base, leases
}

// purge removes the presence and leases of models, whose engines have
// stopped because the source no longer names them, and tries again those
// whose purge failed before, if PurgeRemoved is set. A model whose engine
// runs again is not purged. A failure is logged, and tried again after
// purgeRetry (see the loop). It must only be called from the loop
// goroutine.
func (h *modelHost) purge(models []names.ModelTag) {
	if !h.config.PurgeRemoved {
		return
	}
	for _, model := range models {
		h.unpurged[model] = true
	}
	base, leases := h.config.purgeCollections()
	db := h.outputs.Database
	for model := range h.unpurged {
		if h.engines[model] != nil {
			delete(h.unpurged, model) // back again: its data is live
			continue
		}
		ctx, cancel := catacomb.Call(&h.catacomb, purgeTimeout)
		err := RemoveModelFrom(ctx, db.Collection(base), db.Collection(leases), model)
		cancel()
		if err != nil {
			h.errorf("cannot purge removed model %s (tried again in %v): %v", model.Id(), purgeRetry, err)
			continue
		}
		delete(h.unpurged, model)
		h.logf("purged the presence and leases of removed model %s", model.Id())
	}
	if len(h.unpurged) > 0 && h.retry == nil {
		h.retry = h.outputs.Clock.After(purgeRetry)
	}
}
