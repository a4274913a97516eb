package presencerecorder_test

import (
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/presencerecorder"
)

type recorderSuite struct {
	clock    *testclock.Clock
	recorder presencerecorder.Recorder
}

var _ = gc.Suite(&recorderSuite{})

const (
	modelA  = "model-a"
	modelB  = "model-b"
	server0 = "machine-0"
	server1 = "machine-1"
)

func (s *recorderSuite) SetUpTest(c *gc.C) {
	s.clock = agenttest.NewClock()
	s.recorder = presencerecorder.New(s.clock)
	s.recorder.Enable()
}

func (s *recorderSuite) value(server, model, agent string, id uint64, status presencerecorder.Status) presencerecorder.Value {
	return presencerecorder.Value{
		Model: model, Server: server, Agent: agent, ConnectionID: id,
		Status: status, LastSeen: s.clock.Now(),
	}
}

func (s *recorderSuite) TestStatusString(c *gc.C) {
	c.Assert(presencerecorder.Unknown.String(), gc.Equals, "unknown")
	c.Assert(presencerecorder.Missing.String(), gc.Equals, "missing")
	c.Assert(presencerecorder.Alive.String(), gc.Equals, "alive")
	c.Assert(presencerecorder.Unknown < presencerecorder.Missing && presencerecorder.Missing < presencerecorder.Alive, gc.Equals, true)
}

func (s *recorderSuite) TestNewRecorderIsDisabled(c *gc.C) {
	r := presencerecorder.New(s.clock)
	c.Assert(r.IsEnabled(), gc.Equals, false)
	r.Enable()
	c.Assert(r.IsEnabled(), gc.Equals, true)
}

func (s *recorderSuite) TestANilClockMeansTheWallClock(c *gc.C) {
	r := presencerecorder.New(nil)
	r.Enable()
	before := time.Now()
	r.Connect(server0, modelA, "unit-a-0", 1, false, "")
	r.Activity(server0, 1)
	values := r.Connections().Values()
	c.Assert(values, gc.HasLen, 1)
	c.Assert(values[0].LastSeen.Before(before), gc.Equals, false)
}

func (s *recorderSuite) TestDisableClearsEveryEntry(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.Disable()
	c.Assert(s.recorder.IsEnabled(), gc.Equals, false)
	s.recorder.Enable()
	c.Assert(s.recorder.Connections().Count(), gc.Equals, 0)
}

func (s *recorderSuite) TestDisabledRecorderIgnoresChanges(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	snapshot := s.recorder.Connections().Values()
	r := presencerecorder.New(s.clock)
	r.Connect(server0, modelA, "unit-a-0", 1, false, "")
	c.Assert(r.Connections().Count(), gc.Equals, 0)

	s.recorder.Disable()
	s.recorder.Connect(server0, modelA, "unit-a-0", 2, false, "")
	s.recorder.Disconnect(server0, 1)
	s.recorder.Activity(server0, 1)
	s.recorder.ServerDown(server0)
	c.Assert(s.recorder.Connections().Count(), gc.Equals, 0)
	c.Assert(snapshot, gc.HasLen, 1)
}

func (s *recorderSuite) TestConnectAddsAnAliveEntry(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "user data")
	c.Assert(s.recorder.Connections().Values(), gc.DeepEquals, []presencerecorder.Value{{
		Model: modelA, Server: server0, Agent: "unit-a-0", ConnectionID: 1,
		Status: presencerecorder.Alive, UserData: "user data", LastSeen: s.clock.Now(),
	}})
}

func (s *recorderSuite) TestConnectOfAKnownConnectionMakesItAliveAgain(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.ServerDown(server0)
	s.clock.Advance(time.Minute)
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	values := s.recorder.Connections().Values()
	c.Assert(values, gc.HasLen, 1)
	c.Assert(values[0].Status, gc.Equals, presencerecorder.Alive)
	c.Assert(values[0].LastSeen, gc.Equals, s.clock.Now())
}

func (s *recorderSuite) TestDisconnectRemovesTheEntry(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.Connect(server0, modelA, "unit-a-1", 2, false, "")
	s.recorder.Disconnect(server0, 1)
	s.recorder.Disconnect(server1, 2)
	c.Assert(s.recorder.Connections().Agents(), gc.DeepEquals, []string{"unit-a-1"})
}

func (s *recorderSuite) TestActivityRefreshesLastSeenOnly(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.ServerDown(server0)
	s.clock.Advance(time.Minute)
	s.recorder.Activity(server0, 1)
	values := s.recorder.Connections().Values()
	c.Assert(values[0].LastSeen, gc.Equals, s.clock.Now())
	c.Assert(values[0].Status, gc.Equals, presencerecorder.Missing)
}

func (s *recorderSuite) TestServerDownMarksItsEntriesMissing(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.Connect(server1, modelA, "unit-a-1", 2, false, "")
	s.recorder.ServerDown(server0)
	conns := s.recorder.Connections()
	c.Assert(conns.Count(), gc.Equals, 2)
	c.Assert(conns.ForServer(server0).Values()[0].Status, gc.Equals, presencerecorder.Missing)
	c.Assert(conns.ForServer(server1).Values()[0].Status, gc.Equals, presencerecorder.Alive)
}

func (s *recorderSuite) TestUpdateServerFailsWhenDisabled(c *gc.C) {
	s.recorder.Disable()
	err := s.recorder.UpdateServer(server0, nil)
	c.Assert(err, gc.Equals, presencerecorder.ErrDisabled)
}

func (s *recorderSuite) TestUpdateServerWithAnotherServersValueChangesNothing(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.ServerDown(server0)
	before := s.recorder.Connections().Values()
	err := s.recorder.UpdateServer(server0, []presencerecorder.Value{
		s.value(server0, modelA, "unit-a-2", 3, presencerecorder.Alive),
		s.value(server1, modelA, "unit-a-1", 2, presencerecorder.Alive),
	})
	c.Assert(err, gc.ErrorMatches, `connection server mismatch, got "machine-1" expected "machine-0"`)
	c.Assert(s.recorder.Connections().Values(), gc.DeepEquals, before)
}

func (s *recorderSuite) TestUpdateServerReconcilesOneServer(c *gc.C) {
	s.recorder.Connect(server1, modelA, "other-server", 9, false, "")
	s.recorder.Connect(server0, modelA, "stale", 1, false, "")
	s.recorder.Connect(server0, modelA, "refreshed", 2, false, "")
	s.recorder.ServerDown(server0)
	s.recorder.ServerDown(server1)
	// Connected after the server's report was requested.
	s.recorder.Connect(server0, modelA, "late", 3, false, "")
	s.clock.Advance(time.Minute)

	err := s.recorder.UpdateServer(server0, []presencerecorder.Value{
		{Model: modelA, Server: server0, Agent: "refreshed", ConnectionID: 2},
		{Model: modelB, Server: server0, Agent: "new", ConnectionID: 4, UserData: "x"},
	})
	c.Assert(err, gc.IsNil)
	byAgent := make(map[string]presencerecorder.Value)
	for _, v := range s.recorder.Connections().Values() {
		byAgent[v.Agent] = v
	}
	c.Assert(byAgent, gc.HasLen, 4)
	c.Assert(byAgent["other-server"].Status, gc.Equals, presencerecorder.Missing)
	c.Assert(byAgent["late"].Status, gc.Equals, presencerecorder.Alive)
	c.Assert(byAgent["refreshed"].Status, gc.Equals, presencerecorder.Alive)
	c.Assert(byAgent["refreshed"].LastSeen, gc.Equals, s.clock.Now())
	c.Assert(byAgent["new"], gc.DeepEquals, presencerecorder.Value{
		Model: modelB, Server: server0, Agent: "new", ConnectionID: 4,
		Status: presencerecorder.Alive, UserData: "x", LastSeen: s.clock.Now(),
	})
}

func (s *recorderSuite) TestServerDownThenReconnectKeepsTheAgentAlive(c *gc.C) {
	// The agent's server dies and the agent reconnects to another before
	// the first comes back with an empty report.
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.ServerDown(server0)
	status, err := s.recorder.Connections().ForModel(modelA).AgentStatus("unit-a-0")
	c.Assert(err, gc.IsNil)
	c.Assert(status, gc.Equals, presencerecorder.Missing)

	s.recorder.Connect(server1, modelA, "unit-a-0", 7, false, "")
	c.Assert(s.recorder.UpdateServer(server0, nil), gc.IsNil)
	status, err = s.recorder.Connections().ForModel(modelA).AgentStatus("unit-a-0")
	c.Assert(err, gc.IsNil)
	c.Assert(status, gc.Equals, presencerecorder.Alive)
	c.Assert(s.recorder.Connections().Servers(), gc.DeepEquals, []string{server1})
}

func (s *recorderSuite) TestConnectionsIsASnapshot(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	snapshot := s.recorder.Connections()
	s.recorder.Connect(server0, modelA, "unit-a-1", 2, false, "")
	s.recorder.ServerDown(server0)
	s.recorder.Disconnect(server0, 1)
	c.Assert(snapshot.Count(), gc.Equals, 1)
	c.Assert(snapshot.Values()[0].Status, gc.Equals, presencerecorder.Alive)
	c.Assert(s.recorder.Connections().Values()[0].Agent, gc.Equals, "unit-a-1")
}

func (s *recorderSuite) TestConnectionsNarrowAlongEachAxis(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.Connect(server1, modelA, "unit-a-0", 2, false, "")
	s.recorder.Connect(server0, modelB, "unit-b-0", 3, false, "")
	s.recorder.Connect(server1, modelB, "machine-0", 4, true, "")
	conns := s.recorder.Connections()
	c.Assert(conns.Count(), gc.Equals, 4)
	c.Assert(conns.Models(), gc.DeepEquals, []string{modelA, modelB})
	c.Assert(conns.Servers(), gc.DeepEquals, []string{server0, server1})
	c.Assert(conns.Agents(), gc.DeepEquals, []string{"machine-0", "unit-a-0", "unit-b-0"})
	c.Assert(conns.ForModel(modelA).Count(), gc.Equals, 2)
	c.Assert(conns.ForServer(server0).Agents(), gc.DeepEquals, []string{"unit-a-0", "unit-b-0"})
	c.Assert(conns.ForAgent("unit-a-0").Servers(), gc.DeepEquals, []string{server0, server1})
	c.Assert(conns.ForModel(modelB).ForServer(server1).Agents(), gc.DeepEquals, []string{"machine-0"})
	c.Assert(conns.ForServer(server0).ForServer(server1).Count(), gc.Equals, 0)
	c.Assert(conns.ForModel("nope").Count(), gc.Equals, 0)
	var ids []uint64
	for _, v := range conns.Values() {
		ids = append(ids, v.ConnectionID)
	}
	c.Assert(ids, gc.DeepEquals, []uint64{1, 2, 3, 4})
}

func (s *recorderSuite) TestAgentStatusNeedsAModel(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	_, err := s.recorder.Connections().AgentStatus("unit-a-0")
	c.Assert(err, gc.Equals, presencerecorder.ErrAmbiguous)
	_, err = s.recorder.Connections().ForServer(server0).AgentStatus("unit-a-0")
	c.Assert(errors.Is(err, presencerecorder.ErrAmbiguous), gc.Equals, true)
}

func (s *recorderSuite) TestAgentStatusIsTheBestAcrossConnections(c *gc.C) {
	s.recorder.Connect(server0, modelA, "unit-a-0", 1, false, "")
	s.recorder.ServerDown(server0)
	s.recorder.Connect(server1, modelA, "unit-a-0", 2, false, "")
	conns := s.recorder.Connections().ForModel(modelA)
	status, err := conns.AgentStatus("unit-a-0")
	c.Assert(err, gc.IsNil)
	c.Assert(status, gc.Equals, presencerecorder.Alive)
	status, err = conns.AgentStatus("unit-a-9")
	c.Assert(err, gc.IsNil)
	c.Assert(status, gc.Equals, presencerecorder.Unknown)
}

func (s *recorderSuite) TestAgentStatusIgnoresControllerAgents(c *gc.C) {
	s.recorder.Connect(server0, modelA, "machine-0", 1, true, "")
	status, err := s.recorder.Connections().ForModel(modelA).AgentStatus("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(status, gc.Equals, presencerecorder.Unknown)
}

func (s *recorderSuite) TestConcurrentUse(c *gc.C) {
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			server := fmt.Sprintf("machine-%d", g%2)
			for i := 0; i < 200; i++ {
				id := uint64(g*1000 + i)
				s.recorder.Connect(server, modelA, fmt.Sprintf("unit-a-%d", i), id, false, "")
				s.recorder.Activity(server, id)
				_, _ = s.recorder.Connections().ForModel(modelA).AgentStatus("unit-a-1")
				if i%10 == 0 {
					s.recorder.ServerDown(server)
					_ = s.recorder.UpdateServer(server, nil)
				}
				if i%2 == 0 {
					s.recorder.Disconnect(server, id)
				}
			}
		}(g)
	}
	wg.Wait()
	for _, v := range s.recorder.Connections().Values() {
		c.Assert(v.ConnectionID%2, gc.Equals, uint64(1))
	}
}
