// Package soakstat is what a soak samples and how it judges the samples,
// shared by the testclock soak (soak_test.go in the root package) and the
// wall-clock one (presencebench --only soak), which print the same.
package soakstat

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/memstat"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

// Packages are the packages whose heap Sample.Own measures.
var Packages = []string{
	"github.com/presencekit/presence/worker/presencereader",
	"github.com/presencekit/presence/worker/pingbatcher",
}

// Sample is what a soak samples: Own is the heap that the readers' and
// batchers' code allocated and still holds (see memstat.InUse; the least
// of three measurements in a row), Heap the
// whole process's, driver and harness included; Keys, Models,
// LogEntries and Skips are one reader's, Indexes one batcher's; the
// rest count documents: ping and beings documents, removal markers and
// lease terms.
type Sample struct {
	Own, Heap                                uint64
	Keys, Models, LogEntries, Skips, Indexes int
	Pings, Beings, Removed, Leases           int
}

// String formats s on one line.
func (s Sample) String() string {
	return fmt.Sprintf("own heap %d B, heap %d B, keys %d, models %d, log entries %d, skips %d, indexes %d, pings %d, beings %d, markers %d, leases %d",
		s.Own, s.Heap, s.Keys, s.Models, s.LogEntries, s.Skips, s.Indexes, s.Pings, s.Beings, s.Removed, s.Leases)
}

// Take samples the process, reader r (whose latest load was st) and
// batcher b, and the documents under base and in leases.
func Take(ctx context.Context, r *presencereader.Reader, st presencereader.LoadStats, b *pingbatcher.PingBatcher, base, leases *mongo.Collection) (Sample, error) {
	// The heap first, right after a collection: InUse allocates a copy
	// of the memory profile, whose records only grow in number.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// The least of three: what a worker holds for a moment (a load in
	// flight, on the wall clock) counts less than what it keeps.
	own := memstat.InUse(Packages...)
	for range 2 {
		own = min(own, memstat.InUse(Packages...))
	}
	s := Sample{Heap: ms.HeapAlloc, Own: own}
	s.Keys, s.Models, s.LogEntries = st.Keys, st.Models, st.LogEntries
	s.Skips, _ = r.Report()["skipped-documents"].(int)
	s.Indexes, _ = b.Report()["indexes"].(int)
	for _, c := range []struct {
		coll *mongo.Collection
		n    *int
	}{{schema.Pings(base), &s.Pings}, {schema.Beings(base), &s.Beings}, {schema.Removed(base), &s.Removed}, {leases, &s.Leases}} {
		n, err := c.coll.CountDocuments(ctx, bson.D{})
		if err != nil {
			return s, errors.Annotatef(err, "cannot count %s", c.coll.Name())
		}
		*c.n = int(n)
	}
	return s, nil
}

// Max returns the largest of each figure over samples.
func Max(samples []Sample) Sample {
	var out Sample
	for _, s := range samples {
		out.Own, out.Heap = max(out.Own, s.Own), max(out.Heap, s.Heap)
		out.Keys, out.Models = max(out.Keys, s.Keys), max(out.Models, s.Models)
		out.LogEntries, out.Skips = max(out.LogEntries, s.LogEntries), max(out.Skips, s.Skips)
		out.Indexes = max(out.Indexes, s.Indexes)
		out.Pings, out.Beings = max(out.Pings, s.Pings), max(out.Beings, s.Beings)
		out.Removed, out.Leases = max(out.Removed, s.Removed), max(out.Leases, s.Leases)
	}
	return out
}

// Figure is one figure a soak holds to its first window's peak: Slack is
// how much more than 10% above it a count that is small by design may
// be.
type Figure struct {
	Name  string
	Get   func(Sample) int
	Slack int
}

// Figures are the figures a soak bounds: the whole process's heap is
// not one of them (the driver's pools and the harness's own state have
// lives of their own), the readers' and batchers' is. Models, leases,
// beings documents and removal markers are a few, or as many as the
// models alive: one more of them is allowed.
var Figures = []Figure{
	{Name: "reader and batcher heap", Get: func(s Sample) int { return int(s.Own) }},
	{Name: "keys", Get: func(s Sample) int { return s.Keys }},
	{Name: "log entries", Get: func(s Sample) int { return s.LogEntries }},
	{Name: "skip records", Get: func(s Sample) int { return s.Skips }},
	{Name: "batcher indexes", Get: func(s Sample) int { return s.Indexes }},
	{Name: "pings", Get: func(s Sample) int { return s.Pings }},
	{Name: "beings", Get: func(s Sample) int { return s.Beings }, Slack: 1},
	{Name: "models", Get: func(s Sample) int { return s.Models }, Slack: 1},
	{Name: "leases", Get: func(s Sample) int { return s.Leases }, Slack: 1},
	{Name: "removal markers", Get: func(s Sample) int { return s.Removed }, Slack: 1},
}

// Within reports whether later is within 10% of first, or within slack
// of it.
func (f Figure) Within(later, first Sample) bool {
	l, e := f.Get(later), f.Get(first)
	return float64(l) <= max(1.1*float64(e), float64(e+f.Slack))
}

// LastLoad keeps a reader's latest LoadStats: its OnLoad is a
// presencereader.Config.OnLoad. Its methods are safe for concurrent use.
type LastLoad struct {
	mu   sync.Mutex
	last presencereader.LoadStats
}

// OnLoad records st.
func (l *LastLoad) OnLoad(st presencereader.LoadStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = st
}

// Get returns the latest LoadStats recorded.
func (l *LastLoad) Get() presencereader.LoadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}
