package presencereader

import (
	"context"
	"sync"

	"github.com/juju/errors"
)

// ErrSubscriptionClosed is returned by Next after Close.
const ErrSubscriptionClosed = errors.ConstError("subscription closed")

// SubscribeConfig says what a Subscription follows, from where, and how.
type SubscribeConfig struct {
	// Keys are the keys followed; none means every key of the model.
	Keys []string

	// After, when not zero, is the position to resume after, usually
	// the End of the last Batch (or the Position of the last Event) a
	// subscriber took before it went away. The first answer is then the
	// changes after it, possibly none; or, when the view no longer holds
	// them (After is older than its change log, or comes from another
	// view, another process or an earlier run), a snapshot marked Reset.
	// There is never a silent gap.
	After Position

	// Coalesce, when set, makes every answer hold at most one change
	// per key, its latest state, and none for a key whose state is back
	// where it was; otherwise every change is reported, in order, so
	// that a key that flapped while nobody read is reported with each
	// transition.
	Coalesce bool
}

// Event is a Change at its position in its view's change log.
type Event struct {
	Change
	// Position is where the change stands; resuming after it continues
	// with the next change. It is zero on the states of a snapshot:
	// only a snapshot's End is a place to resume from.
	Position Position
}

// Batch is one answer of a Subscription.
type Batch struct {
	// Snapshot is set when Events are the states of every key followed
	// at End rather than changes: the first answer of a subscription
	// that does not resume, and every reset.
	Snapshot bool

	// Reset is set on a snapshot that stands in for changes the view
	// no longer holds: the subscription's After was older than the
	// view's change log or came from another view, or the subscriber
	// fell so far behind that the log dropped changes it had not taken.
	// The subscriber must replace what it knew with the snapshot.
	Reset bool

	// Events are the changes, in the order of their positions, or the
	// states of a snapshot.
	Events []Event

	// End is the position the batch brings the subscriber to: resuming
	// after End continues exactly where the batch ends.
	End Position
}

// Changes returns the batch's events as plain changes, in order.
func (b Batch) Changes() []Change {
	out := make([]Change, len(b.Events))
	for i, e := range b.Events {
		out[i] = e.Change
	}
	return out
}

// Subscription is a pull-based view of some keys (or all keys) of one
// model. Its first answer is a snapshot, or when it resumes after a
// position, the changes after that position; later answers block until
// some key changes and bring the changes since the previous answer:
// every one, in order, or with SubscribeConfig.Coalesce (and with
// Subscribe) at most one per key, the latest.
//
// Subscriptions read the model's change log, which is shared and
// bounded (see Config.LogLength and Config.LogAge): the reader never
// waits for a subscription, and an unread one holds nothing but its
// place in the log. A subscriber that falls behind the log's end gets a
// reset and a fresh snapshot rather than a gap. Naming a key that no
// writer ever wrote costs only the subscription's own memory, which
// goes with Close.
//
// Next, NextBatch and Close are safe for concurrent use.
type Subscription struct {
	v        *View
	log      *changeLog
	all      bool
	keys     []string
	set      map[string]bool
	after    Position
	coalesce bool
	err      error

	notify chan struct{}
	done   chan struct{}
	// woken is the load that last woke the subscription; it is owned by
	// the reader's loop.
	woken uint64

	mu       sync.Mutex
	closed   bool
	placed   bool   // cursor is a place in the log
	cursor   uint64 // the changes up to cursor were answered
	answered bool   // an answer was returned
	asked    bool   // a snapshot was asked of the reader
	snap     *Batch // a snapshot to answer with
}

func newSubscription(v *View, config SubscribeConfig) *Subscription {
	s := &Subscription{
		v:        v,
		all:      len(config.Keys) == 0,
		after:    config.After,
		coalesce: config.Coalesce,
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if v != nil {
		s.log = v.log
	}
	if !s.all {
		s.set = make(map[string]bool, len(config.Keys))
		for _, key := range config.Keys {
			if !s.set[key] {
				s.set[key] = true
				s.keys = append(s.keys, key)
			}
		}
	}
	return s
}

// Next returns the changes of the next answer (see NextBatch) without
// their positions, blocking until there is something to return; a reset
// comes as the snapshot's states. It fails with ctx's error, with
// ErrSubscriptionClosed after Close, and with the view's error (or
// ErrStopped) once the view or the reader stops.
func (s *Subscription) Next(ctx context.Context) ([]Change, error) {
	b, err := s.NextBatch(ctx)
	if err != nil {
		return nil, err
	}
	return b.Changes(), nil
}

// NextBatch returns the subscription's next answer, blocking until there
// is something to return: the snapshot (or, resuming, the changes after
// SubscribeConfig.After, possibly none) on its first call, and the
// changes since the previous answer afterwards. It fails as Next does.
func (s *Subscription) NextBatch(ctx context.Context) (Batch, error) {
	if s.err != nil {
		return Batch{}, s.err
	}
	for {
		b, ok, ask, changed, err := s.take()
		if err != nil || ok {
			return b, err
		}
		if ask != nil && !ask.invoke(s.v.r, s.v.dying) {
			return Batch{}, s.v.err()
		}
		select {
		case <-s.notify:
		case <-changed:
		case <-s.done:
			return Batch{}, ErrSubscriptionClosed
		case <-s.v.dying:
			return Batch{}, s.v.err()
		case <-s.v.r.catacomb.Dying():
			return Batch{}, s.v.err()
		case <-ctx.Done():
			return Batch{}, ctx.Err()
		}
	}
}

// take returns the next answer if there is one. Otherwise it returns the
// request for a snapshot to send to the reader, if one is due, and the
// channel closed when the log takes a change this subscription wants to
// be woken for, if any.
func (s *Subscription) take() (b Batch, ok bool, ask *reqSnapshot, changed <-chan struct{}, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Batch{}, false, nil, nil, ErrSubscriptionClosed
	}
	if s.snap != nil {
		b, s.snap = *s.snap, nil
		s.cursor, s.placed, s.answered = b.End.Seq, true, true
		return b, true, nil, nil, nil
	}
	if s.asked {
		return Batch{}, false, nil, nil, nil
	}
	l := s.log
	l.mu.RLock()
	if !s.placed && !s.after.IsZero() && s.after.View == l.id && l.holds(s.after.Seq) {
		s.cursor, s.placed = s.after.Seq, true
	}
	var events []Event
	held := false
	if s.placed {
		events, held = l.read(s.cursor, s.all, s.keys, s.set, s.coalesce)
	}
	end := l.position()
	if s.all {
		changed = l.changed
	}
	l.mu.RUnlock()
	if !held {
		// A fresh subscription, a position the log does not hold, or
		// a subscriber the log's end has passed: a snapshot, taken by
		// the reader.
		s.asked = true
		reset := s.placed || !s.after.IsZero()
		return Batch{}, false, &reqSnapshot{sub: s, reset: reset}, nil, nil
	}
	s.cursor = end.Seq
	if len(events) == 0 && s.answered {
		return Batch{}, false, nil, changed, nil
	}
	s.answered = true
	return Batch{Events: events, End: end}, true, nil, nil, nil
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
	s.snap = nil
	close(s.done)
	s.mu.Unlock()
	if s.err == nil {
		reqUnsubscribe{sub: s}.invoke(s.v.r, s.v.dying)
	}
}

// wake tells a waiting Next that one of its keys changed, called from
// the reader's loop. It never blocks.
func (s *Subscription) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// snapshot answers a request for a snapshot with the states of the
// subscription's keys at end, called from the reader's loop.
func (s *Subscription) snapshot(states []Change, end Position, reset bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	events := make([]Event, len(states))
	for i, c := range states {
		events[i] = Event{Change: c}
	}
	s.snap = &Batch{Snapshot: true, Reset: reset, Events: events, End: end}
	s.asked = false
	s.wake()
}

// NewFailedSubscription returns a Subscription whose Next fails with err:
// what a watcher that could not subscribe hands out.
func NewFailedSubscription(err error) *Subscription {
	sub := newSubscription(nil, SubscribeConfig{})
	sub.err = err
	return sub
}
