package fakes

import (
	"sync"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	presence "github.com/presencekit/presence"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// Batcher is an in-memory ping recorder: a presence.Batcher (and so a
// pinger.PingRecorder) and a worker.Worker, as *pingbatcher.PingBatcher
// is, that remembers, per model and key, how many pings and deaths its
// pingers recorded, and writes nothing. It needs no database: Register
// takes any base collection, nil included. Set a Watcher (optional) to
// have pings make keys alive in it and deaths dead, as a batcher and a
// reader together would. Once killed, its methods fail with
// pingbatcher.ErrStopped, as the real one's do. Its methods are safe for
// concurrent use.
type Batcher struct {
	// Watcher, if not nil, is told of every ping (alive) and death
	// (dead) at the next Sync.
	Watcher *Watcher

	period time.Duration

	mu      sync.Mutex
	next    uint32
	ids     map[pinger.Identity]keyOf
	pings   map[keyOf]int
	deaths  map[keyOf]int
	unsaved map[string]bool
	err     error
	stopped bool
	dead    chan struct{}
}

var _ presence.Batcher = (*Batcher)(nil)

type keyOf struct{ model, key string }

// NewBatcher returns a Batcher whose pingers use period (zero means the
// default Period).
func NewBatcher(period time.Duration) *Batcher {
	if period == 0 {
		period = schema.DefaultPeriod
	}
	return &Batcher{
		period:  period,
		ids:     make(map[pinger.Identity]keyOf),
		pings:   make(map[keyOf]int),
		deaths:  make(map[keyOf]int),
		unsaved: make(map[string]bool),
		dead:    make(chan struct{}),
	}
}

// Kill is part of the worker.Worker interface.
func (b *Batcher) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped {
		b.stopped = true
		close(b.dead)
	}
}

// Wait is part of the worker.Worker interface: it returns nil once the
// batcher is killed.
func (b *Batcher) Wait() error {
	<-b.dead
	return nil
}

// Stop kills the batcher and waits for it.
func (b *Batcher) Stop() error {
	b.Kill()
	return b.Wait()
}

// Dead returns a channel that is closed once the batcher has stopped.
func (b *Batcher) Dead() <-chan struct{} {
	return b.dead
}

// errLocked returns the error the methods fail with now, if any.
func (b *Batcher) errLocked() error {
	if b.stopped {
		return pingbatcher.ErrStopped
	}
	return b.err
}

// SetError makes Ping, Dead and Sync fail with err (nil clears it), as a
// stopped batcher does.
func (b *Batcher) SetError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

// Pings returns how many pings key of model has had.
func (b *Batcher) Pings(model names.ModelTag, key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pings[keyOf{model.Id(), key}]
}

// Deaths returns how many deaths (Disconnects) key of model has had.
func (b *Batcher) Deaths(model names.ModelTag, key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.deaths[keyOf{model.Id(), key}]
}

// Register is part of pinger.PingRecorder. Base is not used, and may be
// nil.
func (b *Batcher) Register(_ *mongo.Collection, model names.ModelTag, key string) (pinger.Identity, error) {
	if err := schema.ValidateModel(model); err != nil {
		return pinger.Identity{}, errors.Trace(err)
	}
	if err := schema.ValidateKey(key); err != nil {
		return pinger.Identity{}, errors.Trace(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return pinger.Identity{}, pingbatcher.ErrStopped
	}
	id := pinger.Identity{Model: model.Id(), Writer: "fake", Index: b.next}
	b.next++
	b.ids[id] = keyOf{model.Id(), key}
	return id, nil
}

// Ping is part of pinger.PingRecorder.
func (b *Batcher) Ping(id pinger.Identity, slot int64) error {
	return b.record(id, b.pings, true)
}

// Disconnect is part of pinger.PingRecorder.
func (b *Batcher) Disconnect(id pinger.Identity, slot int64) error {
	return b.record(id, b.deaths, false)
}

func (b *Batcher) record(id pinger.Identity, counts map[keyOf]int, alive bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.errLocked(); err != nil {
		return err
	}
	k, ok := b.ids[id]
	if !ok {
		return pinger.ErrUnknownIdentity
	}
	counts[k]++
	b.unsaved[k.key] = alive
	return nil
}

// Release is part of pinger.PingRecorder.
func (b *Batcher) Release(id pinger.Identity) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.ids, id)
}

// Period is part of pinger.PingRecorder.
func (b *Batcher) Period() time.Duration {
	return b.period
}

// Sync is part of presence.Batcher: it tells the Watcher, if any, what
// was recorded since the last Sync.
func (b *Batcher) Sync() error {
	b.mu.Lock()
	if err := b.errLocked(); err != nil {
		b.mu.Unlock()
		return err
	}
	unsaved := b.unsaved
	b.unsaved = make(map[string]bool)
	b.mu.Unlock()
	if b.Watcher != nil {
		for key, alive := range unsaved {
			b.Watcher.Set(key, alive)
		}
	}
	return nil
}
