package main

import (
	"sync"
	"time"

	"github.com/presencekit/presence/internal/benchkit"
)

// percentiles returns the median, the 99th percentile and the largest of
// ds (see benchkit.Percentiles).
func percentiles(ds []time.Duration) (p50, p99, worst time.Duration) {
	return benchkit.Percentiles(ds)
}

// durations collects durations from worker hooks; it is safe for
// concurrent use.
type durations struct {
	mu  sync.Mutex
	all []time.Duration
}

// add records took.
func (d *durations) add(took time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.all = append(d.all, took)
}

// get returns a copy of every duration added.
func (d *durations) get() []time.Duration {
	return d.since(0)
}

// count returns how many durations were added, a mark for since.
func (d *durations) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.all)
}

// since returns the durations added after the first mark.
func (d *durations) since(mark int) []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Duration(nil), d.all[min(mark, len(d.all)):]...)
}
