package agenttest_test

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

// waitSuite checks the wait helpers; it needs no database.
type waitSuite struct{}

var _ = gc.Suite(&waitSuite{})

func (*waitSuite) TestRetryReturnsNilOnceFSucceeds(c *gc.C) {
	calls := 0
	err := agenttest.Retry(agenttest.LongWait, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	c.Assert(err, gc.IsNil)
	c.Assert(calls, gc.Equals, 3)
}

func (*waitSuite) TestRetryReturnsTheLastErrorOnceTheTimeoutHasPassed(c *gc.C) {
	calls := 0
	started := time.Now()
	err := agenttest.Retry(20*time.Millisecond, func() error {
		calls++
		return errors.Errorf("failure %d", calls)
	})
	c.Assert(time.Since(started) >= 20*time.Millisecond, gc.Equals, true)
	c.Assert(calls > 1, gc.Equals, true)
	c.Assert(err, gc.ErrorMatches, fmt.Sprintf("still failing after 20ms: failure %d", calls))
}

func (*waitSuite) TestRetryCallsFOnceWithNoTimeLeft(c *gc.C) {
	calls := 0
	err := agenttest.Retry(0, func() error {
		calls++
		return nil
	})
	c.Assert(err, gc.IsNil)
	c.Assert(calls, gc.Equals, 1)
}

func (*waitSuite) TestWaitForReturnsOnceTheConditionHolds(c *gc.C) {
	calls := 0
	agenttest.WaitFor(c, agenttest.LongWait, "the third look", func() bool {
		calls++
		return calls == 3
	})
	c.Assert(calls, gc.Equals, 3)
}

// failingWaits holds tests that must fail: waitSuite runs them with
// check.Run and reads the result. It is not registered.
type failingWaits struct {
	looks int
}

func (f *failingWaits) TestWaitForNever(c *gc.C) {
	agenttest.WaitFor(c, 20*time.Millisecond, "a thing that never happens", func() bool {
		f.looks++
		return false
	})
	// Not reached: WaitFor stops the test.
	f.looks = -1
}

func (f *failingWaits) TestAdvanceUntilNever(c *gc.C) {
	clk := agenttest.NewClock()
	agenttest.AdvanceUntil(c, clk, 0, func() bool { return false })
	f.looks = -1
}

func (*waitSuite) TestWaitForFailsTheTestWhenTheConditionNeverHolds(c *gc.C) {
	f := &failingWaits{}
	result := gc.Run(f, &gc.RunConf{Output: io.Discard, Filter: "TestWaitForNever"})
	c.Assert(result.Failed, gc.Equals, 1)
	c.Assert(result.Succeeded, gc.Equals, 0)
	c.Assert(f.looks > 1, gc.Equals, true)
}

func (*waitSuite) TestAWaitThatGivesUpLogsEveryGoroutine(c *gc.C) {
	var out bytes.Buffer
	result := gc.Run(&failingWaits{}, &gc.RunConf{Output: &out, Filter: "TestWaitForNever"})
	c.Assert(result.Failed, gc.Equals, 1)
	c.Assert(out.String(), gc.Matches, `(?s).*goroutines when the wait gave up:.*goroutine profile: total \d+.*TestWaitForNever.*`)
}

func (*waitSuite) TestAdvanceUntilReturnsHowFarItMovedTheClock(c *gc.C) {
	clk := agenttest.NewClock()
	due := agenttest.Epoch.Add(95 * time.Second)
	moved := agenttest.AdvanceUntil(c, clk, 10*time.Second, func() bool {
		return !clk.Now().Before(due)
	})
	c.Assert(moved, gc.Equals, 100*time.Second)
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch.Add(100*time.Second))
}

func (*waitSuite) TestAdvanceUntilDoesNotMoveTheClockWhenTheConditionHolds(c *gc.C) {
	clk := agenttest.NewClock()
	c.Assert(agenttest.AdvanceUntil(c, clk, time.Second, func() bool { return true }), gc.Equals, time.Duration(0))
	c.Assert(clk.Now(), gc.Equals, agenttest.Epoch)
}

func (*waitSuite) TestAdvanceUntilRefusesAStepThatCannotMoveTheClock(c *gc.C) {
	f := &failingWaits{}
	result := gc.Run(f, &gc.RunConf{Output: io.Discard, Filter: "TestAdvanceUntilNever"})
	c.Assert(result.Failed, gc.Equals, 1)
	c.Assert(f.looks, gc.Equals, 0)
}
