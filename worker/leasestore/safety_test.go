package leasestore_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

// safetySuite contends for leases on the wall clock through several
// stores on separate clients, as several controllers would.
type safetySuite struct {
	fixture
}

var _ = gc.Suite(&safetySuite{})

// tenure is a span of wall time in which a unit held a lease for sure:
// from the grant's return to the claim's start plus its duration.
type tenure struct {
	unit       string
	start, end time.Time
	fence      int64
}

func (s *safetySuite) TestAtMostOneHolderAndRisingFencesAcrossStores(c *gc.C) {
	const (
		stores       = 3
		applications = 2
		unitsPerApp  = 2 // per store
		runFor       = 3 * time.Second
	)
	var managers []leaseexpiry.ManagerWorker
	for i := 0; i < stores; i++ {
		client, _ := s.leaseClient(c, clock.WallClock)
		store, err := leasestore.New(leasestore.Config{Client: client, Clock: clock.WallClock, MaxSleep: 20 * time.Millisecond})
		c.Assert(err, gc.IsNil)
		s.cleanup = append(s.cleanup, func() { store.Kill(); c.Check(store.Wait(), gc.IsNil) })
		m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Store: store, Clock: clock.WallClock, Model: modelTag(1)})
		c.Assert(err, gc.IsNil)
		s.cleanup = append(s.cleanup, func() { m.Kill(); c.Check(m.Wait(), gc.IsNil) })
		managers = append(managers, m)
	}

	var mu sync.Mutex
	tenures := make(map[string][]tenure)
	var wg sync.WaitGroup
	stop := time.Now().Add(runFor)
	for i, m := range managers {
		for a := 0; a < applications; a++ {
			for u := 0; u < unitsPerApp; u++ {
				app := fmt.Sprintf("app%d", a)
				unit := fmt.Sprintf("%s/%d", app, i*unitsPerApp+u)
				rng := rand.New(rand.NewPCG(uint64(i), uint64(a*10+u)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						d := time.Duration(50+rng.IntN(150)) * time.Millisecond
						start := time.Now()
						err := m.ClaimLeadership(app, unit, d)
						if errors.Is(err, leaseexpiry.ErrClaimDenied) {
							_ = m.BlockUntilLeadershipReleased(app)
							continue
						}
						c.Check(err, gc.IsNil)
						granted := time.Now()
						token, err := m.CheckLeadership(app, unit)
						if err != nil {
							continue
						}
						mu.Lock()
						tenures[app] = append(tenures[app], tenure{unit: unit, start: granted, end: start.Add(d), fence: token.Fence()})
						if rng.IntN(3) == 0 {
							// The unit stops leading before it
							// releases: every claim of its tenure
							// ends.
							released := time.Now()
							for i, t := range tenures[app] {
								if t.unit == unit && t.end.After(released) {
									tenures[app][i].end = released
								}
							}
							mu.Unlock()
							_ = m.ReleaseLeadership(app, unit)
							// Give the others a chance: a unit
							// that claims again at once after its
							// release nearly always wins.
							time.Sleep(d)
							continue
						}
						mu.Unlock()
						time.Sleep(d / 2)
					}
				}()
			}
		}
	}
	wg.Wait()

	holders := 0
	for app, ts := range tenures {
		sort.Slice(ts, func(i, j int) bool { return ts[i].start.Before(ts[j].start) })
		for i := 1; i < len(ts); i++ {
			next := ts[i]
			if ts[i-1].unit != next.unit {
				holders++
			}
			for _, earlier := range ts[:i] {
				if earlier.unit == next.unit {
					continue
				}
				if earlier.end.After(next.start) && next.end.After(earlier.start) {
					c.Errorf("%s: %s held %v..%v, %s from %v", app, earlier.unit,
						earlier.start.Format(time.StampMicro), earlier.end.Format(time.StampMicro),
						next.unit, next.start.Format(time.StampMicro))
				}
				if earlier.fence >= next.fence {
					c.Errorf("%s: fence %d of %s after %d of %s", app, next.fence, next.unit, earlier.fence, earlier.unit)
				}
			}
		}
	}
	c.Logf("%d changes of holder", holders)
	c.Assert(holders >= 3, gc.Equals, true, gc.Commentf("only %d changes of holder", holders))
}
