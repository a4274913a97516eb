package leaseexpiry_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/wireproxy"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// wallSafetySuite contends for leadership on the wall clock through
// managers on separate clients, each behind a proxy that delays commands
// and loses replies, and checks leadership at a fenced resource.
type wallSafetySuite struct {
	fixture
}

var _ = gc.Suite(&wallSafetySuite{})

// fencedResource accepts a write only with a fence at least as high as
// any it accepted before, and records which unit wrote with each fence.
type fencedResource struct {
	mu       sync.Mutex
	highest  int64
	writerOf map[int64]string
	accepted int
	rejected int
	shared   []string // fences two units wrote with
}

func (r *fencedResource) write(unit string, fence int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fence < r.highest {
		r.rejected++
		return
	}
	r.highest = fence
	r.accepted++
	if w, ok := r.writerOf[fence]; ok && w != unit {
		r.shared = append(r.shared, fmt.Sprintf("fence %d: %s and %s", fence, w, unit))
	}
	r.writerOf[fence] = unit
}

// held is a span of wall time in which a unit had a granted, unexpired
// claim: from the claim's return to its expiry (its call's start plus its
// duration) or the start of the unit's next release.
type held struct {
	unit       string
	start, end time.Time
}

func (s *wallSafetySuite) TestAtMostOneLeaderUnderDelaysLostRepliesAndPruning(c *gc.C) {
	const (
		units    = 8
		app      = "mysql"
		run      = 15 * time.Second
		skewWall = 50 * time.Millisecond
	)
	var managers []leaseexpiry.ManagerWorker
	for i := 0; i < 3; i++ {
		proxy, uri, err := s.Server.NewProxy()
		c.Assert(err, gc.IsNil)
		defer proxy.Close()
		// Any command may be held up to two typical lease durations,
		// so that a claim's read, insert and confirmation drift apart,
		// and a write's reply may be lost after the server applied it.
		proxy.SetFaults(wireproxy.Faults{Delay: 0.1, MaxDelay: 600 * time.Millisecond, Drop: 0.05, Seed: uint64(i + 1)})
		coll := s.NewClient(c, options.Client().ApplyURI(uri).SetRetryWrites(false)).Database(s.DB.Name()).Collection("leases")
		client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clock.WallClock, ClockSkew: skewWall})
		c.Assert(err, gc.IsNil)
		m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{
			Client: client, Clock: clock.WallClock, Model: model, MaxSleep: 100 * time.Millisecond, PruneEvery: 1,
		})
		c.Assert(err, gc.IsNil)
		defer workertest.CleanKill(agenttest.C(c), m)
		managers = append(managers, m)
	}
	resource := &fencedResource{writerOf: make(map[int64]string)}
	var mu sync.Mutex
	var spans []held
	failures := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var wg sync.WaitGroup
	for u := 0; u < units; u++ {
		wg.Add(1)
		go func(u int) {
			defer wg.Done()
			unit := fmt.Sprintf("%s/%d", app, u)
			rng := rand.New(rand.NewPCG(uint64(u), 7))
			// mine are the unit's own spans: a release ends them all.
			var mine []held
			defer func() {
				mu.Lock()
				spans = append(spans, mine...)
				mu.Unlock()
			}()
			for ctx.Err() == nil {
				m := managers[rng.IntN(len(managers))]
				d := time.Duration(200+rng.IntN(300)) * time.Millisecond
				called := time.Now()
				if err := m.ClaimLeadership(app, unit, d); err != nil {
					mu.Lock()
					if errors.Is(err, leaseexpiry.ErrClaimDenied) {
						failures["denied"]++
					} else {
						failures["failed"]++
					}
					mu.Unlock()
					time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
					continue
				}
				span := held{unit: unit, start: time.Now(), end: called.Add(d)}
				if token, err := m.CheckLeadership(app, unit); err == nil && time.Now().Before(span.end) {
					resource.write(unit, token.Fence())
				}
				// Release, extend soon, or let the claim lapse.
				mine = append(mine, span)
				switch rng.IntN(3) {
				case 0:
					released := time.Now()
					for i := range mine {
						mine[i].end = minTime(mine[i].end, released)
					}
					_ = m.ReleaseLeadership(app, unit)
				case 1:
					time.Sleep(time.Duration(rng.IntN(int(d/time.Millisecond)/2)) * time.Millisecond)
				default:
					time.Sleep(time.Until(span.end) + time.Duration(rng.IntN(300))*time.Millisecond)
				}
			}
		}(u)
	}
	wg.Wait()

	// A claim granted after its own expiry (its call outlasted its
	// duration) gave its unit nothing to hold.
	spans = slices.DeleteFunc(spans, func(h held) bool { return !h.start.Before(h.end) })
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	changes := 0
	for i, next := range spans {
		if i > 0 && spans[i-1].unit != next.unit {
			changes++
		}
		for _, earlier := range spans[:i] {
			if earlier.unit != next.unit && earlier.end.After(next.start) {
				c.Errorf("%s held until %v, %s from %v", earlier.unit, earlier.end.Format("15:04:05.000"), next.unit, next.start.Format("15:04:05.000"))
			}
		}
	}
	c.Logf("failed claims: %v", failures)
	c.Logf("%d tenures, %d changes of holder; the resource accepted %d writes and refused %d", len(spans), changes, resource.accepted, resource.rejected)
	c.Assert(resource.shared, gc.HasLen, 0)
	c.Assert(changes >= 8, gc.Equals, true, gc.Commentf("only %d changes of holder", changes))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
