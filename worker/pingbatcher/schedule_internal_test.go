package pingbatcher

import (
	"time"

	"github.com/juju/clock/testclock"
	gc "gopkg.in/check.v1"
)

// scheduleSuite checks, from the inside, when the loop flushes next
// around a clock stepped back: only the inside can step it in the middle
// of a flush.
type scheduleSuite struct{}

var _ = gc.Suite(&scheduleSuite{})

var scheduleEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newSchedule() *schedule {
	clk := testclock.NewClock(scheduleEpoch)
	return &schedule{timer: clk.NewTimer(time.Hour), nextAt: scheduleEpoch.Add(time.Hour), kickGap: 50 * time.Millisecond}
}

func (s *scheduleSuite) TestAFlushDuringWhichTheClockWentBackKeepsTheFlushInterval(c *gc.C) {
	sched := newSchedule()
	// The flush started at the epoch; the clock was stepped back by a
	// second while it ran 20 ms.
	now := scheduleEpoch.Add(-time.Second + 20*time.Millisecond)
	sched.flushed(scheduleEpoch, now, 100*time.Millisecond, false)
	c.Assert(sched.nextAt, gc.Equals, now.Add(100*time.Millisecond))
}

func (s *scheduleSuite) TestAKickAfterTheClockWentBackFlushesAtOnce(c *gc.C) {
	sched := newSchedule()
	sched.flushed(scheduleEpoch, scheduleEpoch.Add(10*time.Millisecond), 100*time.Millisecond, false)
	// A kick 10 ms after that flush waits for the kick gap...
	c.Assert(sched.kicked(scheduleEpoch.Add(20*time.Millisecond)), gc.Equals, false)
	// ...but one after the clock went back by a second flushes.
	c.Assert(sched.kicked(scheduleEpoch.Add(-time.Second)), gc.Equals, true)
}
