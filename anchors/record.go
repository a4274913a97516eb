package main

import (
	"strconv"
	"time"

	"github.com/presencekit/presence/internal/benchkit"
)

// eventKeys returns the n keys of a run's events, named so that their
// deaths are expected (benchkit.EventPrefix).
func eventKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = benchkit.EventPrefix + strconv.Itoa(i)
	}
	return keys
}

// detect waits until every key was seen up (or down) by seen, or
// timeout, and returns the detection: each latency from its cause, and
// how many events there were.
func detect(seen *benchkit.Sightings, keys []string, causes []time.Time, up bool, timeout time.Duration) detection {
	return detection{got: seen.Wait(keys, causes, up, timeout), events: len(keys)}
}
