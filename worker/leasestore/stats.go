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
		"models": 0, "leases": 0, "reads": 0, "read-failures": 0,
		"claims": 0, "claim-batches": 0, "expired": 0,
	}}
}

func (s *stats) add(name string, n int) {
	s.values[name] = s.values[name].(int) + n
}

func (s *stats) read(models, leases int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values["models"], s.values["leases"] = models, leases
	s.add("reads", 1)
	delete(s.values, "last-error")
}

func (s *stats) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add("read-failures", 1)
	s.values["last-error"] = err.Error()
}

func (s *stats) claimBatch(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add("claims", n)
	s.add("claim-batches", 1)
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
