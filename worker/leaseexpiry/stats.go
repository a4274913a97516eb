package leaseexpiry

import (
	"sync"
	"time"

	"github.com/presencekit/presence/lease"
)

// stats is what Report shows; the loop writes it, Report reads it.
type stats struct {
	mu      sync.Mutex
	values  map[string]any
	leaders map[string]string
}

func newStats() *stats {
	return &stats{values: map[string]any{"claims": 0, "blocked": 0}}
}

func (s *stats) claimed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values["claims"] = s.values["claims"].(int) + 1
	if err != nil {
		s.values["last-error"] = err.Error()
	}
}

func (s *stats) setBlocked(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values["blocked"] = n
}

func (s *stats) refreshed(leases map[string]lease.Info, now time.Time) {
	leaders := make(map[string]string, len(leases))
	for name, info := range leases {
		if info.HeldBy(info.Holder, now) {
			leaders[name] = info.Holder
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaders = leaders
	delete(s.values, "last-error")
}

func (s *stats) report() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]any, len(s.values)+1)
	for k, v := range s.values {
		out[k] = v
	}
	leaders := make(map[string]any, len(s.leaders))
	for k, v := range s.leaders {
		leaders[k] = v
	}
	out["leaders"] = leaders
	return out
}
