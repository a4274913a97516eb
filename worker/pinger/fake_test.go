package pinger_test

import (
	"sync"
	"time"

	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// fakeRecorder records what a pinger tells it.
type fakeRecorder struct {
	mu        sync.Mutex
	next      uint32
	live      map[pinger.Identity]bool
	pings     []int64
	deaths    []int64
	forget    bool
	pingErr   error
	registers int
	pinged    chan int64
	period    time.Duration
}

func newFakeRecorder() *fakeRecorder {
	return &fakeRecorder{live: make(map[pinger.Identity]bool), pinged: make(chan int64, 100), period: schema.DefaultPeriod}
}

func (f *fakeRecorder) Register(_ *mongo.Collection, model names.ModelTag, key string) (pinger.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers++
	id := pinger.Identity{Model: model.Id(), Writer: "w", Index: f.next}
	f.next++
	f.live[id] = true
	return id, nil
}

func (f *fakeRecorder) Ping(id pinger.Identity, slot int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pingErr != nil {
		return f.pingErr
	}
	if f.forget {
		f.forget = false
		delete(f.live, id)
	}
	if !f.live[id] {
		return pinger.ErrUnknownIdentity
	}
	f.pings = append(f.pings, slot)
	f.pinged <- slot
	return nil
}

func (f *fakeRecorder) Disconnect(id pinger.Identity, slot int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deaths = append(f.deaths, slot)
	return nil
}

func (f *fakeRecorder) Release(id pinger.Identity) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, id)
}

func (f *fakeRecorder) Period() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.period
}

func (f *fakeRecorder) snapshot() (pings, deaths []int64, live, registers int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.pings...), append([]int64(nil), f.deaths...), len(f.live), f.registers
}
