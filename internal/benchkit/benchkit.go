// Package benchkit holds what the load commands (cmd/presencebench and
// the anchors module beside etcd) measure latencies with: percentiles,
// events staggered over a period, and Sightings, which records when an
// observer saw each key come up and go down, whatever system it
// watches.
package benchkit

import (
	"context"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/presencekit/presence/worker/watcher"
)

// EventPrefix starts the keys that a run starts and stops on purpose; the
// death of any other key is false (see Sightings.Unexpected).
const EventPrefix = "event-"

// Percentiles returns the median, the 99th percentile and the largest of
// ds, or zeros when ds is empty. A percentile q is the sample at index
// floor(q*n) of the n sorted samples (the higher of the two around it),
// so that p99 of 100 samples is the largest. ds is left as it is.
func Percentiles(ds []time.Duration) (p50, p99, worst time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	sorted := append([]time.Duration(nil), ds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	at := func(q float64) time.Duration { return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))] }
	return at(0.50), at(0.99), sorted[len(sorted)-1]
}

// Staggered runs act(i) for each of n events at random moments spread
// over span, so that latencies cover every phase of the slots, flushes or
// keepalives, and returns when each happened (just before its act).
func Staggered(n int, span time.Duration, rng *rand.Rand, act func(i int)) []time.Time {
	offsets := make([]time.Duration, n)
	for i := range offsets {
		offsets[i] = time.Duration(rng.Int64N(int64(span)))
	}
	order := rng.Perm(n)
	sort.Slice(order, func(a, b int) bool { return offsets[order[a]] < offsets[order[b]] })
	at := make([]time.Time, n)
	began := time.Now()
	for _, i := range order {
		time.Sleep(time.Until(began.Add(offsets[i])))
		at[i] = time.Now()
		act(i)
	}
	return at
}

// Sightings records when an observer saw each key come up and go down.
// Its methods are safe for concurrent use; its zero value is not ready:
// use NewSightings.
type Sightings struct {
	mu    sync.Mutex
	up    map[string]time.Time
	down  map[string]time.Time
	wakes chan struct{}
	// unexpected counts the deaths of keys not named with EventPrefix.
	unexpected int
}

// NewSightings returns a Sightings that follows each of subs (see
// Follow) until ctx ends.
func NewSightings(ctx context.Context, subs ...watcher.Subscription) *Sightings {
	s := &Sightings{up: make(map[string]time.Time), down: make(map[string]time.Time), wakes: make(chan struct{}, 1)}
	for _, sub := range subs {
		go s.Follow(ctx, sub)
	}
	return s
}

// Follow records what sub reports, each change at the moment it arrived,
// until ctx ends or sub fails.
func (s *Sightings) Follow(ctx context.Context, sub watcher.Subscription) {
	for {
		changes, err := sub.Next(ctx)
		if err != nil {
			return
		}
		now := time.Now()
		for _, c := range changes {
			s.Saw(c.Key, c.Alive, now)
		}
	}
}

// Saw records that key was seen up (or down) at now.
func (s *Sightings) Saw(key string, up bool, now time.Time) {
	s.mu.Lock()
	if up {
		s.up[key] = now
	} else {
		s.down[key] = now
		if !strings.HasPrefix(key, EventPrefix) {
			s.unexpected++
		}
	}
	s.mu.Unlock()
	select {
	case s.wakes <- struct{}{}:
	default:
	}
}

// Unexpected returns how many deaths of keys not named with EventPrefix
// (keys nobody stopped) were seen.
func (s *Sightings) Unexpected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unexpected
}

// Forget forgets what was seen of keys.
func (s *Sightings) Forget(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.up, k)
		delete(s.down, k)
	}
}

// Wait waits until every key was seen up (or down), or timeout, and
// returns the latency of each seen from its cause (zero for one seen
// before it); a key whose cause is the zero time is not waited for.
func (s *Sightings) Wait(keys []string, causes []time.Time, up bool, timeout time.Duration) []time.Duration {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Keys are counted as they are seen, from the first not seen yet,
	// and the latencies gathered once: a wait for 100,000 keys must not
	// allocate 100,000 latencies at every sighting, which would make the
	// measuring process collect garbage in the middle of what it
	// measures.
	next, timedOut := 0, false
	for {
		s.mu.Lock()
		seen := s.seen(up)
		for next < len(keys) {
			if _, ok := seen[keys[next]]; !ok || causes[next].IsZero() {
				break
			}
			next++
		}
		if next == len(keys) || timedOut {
			var out []time.Duration
			for i, k := range keys {
				if at, ok := seen[k]; ok && !causes[i].IsZero() {
					out = append(out, max(at.Sub(causes[i]), 0))
				}
			}
			s.mu.Unlock()
			return out
		}
		s.mu.Unlock()
		select {
		case <-s.wakes:
		case <-deadline.C:
			timedOut = true
		}
	}
}

// seen returns the sightings up, or down. s.mu must be held.
func (s *Sightings) seen(up bool) map[string]time.Time {
	if up {
		return s.up
	}
	return s.down
}
