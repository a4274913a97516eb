package main

import (
	"time"

	gc "gopkg.in/check.v1"
)

type statsSuite struct{}

var _ = gc.Suite(&statsSuite{})

// millis returns the durations of ns milliseconds.
func millis(ns ...int) []time.Duration {
	ds := make([]time.Duration, len(ns))
	for i, n := range ns {
		ds[i] = time.Duration(n) * time.Millisecond
	}
	return ds
}

func (*statsSuite) TestPercentilesOfNoSamplesAreZero(c *gc.C) {
	p50, p99, worst := percentiles(nil)
	c.Check([]time.Duration{p50, p99, worst}, gc.DeepEquals, []time.Duration{0, 0, 0})
}

func (*statsSuite) TestPercentilesOfOneSampleAreThatSample(c *gc.C) {
	p50, p99, worst := percentiles(millis(7))
	c.Check([]time.Duration{p50, p99, worst}, gc.DeepEquals, millis(7, 7, 7))
}

func (*statsSuite) TestPercentilesOfTiedSamplesAreTheTiedValue(c *gc.C) {
	p50, p99, worst := percentiles(millis(5, 1, 5, 5, 5))
	c.Check([]time.Duration{p50, p99, worst}, gc.DeepEquals, millis(5, 5, 5))
}

func (*statsSuite) TestP99OfAHundredSamplesIsTheLargest(c *gc.C) {
	ds := make([]int, 100)
	for i := range ds {
		ds[i] = 100 - i // 100 down to 1: percentiles sort them
	}
	p50, p99, worst := percentiles(millis(ds...))
	c.Check([]time.Duration{p50, p99, worst}, gc.DeepEquals, millis(51, 100, 100))
}

func (*statsSuite) TestPercentilesTakeTheHigherOfTheSamplesAroundThem(c *gc.C) {
	ds := make([]int, 200)
	for i := range ds {
		ds[i] = i + 1
	}
	p50, p99, worst := percentiles(millis(ds...))
	c.Check([]time.Duration{p50, p99, worst}, gc.DeepEquals, millis(101, 199, 200))
	p50, _, _ = percentiles(millis(1, 2, 3, 4))
	c.Check(p50, gc.Equals, 3*time.Millisecond)
}

func (*statsSuite) TestPercentilesLeaveTheirSamplesInOrder(c *gc.C) {
	ds := millis(3, 1, 2)
	percentiles(ds)
	c.Check(ds, gc.DeepEquals, millis(3, 1, 2))
}

func (*statsSuite) TestDurationsSinceAMarkReturnsOnlyLaterOnes(c *gc.C) {
	var d durations
	d.add(time.Second)
	mark := d.count()
	d.add(2 * time.Second)
	d.add(3 * time.Second)
	c.Check(d.since(mark), gc.DeepEquals, []time.Duration{2 * time.Second, 3 * time.Second})
	c.Check(d.since(mark+5), gc.HasLen, 0)
	c.Check(d.get(), gc.HasLen, 3)
}
