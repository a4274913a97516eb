package main

import (
	"sort"
	"sync"
	"time"
)

// percentiles returns the median, the 99th percentile and the largest of
// ds, or zeros when ds is empty. A percentile q is the sample at index
// floor(q*n) of the n sorted samples (the higher of the two around it),
// so that p99 of 100 samples is the largest. ds is left as it is.
func percentiles(ds []time.Duration) (p50, p99, worst time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	sorted := append([]time.Duration(nil), ds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	at := func(q float64) time.Duration { return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))] }
	return at(0.50), at(0.99), sorted[len(sorted)-1]
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
