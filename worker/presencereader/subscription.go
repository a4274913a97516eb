package presencereader

import (
	"context"
	"sync"

	"github.com/juju/errors"
)

// ErrSubscriptionClosed is returned by Next after Close.
const ErrSubscriptionClosed = errors.ConstError("subscription closed")

// Subscription is a pull-based view of some keys (or all keys) of one
// model. The first Next returns a snapshot; later calls block until some
// key changes and return the changes since the last call, at most one per
// key (the latest). The reader never waits for a subscription, and an
// unread one holds at most one pending change per key. Naming a key that
// no writer ever wrote costs only the subscription's own memory, which
// goes with Close.
//
// Next and Close are safe for concurrent use.
type Subscription struct {
	v    *View
	all  bool
	keys []string
	err  error

	notify chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	closed  bool
	ready   bool // the snapshot is in pending
	first   bool // Next has not returned the snapshot yet
	pending map[string]bool
	order   []string
	sent    map[string]bool
}

func newSubscription(v *View, keys []string) *Subscription {
	return &Subscription{
		v:       v,
		all:     len(keys) == 0,
		keys:    keys,
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		first:   true,
		pending: make(map[string]bool),
		sent:    make(map[string]bool),
	}
}

// Next returns the snapshot on its first call and the changes since the
// previous call afterwards, blocking until there is something to return.
// It fails with ctx's error, with ErrSubscriptionClosed after Close, and
// with the view's error (or ErrStopped) once the view or the reader stops.
func (s *Subscription) Next(ctx context.Context) ([]Change, error) {
	if s.err != nil {
		return nil, s.err
	}
	for {
		if out, ok, err := s.take(); err != nil || ok {
			return out, err
		}
		select {
		case <-s.notify:
		case <-s.done:
			return nil, ErrSubscriptionClosed
		case <-s.v.dying:
			return nil, s.v.err()
		case <-s.v.r.catacomb.Dying():
			return nil, s.v.err()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Subscription) take() ([]Change, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrSubscriptionClosed
	}
	if !s.ready || (!s.first && len(s.pending) == 0) {
		return nil, false, nil
	}
	out := make([]Change, 0, len(s.pending))
	for _, key := range s.order {
		if alive, ok := s.pending[key]; ok {
			out = append(out, Change{Key: key, Alive: alive})
			delete(s.pending, key)
			s.sent[key] = alive
		}
	}
	s.order = s.order[:0]
	s.first = false
	return out, true, nil
}

// Close stops the subscription; Next then fails with
// ErrSubscriptionClosed. It is safe to call more than once.
func (s *Subscription) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.pending, s.order = nil, nil
	close(s.done)
	s.mu.Unlock()
	if s.err == nil {
		s.v.send(reqUnsubscribe{sub: s})
	}
}

// push queues key's state, called from the reader's loop. It never
// blocks.
func (s *Subscription) push(key string, alive bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if last, ok := s.sent[key]; ok && last == alive {
		delete(s.pending, key)
		return
	}
	if _, queued := s.pending[key]; !queued {
		s.order = append(s.order, key)
	}
	s.pending[key] = alive
	s.wakeLocked()
}

// snapshot fills in the first Next's answer, called from the reader's
// loop once it has a view.
func (s *Subscription) snapshot(states []Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, c := range states {
		if _, queued := s.pending[c.Key]; !queued {
			s.order = append(s.order, c.Key)
		}
		s.pending[c.Key] = c.Alive
	}
	s.ready = true
	s.wakeLocked()
}

func (s *Subscription) wakeLocked() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// NewFailedSubscription returns a Subscription whose Next fails with err:
// what a watcher that could not subscribe hands out.
func NewFailedSubscription(err error) *Subscription {
	sub := newSubscription(nil, nil)
	sub.err = err
	return sub
}
