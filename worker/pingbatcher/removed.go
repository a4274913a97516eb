package pingbatcher

import (
	"context"

	"github.com/presencekit/presence/internal/schema"
)

// removedCheckSlots is how many slots go by between two reads of the
// removal markers (see presence.RemoveModel) while the writer names a
// model that none of its indexes in use serves.
const removedCheckSlots = 6

// idleModels returns the models that the writer's indexes name but none
// of those in use serves: the models it no longer serves, removed or
// not. b.mu must be held.
func (w *writerState) idleModels() []string {
	busy := make(map[string]bool)
	for i, e := range w.entries {
		if w.inUse[i] {
			busy[e.model] = true
		}
	}
	seen := make(map[string]bool)
	var idle []string
	for _, e := range w.entries {
		if !busy[e.model] && !seen[e.model] {
			seen[e.model] = true
			idle = append(idle, e.model)
		}
	}
	return idle
}

// checkRemoved reads the removal markers, at most every
// removedCheckSlots slots and only while the writer names a model that
// it no longer serves, and has the writer retired after the flush (see
// retireRemoved) if one of them was removed: a long-lived writer would
// otherwise name a removed model in its beings documents for as long as
// it lives, and the model's marker could never go. A writer with no index
// in use is not checked: it goes on for its idle slots and stops (see
// tick), and the pruner removes its documents. A failed read is tried
// again at the next check; it never fails the flush. It must only be
// called from the loop goroutine.
func (b *PingBatcher) checkRemoved(call caller) {
	now := b.config.Clock.Now()
	if now.Before(b.removedCheck) {
		return
	}
	b.mu.Lock()
	writer := b.w.writer
	var idle []string
	if b.w.released < len(b.w.entries) {
		idle = b.w.idleModels()
	}
	b.mu.Unlock()
	if len(idle) == 0 {
		return
	}
	b.removedCheck = now.Add(removedCheckSlots * b.config.Period)
	var removed map[string]bool
	err := call.do(func(ctx context.Context) (err error) {
		removed, err = schema.RemovedModels(ctx, b.config.Base)
		return err
	})
	if err != nil {
		if b.config.Logger != nil {
			b.config.Logger.Debugf("ping batcher: cannot read the removed models (read again in a slot): %v", err)
		}
		b.removedCheck = now.Add(b.config.Period)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, model := range idle {
		if removed[model] && b.w.writer == writer {
			b.stats.retireRemoved = writer
			b.stats.removedModel = model
			return
		}
	}
}

// retireRemoved retires the writer if checkRemoved found that it names a
// removed model, unless a pinger of the model registered with it since.
// Its live pingers register again with a fresh writer, whose documents
// name only the models they serve. b.mu must be held.
func (b *PingBatcher) retireRemoved() {
	writer, model := b.stats.retireRemoved, b.stats.removedModel
	b.stats.retireRemoved, b.stats.removedModel = "", ""
	if writer == "" || writer != b.w.writer {
		return
	}
	for i, e := range b.w.entries {
		if e.model == model && b.w.inUse[i] {
			return
		}
	}
	b.retire("it names model %s, removed", model)
}
