package presence

import (
	"context"
	"sync"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
)

// heldWorker is a controller worker that model hosts can hold: while any
// host holds it, Kill is remembered rather than passed on, and it is
// passed on when the last host lets go. An engine kills every worker at
// once when it stops; the hold makes the controller's workers outlive the
// nested engines that use them, so that no model worker sees its
// controller worker vanish under it. Its methods are safe for concurrent
// use, and none blocks.
type heldWorker struct {
	worker.Worker

	mu     sync.Mutex
	holds  int
	killed bool
}

// Kill is part of the worker.Worker interface: it kills the worker now,
// or once the last hold is released.
func (h *heldWorker) Kill() {
	h.mu.Lock()
	h.killed = true
	now := h.holds == 0
	h.mu.Unlock()
	if now {
		h.Worker.Kill()
	}
}

// Report is part of the dependency.Reporter interface: the worker's own
// report, if it has one.
func (h *heldWorker) Report() map[string]any {
	if r, ok := h.Worker.(dependency.Reporter); ok {
		return r.Report()
	}
	return nil
}

// hold delays the worker's death until release; it fails with
// dependency.ErrMissing once the worker was asked to stop, so that the
// engine starts the host again when the worker's replacement runs.
func (h *heldWorker) hold() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.killed {
		return errors.Annotate(dependency.ErrMissing, "stopping")
	}
	h.holds++
	return nil
}

// release undoes one hold, killing the worker if it was asked to stop
// while held.
func (h *heldWorker) release() {
	h.mu.Lock()
	h.holds--
	now := h.killed && h.holds == 0
	h.mu.Unlock()
	if now {
		h.Worker.Kill()
	}
}

// holdable makes m's workers holdable by a model host: its Output also
// fills a **heldWorker, and passes anything else to m's Output with the
// worker m started.
func holdable(m dependency.Manifold) dependency.Manifold {
	start, output := m.Start, m.Output
	m.Start = func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
		w, err := start(ctx, getter)
		if err != nil {
			return nil, err
		}
		return &heldWorker{Worker: w}, nil
	}
	m.Output = func(in worker.Worker, out any) error {
		h, ok := in.(*heldWorker)
		if !ok {
			return errors.Errorf("expected a held controller worker, got %T", in)
		}
		if target, ok := out.(**heldWorker); ok {
			*target = h
			return nil
		}
		if output == nil {
			return errors.Errorf("expected no output, got %T", out)
		}
		return output(h.Worker, out)
	}
	return m
}

// holds is the set of controller workers a model host holds.
type holds []*heldWorker

// holdInputs holds every one of names that is a holdable worker; an input
// that is not one (a user's own, a fake) is left alone. On failure it
// holds nothing.
func holdInputs(getter dependency.Getter, names ...string) (holds, error) {
	var hs holds
	for _, name := range names {
		var h *heldWorker
		if getter.Get(name, &h) != nil {
			continue
		}
		if err := h.hold(); err != nil {
			hs.release()
			return nil, errors.Annotatef(err, "cannot hold %q", name)
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// release lets go of every hold.
func (hs holds) release() {
	for _, h := range hs {
		h.release()
	}
}
