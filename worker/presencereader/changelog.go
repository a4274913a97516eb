package presencereader

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"
	"unsafe"
)

// logEntry is one change in a model's log.
type logEntry struct {
	key string
	// at is when the reader applied the change, in Unix nanoseconds by
	// its clock.
	at int64
	// back is how many entries before this one the key's previous entry
	// is, or zero when the log holds none.
	back  uint32
	alive bool
}

const (
	// logEntrySize is what one entry costs in the ring; the key's bytes
	// are shared with the reader's view.
	logEntrySize = int(unsafe.Sizeof(logEntry{}))

	// latestEntrySize estimates what one key costs in a log's index of
	// each key's newest entry.
	latestEntrySize = 48

	// minRing is the smallest ring a log keeps once it has grown.
	minRing = 64
)

// changeLog is the bounded log of one model's changes, shared by the
// model's views: the reader's loop appends and prunes, and subscriptions
// read it from their own goroutines. It holds at most max entries, and
// none older than the reader's LogAge once a load has pruned it.
type changeLog struct {
	id  string
	max int

	// refs counts the views attached, and unviewed is when the last of
	// them went; both are owned by the loop.
	refs     int
	unviewed time.Time
	// locked is set while the loop holds mu to append a load's
	// changes, and added once it has until they are published; both
	// are owned by the loop.
	locked, added bool

	// The fields below are written by the loop with mu held, and read by
	// subscriptions with mu read-locked (and by the loop without it).
	mu    sync.RWMutex
	ring  []logEntry
	start int // ring index of the oldest entry
	n     int
	// last is the sequence number of the newest entry; the oldest is
	// last-n+1, and positions from last-n to last can be resumed after.
	last uint64
	// latest maps each key to the sequence number of its newest entry.
	latest map[string]uint64
	// changed is closed, and replaced, whenever entries are added.
	changed chan struct{}
}

func newChangeLog(max int) *changeLog {
	return &changeLog{
		id:      newLogID(),
		max:     max,
		latest:  make(map[string]uint64),
		changed: make(chan struct{}),
	}
}

// floor returns the oldest sequence number a subscriber can resume
// after.
func (l *changeLog) floor() uint64 {
	return l.last - uint64(l.n)
}

// position returns the position of the log's newest change.
func (l *changeLog) position() Position {
	return Position{View: l.id, Seq: l.last}
}

// holds reports whether the changes after seq are all in the log.
func (l *changeLog) holds(seq uint64) bool {
	return seq >= l.floor() && seq <= l.last
}

// entry returns the entry numbered seq, which the log must hold.
func (l *changeLog) entry(seq uint64) *logEntry {
	i := l.start + int(seq-(l.last-uint64(l.n)+1))
	if i >= len(l.ring) {
		i -= len(l.ring)
	}
	return &l.ring[i]
}

// add appends key's new state, applied at at; mu must be held. At max
// entries the oldest goes.
func (l *changeLog) add(key string, alive bool, at time.Time) {
	if l.n == l.max {
		l.dropOldest()
	}
	if l.n == len(l.ring) {
		l.resize(min(max(2*len(l.ring), minRing), l.max))
	}
	l.last++
	e := logEntry{key: key, at: at.UnixNano(), alive: alive}
	if prev, ok := l.latest[key]; ok && l.last-prev <= math.MaxUint32 {
		e.back = uint32(l.last - prev)
	}
	l.latest[key] = l.last
	i := l.start + l.n
	if i >= len(l.ring) {
		i -= len(l.ring)
	}
	l.ring[i] = e
	l.n++
}

// dropOldest removes the oldest entry; mu must be held.
func (l *changeLog) dropOldest() {
	seq := l.floor() + 1
	e := &l.ring[l.start]
	if l.latest[e.key] == seq {
		delete(l.latest, e.key)
	}
	*e = logEntry{}
	l.start++
	if l.start == len(l.ring) {
		l.start = 0
	}
	l.n--
}

// resize moves the entries to a ring of size entries; mu must be held.
func (l *changeLog) resize(size int) {
	ring := make([]logEntry, size)
	for i := 0; i < l.n; i++ {
		ring[i] = l.ring[(l.start+i)%len(l.ring)]
	}
	l.ring, l.start = ring, 0
}

// prunable reports whether prune(cutoff) would remove anything. It must
// only be called from the loop.
func (l *changeLog) prunable(cutoff time.Time) bool {
	return l.n > 0 && l.ring[l.start].at < cutoff.UnixNano()
}

// prune removes the entries applied before cutoff, and gives back the
// ring's memory when few entries are left; mu must be held.
func (l *changeLog) prune(cutoff time.Time) {
	for l.prunable(cutoff) {
		l.dropOldest()
	}
	if len(l.ring) > minRing && l.n < len(l.ring)/4 {
		l.resize(max(minRing, 2*l.n))
	}
	if l.n == 0 && len(l.latest) > 0 {
		clear(l.latest)
	}
}

// bytes returns the memory the log holds, besides the keys' bytes,
// which the view holds anyway.
func (l *changeLog) bytes() int {
	return len(l.ring)*logEntrySize + len(l.latest)*latestEntrySize
}

// publish wakes the subscribers that wait for any change. A subscriber
// that read the new entries before may be woken for nothing; one that
// read before them is woken.
func (l *changeLog) publish() {
	l.mu.Lock()
	changed := l.changed
	l.changed = make(chan struct{})
	l.mu.Unlock()
	close(changed)
}

// read returns the changes after seq: those of keys (every key when all
// is set), each with its position, in order; with coalesce, only the
// latest of each key, and none for a key whose state is back where it
// was at seq. It returns ok false when the log no longer holds (or never
// held) the changes after seq. mu must be read-locked.
func (l *changeLog) read(seq uint64, all bool, keys []string, set map[string]bool, coalesce bool) (events []Event, ok bool) {
	if !l.holds(seq) {
		return nil, false
	}
	if seq == l.last {
		return nil, true
	}
	if !all && uint64(len(keys)) < l.last-seq {
		return l.readKeys(seq, keys, coalesce), true
	}
	return l.scan(seq, all, set, coalesce), true
}

// scan is read by a scan of every entry after seq.
func (l *changeLog) scan(seq uint64, all bool, set map[string]bool, coalesce bool) (events []Event) {
	for s := seq + 1; s <= l.last; s++ {
		if e := l.entry(s); all || set[e.key] {
			events = append(events, l.event(s, e))
		}
	}
	if !coalesce || len(events) == 0 {
		return events
	}
	// Every entry is a transition, so a key changed between seq and now
	// when it has an odd number of entries after seq.
	type tally struct {
		count int
		last  uint64
	}
	tallies := make(map[string]tally, len(events))
	for _, e := range events {
		t := tallies[e.Key]
		tallies[e.Key] = tally{count: t.count + 1, last: e.Position.Seq}
	}
	kept := events[:0]
	for _, e := range events {
		if t := tallies[e.Key]; t.last == e.Position.Seq && t.count%2 == 1 {
			kept = append(kept, e)
		}
	}
	return kept
}

// readKeys is read for a few keys: it follows each key's entries back
// from its newest, at a cost that does not grow with other keys' changes.
func (l *changeLog) readKeys(seq uint64, keys []string, coalesce bool) []Event {
	var events []Event
	for _, key := range keys {
		first := len(events)
		for s, held := l.latest[key]; held && s > seq; {
			e := l.entry(s)
			events = append(events, l.event(s, e))
			if e.back == 0 {
				break
			}
			s -= uint64(e.back)
		}
		if coalesce && len(events) > first {
			// The newest comes first; the key changed if it has an
			// odd number of entries after seq.
			if (len(events)-first)%2 == 1 {
				events = events[:first+1]
			} else {
				events = events[:first]
			}
		}
	}
	if len(keys) > 1 {
		slices.SortFunc(events, func(a, b Event) int {
			return cmp.Compare(a.Position.Seq, b.Position.Seq)
		})
	} else {
		slices.Reverse(events)
	}
	return events
}

// event returns e, numbered seq, as an Event.
func (l *changeLog) event(seq uint64, e *logEntry) Event {
	return Event{Change: Change{Key: e.key, Alive: e.alive}, Position: Position{View: l.id, Seq: seq}}
}
