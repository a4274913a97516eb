package presence

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// ErrModelSourceClosed is what a model host dies with when its
// ModelSource closes its channel while the host runs.
const ErrModelSourceClosed = errors.ConstError("model source closed")

// ModelSource tells a model host which models to run.
type ModelSource interface {
	// WatchModels returns a channel that carries the complete set of
	// models to run: the current set first, then the set after each
	// change (a set may repeat). The source stops sending once ctx is
	// done; closing the channel before that is an error.
	WatchModels(ctx context.Context) (<-chan []names.ModelTag, error)
}

// ModelSourceFunc is a function that is a ModelSource.
type ModelSourceFunc func(ctx context.Context) (<-chan []names.ModelTag, error)

// WatchModels is part of the ModelSource interface: it calls f.
func (f ModelSourceFunc) WatchModels(ctx context.Context) (<-chan []names.ModelTag, error) {
	return f(ctx)
}

// ModelList is a ModelSource whose models a program sets as it learns of
// them: a controller told of models from elsewhere, or a test. Every
// watcher gets the latest set after each change; a slow one skips to the
// latest. Its methods are safe for concurrent use.
type ModelList struct {
	mu      sync.Mutex
	models  map[names.ModelTag]bool
	changed chan struct{}
}

var _ ModelSource = (*ModelList)(nil)

// NewModelList returns a ModelList holding models.
func NewModelList(models ...names.ModelTag) *ModelList {
	l := &ModelList{models: make(map[names.ModelTag]bool), changed: make(chan struct{})}
	l.Add(models...)
	return l
}

// Add adds models to the list.
func (l *ModelList) Add(models ...names.ModelTag) {
	l.change(func() {
		for _, m := range models {
			l.models[m] = true
		}
	})
}

// Remove removes models from the list; a model not in it is ignored.
func (l *ModelList) Remove(models ...names.ModelTag) {
	l.change(func() {
		for _, m := range models {
			delete(l.models, m)
		}
	})
}

func (l *ModelList) change(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
	close(l.changed)
	l.changed = make(chan struct{})
}

// Models returns the models in the list, sorted by id.
func (l *ModelList) Models() []names.ModelTag {
	models, _ := l.current()
	return models
}

func (l *ModelList) current() ([]names.ModelTag, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	models := make([]names.ModelTag, 0, len(l.models))
	for m := range l.models {
		models = append(models, m)
	}
	sort.Slice(models, func(i, j int) bool { return models[i].Id() < models[j].Id() })
	return models, l.changed
}

// WatchModels is part of the ModelSource interface. The goroutine that
// feeds the channel ends when ctx is done.
func (l *ModelList) WatchModels(ctx context.Context) (<-chan []names.ModelTag, error) {
	out := make(chan []names.ModelTag)
	go func() {
		for {
			models, changed := l.current()
			select {
			case out <- models:
			case <-ctx.Done():
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// ModelHostConfig configures a model host: the manifold that runs one
// nested dependency engine per model over the controller set's outputs.
type ModelHostConfig struct {
	// DatabaseName is the input whose Output is a *mongo.Database, as in
	// ControllerManifoldsConfig. It must not be empty.
	DatabaseName string

	// ControllerPrefix is the Prefix of the controller set whose outputs
	// the models use; empty means none.
	ControllerPrefix string

	// ClockName, if not empty, is the engine's own clock manifold (not
	// prefixed), as in ControllerManifoldsConfig; empty means the
	// controller set's clock.
	ClockName string

	// Models says which models to run. ModelsName, if not empty, is
	// instead the input whose Output is a ModelSource (a manifold of
	// yours over your own store of models). Exactly one must be set.
	Models     ModelSource
	ModelsName string

	// Model, if not nil, returns the config of model's set (AgentKey,
	// APIServer, Period, MaxClaimDuration, ReleaseOnStop, Logger,
	// Collection); the host sets its DatabaseName, ClockName,
	// ControllerPrefix and Model, and its Logger when nil. Nil means a
	// set with no agent of its own and a disabled presence recorder.
	Model func(names.ModelTag) ModelManifoldsConfig

	// Manifolds, if not nil, returns your own manifolds for model,
	// installed beside its set in the model's engine. Their inputs may
	// name the model set's manifolds (WatcherName, LeaseManagerName,
	// ...) and the controller's outputs (DatabaseName, and the clock,
	// batcher, reader and lease store under ControllerPrefix). A name
	// that clashes with those fails the host.
	Manifolds func(names.ModelTag) dependency.Manifolds

	// EngineConfig, if not nil, returns the config of model's engine;
	// nil means ModelEngineConfig(Logger).
	EngineConfig func(names.ModelTag) dependency.EngineConfig

	// Logger is optional; nil means silent. It logs the host's model
	// changes and, through ModelEngineConfig, the nested engines.
	Logger Logger

	// PurgeRemoved, if set, removes a model's presence and leases (see
	// RemoveModelFrom) once its engine has stopped because Models no
	// longer names it; never when the host itself stops. Set it only
	// where a model leaves the source because it was destroyed, and
	// leaves every controller's source: a controller still running its
	// engine would claim its leases again, their fences starting from
	// zero. A failed purge is logged and tried again every 30 seconds on
	// the host's clock while the host runs. False (the zero value) means
	// a removed model's data stays until RemoveModel is called.
	PurgeRemoved bool

	// Collection and LeaseCollection name the collections PurgeRemoved
	// purges: the controller set's Collection and LeaseCollection.
	// Empty means "presence" and "leases".
	Collection, LeaseCollection string
}

// Validate returns a NotValid error naming the first bad field.
func (config ModelHostConfig) Validate() error {
	if config.DatabaseName == "" {
		return errors.NotValidf("empty DatabaseName")
	}
	if (config.Models == nil) == (config.ModelsName == "") {
		return errors.NotValidf("Models and ModelsName both set or both empty")
	}
	return nil
}

func (config ModelHostConfig) clockName() string {
	if config.ClockName != "" {
		return config.ClockName
	}
	return config.ControllerPrefix + ClockName
}

// controllerInputs are the controller set's outputs the host gets.
func (config ModelHostConfig) controllerInputs() []string {
	return []string{
		config.DatabaseName,
		config.clockName(),
		config.ControllerPrefix + PingBatcherName,
		config.ControllerPrefix + ReaderName,
		config.ControllerPrefix + LeaseStoreName,
	}
}

// ModelEngineConfig returns the config a model host gives each model's
// engine by default: no error is fatal (a model's workers restart, the
// engine never stops by itself), a failed worker restarts after one
// second and never later than 30, on the wall clock (the engine's delays
// are the engine's, not the workers' time), logging to logger (nil means
// silent).
func ModelEngineConfig(logger Logger) dependency.EngineConfig {
	if logger == nil {
		logger = silentLogger{}
	}
	return dependency.EngineConfig{
		IsFatal:          func(error) bool { return false },
		WorstError:       func(err, _ error) error { return err },
		ErrorDelay:       time.Second,
		BounceDelay:      10 * time.Millisecond,
		BackoffFactor:    2,
		BackoffResetTime: time.Minute,
		MaxDelay:         30 * time.Second,
		Clock:            clock.WallClock,
		Metrics:          dependency.DefaultMetrics(),
		Logger:           logger,
	}
}

// ModelHostManifold returns the model host: juju's model worker manager
// for presencekit. On the controller set's outputs (its inputs, by name)
// it runs one nested dependency engine per model that config.Models
// names, holding ControllerOutputs.Manifolds, ModelManifolds for the
// model and config.Manifolds' own; it starts an engine when a model
// comes and stops it, waiting, when the model goes, leaving the others
// alone. Its worker reports each model's engine (dependency.Reporter).
//
// The host owns the order of a stop: the batcher, reader and lease store
// of ControllerManifolds stay up, though killed, until every nested
// engine that uses them has stopped, so that a clean stop of the outer
// engine (or a restart of the controller set) logs no error from a model
// worker that lost its controller worker first. A nested engine that
// stops by itself (a fatal error of a custom EngineConfig) stops the
// host with its error, and the outer engine restarts it.
//
// A config that does not validate gives a manifold whose start fails with
// the validation error.
func ModelHostManifold(config ModelHostConfig) dependency.Manifold {
	inputs := config.controllerInputs()
	if config.ModelsName != "" {
		inputs = append(inputs, config.ModelsName)
	}
	return dependency.Manifold{
		Inputs: inputs,
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := config.Validate(); err != nil {
				return nil, errors.Trace(err)
			}
			out := ControllerOutputs{
				Prefix:       config.ControllerPrefix,
				DatabaseName: config.DatabaseName,
				ClockName:    config.ClockName,
			}
			names := config.controllerInputs()
			for i, target := range []any{&out.Database, &out.Clock, &out.PingBatcher, &out.Reader, &out.LeaseStore} {
				if err := getter.Get(names[i], target); err != nil {
					return nil, errors.Trace(err)
				}
			}
			source := config.Models
			if config.ModelsName != "" {
				if err := getter.Get(config.ModelsName, &source); err != nil {
					return nil, errors.Trace(err)
				}
			}
			held, err := holdInputs(getter, names...)
			if err != nil {
				return nil, errors.Trace(err)
			}
			w, err := newModelHost(config, out, source, held)
			if err != nil {
				held.release()
				return nil, errors.Trace(err)
			}
			return w, nil
		},
	}
}

// modelHost runs one nested engine per model.
type modelHost struct {
	catacomb catacomb.Catacomb
	config   ModelHostConfig
	outputs  ControllerOutputs
	source   ModelSource
	held     holds
	stopped  chan engineStopped

	// unpurged are the removed models whose purge failed, and retry
	// fires when they are tried again (nil when none is); only the loop
	// uses them (see purge).
	unpurged map[names.ModelTag]bool
	retry    <-chan time.Time

	// mu guards engines, which the loop writes and Report reads.
	mu      sync.Mutex
	engines map[names.ModelTag]*dependency.Engine
}

// engineStopped says that a model's engine stopped.
type engineStopped struct {
	model  names.ModelTag
	engine *dependency.Engine
	err    error
}

func newModelHost(config ModelHostConfig, outputs ControllerOutputs, source ModelSource, held holds) (*modelHost, error) {
	if err := outputs.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	h := &modelHost{
		config:   config,
		outputs:  outputs,
		source:   source,
		held:     held,
		stopped:  make(chan engineStopped),
		engines:  make(map[names.ModelTag]*dependency.Engine),
		unpurged: make(map[names.ModelTag]bool),
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "model host",
		Site: &h.catacomb,
		Work: h.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return h, nil
}

// Kill is part of the worker.Worker interface.
func (h *modelHost) Kill() {
	h.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (h *modelHost) Wait() error {
	return h.catacomb.Wait()
}

// Report is part of the dependency.Reporter interface: each model's
// engine's report, by model id.
func (h *modelHost) Report() map[string]any {
	h.mu.Lock()
	engines := make(map[names.ModelTag]*dependency.Engine, len(h.engines))
	for model, engine := range h.engines {
		engines[model] = engine
	}
	h.mu.Unlock()
	models := make(map[string]any, len(engines))
	for model, engine := range engines {
		models[model.Id()] = engine.Report()
	}
	return map[string]any{"models": models}
}

func (h *modelHost) loop() error {
	// Deferred calls run last first: every engine has stopped before
	// the controller workers are let go.
	defer h.held.release()
	defer func() { h.stopEngines(h.running()) }()
	changes, err := h.source.WatchModels(h.catacomb.Context(context.Background()))
	if err != nil {
		return errors.Annotate(err, "cannot watch models")
	}
	for {
		select {
		case <-h.catacomb.Dying():
			return h.catacomb.ErrDying()
		case models, ok := <-changes:
			if !ok {
				return ErrModelSourceClosed
			}
			if err := h.update(models); err != nil {
				return errors.Trace(err)
			}
		case s := <-h.stopped:
			if h.engines[s.model] == s.engine {
				return errors.Annotatef(s.err, "engine of model %s stopped", s.model.Id())
			}
		case <-h.retry:
			h.retry = nil
			h.purge(nil)
		}
	}
}

// running returns every running engine's model. It must only be called
// from the loop goroutine.
func (h *modelHost) running() []names.ModelTag {
	models := make([]names.ModelTag, 0, len(h.engines))
	for model := range h.engines {
		models = append(models, model)
	}
	return models
}

// update stops the engines of models no longer wanted, purging them if
// PurgeRemoved is set, and starts those of new ones. It must only be
// called from the loop goroutine.
func (h *modelHost) update(models []names.ModelTag) error {
	want := make(map[names.ModelTag]bool, len(models))
	for _, model := range models {
		if err := schema.ValidateModel(model); err != nil {
			h.errorf("ignoring model %q: %v", model.Id(), err)
			continue
		}
		want[model] = true
	}
	var gone []names.ModelTag
	for model := range h.engines {
		if !want[model] {
			gone = append(gone, model)
		}
	}
	h.stopEngines(gone)
	h.purge(gone)
	for model := range want {
		if h.engines[model] != nil {
			continue
		}
		if err := h.startEngine(model); err != nil {
			return errors.Annotatef(err, "cannot start the engine of model %s", model.Id())
		}
	}
	return nil
}

// stopEngines kills the engines of models, waits for them all and
// forgets them. It must only be called from the loop goroutine.
func (h *modelHost) stopEngines(models []names.ModelTag) {
	h.mu.Lock()
	engines := make([]*dependency.Engine, 0, len(models))
	for _, model := range models {
		engines = append(engines, h.engines[model])
		delete(h.engines, model)
	}
	h.mu.Unlock()
	for _, engine := range engines {
		engine.Kill()
	}
	for i, engine := range engines {
		if err := engine.Wait(); err != nil {
			h.errorf("engine of model %s stopped with: %v", models[i].Id(), err)
		}
	}
}

// startEngine starts model's engine. It must only be called from the loop
// goroutine.
func (h *modelHost) startEngine(model names.ModelTag) error {
	manifolds := h.outputs.Manifolds()
	set := ModelManifoldsConfig{}
	if h.config.Model != nil {
		set = h.config.Model(model)
	}
	set.DatabaseName, set.ClockName = h.config.DatabaseName, h.config.ClockName
	set.ControllerPrefix, set.Model = h.config.ControllerPrefix, model
	if set.Logger == nil {
		set.Logger = h.config.Logger
	}
	if err := addManifolds(manifolds, ModelManifolds(set)); err != nil {
		return errors.Trace(err)
	}
	if h.config.Manifolds != nil {
		if err := addManifolds(manifolds, h.config.Manifolds(model)); err != nil {
			return errors.Trace(err)
		}
	}
	config := ModelEngineConfig(h.config.Logger)
	if h.config.EngineConfig != nil {
		config = h.config.EngineConfig(model)
	}
	engine, err := dependency.NewEngine(config)
	if err != nil {
		return errors.Trace(err)
	}
	if err := dependency.Install(engine, manifolds); err != nil {
		_ = worker.Stop(engine)
		return errors.Trace(err)
	}
	h.mu.Lock()
	h.engines[model] = engine
	h.mu.Unlock()
	go func() {
		s := engineStopped{model: model, engine: engine, err: engine.Wait()}
		select {
		case h.stopped <- s:
		case <-h.catacomb.Dying():
		}
	}()
	h.logf("started the engine of model %s", model.Id())
	return nil
}

// addManifolds adds more to manifolds, failing on a name already there.
func addManifolds(manifolds, more dependency.Manifolds) error {
	for name, m := range more {
		if _, ok := manifolds[name]; ok {
			return errors.AlreadyExistsf("manifold %q", name)
		}
		manifolds[name] = m
	}
	return nil
}

func (h *modelHost) logf(format string, args ...any) {
	if h.config.Logger != nil {
		h.config.Logger.Debugf(format, args...)
	}
}

func (h *modelHost) errorf(format string, args ...any) {
	if h.config.Logger != nil {
		h.config.Logger.Errorf(format, args...)
	}
}

// silentLogger is a dependency.Logger that logs nothing.
type silentLogger struct{}

func (silentLogger) Tracef(string, ...any) {}
func (silentLogger) Debugf(string, ...any) {}
func (silentLogger) Infof(string, ...any)  {}
func (silentLogger) Errorf(string, ...any) {}
