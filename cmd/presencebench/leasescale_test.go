package main

import (
	"time"

	gc "gopkg.in/check.v1"
)

type leaseScaleSuite struct{}

var _ = gc.Suite(&leaseScaleSuite{})

// scaleRun returns a run of shape over a 30s window whose claims, store
// reads and releases all took took, with the given round trips per tick
// and most documents of a lease.
func scaleRun(shape leaseShape, took time.Duration, tickTrips float64, mostDocs int) leaseScale {
	load := leaseLoad{period: 30 * time.Second, window: 30 * time.Second, dyingFor: 5 * time.Second, dyingEvery: 100}
	return leaseScale{
		shape: shape, load: load, claims: 3000, latencies: []time.Duration{took, took},
		tickTrips: tickTrips, expired: 10, mostDocs: mostDocs, docs: 2 * shape.leases(),
		cpu: 3 * time.Second, released: []time.Duration{scaleMaxSleep + took/2}, read: took, storeReads: []time.Duration{took},
	}
}

func (*leaseScaleSuite) TestScaleRowsMeetTheirTargetsWithinTheirBounds(c *gc.C) {
	t := &table{}
	addLeaseScaleRows(t, scaleRun(leaseShape{1000, 10}, 40*time.Millisecond, 1, 3), scaleRun(leaseShape{100, 10}, 10*time.Millisecond, 1, 2))
	c.Assert(t.rows, gc.HasLen, 7)
	c.Check(t.rows[0], gc.DeepEquals, row{
		section:  "leases",
		what:     "claim p50 / p99, 10000 leases (1000 models x 10 apps) renewed every 30s",
		measured: "40ms / 40ms",
		baseline: "10ms / 10ms at 1000 leases (100 models x 10 apps)",
		ratio:    "4.0x",
		target:   "p99 <= 50ms",
		verdict:  "yes",
	})
	c.Check(t.rows[1].measured, gc.Equals, "100/s (0 failed)")
	c.Check(t.rows[1].target, gc.Equals, "333/s, none failed")
	c.Check(t.rows[3].measured, gc.Equals, "3; 2.00")
	c.Check(t.rows[3].target, gc.Equals, "<= 12")
	c.Check(t.rows[4].measured, gc.Equals, "100 ms/s")
	c.Check(t.rows[5].target, gc.Equals, "<= MaxSleep + one read (p99 of the store's) = 1.04s")
	for _, r := range t.rows {
		c.Check(r.verdict == "yes" || r.verdict == "", gc.Equals, true, gc.Commentf("%s: %s", r.what, r.verdict))
	}
}

func (*leaseScaleSuite) TestScaleRowsFailOutsideTheirBounds(c *gc.C) {
	t := &table{}
	run := scaleRun(leaseShape{1, 10000}, 3*time.Second, 2.5, 13)
	run.failed = 1
	run.released = append(run.released, 2*scaleMaxSleep+3*time.Second)
	addLeaseScaleRows(t, run, scaleRun(leaseShape{1, 1000}, 300*time.Millisecond, 1, 2))
	var verdicts []string
	for _, r := range t.rows {
		verdicts = append(verdicts, r.verdict)
	}
	c.Check(verdicts, gc.DeepEquals, []string{"NO", "NO", "NO", "NO", "", "NO", ""})
	c.Check(t.rows[0].ratio, gc.Equals, "10.0x")
	c.Check(t.rows[5].measured, gc.Equals, "5s")
}

func (*leaseScaleSuite) TestAReleaseNeverSeenIsShownAsSuch(c *gc.C) {
	t := &table{}
	run := scaleRun(leaseShape{1, 10000}, time.Second, 1, 2)
	run.released = append(run.released, unseenAfter)
	addLeaseScaleRows(t, run, scaleRun(leaseShape{1, 1000}, time.Second, 1, 2))
	c.Check(t.rows[5].measured, gc.Equals, "not seen in 1m0s")
	c.Check(t.rows[5].verdict, gc.Equals, "NO")
}

func (*leaseScaleSuite) TestScaleRowsFailWithoutAnyClaimOrRelease(c *gc.C) {
	t := &table{}
	run := scaleRun(leaseShape{10, 10}, time.Millisecond, 1, 1)
	run.latencies, run.claims, run.released = nil, 0, nil
	addLeaseScaleRows(t, run, run)
	c.Check(t.rows[0].verdict, gc.Equals, "NO")
	c.Check(t.rows[1].verdict, gc.Equals, "NO")
	c.Check(t.rows[5].verdict, gc.Equals, "NO")
}

func (*leaseScaleSuite) TestScaleClaimsCoverEveryLeaseOnceAndLeaveOneInDyingEveryToLapse(c *gc.C) {
	load := leaseLoad{period: time.Second, window: time.Second, dyingFor: 3 * time.Second, dyingEvery: 5}
	claims := scaleClaims(leaseShape{models: 2, apps: 5}, load)
	c.Assert(claims, gc.HasLen, 10)
	seen := make(map[string]bool)
	dying := 0
	for _, cl := range claims {
		id := cl.Key.Model + "/" + cl.Key.Lease
		c.Check(seen[id], gc.Equals, false)
		seen[id] = true
		c.Check(cl.Request.Holder, gc.Equals, cl.Key.Lease+"/0")
		if cl.Request.Duration == load.dyingFor {
			dying++
		} else {
			c.Check(cl.Request.Duration, gc.Equals, time.Minute)
		}
	}
	c.Check(dying, gc.Equals, 2)
}
