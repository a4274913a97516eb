package enginekit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/enginekit"
)

func TestPackage(t *testing.T) { gc.TestingT(t) }

type kitSuite struct{}

var _ = gc.Suite(&kitSuite{})

type named string

func (n named) String() string { return string(n) }

func (s *kitSuite) TestValueManifoldOutputsTheValueOrAnInterfaceItImplements(c *gc.C) {
	m := enginekit.ValueManifold(named("a"))
	w, err := m.Start(context.Background(), nil)
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), w)
	var value named
	c.Assert(m.Output(w, &value), gc.IsNil)
	c.Assert(value, gc.Equals, named("a"))
	var stringer fmt.Stringer
	c.Assert(m.Output(w, &stringer), gc.IsNil)
	c.Assert(stringer.String(), gc.Equals, "a")
	var wrong int
	c.Assert(m.Output(w, &wrong), gc.ErrorMatches, `expected a pointer to enginekit_test.named or to an interface it implements, got \*int`)
	var killer worker.Worker
	c.Assert(m.Output(w, &killer), gc.NotNil)
}

func (s *kitSuite) TestValueManifoldRefusesNil(c *gc.C) {
	_, err := enginekit.ValueManifold(nil).Start(context.Background(), nil)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}

func (s *kitSuite) TestOutputWaitsForAManifoldInstalledLater(c *gc.C) {
	engine := agenttest.NewEngine(c)
	defer workertest.CleanKill(agenttest.C(c), engine)
	got := make(chan error, 1)
	var value named
	go func() { got <- enginekit.Output(engine, "value", &value, agenttest.LongWait) }()
	c.Assert(engine.Install("value", enginekit.ValueManifold(named("b"))), gc.IsNil)
	select {
	case err := <-got:
		c.Assert(err, gc.IsNil)
		c.Assert(value, gc.Equals, named("b"))
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Output did not return")
	}
}

func (s *kitSuite) TestOutputTimesOutForAManifoldThatNeverRuns(c *gc.C) {
	engine := agenttest.NewEngine(c)
	defer workertest.CleanKill(agenttest.C(c), engine)
	var value named
	err := enginekit.Output(engine, "absent", &value, 50*time.Millisecond)
	c.Assert(errors.Is(err, errors.Timeout), gc.Equals, true, gc.Commentf("%v", err))
}

func (s *kitSuite) TestOutputFailsWhenTheEngineStops(c *gc.C) {
	engine := agenttest.NewEngine(c)
	got := make(chan error, 1)
	var value named
	go func() { got <- enginekit.Output(engine, "absent", &value, agenttest.LongWait) }()
	workertest.CleanKill(agenttest.C(c), engine)
	select {
	case err := <-got:
		c.Assert(err, gc.NotNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("Output did not return")
	}
}

func (s *kitSuite) TestOutputWritesNothingOnceItHasGivenUp(c *gc.C) {
	engine := agenttest.NewEngine(c)
	defer workertest.CleanKill(agenttest.C(c), engine)
	var value named
	err := enginekit.Output(engine, "late", &value, 50*time.Millisecond)
	c.Assert(errors.Is(err, errors.Timeout), gc.Equals, true)
	c.Assert(engine.Install("late", enginekit.ValueManifold(named("late value"))), gc.IsNil)
	// The probe left behind starts once "late" runs, and must leave
	// value alone: wait until a probe of our own has seen "late" run.
	var later named
	c.Assert(enginekit.Output(engine, "late", &later, agenttest.LongWait), gc.IsNil)
	c.Assert(later, gc.Equals, named("late value"))
	c.Assert(value, gc.Equals, named(""))
}

func (s *kitSuite) TestOutputRefusesANilPointer(c *gc.C) {
	engine := agenttest.NewEngine(c)
	defer workertest.CleanKill(agenttest.C(c), engine)
	err := enginekit.Output(engine, "x", nil, time.Second)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}
