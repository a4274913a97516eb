package presence_test

import (
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/presencerecorder"
)

type connectionAgentSuite struct {
	clock    *testclock.Clock
	recorder presencerecorder.Recorder
	agent    *presence.ConnectionAgent
}

var _ = gc.Suite(&connectionAgentSuite{})

func (s *connectionAgentSuite) SetUpTest(c *gc.C) {
	s.clock = agenttest.NewClock()
	s.recorder = presencerecorder.New(s.clock)
	s.recorder.Enable()
	var err error
	s.agent, err = presence.NewConnectionAgent(presence.ConnectionAgentConfig{
		Recorder: s.recorder, Model: modelA, Agent: "unit-mysql-0", Clock: s.clock, PollInterval: time.Second,
	})
	c.Assert(err, gc.IsNil)
}

func (s *connectionAgentSuite) TestAliveWhileConnected(c *gc.C) {
	alive, err := s.agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)
	s.recorder.Connect("machine-0", modelA.Id(), "unit-mysql-0", 1, false, "")
	alive, err = s.agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	s.recorder.ServerDown("machine-0")
	alive, err = s.agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)
}

func (s *connectionAgentSuite) TestConnectionInAnotherModelDoesNotCount(c *gc.C) {
	s.recorder.Connect("machine-0", modelB.Id(), "unit-mysql-0", 1, false, "")
	alive, err := s.agent.AgentPresence()
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)
}

func (s *connectionAgentSuite) TestSetAgentPresenceIsNotSupported(c *gc.C) {
	p, err := s.agent.SetAgentPresence()
	c.Assert(p, gc.IsNil)
	c.Assert(errors.Is(err, errors.NotSupported), gc.Equals, true)
}

func (s *connectionAgentSuite) TestWaitAgentPresenceSeesAConnection(c *gc.C) {
	done := make(chan error, 1)
	go func() { done <- s.agent.WaitAgentPresence(time.Minute) }()
	// The deadline and the poll timer wait once the first look is done.
	agenttest.WaitTimers(c, s.clock, 2)
	s.recorder.Connect("machine-0", modelA.Id(), "unit-mysql-0", 1, false, "")
	agenttest.WaitAdvance(c, s.clock, time.Second, 2)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("WaitAgentPresence did not return")
	}
}

func (s *connectionAgentSuite) TestWaitAgentPresenceTimesOut(c *gc.C) {
	done := make(chan error, 1)
	go func() { done <- s.agent.WaitAgentPresence(time.Second) }()
	agenttest.WaitAdvance(c, s.clock, time.Second, 2)
	select {
	case err := <-done:
		c.Assert(errors.Is(err, errors.Timeout), gc.Equals, true, gc.Commentf("%v", err))
	case <-time.After(agenttest.LongWait):
		c.Fatalf("WaitAgentPresence did not time out")
	}
}

func (s *connectionAgentSuite) TestConfigValidation(c *gc.C) {
	valid := presence.ConnectionAgentConfig{Recorder: s.recorder, Model: modelA, Agent: "a", Clock: s.clock}
	for i, t := range []struct {
		mutate func(*presence.ConnectionAgentConfig)
		err    string
	}{
		{func(cfg *presence.ConnectionAgentConfig) { cfg.Recorder = nil }, "nil Recorder not valid"},
		{func(cfg *presence.ConnectionAgentConfig) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *presence.ConnectionAgentConfig) { cfg.Agent = "" }, "empty Agent not valid"},
		{func(cfg *presence.ConnectionAgentConfig) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *presence.ConnectionAgentConfig) { cfg.PollInterval = -1 }, "negative PollInterval not valid"},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		_, err := presence.NewConnectionAgent(cfg)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
