package benchkit_test

import (
	"context"
	"math/rand/v2"
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest/fakes"
	"github.com/presencekit/presence/internal/benchkit"
)

type benchkitSuite struct{}

var _ = gc.Suite(&benchkitSuite{})

func (*benchkitSuite) TestPercentilesTakeTheHigherSampleAndLeaveTheInputAlone(c *gc.C) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p50, p99, worst := benchkit.Percentiles(ds)
	c.Check([]time.Duration{p50, p99, worst}, gc.DeepEquals, []time.Duration{51 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond})
	c.Check(ds[0], gc.Equals, 100*time.Millisecond)
}

func (*benchkitSuite) TestStaggeredRunsEveryEventOnceWithinTheSpan(c *gc.C) {
	ran := make([]int, 20)
	began := time.Now()
	at := benchkit.Staggered(len(ran), 50*time.Millisecond, rand.New(rand.NewPCG(1, 2)), func(i int) { ran[i]++ })
	for i := range ran {
		c.Check(ran[i], gc.Equals, 1)
		c.Check(at[i].Before(began), gc.Equals, false)
		c.Check(at[i].Sub(began) < time.Second, gc.Equals, true)
	}
}

func (*benchkitSuite) TestWaitMeasuresEachKeyFromItsCause(c *gc.C) {
	s := benchkit.NewSightings(context.Background())
	cause := time.Now()
	s.Saw("a", true, cause.Add(30*time.Millisecond))
	s.Saw("b", true, cause.Add(-time.Millisecond))
	got := s.Wait([]string{"a", "b"}, []time.Time{cause, cause}, true, time.Second)
	c.Check(got, gc.DeepEquals, []time.Duration{30 * time.Millisecond, 0})
}

func (*benchkitSuite) TestWaitReturnsWhatWasSeenAtTheTimeout(c *gc.C) {
	s := benchkit.NewSightings(context.Background())
	cause := time.Now()
	s.Saw("a", false, cause.Add(time.Millisecond))
	got := s.Wait([]string{"a", "never"}, []time.Time{cause, cause}, false, 20*time.Millisecond)
	c.Check(got, gc.DeepEquals, []time.Duration{time.Millisecond})
}

func (*benchkitSuite) TestWaitWakesOnASightingFromAnotherGoroutine(c *gc.C) {
	s := benchkit.NewSightings(context.Background())
	cause := time.Now()
	go s.Saw("late", true, cause.Add(time.Millisecond))
	got := s.Wait([]string{"late"}, []time.Time{cause}, true, 10*time.Second)
	c.Check(got, gc.DeepEquals, []time.Duration{time.Millisecond})
}

func (*benchkitSuite) TestOnlyDeathsOfKeysNobodyStoppedAreUnexpected(c *gc.C) {
	s := benchkit.NewSightings(context.Background())
	now := time.Now()
	s.Saw(benchkit.EventPrefix+"1", false, now)
	c.Check(s.Unexpected(), gc.Equals, 0)
	s.Saw("live-1", true, now)
	c.Check(s.Unexpected(), gc.Equals, 0)
	s.Saw("live-1", false, now)
	c.Check(s.Unexpected(), gc.Equals, 1)
}

func (*benchkitSuite) TestForgetDropsWhatWasSeen(c *gc.C) {
	s := benchkit.NewSightings(context.Background())
	cause := time.Now()
	s.Saw("a", true, cause)
	s.Forget([]string{"a"})
	c.Check(s.Wait([]string{"a"}, []time.Time{cause}, true, 10*time.Millisecond), gc.HasLen, 0)
}

func (*benchkitSuite) TestSightingsFollowASubscriptionUntilTheContextEnds(c *gc.C) {
	w := fakes.NewWatcher()
	defer w.Kill()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := benchkit.NewSightings(ctx, w.Subscribe())
	cause := time.Now()
	w.Set("live-1", true)
	c.Check(s.Wait([]string{"live-1"}, []time.Time{cause}, true, 10*time.Second), gc.HasLen, 1)
	w.Set("live-1", false)
	c.Check(s.Wait([]string{"live-1"}, []time.Time{cause}, false, 10*time.Second), gc.HasLen, 1)
	c.Check(s.Unexpected(), gc.Equals, 1)
}
