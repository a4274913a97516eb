package main

import (
	"context"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/worker/presencereader"
)

// deploymentConfig is what a deployment needs.
type deploymentConfig struct {
	// DB holds the deployment's collections. It must not be nil.
	DB *mongo.Database
	// Collection and Leases name the base presence collection and the
	// lease collection. They must not be empty.
	Collection, Leases string
	// Model, if not empty, is the only model followed; otherwise every
	// model any writer has keys of, found again every Refresh.
	Model string
	// Clock gives the time. It must not be nil.
	Clock clock.Clock
	// Logger, if not nil, is told of read errors.
	Logger presencereader.Logger
	// Period is the deployment's slot length; SyncInterval the time
	// between the reader's loads; Refresh the time between searches for
	// models and lease reads. They must be positive.
	Period, SyncInterval, Refresh time.Duration
	// OnLoad, if not nil, is called after every load of the reader.
	OnLoad func(presencereader.LoadStats)
	// OnLeases, if not nil, is called after every lease read with the
	// leases of the models followed.
	OnLeases func([]leaseStatus)
}

// Validate returns a NotValid error naming the first bad field.
func (c deploymentConfig) Validate() error {
	switch {
	case c.DB == nil:
		return errors.NotValidf("nil DB")
	case c.Collection == "" || c.Leases == "":
		return errors.NotValidf("empty Collection or Leases")
	case c.Clock == nil:
		return errors.NotValidf("nil Clock")
	case c.Period <= 0 || c.SyncInterval <= 0 || c.Refresh <= 0:
		return errors.NotValidf("non-positive Period, SyncInterval or Refresh")
	case c.Model != "" && !names.IsValidModel(c.Model):
		return errors.NotValidf("model %q", c.Model)
	}
	return nil
}

// deployment follows a real deployment without writing to it: a
// presence reader over its collections (one query per sync, whatever the
// number of models), a view per model followed, and, every Refresh, the
// models found by reading the writers' documents and what a status says
// of the documents. It is a source for watch streams, and a worker.
type deployment struct {
	config   deploymentConfig
	catacomb catacomb.Catacomb
	reader   *presencereader.Reader
	dying    chan struct{}
	searched chan struct{} // closed once the first refresh is done
	loaded   chan struct{} // receives after the reader's loads

	// counting makes recounts take turns.
	counting sync.Mutex

	mu     sync.Mutex
	found  []string
	latest reading
	// keys are each found model's keys as the latest recount took them
	// from its view, or keysErr why it could not.
	keys    map[string]modelKeys
	keysErr error
	views   map[string]*presencereader.View
	closed  bool
}

// reading is what one refresh read of a deployment's documents for its
// status.
type reading struct {
	// at is when the refresh began.
	at time.Time
	// status holds all but the models' keys; it is zero if err is not
	// nil.
	status deploymentStatus
	// err is why the refresh failed, or nil.
	err error
}

// newDeployment starts a deployment. Its reader's first load happens at
// once; its models are searched at once, then every Refresh.
func newDeployment(config deploymentConfig) (*deployment, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	loaded := make(chan struct{}, 1)
	reader, err := presencereader.New(presencereader.Config{
		Base:         config.DB.Collection(config.Collection),
		Clock:        config.Clock,
		Logger:       config.Logger,
		Period:       config.Period,
		SyncInterval: config.SyncInterval,
		OnLoad: func(stats presencereader.LoadStats) {
			if config.OnLoad != nil {
				config.OnLoad(stats)
			}
			select {
			case loaded <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return nil, errors.Annotate(err, "cannot start the presence reader")
	}
	d := &deployment{
		config: config, reader: reader, dying: make(chan struct{}), searched: make(chan struct{}), loaded: loaded,
		views: make(map[string]*presencereader.View),
	}
	if config.Model != "" {
		d.found = []string{config.Model}
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "deployment",
		Site: &d.catacomb,
		Work: d.loop,
		Init: []worker.Worker{reader},
	}); err != nil {
		reader.Kill()
		_ = reader.Wait()
		return nil, errors.Trace(err)
	}
	return d, nil
}

// Kill is part of the worker.Worker interface.
func (d *deployment) Kill() { d.catacomb.Kill(nil) }

// Wait is part of the worker.Worker interface.
func (d *deployment) Wait() error { return d.catacomb.Wait() }

func (d *deployment) loop() error {
	defer d.closeViews()
	timer := d.config.Clock.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-d.catacomb.Dying():
			return d.catacomb.ErrDying()
		case <-d.loaded:
			d.recount()
		case <-timer.Chan():
			d.refresh()
			d.recount()
			select {
			case <-d.searched:
			default:
				close(d.searched)
			}
			timer.Reset(d.config.Refresh)
		}
	}
}

// refresh searches for models and reads what the status says of the
// documents (the writers' latest writes, the leases, the skipped
// documents and the document counts), which status answers until the
// next refresh. A failed read is logged and tried again next time. It
// must only be called from the loop goroutine.
func (d *deployment) refresh() {
	ctx, cancel := catacomb.Call(&d.catacomb, max(d.config.Refresh, 2*time.Second))
	defer cancel()
	now := d.config.Clock.Now()
	st, err := d.readDocuments(ctx, now)
	d.mu.Lock()
	d.latest = reading{at: now, status: st, err: err}
	d.mu.Unlock()
	if err != nil {
		d.logf("%v", err)
		return
	}
	if d.config.OnLeases != nil {
		d.config.OnLeases(st.Leases)
	}
}

// readDocuments reads every presence document, keeps the models they
// name (unless the deployment follows one model), and returns what the
// status says of the documents, judged at now. It must only be called
// from the loop goroutine.
func (d *deployment) readDocuments(ctx context.Context, now time.Time) (deploymentStatus, error) {
	scan, err := scanPresence(ctx, d.config.DB.Collection(d.config.Collection))
	if err != nil {
		return deploymentStatus{}, errors.Annotate(err, "cannot search for models")
	}
	d.forget(scan.modelsOf(d.config.Model), scan.removed)
	st, err := documentsStatus(ctx, d.config.DB, d.config.Leases, d.config.Model, scan, d.config.Period, now)
	return st, errors.Trace(err)
}

// forget records the models found, and closes the views of the models
// removed, so that the deployment holds nothing of a model that has
// gone (a watch of it ends). It must only be called from the loop
// goroutine.
func (d *deployment) forget(found []string, removed map[string]bool) {
	var gone []*presencereader.View
	d.mu.Lock()
	d.found = found
	for m, v := range d.views {
		if removed[m] {
			gone = append(gone, v)
			delete(d.views, m)
		}
	}
	d.mu.Unlock()
	for _, v := range gone {
		v.Close()
	}
}

// logf logs an error, unless the deployment is stopping (which is why a
// call failed then).
func (d *deployment) logf(format string, args ...any) {
	select {
	case <-d.catacomb.Dying():
		return
	default:
	}
	if d.config.Logger != nil {
		d.config.Logger.Errorf(format, args...)
	}
}

// closeViews closes every view, once the deployment is dying.
func (d *deployment) closeViews() {
	d.mu.Lock()
	views := d.views
	d.views, d.closed = nil, true
	d.mu.Unlock()
	close(d.dying)
	for _, v := range views {
		v.Close()
	}
}

// models is part of the source interface: the models found so far.
func (d *deployment) models() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.found...)
}

// model is part of the source interface: any model UUID, found or not
// yet, unless the deployment follows one model only.
func (d *deployment) model(id string) (string, error) {
	if _, err := validModel(id); err != nil {
		return "", errors.Trace(err)
	}
	if d.config.Model != "" && id != d.config.Model {
		return "", errors.NotFoundf("model %q (only %s is followed)", id, d.config.Model)
	}
	return id, nil
}

// subscribe is part of the source interface.
func (d *deployment) subscribe(model string, config presencereader.SubscribeConfig) (subscription, <-chan struct{}) {
	view, err := d.view(model)
	if err != nil {
		return presencereader.NewFailedSubscription(err), nil
	}
	return view.SubscribeWith(config), nil
}

// position is part of the source interface.
func (d *deployment) position(model string) presencereader.Position {
	view, err := d.view(model)
	if err != nil {
		return presencereader.Position{}
	}
	return view.Position()
}

// view returns model's view, made at its first use.
func (d *deployment) view(model string) (*presencereader.View, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, presencereader.ErrStopped
	}
	if v := d.views[model]; v != nil {
		return v, nil
	}
	v, err := d.reader.NewView(names.NewModelTag(model), d.dying, func() error { return presencereader.ErrStopped })
	if err != nil {
		return nil, errors.Trace(err)
	}
	d.views[model] = v
	return v, nil
}

// counts returns model's known and alive keys, as the reader last loaded
// them.
func (d *deployment) counts(model string) (modelKeys, error) {
	v, err := d.view(model)
	if err != nil {
		return modelKeys{}, errors.Trace(err)
	}
	report := v.Report()
	if msg, ok := report["error"].(string); ok {
		return modelKeys{}, errors.New(msg)
	}
	total, _ := report["keys"].(int)
	alive, _ := report["alive"].(int)
	return modelKeys{Model: model, Alive: alive, Dead: total - alive, Total: total}, nil
}

// recount takes each found model's keys from its view, as the reader's
// latest load found them, for status to answer with: the loop recounts
// after every load and refresh, so that status never waits for the
// reader. It is safe for concurrent use; recounts take turns, so that an
// earlier one never overwrites a later one's counts.
func (d *deployment) recount() {
	d.counting.Lock()
	defer d.counting.Unlock()
	models := d.models()
	keys := make(map[string]modelKeys, len(models))
	var err error
	for _, model := range models {
		if keys[model], err = d.counts(model); err != nil {
			break
		}
	}
	d.mu.Lock()
	d.keys, d.keysErr = keys, err
	d.mu.Unlock()
}

// status returns the deployment's status: what the latest refresh read
// of the documents, and the time it read them, with each model's keys as
// the latest recount took them. It waits for nothing (neither the
// database nor the reader), so it answers at once whatever the load; it
// returns the error of the latest refresh or recount if it failed.
func (d *deployment) status() (deploymentStatus, time.Time, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	latest := d.latest
	switch {
	case latest.err != nil:
		return deploymentStatus{}, latest.at, errors.Trace(latest.err)
	case d.keysErr != nil:
		return deploymentStatus{}, latest.at, errors.Trace(d.keysErr)
	}
	st := latest.status
	st.Models = make([]modelKeys, 0, len(d.found))
	for _, model := range d.found {
		// A model found since the latest recount is left out until
		// the next, moments later, rather than shown with no keys.
		if counts, ok := d.keys[model]; ok {
			st.Models = append(st.Models, counts)
		}
	}
	return st, latest.at, nil
}

// ready waits for the reader's first load and the first search for
// models, and counts their keys; it returns the load's error: a failed
// search is logged and tried again every Refresh.
func (d *deployment) ready(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- d.reader.Refresh() }()
	select {
	case err := <-done:
		if err != nil {
			return errors.Annotate(err, "cannot read presence")
		}
	case <-ctx.Done():
		return errors.Trace(ctx.Err())
	}
	select {
	case <-d.searched:
		d.recount()
		return nil
	case <-d.catacomb.Dying():
		return errors.Trace(d.catacomb.ErrDying())
	case <-ctx.Done():
		return errors.Trace(ctx.Err())
	}
}
