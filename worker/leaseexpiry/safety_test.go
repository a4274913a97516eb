package leaseexpiry_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// safetySuite contends for leadership through several managers with
// skewed clocks and checks that no two leaders ever overlap.
type safetySuite struct {
	fixture
}

var _ = gc.Suite(&safetySuite{})

// tenure is a span of reference time in which a unit led.
type tenure struct {
	unit       string
	start, end time.Time
	fence      int64
}

func (s *safetySuite) TestAtMostOneLeaderAndRisingFences(c *gc.C) {
	const (
		rounds       = 300
		applications = 5
		unitsPerApp  = 4
	)
	// Each manager's clock is off the reference by up to 400ms; the lease
	// clients tolerate 1s.
	offsets := []time.Duration{0, 400 * time.Millisecond, -400 * time.Millisecond}
	var clocks []*testclock.Clock
	var managers []leaseexpiry.ManagerWorker
	for _, off := range offsets {
		clk := testclock.NewClock(agenttest.Epoch.Add(off))
		clocks = append(clocks, clk)
		managers = append(managers, s.newManager(c, clk, func(cfg *leaseexpiry.ManagerConfig) {
			cfg.MaxSleep = time.Second
			cfg.PruneEvery = 5
		}))
	}
	ref := agenttest.Epoch
	rng := rand.New(rand.NewPCG(1, 2))
	tenures := make(map[string][]tenure)
	holder := make(map[string]string)
	changes := 0

	for round := 0; round < rounds; round++ {
		app := fmt.Sprintf("app%d", rng.IntN(applications))
		unit := fmt.Sprintf("%s/%d", app, rng.IntN(unitsPerApp))
		m := managers[rng.IntN(len(managers))]
		switch op := rng.IntN(10); {
		case op < 6:
			d := time.Duration(1+rng.IntN(4)) * time.Second
			err := m.ClaimLeadership(app, unit, d)
			if errors.Is(err, leaseexpiry.ErrClaimDenied) {
				continue
			}
			c.Assert(err, gc.IsNil)
			token, err := m.CheckLeadership(app, unit)
			c.Assert(err, gc.IsNil)
			if holder[app] != unit {
				changes++
			}
			holder[app] = unit
			tenures[app] = append(tenures[app], tenure{unit: unit, start: ref, end: ref.Add(d), fence: token.Fence()})
		case op < 8:
			current := holder[app]
			if current == "" {
				continue
			}
			err := m.ReleaseLeadership(app, current)
			if errors.Is(err, leaseexpiry.ErrNotHeld) {
				continue
			}
			c.Assert(err, gc.IsNil)
			for i, t := range tenures[app] {
				if t.unit == current && t.end.After(ref) {
					tenures[app][i].end = ref
				}
			}
			holder[app] = ""
		default:
			step := time.Duration(rng.IntN(1500)) * time.Millisecond
			ref = ref.Add(step)
			for _, clk := range clocks {
				clk.Advance(step)
			}
		}
	}
	c.Assert(changes > 20, gc.Equals, true, gc.Commentf("only %d changes of leader", changes))

	for app, ts := range tenures {
		sort.Slice(ts, func(i, j int) bool { return ts[i].start.Before(ts[j].start) })
		for i := 1; i < len(ts); i++ {
			prev, next := ts[i-1], ts[i]
			if prev.unit == next.unit && prev.fence == next.fence {
				continue
			}
			// A new tenure: the previous one must have ended, and
			// the fence must have risen.
			for _, earlier := range ts[:i] {
				if earlier.unit != next.unit && earlier.end.After(next.start) {
					c.Errorf("%s: %s led until %v, %s from %v", app, earlier.unit, earlier.end, next.unit, next.start)
				}
			}
			if prev.unit != next.unit {
				c.Check(next.fence > prev.fence, gc.Equals, true,
					gc.Commentf("%s: fence %d of %s after %d of %s", app, next.fence, next.unit, prev.fence, prev.unit))
			}
		}
	}
}

func (s *safetySuite) TestClocksApartBeyondClockSkewOverlapByTheExcess(c *gc.C) {
	// Manager b's clock runs 3s ahead of a's, with a ClockSkew of 1s:
	// 2s beyond what the clients tolerate.
	ahead := 3 * time.Second
	clockA := testclock.NewClock(agenttest.Epoch)
	clockB := testclock.NewClock(agenttest.Epoch.Add(ahead))
	a := s.newManager(c, clockA)
	b := s.newManager(c, clockB)
	c.Assert(a.ClaimLeadership("mysql", "mysql/0", 10*time.Second), gc.IsNil)
	advance := func(d time.Duration) {
		clockA.Advance(d)
		clockB.Advance(d)
	}
	// a's unit holds until 10s by a's clock. b sees the lease free once
	// its own clock passes 10s + ClockSkew, which is 8s by a's clock:
	// until then b's units are denied...
	advance(8*time.Second - time.Millisecond)
	err := b.ClaimLeadership("mysql", "mysql/1", 10*time.Second)
	c.Assert(errors.Is(err, leaseexpiry.ErrClaimDenied), gc.Equals, true, gc.Commentf("%v", err))
	// ...and from then on granted, while a's unit still holds for 2s:
	// two leaders overlap by the clock difference beyond ClockSkew.
	advance(time.Millisecond)
	c.Assert(b.ClaimLeadership("mysql", "mysql/1", 10*time.Second), gc.IsNil)
	_, err = a.CheckLeadership("mysql", "mysql/0")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true, gc.Commentf("%v", err))
}
