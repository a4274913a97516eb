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
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/juju/errors"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/watcher"
)

// Watcher is an in-memory watcher.PresenceWatcher, with the rest of
// *watcher.Watcher's methods (SubscribeWith, Position, Report and those
// of a worker.Worker), whose test says who is alive with Set. Like the
// real one it never blocks on a consumer: changes reach each Watch
// channel in order from a goroutine of the channel's own, and
// subscriptions read a change log at their own pace, every change or
// coalesced per key, and resume after a Position. Unlike the real one
// its log keeps every change until the watcher stops, which suits a
// test. Stop it (or Kill and Wait) when done. Its methods are safe for
// concurrent use.
type Watcher struct {
	view string

	mu       sync.Mutex // taken before any Subscription's
	drained  *sync.Cond
	alive    map[string]bool
	feeds    map[chan<- watcher.Change]*feed
	log      []watcher.Event
	changed  chan struct{} // closed and replaced at every change
	err      error
	stopped  bool
	stopping chan struct{}
	dead     chan struct{}
	wg       sync.WaitGroup
}

var _ watcher.PresenceWatcher = (*Watcher)(nil)

// views numbers fake watchers, so that a Position from one is a reset
// in another, as between real watchers.
var views atomic.Int64

// NewWatcher returns a Watcher in which no key is alive.
func NewWatcher() *Watcher {
	w := &Watcher{
		view:     "fake" + strconv.FormatInt(views.Add(1), 10),
		alive:    make(map[string]bool),
		feeds:    make(map[chan<- watcher.Change]*feed),
		changed:  make(chan struct{}),
		stopping: make(chan struct{}),
		dead:     make(chan struct{}),
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
	w.log = append(w.log, watcher.Event{Change: change, Position: watcher.Position{View: w.view, Seq: uint64(len(w.log) + 1)}})
	close(w.changed)
	w.changed = make(chan struct{})
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

// Subscribe is part of watcher.PresenceWatcher: SubscribeWith with keys,
// coalesced.
func (w *Watcher) Subscribe(keys ...string) watcher.Subscription {
	return w.SubscribeWith(watcher.SubscribeConfig{Keys: keys, Coalesce: true})
}

// SubscribeWith returns a subscription as config says, as
// (*watcher.Watcher).SubscribeWith does: a snapshot first (or, after a
// Position of this watcher, the changes since; after any other, a
// snapshot marked Reset), then every change in order, or with Coalesce
// at most one per key and none for a key back where it was. With an
// invalid key, or on a stopped watcher, Next fails with the reason.
func (w *Watcher) SubscribeWith(config watcher.SubscribeConfig) watcher.ResumableSubscription {
	sub := &Subscription{w: w, after: config.After, coalesce: config.Coalesce, done: make(chan struct{})}
	if len(config.Keys) > 0 {
		sub.keys = make(map[string]bool, len(config.Keys))
	}
	for _, key := range config.Keys {
		if err := schema.ValidateKey(key); err != nil {
			sub.err = errors.Trace(err)
			return sub
		}
		sub.keys[key] = true
	}
	return sub
}

// Position is (*watcher.Watcher).Position: the position of the latest
// change, after which a subscription gets the changes from now on.
func (w *Watcher) Position() watcher.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.positionLocked()
}

func (w *Watcher) positionLocked() watcher.Position {
	return watcher.Position{View: w.view, Seq: uint64(len(w.log))}
}

// Report is part of the dependency.Reporter interface: the keys and how
// many are alive.
func (w *Watcher) Report() map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	alive := 0
	for _, a := range w.alive {
		if a {
			alive++
		}
	}
	return map[string]any{"keys": len(w.alive), "alive": alive}
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

// Kill is part of the worker.Worker interface: it ends every delivery
// and subscription, as a stopping watcher does: Next, Alive and Refresh
// then fail with watcher.ErrStopped. It does not wait.
func (w *Watcher) Kill() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	close(w.stopping)
	w.drained.Broadcast()
	go func() {
		w.wg.Wait()
		close(w.dead)
	}()
}

// Wait is part of the worker.Worker interface: it returns nil once the
// delivery goroutines have ended after Kill.
func (w *Watcher) Wait() error {
	<-w.dead
	return nil
}

// Stop kills the watcher and waits for it. It is safe to call more than
// once.
func (w *Watcher) Stop() error {
	w.Kill()
	return w.Wait()
}

// Dead returns a channel that is closed once the watcher has stopped.
func (w *Watcher) Dead() <-chan struct{} {
	return w.dead
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

// Subscription is the fake Watcher's watcher.ResumableSubscription. Its
// methods are safe for concurrent use.
type Subscription struct {
	w        *Watcher
	keys     map[string]bool // nil: every key
	after    watcher.Position
	coalesce bool
	err      error // set at creation only

	mu       sync.Mutex
	closed   bool
	done     chan struct{}
	placed   bool   // cursor is a place in the log
	cursor   uint64 // the changes up to cursor were answered
	answered bool
}

var _ watcher.ResumableSubscription = (*Subscription)(nil)

// Next is part of watcher.Subscription: NextBatch without positions.
func (s *Subscription) Next(ctx context.Context) ([]watcher.Change, error) {
	b, err := s.NextBatch(ctx)
	if err != nil {
		return nil, err
	}
	return b.Changes(), nil
}

// NextBatch is part of watcher.ResumableSubscription. It fails with
// ctx's error, with watcher.ErrSubscriptionClosed after Close and with
// watcher.ErrStopped once the watcher stops.
func (s *Subscription) NextBatch(ctx context.Context) (watcher.Batch, error) {
	if s.err != nil {
		return watcher.Batch{}, s.err
	}
	for {
		b, ok, changed, err := s.take()
		if err != nil || ok {
			return b, err
		}
		select {
		case <-changed:
		case <-s.done:
			return watcher.Batch{}, watcher.ErrSubscriptionClosed
		case <-s.w.stopping:
			return watcher.Batch{}, watcher.ErrStopped
		case <-ctx.Done():
			return watcher.Batch{}, ctx.Err()
		}
	}
}

// take returns the next answer if there is one, else the channel closed
// at the next change.
func (s *Subscription) take() (watcher.Batch, bool, <-chan struct{}, error) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return watcher.Batch{}, false, nil, watcher.ErrSubscriptionClosed
	case w.stopped:
		return watcher.Batch{}, false, nil, watcher.ErrStopped
	}
	end := w.positionLocked()
	if !s.placed {
		s.placed = true
		if s.after.IsZero() || s.after.View != w.view || s.after.Seq > end.Seq {
			s.cursor, s.answered = end.Seq, true
			return watcher.Batch{Snapshot: true, Reset: !s.after.IsZero(), Events: s.snapshotLocked(), End: end}, true, nil, nil
		}
		s.cursor = s.after.Seq
	}
	events := s.readLocked(w.log[s.cursor:])
	s.cursor = end.Seq
	if len(events) == 0 && s.answered {
		return watcher.Batch{}, false, w.changed, nil
	}
	s.answered = true
	return watcher.Batch{Events: events, End: end}, true, nil, nil
}

// snapshotLocked returns the states of the keys followed, sorted by key:
// a named key never Set is dead.
func (s *Subscription) snapshotLocked() []watcher.Event {
	var keys []string
	if s.keys == nil {
		for key := range s.w.alive {
			keys = append(keys, key)
		}
	} else {
		for key := range s.keys {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	events := make([]watcher.Event, len(keys))
	for i, key := range keys {
		events[i] = watcher.Event{Change: watcher.Change{Key: key, Alive: s.w.alive[key]}}
	}
	return events
}

// readLocked returns the events of log for the keys followed: all of
// them, or coalesced, the last of each key whose state changed, in the
// order of those last events.
func (s *Subscription) readLocked(log []watcher.Event) []watcher.Event {
	var events []watcher.Event
	for _, e := range log {
		if s.keys == nil || s.keys[e.Key] {
			events = append(events, e)
		}
	}
	if !s.coalesce {
		return events
	}
	// A key's states alternate, so it is back where it was after an
	// even number of changes.
	count := make(map[string]int)
	for _, e := range events {
		count[e.Key]++
	}
	var out []watcher.Event
	seen := make(map[string]int)
	for _, e := range events {
		seen[e.Key]++
		if seen[e.Key] == count[e.Key] && count[e.Key]%2 == 1 {
			out = append(out, e)
		}
	}
	return out
}

// Close is part of watcher.Subscription: Next then fails with
// watcher.ErrSubscriptionClosed. It is safe to call more than once.
func (s *Subscription) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
}
