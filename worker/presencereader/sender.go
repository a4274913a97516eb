package presencereader

import "sync"

// Change is a key's new state.
type Change struct {
	Key   string
	Alive bool
}

// sender delivers changes to one channel from a goroutine of its own, so
// that a slow or absent reader delays nobody else. It keeps at most one
// pending change per key, the latest, and drops a pending change that
// would only repeat what the reader last got (or is being handed).
type sender struct {
	ch    chan<- Change
	owner *View
	wake  chan struct{}
	quit  chan struct{}

	// refs and touched are owned by the reader's loop goroutine.
	refs    int
	touched uint64

	mu      sync.Mutex
	pending map[string]pendingChange
	// order lists the keys to deliver, oldest first, each at most once
	// (ordered is the set of keys it holds): a key whose pending change
	// was dropped stays in it, so that its next change does not add it
	// again, and an unread channel holds one entry per key however often
	// the key flaps.
	order     []string
	ordered   map[string]bool
	sent      map[string]bool
	inflight  string // the key being handed over, if any
	flying    bool
	delivered chan struct{}
}

type pendingChange struct {
	alive bool
	gen   uint64
}

func newSender(ch chan<- Change, owner *View) *sender {
	return &sender{
		ch:        ch,
		owner:     owner,
		wake:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		pending:   make(map[string]pendingChange),
		ordered:   make(map[string]bool),
		sent:      make(map[string]bool),
		delivered: make(chan struct{}),
	}
}

// enqueue queues key's state, replacing any pending one. Unless initial is
// set, a state equal to what the reader last got is not sent; a state
// equal to the one being handed over is, as that one may be stale by the
// time it arrives.
func (s *sender) enqueue(key string, alive bool, gen uint64, initial bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.sent[key]; ok && last == alive && !initial && !(s.flying && s.inflight == key) {
		if _, queued := s.pending[key]; queued {
			delete(s.pending, key)
			s.notifyLocked()
		}
		return
	}
	if !s.ordered[key] {
		s.ordered[key] = true
		s.order = append(s.order, key)
	}
	s.pending[key] = pendingChange{alive: alive, gen: gen}
	s.signal()
}

// drop forgets key: its pending change is not delivered.
func (s *sender) drop(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, key)
	delete(s.sent, key)
	s.notifyLocked()
	s.signal()
}

func (s *sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// notifyLocked wakes waitDelivered callers. s.mu must be held.
func (s *sender) notifyLocked() {
	close(s.delivered)
	s.delivered = make(chan struct{})
}

// next returns the oldest pending change and marks it in flight.
func (s *sender) next() (string, pendingChange, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.order) > 0 {
		key := s.order[0]
		if pc, ok := s.pending[key]; ok {
			s.inflight, s.flying = key, true
			return key, pc, true
		}
		s.pop()
	}
	s.order = nil
	return "", pendingChange{}, false
}

// pop removes the oldest key of the order; s.mu must be held.
func (s *sender) pop() {
	delete(s.ordered, s.order[0])
	s.order[0] = ""
	s.order = s.order[1:]
}

// land records that the change in flight was not handed over.
func (s *sender) land() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flying = false
}

// run delivers until quit or dying closes.
func (s *sender) run(dying <-chan struct{}) {
	for {
		key, pc, ok := s.next()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.quit:
				return
			case <-dying:
				return
			}
		}
		select {
		case s.ch <- Change{Key: key, Alive: pc.alive}:
			s.mu.Lock()
			if cur, ok := s.pending[key]; ok && cur == pc {
				delete(s.pending, key)
			}
			if _, ok := s.pending[key]; !ok && len(s.order) > 0 && s.order[0] == key {
				s.pop()
			}
			s.sent[key] = pc.alive
			s.flying = false
			s.notifyLocked()
			s.mu.Unlock()
		case <-s.wake:
			s.land()
		case <-s.quit:
			return
		case <-dying:
			return
		}
	}
}

// waitDelivered blocks until no change of generation gen or older is
// pending, or until the sender or its view stops.
func (s *sender) waitDelivered(gen uint64, dying <-chan struct{}) bool {
	for {
		s.mu.Lock()
		waiting := false
		for _, pc := range s.pending {
			if pc.gen <= gen {
				waiting = true
				break
			}
		}
		delivered := s.delivered
		s.mu.Unlock()
		if !waiting {
			return true
		}
		select {
		case <-delivered:
		case <-s.quit:
			return true
		case <-dying:
			return false
		}
	}
}
