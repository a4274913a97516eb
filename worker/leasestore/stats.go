package leasestore

import (
	"maps"
	"sync"
)

// stats is what Report shows; the loop writes it, Report reads it.
type stats struct {
	mu     sync.Mutex
	values map[string]any
}

func newStats() *stats {
	return &stats{values: map[string]any{
		"models": 0, "leases": 0, "frozen": 0, "reads": 0, "read-failures": 0,
		"claims": 0, "claim-batches": 0, "checks": 0, "check-batches": 0, "expired": 0,
	}}
}

func (s *stats) add(name string, n int) {
	s.values[name] = s.values[name].(int) + n
}

// read records a read of leases, frozen of which are frozen.
func (s *stats) read(models, leases, frozen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values["models"], s.values["leases"], s.values["frozen"] = models, leases, frozen
	s.add("reads", 1)
	delete(s.values, "last-error")
}

func (s *stats) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add("read-failures", 1)
	s.values["last-error"] = err.Error()
}

// batch records a batch of n claims or checks (kind "claim" or "check").
func (s *stats) batch(kind string, n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(kind+"s", n)
	s.add(kind+"-batches", 1)
	if err != nil {
		s.values["last-error"] = err.Error()
	}
}

func (s *stats) expired(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add("expired", n)
}

func (s *stats) report() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.values)
}
