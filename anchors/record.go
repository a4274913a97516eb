package main

import (
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sightings records when an observer saw each key come up and go down,
// whichever system it watches. It is safe for concurrent use.
type sightings struct {
	mu    sync.Mutex
	up    map[string]time.Time
	down  map[string]time.Time
	wakes chan struct{}
	// unexpected counts the downs of keys that do not start with
	// eventPrefix: false deaths.
	unexpected int
}

// eventPrefix starts the keys that a run starts and stops on purpose; a
// death of any other key is false.
const eventPrefix = "event-"

func newSightings() *sightings {
	return &sightings{up: make(map[string]time.Time), down: make(map[string]time.Time), wakes: make(chan struct{}, 1)}
}

// saw records that key was seen up (or down) at now.
func (s *sightings) saw(key string, up bool, now time.Time) {
	s.mu.Lock()
	if up {
		s.up[key] = now
	} else {
		s.down[key] = now
		if !strings.HasPrefix(key, eventPrefix) {
			s.unexpected++
		}
	}
	s.mu.Unlock()
	select {
	case s.wakes <- struct{}{}:
	default:
	}
}

// falseDeaths returns how many keys not named with eventPrefix were seen
// down.
func (s *sightings) falseDeaths() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unexpected
}

// forget forgets what was seen of keys.
func (s *sightings) forget(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.up, k)
		delete(s.down, k)
	}
}

// wait waits until every key was seen up (or down) after its cause, or
// timeout, and returns the detection: each latency from its cause.
func (s *sightings) wait(keys []string, causes []time.Time, up bool, timeout time.Duration) detection {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		seen := s.down
		if up {
			seen = s.up
		}
		d := detection{events: len(keys)}
		for i, k := range keys {
			if at, ok := seen[k]; ok && !at.Before(causes[i]) {
				d.got = append(d.got, at.Sub(causes[i]))
			}
		}
		s.mu.Unlock()
		if len(d.got) == len(keys) {
			return d
		}
		select {
		case <-s.wakes:
		case <-deadline.C:
			return d
		}
	}
}

// staggered runs act(i) for each of n events at random moments spread
// over span, so that latencies cover every phase of the slots, flushes
// and keepalives, and returns when each began.
func staggered(n int, span time.Duration, rng *rand.Rand, act func(i int)) []time.Time {
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

// eventKeys returns the n keys of a run's events.
func eventKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = eventPrefix + strconv.Itoa(i)
	}
	return keys
}
