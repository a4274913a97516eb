// Package ratelog bounds log lines by cause and time: one line per cause
// at most every interval, whatever the number of documents, keys or
// models behind them, with the lines held back counted.
package ratelog

import (
	"sync"
	"time"
)

// Limiter decides which log lines are written: at most one per cause
// every interval, and it remembers at most a bounded number of causes
// (lines of causes beyond them share one). It is safe for concurrent use.
type Limiter struct {
	every     time.Duration
	maxCauses int

	mu     sync.Mutex
	causes map[string]*cause
	held   int
}

// cause is when one cause last wrote, and how many of its lines were
// held back since.
type cause struct {
	last time.Time
	held int
}

// overflow is the cause of every line whose own cause finds no room.
const overflow = "\x00other"

// New returns a Limiter that lets one line per cause through every
// interval, remembering at most maxCauses causes (at least two), one of
// which is shared by the lines of every cause that found no room.
func New(every time.Duration, maxCauses int) *Limiter {
	return &Limiter{every: every, maxCauses: max(maxCauses, 2), causes: make(map[string]*cause)}
}

// Allow reports whether a line of cause may be written at now and, if it
// may, how many lines of that cause were held back since its last one.
func (l *Limiter) Allow(name string, now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.causes[name]
	if c == nil {
		c = l.add(name, now)
	}
	if !c.last.IsZero() && now.Sub(c.last) < l.every {
		c.held++
		l.held++
		return false, 0
	}
	held, c.last, c.held = c.held, now, 0
	return true, held
}

// add makes room for a new cause, forgetting those that wrote an
// interval ago or more with nothing held since, and returns it, or the
// overflow cause if there is still no room. l.mu must be held.
func (l *Limiter) add(name string, now time.Time) *cause {
	if len(l.causes) >= l.maxCauses-1 {
		for n, c := range l.causes {
			if c.held == 0 && now.Sub(c.last) >= l.every {
				delete(l.causes, n)
			}
		}
	}
	if len(l.causes) >= l.maxCauses-1 {
		name = overflow
		if c := l.causes[name]; c != nil {
			return c
		}
	}
	c := &cause{}
	l.causes[name] = c
	return c
}

// Held returns how many lines were held back in all.
func (l *Limiter) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Causes returns how many causes the Limiter remembers.
func (l *Limiter) Causes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.causes)
}
