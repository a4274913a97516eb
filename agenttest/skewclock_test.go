package agenttest_test

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

type skewClockSuite struct{}

var _ = gc.Suite(&skewClockSuite{})

func (s *skewClockSuite) TestNowReadsTheOffsetAheadOfTheBase(c *gc.C) {
	base := agenttest.NewClock()
	clk, err := agenttest.NewSkewClock(base, -time.Hour, 0)
	c.Assert(err, gc.IsNil)
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch.Add(-time.Hour))
	base.Advance(time.Minute)
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch.Add(-time.Hour+time.Minute))
	c.Assert(clk.Offset(), gc.Equals, -time.Hour)
}

func (s *skewClockSuite) TestStepMovesTheReadingAtOnceEitherWay(c *gc.C) {
	base := agenttest.NewClock()
	clk, err := agenttest.NewSkewClock(base, 0, 0)
	c.Assert(err, gc.IsNil)
	clk.Step(-10 * time.Second)
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch.Add(-10*time.Second))
	clk.Step(time.Hour)
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch.Add(time.Hour-10*time.Second))
}

func (s *skewClockSuite) TestDriftAccumulatesWithBaseTime(c *gc.C) {
	base := agenttest.NewClock()
	clk, err := agenttest.NewSkewClock(base, 0, 0.01)
	c.Assert(err, gc.IsNil)
	base.Advance(100 * time.Second)
	c.Assert(clk.Offset(), gc.Equals, time.Second)

	// A new rate keeps what the old one accumulated.
	c.Assert(clk.SetDrift(-0.01), gc.IsNil)
	base.Advance(50 * time.Second)
	c.Assert(clk.Offset(), gc.Equals, 500*time.Millisecond)
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch.Add(150*time.Second+500*time.Millisecond))
}

func (s *skewClockSuite) TestTimersCountTheClocksOwnRate(c *gc.C) {
	base := agenttest.NewClock()
	clk, err := agenttest.NewSkewClock(base, time.Hour, 0.25)
	c.Assert(err, gc.IsNil)
	timer := clk.NewTimer(10 * time.Second)
	// 10s of a clock that runs 25% fast pass in 8s of base time.
	agenttest.WaitAdvance(c, base, 8*time.Second-time.Nanosecond, 1)
	select {
	case <-timer.Chan():
		c.Fatalf("timer fired early")
	default:
	}
	base.Advance(time.Nanosecond)
	select {
	case <-timer.Chan():
	case <-time.After(agenttest.LongWait):
		c.Fatalf("timer did not fire")
	}

	// Reset scales too.
	timer.Reset(5 * time.Second)
	agenttest.WaitAdvance(c, base, 4*time.Second, 1)
	select {
	case <-timer.Chan():
	case <-time.After(agenttest.LongWait):
		c.Fatalf("reset timer did not fire")
	}
}

func (s *skewClockSuite) TestStepsDoNotMoveTimers(c *gc.C) {
	base := agenttest.NewClock()
	clk, err := agenttest.NewSkewClock(base, 0, 0)
	c.Assert(err, gc.IsNil)
	fired := make(chan struct{})
	clk.AfterFunc(time.Second, func() { close(fired) })
	clk.Step(time.Hour)
	select {
	case <-fired:
		c.Fatalf("a step fired a timer")
	case <-time.After(agenttest.ShortWait):
	}
	clk.Step(-2 * time.Hour)
	agenttest.WaitAdvance(c, base, time.Second, 1)
	select {
	case <-fired:
	case <-time.After(agenttest.LongWait):
		c.Fatalf("a step back held a timer")
	}
}

func (s *skewClockSuite) TestOverTheWallClockRealTimePasses(c *gc.C) {
	clk, err := agenttest.NewSkewClock(clock.WallClock, -time.Minute, 0.5)
	c.Assert(err, gc.IsNil)
	before := time.Now()
	offset := clk.Offset()
	c.Assert(offset >= -time.Minute, gc.Equals, true)
	<-clk.After(30 * time.Millisecond)
	// 30ms of a clock 50% fast last 20ms of real time.
	c.Assert(time.Since(before) >= 20*time.Millisecond, gc.Equals, true)
	c.Assert(clk.Offset() > offset, gc.Equals, true)
	c.Assert(clk.Now().Sub(time.Now()) < 0, gc.Equals, true)
}

func (s *skewClockSuite) TestBadDriftOrBaseIsNotValid(c *gc.C) {
	_, err := agenttest.NewSkewClock(nil, 0, 0)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
	_, err = agenttest.NewSkewClock(clock.WallClock, 0, 2)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
	clk, err := agenttest.NewSkewClock(clock.WallClock, 0, 0)
	c.Assert(err, gc.IsNil)
	c.Assert(errors.Is(clk.SetDrift(-1), errors.NotValid), gc.Equals, true)
}

func (s *skewClockSuite) TestAlarmsWaitUntilTheClocksOwnTime(c *gc.C) {
	base := agenttest.NewClock()
	clk, err := agenttest.NewSkewClock(base, time.Hour, 0)
	c.Assert(err, gc.IsNil)
	alarm := clk.NewAlarm(agenttest.Epoch.Add(time.Hour + 3*time.Second))
	agenttest.WaitAdvance(c, base, 3*time.Second, 1)
	select {
	case <-alarm.Chan():
	case <-time.After(agenttest.LongWait):
		c.Fatalf("alarm did not fire")
	}
}
