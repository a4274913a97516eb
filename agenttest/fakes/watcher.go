// Package fakes holds in-memory stand-ins for what the presence manifolds
// output: a watcher and its subscriptions, a ping recorder (a batcher) and
// a leadership manager. A consumer's unit tests put them in a stub getter
// (agenttest.StubGetter) or behind agenttest.ValueManifold and need no
// database. Each fake keeps the contract of the interface it implements,
// so a consumer that passes against a fake behaves against the real
// worker; what the fakes cannot show (timing, outages) is for tests on the
// embedded server.
package fakes

import (
	"context"
	"sync"

	"github.com/juju/errors"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/watcher"
)

// Watcher is an in-memory watcher.PresenceWatcher whose test says who is
// alive with Set. Like the real one it never blocks on a consumer:
// changes reach each Watch channel in order from a goroutine of the
// channel's own, and subscriptions coalesce per key. Stop it when done.
// Its methods are safe for concurrent use.
type Watcher struct {
	mu       sync.Mutex
	drained  *sync.Cond
	alive    map[string]bool
	feeds    map[chan<- watcher.Change]*feed
	subs     map[*Subscription]bool
	err      error
	stopped  bool
	stopping chan struct{}
	wg       sync.WaitGroup
}

var _ watcher.PresenceWatcher = (*Watcher)(nil)

// NewWatcher returns a Watcher in which no key is alive.
func NewWatcher() *Watcher {
	w := &Watcher{
		alive:    make(map[string]bool),
		feeds:    make(map[chan<- watcher.Change]*feed),
		subs:     make(map[*Subscription]bool),
		stopping: make(chan struct{}),
	}
	w.drained = sync.NewCond(&w.mu)
	return w
}

// Set makes key alive or dead, and reports the change to every channel
// watching key and every subscription that covers it.
func (w *Watcher) Set(key string, alive bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if was, ok := w.alive[key]; ok && was == alive {
		return
	}
	w.alive[key] = alive
	change := watcher.Change{Key: key, Alive: alive}
	for _, f := range w.feeds {
		if f.keys[key] {
			f.enqueue(change)
		}
	}
	for sub := range w.subs {
		sub.push(change)
	}
}

// SetError makes Alive and Refresh fail with err (nil clears it), as a
// watcher whose reader has never loaded does.
func (w *Watcher) SetError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// Watch is part of watcher.PresenceWatcher. As with the real watcher, an
// invalid key or a nil channel is ignored.
func (w *Watcher) Watch(key string, ch chan<- watcher.Change) {
	if schema.ValidateKey(key) != nil || ch == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	f := w.feeds[ch]
	if f == nil {
		f = &feed{w: w, ch: ch, keys: make(map[string]bool), wake: make(chan struct{}, 1)}
		w.feeds[ch] = f
		w.wg.Add(1)
		go f.run()
	}
	f.keys[key] = true
	f.enqueue(watcher.Change{Key: key, Alive: w.alive[key]})
}

// Unwatch is part of watcher.PresenceWatcher.
func (w *Watcher) Unwatch(key string, ch chan<- watcher.Change) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f := w.feeds[ch]; f != nil {
		delete(f.keys, key)
		f.drop(key)
	}
}

// Alive is part of watcher.PresenceWatcher. A key never Set is dead.
func (w *Watcher) Alive(key string) (bool, error) {
	if err := schema.ValidateKey(key); err != nil {
		return false, errors.Trace(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false, watcher.ErrStopped
	}
	return w.alive[key], w.err
}

// Subscribe is part of watcher.PresenceWatcher.
func (w *Watcher) Subscribe(keys ...string) watcher.Subscription {
	sub := newSubscription(keys)
	for _, key := range keys {
		if err := schema.ValidateKey(key); err != nil {
			sub.fail(errors.Trace(err))
			return sub
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		sub.fail(watcher.ErrStopped)
		return sub
	}
	sub.unsubscribe = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.subs, sub)
	}
	w.subs[sub] = true
	sub.snapshot(w.alive)
	return sub
}

// Sync is part of watcher.PresenceWatcher: it returns once every change
// Set so far has been delivered to every Watch channel (or the watcher
// stopped).
func (w *Watcher) Sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.stopped && w.busy() {
		w.drained.Wait()
	}
}

func (w *Watcher) busy() bool {
	for _, f := range w.feeds {
		if len(f.queue) > 0 || f.sending {
			return true
		}
	}
	return false
}

// StartSync is part of watcher.PresenceWatcher; the fake has nothing to
// load.
func (w *Watcher) StartSync() {}

// Refresh is part of watcher.PresenceWatcher: it returns the error given
// to SetError.
func (w *Watcher) Refresh() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return watcher.ErrStopped
	}
	return w.err
}

// Stop ends every delivery and subscription, as a stopping watcher does:
// Next then fails with watcher.ErrStopped. It waits for the delivery
// goroutines and is safe to call more than once.
func (w *Watcher) Stop() {
	w.mu.Lock()
	if !w.stopped {
		w.stopped = true
		close(w.stopping)
		for sub := range w.subs {
			sub.fail(watcher.ErrStopped)
		}
		w.drained.Broadcast()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// feed delivers one channel's changes in order.
type feed struct {
	w       *Watcher
	ch      chan<- watcher.Change
	keys    map[string]bool
	queue   []watcher.Change // guarded by w.mu
	sending bool             // guarded by w.mu
	wake    chan struct{}
}

// enqueue is called with w.mu held; at most one change per key waits,
// the latest, as with the real watcher.
func (f *feed) enqueue(change watcher.Change) {
	f.drop(change.Key)
	f.queue = append(f.queue, change)
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// drop is called with w.mu held.
func (f *feed) drop(key string) {
	kept := f.queue[:0]
	for _, c := range f.queue {
		if c.Key != key {
			kept = append(kept, c)
		}
	}
	f.queue = kept
}

func (f *feed) run() {
	defer f.w.wg.Done()
	for {
		f.w.mu.Lock()
		f.sending = false
		if len(f.queue) == 0 {
			f.w.drained.Broadcast()
			f.w.mu.Unlock()
			select {
			case <-f.wake:
				continue
			case <-f.w.stopping:
				return
			}
		}
		change := f.queue[0]
		f.queue = f.queue[1:]
		f.sending = true
		f.w.mu.Unlock()
		select {
		case f.ch <- change:
		case <-f.w.stopping:
			return
		}
	}
}

// Subscription is the fake Watcher's watcher.Subscription: a snapshot
// first, then the changes since the previous Next, at most one per key.
type Subscription struct {
	keys        map[string]bool // nil: every key
	notify      chan struct{}
	unsubscribe func()

	mu      sync.Mutex
	err     error
	ready   bool // the snapshot is queued
	taken   bool // Next has returned the snapshot
	pending map[string]bool
	order   []string
}

var _ watcher.Subscription = (*Subscription)(nil)

func newSubscription(keys []string) *Subscription {
	sub := &Subscription{notify: make(chan struct{}, 1), pending: make(map[string]bool)}
	if len(keys) > 0 {
		sub.keys = make(map[string]bool, len(keys))
		for _, key := range keys {
			sub.keys[key] = true
		}
	}
	return sub
}

func (s *Subscription) covers(key string) bool {
	return s.keys == nil || s.keys[key]
}

// snapshot queues the current state of every covered key: a named key
// never Set is reported dead, as the real watcher does.
func (s *Subscription) snapshot(alive map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.keys {
		s.queueLocked(watcher.Change{Key: key, Alive: alive[key]})
	}
	if s.keys == nil {
		for key, a := range alive {
			s.queueLocked(watcher.Change{Key: key, Alive: a})
		}
	}
	s.ready = true
	s.wake()
}

func (s *Subscription) push(change watcher.Change) {
	if !s.covers(change.Key) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queueLocked(change)
	s.wake()
}

func (s *Subscription) queueLocked(change watcher.Change) {
	if _, queued := s.pending[change.Key]; !queued {
		s.order = append(s.order, change.Key)
	}
	s.pending[change.Key] = change.Alive
}

func (s *Subscription) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	s.wake()
}

func (s *Subscription) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Next is part of watcher.Subscription.
func (s *Subscription) Next(ctx context.Context) ([]watcher.Change, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		if s.ready && (!s.taken || len(s.order) > 0) {
			out := make([]watcher.Change, 0, len(s.order))
			for _, key := range s.order {
				out = append(out, watcher.Change{Key: key, Alive: s.pending[key]})
			}
			s.order, s.pending = nil, make(map[string]bool)
			s.taken = true
			s.mu.Unlock()
			return out, nil
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close is part of watcher.Subscription: Next then fails with
// watcher.ErrSubscriptionClosed.
func (s *Subscription) Close() {
	s.fail(watcher.ErrSubscriptionClosed)
	if s.unsubscribe != nil {
		s.unsubscribe()
	}
}
