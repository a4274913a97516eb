package presencerecorder_test

import (
	"context"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/presencerecorder"
)

type workerSuite struct {
	clock   clock.Clock
	config  presencerecorder.ManifoldConfig
	started []presencerecorder.WorkerConfig
}

var _ = gc.Suite(&workerSuite{})

var _ func(presencerecorder.WorkerConfig) (worker.Worker, error) = presencerecorder.NewRecorderWorker

func (s *workerSuite) SetUpTest(c *gc.C) {
	s.clock = agenttest.NewClock()
	s.started = nil
	s.config = presencerecorder.ManifoldConfig{
		ClockName: "clock",
		APIServer: true,
		NewWorker: func(config presencerecorder.WorkerConfig) (worker.Worker, error) {
			s.started = append(s.started, config)
			return presencerecorder.NewRecorderWorker(config)
		},
	}
}

func (s *workerSuite) start(c *gc.C) worker.Worker {
	w, err := presencerecorder.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(map[string]any{"clock": s.clock}))
	c.Assert(err, gc.IsNil)
	return w
}

func (s *workerSuite) output(c *gc.C, w worker.Worker) presencerecorder.Recorder {
	var r presencerecorder.Recorder
	c.Assert(presencerecorder.Manifold(s.config).Output(w, &r), gc.IsNil)
	return r
}

func (s *workerSuite) TestAPIServerGetsAnEnabledRecorder(c *gc.C) {
	w := s.start(c)
	defer workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.output(c, w).IsEnabled(), gc.Equals, true)
}

func (s *workerSuite) TestOtherAgentsGetADisabledRecorder(c *gc.C) {
	s.config.APIServer = false
	w := s.start(c)
	defer workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.output(c, w).IsEnabled(), gc.Equals, false)
}

func (s *workerSuite) TestStoppingDisablesAndClearsTheRecorder(c *gc.C) {
	w := s.start(c)
	r := s.output(c, w)
	r.Connect("machine-0", "m", "unit-a-0", 1, false, "")
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(r.IsEnabled(), gc.Equals, false)
	c.Assert(r.Connections().Count(), gc.Equals, 0)
}

func (s *workerSuite) TestReport(c *gc.C) {
	w := s.start(c)
	defer workertest.CleanKill(agenttest.C(c), w)
	s.output(c, w).Connect("machine-0", "m", "unit-a-0", 1, false, "")
	c.Assert(w.(*presencerecorder.Worker).Report(), gc.DeepEquals, map[string]any{
		"enabled": true, "connections": 1, "models": 1,
	})
}

func (s *workerSuite) TestInputs(c *gc.C) {
	c.Assert(presencerecorder.Manifold(s.config).Inputs, gc.DeepEquals, []string{"clock"})
}

func (s *workerSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, presencerecorder.Manifold(s.config), map[string]any{"clock": s.clock})
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *workerSuite) TestStartPassesConfig(c *gc.C) {
	w := s.start(c)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.DeepEquals, []presencerecorder.WorkerConfig{{Clock: s.clock, APIServer: true}})
}

func (s *workerSuite) TestValidate(c *gc.C) {
	for i, t := range []struct {
		mutate func(*presencerecorder.ManifoldConfig)
		err    string
	}{
		{func(cfg *presencerecorder.ManifoldConfig) { cfg.ClockName = "" }, "empty ClockName not valid"},
		{func(cfg *presencerecorder.ManifoldConfig) { cfg.NewWorker = nil }, "nil NewWorker not valid"},
	} {
		c.Logf("case %d", i)
		cfg := s.config
		t.mutate(&cfg)
		c.Check(cfg.Validate(), gc.ErrorMatches, t.err)
		c.Check(errors.Is(cfg.Validate(), errors.NotValid), gc.Equals, true)
	}
	_, err := presencerecorder.NewWorker(presencerecorder.WorkerConfig{})
	c.Assert(err, gc.ErrorMatches, "nil Clock not valid")
}

func (s *workerSuite) TestOutputRejectsWrongTypes(c *gc.C) {
	w := s.start(c)
	defer workertest.CleanKill(agenttest.C(c), w)
	output := presencerecorder.Manifold(s.config).Output
	var wrong *int
	c.Assert(output(w, &wrong), gc.ErrorMatches, `expected \*presencerecorder.Recorder or a pointer to an interface it implements, got \*\*int`)
	var r presencerecorder.Recorder
	c.Assert(output(workertest.NewErrorWorker(nil), &r), gc.ErrorMatches, `expected \*presencerecorder.Worker, got .*`)
}
