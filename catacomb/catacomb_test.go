package catacomb_test

import (
	"context"
	"time"

	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/catacomb"
)

type catacombSuite struct{}

var _ = gc.Suite(&catacombSuite{})

const errStopped = errors.ConstError("stopped")

// start runs a worker whose loop waits for its death and returns the
// catacomb it runs on.
func start(c *gc.C, result error) *catacomb.Catacomb {
	var site catacomb.Catacomb
	err := catacomb.Invoke(catacomb.Plan{
		Name: "test",
		Site: &site,
		Work: func() error {
			<-site.Dying()
			if result != nil {
				return result
			}
			return site.ErrDying()
		},
	})
	c.Assert(err, gc.IsNil)
	return &site
}

func (s *catacombSuite) TestDeathErrorIsStoppedWhileAliveAndOnACleanStop(c *gc.C) {
	site := start(c, nil)
	c.Check(catacomb.DeathError(site, errStopped), gc.Equals, errStopped)
	site.Kill(nil)
	c.Assert(site.Wait(), gc.IsNil)
	c.Check(catacomb.DeathError(site, errStopped), gc.Equals, errStopped)
}

func (s *catacombSuite) TestDeathErrorIsTheWorkersOwnError(c *gc.C) {
	site := start(c, errors.New("boom"))
	site.Kill(nil)
	c.Check(site.Wait(), gc.ErrorMatches, "boom")
	c.Check(catacomb.DeathError(site, errStopped), gc.ErrorMatches, "boom")
}

func (s *catacombSuite) TestCallIsCancelledWhenTheWorkerDies(c *gc.C) {
	site := start(c, nil)
	ctx, cancel := catacomb.Call(site, time.Hour)
	defer cancel()
	c.Check(ctx.Err(), gc.IsNil)
	site.Kill(nil)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		c.Fatalf("context not cancelled by the worker's death")
	}
	c.Check(ctx.Err(), gc.Equals, context.Canceled)
	c.Assert(site.Wait(), gc.IsNil)
}

func (s *catacombSuite) TestCallHasADeadline(c *gc.C) {
	site := start(c, nil)
	defer func() { site.Kill(nil); _ = site.Wait() }()
	ctx, cancel := catacomb.Call(site, 10*time.Millisecond)
	defer cancel()
	deadline, ok := ctx.Deadline()
	c.Assert(ok, gc.Equals, true)
	c.Check(time.Until(deadline) <= 10*time.Millisecond, gc.Equals, true)
	<-ctx.Done()
	c.Check(ctx.Err(), gc.Equals, context.DeadlineExceeded)
}

func (s *catacombSuite) TestCallWithoutTimeoutHasNoDeadline(c *gc.C) {
	site := start(c, nil)
	defer func() { site.Kill(nil); _ = site.Wait() }()
	ctx, cancel := catacomb.Call(site, 0)
	_, ok := ctx.Deadline()
	c.Check(ok, gc.Equals, false)
	cancel()
	c.Check(ctx.Err(), gc.Equals, context.Canceled)
}

func (s *catacombSuite) TestCallFromIsCancelledWithItsParent(c *gc.C) {
	site := start(c, nil)
	defer func() { site.Kill(nil); _ = site.Wait() }()
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, cancel := catacomb.CallFrom(parent, site, time.Hour)
	defer cancel()
	c.Check(ctx.Err(), gc.IsNil)
	cancelParent()
	<-ctx.Done()
	c.Check(ctx.Err(), gc.Equals, context.Canceled)
}

func (s *catacombSuite) TestCallFromIsCancelledWhenTheWorkerDies(c *gc.C) {
	site := start(c, nil)
	ctx, cancel := catacomb.CallFrom(context.Background(), site, 0)
	defer cancel()
	site.Kill(nil)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		c.Fatalf("context not cancelled by the worker's death")
	}
	c.Assert(site.Wait(), gc.IsNil)
}

func (s *catacombSuite) TestRearmMovesAPendingTimer(c *gc.C) {
	clk := agenttest.NewClock()
	timer := clk.NewTimer(time.Hour)
	catacomb.Rearm(timer, time.Second)
	agenttest.WaitAdvance(c, clk, time.Second, 1)
	select {
	case <-timer.Chan():
	case <-time.After(10 * time.Second):
		c.Fatalf("rearmed timer did not fire")
	}
}

func (s *catacombSuite) TestRearmLeavesAFiredTimerAlone(c *gc.C) {
	clk := agenttest.NewClock()
	timer := clk.NewTimer(time.Second)
	agenttest.WaitAdvance(c, clk, time.Second, 1)
	catacomb.Rearm(timer, time.Second)
	<-timer.Chan()
	// Had Rearm armed the fired timer again, it would be waiting now.
	c.Check(clk.WaitAdvance(time.Second, 50*time.Millisecond, 1), gc.NotNil)
}
