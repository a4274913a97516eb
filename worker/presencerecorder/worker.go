package presencerecorder

import (
	"github.com/juju/errors"

	"github.com/presencekit/presence/catacomb"
)

// WorkerConfig holds what the recorder worker needs.
type WorkerConfig struct {
	// Clock gives the recorder the time. It must not be nil.
	Clock Clock

	// APIServer says whether this agent is an API server: only then is
	// the recorder enabled.
	APIServer bool
}

// Validate returns a NotValid error naming the first bad field.
func (config WorkerConfig) Validate() error {
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	return nil
}

// Worker owns a Recorder for as long as it runs: enabled on API servers,
// disabled elsewhere, and disabled (so cleared) when the worker stops.
type Worker struct {
	catacomb catacomb.Catacomb
	recorder Recorder
}

// NewWorker starts a Worker with a new Recorder.
func NewWorker(config WorkerConfig) (*Worker, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	w := &Worker{recorder: New(config.Clock)}
	if config.APIServer {
		w.recorder.Enable()
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "presence recorder",
		Site: &w.catacomb,
		Work: w.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

// Recorder returns the worker's recorder.
func (w *Worker) Recorder() Recorder {
	return w.recorder
}

// Kill is part of the worker.Worker interface.
func (w *Worker) Kill() {
	w.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (w *Worker) Wait() error {
	return w.catacomb.Wait()
}

// Report is part of the dependency.Reporter interface.
func (w *Worker) Report() map[string]any {
	conns := w.recorder.Connections()
	return map[string]any{
		"enabled":     w.recorder.IsEnabled(),
		"connections": conns.Count(),
		"models":      len(conns.Models()),
	}
}

func (w *Worker) loop() error {
	<-w.catacomb.Dying()
	w.recorder.Disable()
	return w.catacomb.ErrDying()
}
