// Package pinger heartbeats one key (an agent) through a PingRecorder.
//
// A Pinger pings at once when started and then four times per Period (twice
// per slot), each ping costing a few hundred nanoseconds in the recorder's
// memory; the recorder (a ping batcher) writes all of its pingers' pings
// together. Stop stops pinging, and watchers see the key dead once its
// pings time out (within a Period plus a flush and a sync); Disconnect also
// records the death, which the batcher writes at once, so watchers see it
// within about one sync. A pinger can be started again after either.
package pinger

import (
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// ErrKilled is returned by Start after Kill.
const ErrKilled = errors.ConstError("pinger killed")

// Logger is the logging a Pinger needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a Pinger needs.
type Config struct {
	// Base is the base presence collection, which the recorder checks
	// is the one it writes to. Nil means the recorder's own, unchecked
	// (and a recorder with no database, such as agenttest/fakes', needs
	// none).
	Base *mongo.Collection

	// Model is the model the key belongs to. It must be a valid model
	// tag.
	Model names.ModelTag

	// Key is the key to keep alive, e.g. an agent's tag string. It must
	// not be empty.
	Key string

	// Recorder returns the recorder to ping through. It is called at
	// every ping, so it may return a replacement after a restart. It must
	// not be nil, nor return nil.
	Recorder func() PingRecorder

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Period is the slot length, which must be the same for the
	// database's pingers and watchers. Zero means the ping recorder's
	// (the controller set's); any other value must equal it, or Start
	// fails with a NotValid error rather than ping slots no watcher
	// reads. It must not be negative.
	Period time.Duration

	// Logger is optional; nil means silent.
	Logger Logger
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if err := schema.ValidateKey(config.Key); err != nil {
		return errors.Trace(err)
	}
	if config.Recorder == nil {
		return errors.NotValidf("nil Recorder")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	return nil
}

// Pinger keeps one key alive. Its methods are safe for concurrent use.
//
// A Pinger is a worker.Worker while it runs: Wait blocks until it is
// stopped, disconnected or killed, or fails, and returns the error that
// ended the run.
type Pinger struct {
	config Config

	mu      sync.Mutex
	run     *run
	killed  bool
	lastErr error
}

// New returns a Pinger for config. It does not ping until Start.
func New(config Config) (*Pinger, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	return &Pinger{config: config}, nil
}

// Start pings at once, then every Period/2 until Stop, Disconnect or Kill.
// It returns the first ping's error, and fails if the pinger is running or
// was killed.
func (p *Pinger) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.killed {
		return ErrKilled
	}
	if p.run != nil {
		select {
		case <-p.run.catacomb.Dead():
		default:
			return errors.Errorf("pinger for %q already started", p.config.Key)
		}
	}
	r := &run{config: p.config, disconnect: make(chan chan error)}
	if err := r.register(); err != nil {
		return errors.Trace(err)
	}
	if err := r.ping(); err != nil {
		r.release()
		return errors.Annotatef(err, "cannot ping %q", p.config.Key)
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "pinger",
		Site: &r.catacomb,
		Work: r.loop,
	}); err != nil {
		r.release()
		return errors.Trace(err)
	}
	p.run = r
	return nil
}

// Stop stops pinging and waits until the pinger has stopped. Watchers see
// the key dead when its pings time out, unless it is started again first.
// It returns the error, if any, that the run ended with; it does nothing to
// a pinger that is not running.
func (p *Pinger) Stop() error {
	r := p.current()
	if r == nil {
		return nil
	}
	r.catacomb.Kill(nil)
	return p.finish(r)
}

// Disconnect records the key's death, so that watchers see it within one
// flush and one sync (unless another pinger keeps the key alive), and
// stops the pinger. It does nothing to a pinger that is not running.
func (p *Pinger) Disconnect() error {
	r := p.current()
	if r == nil {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case r.disconnect <- reply:
		if err := <-reply; err != nil {
			r.catacomb.Kill(nil)
			_ = p.finish(r)
			return errors.Annotatef(err, "cannot record death of %q", p.config.Key)
		}
	case <-r.catacomb.Dying():
	}
	return p.finish(r)
}

// Kill stops the pinger for good, without recording a death; Start fails
// afterwards. It does not wait. Kill is part of the worker.Worker
// interface.
func (p *Pinger) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killed = true
	if p.run != nil {
		p.run.catacomb.Kill(nil)
	}
}

// Wait blocks until the current run ends and returns its error; with no
// run it returns the error of the last one. Wait is part of the
// worker.Worker interface.
func (p *Pinger) Wait() error {
	r := p.current()
	if r == nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.lastErr
	}
	return p.finish(r)
}

func (p *Pinger) current() *run {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.run
}

// finish waits for r to end and forgets it.
func (p *Pinger) finish(r *run) error {
	err := r.catacomb.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == r {
		p.run = nil
		p.lastErr = err
	}
	return err
}

// run is one Start..Stop of a Pinger.
type run struct {
	config     Config
	catacomb   catacomb.Catacomb
	disconnect chan chan error

	// recorder and id are set by register; after Start returns they are
	// owned by the loop goroutine.
	recorder PingRecorder
	id       Identity
}

func (r *run) loop() error {
	defer r.release()
	interval := schema.PingInterval(r.recorder.Period())
	timer := r.config.Clock.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-r.catacomb.Dying():
			return r.catacomb.ErrDying()
		case reply := <-r.disconnect:
			reply <- r.dead()
			return nil
		case <-timer.Chan():
			if err := r.ping(); err != nil {
				return errors.Annotatef(err, "cannot ping %q", r.config.Key)
			}
			timer.Reset(interval)
		}
	}
}

func (r *run) register() error {
	recorder := r.config.Recorder()
	if recorder == nil {
		return errors.NotValidf("nil PingRecorder from Recorder")
	}
	if period := recorder.Period(); r.config.Period != 0 && r.config.Period != period {
		return errors.NotValidf("Period %v for %q: the ping recorder writes %v slots, so watchers would read the key dead", r.config.Period, r.config.Key, period)
	}
	id, err := recorder.Register(r.config.Base, r.config.Model, r.config.Key)
	if err != nil {
		return errors.Annotatef(err, "cannot register %q", r.config.Key)
	}
	r.recorder, r.id = recorder, id
	return nil
}

func (r *run) slot() int64 {
	return schema.Slot(r.config.Clock.Now(), r.recorder.Period())
}

// ping pings, registering afresh when the recorder was replaced or no
// longer knows the identity.
func (r *run) ping() error {
	if current := r.config.Recorder(); current != r.recorder {
		r.release()
		if err := r.register(); err != nil {
			return errors.Trace(err)
		}
	}
	err := r.recorder.Ping(r.id, r.slot())
	if errors.Is(err, ErrUnknownIdentity) {
		if r.config.Logger != nil {
			r.config.Logger.Debugf("pinger for %q registering again", r.config.Key)
		}
		if err := r.register(); err != nil {
			return errors.Trace(err)
		}
		err = r.recorder.Ping(r.id, r.slot())
	}
	return errors.Trace(err)
}

func (r *run) dead() error {
	if r.recorder == nil {
		return nil
	}
	err := r.recorder.Disconnect(r.id, r.slot())
	if errors.Is(err, ErrUnknownIdentity) {
		// The recorder no longer pings this identity, so it will time
		// out by itself; there is nothing to mark.
		return nil
	}
	return errors.Trace(err)
}

func (r *run) release() {
	if r.recorder != nil {
		r.recorder.Release(r.id)
		r.recorder = nil
	}
}
