package watcher_test

import (
	"context"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/watcher"
)

type manifoldSuite struct {
	db      *mongo.Database
	reader  *presencereader.Reader
	config  watcher.ManifoldConfig
	started []watcher.Config
}

var _ = gc.Suite(&manifoldSuite{})

var _ func(watcher.Config) (worker.Worker, error) = watcher.NewWorker

func (s *manifoldSuite) SetUpTest(c *gc.C) {
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.db = client.Database("test")
	// A reader that is never started stands in: the manifold only
	// passes it on.
	s.reader = &presencereader.Reader{}
	s.started = nil
	s.config = watcher.ManifoldConfig{
		ReaderName: "reader",
		Model:      modelA,
		NewWorker: func(config watcher.Config) (worker.Worker, error) {
			s.started = append(s.started, config)
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

func (s *manifoldSuite) resources() map[string]any {
	return map[string]any{"reader": s.reader}
}

func (s *manifoldSuite) TestInputs(c *gc.C) {
	c.Assert(watcher.Manifold(s.config).Inputs, gc.DeepEquals, []string{"reader"})
}

func (s *manifoldSuite) TestMissingInputs(c *gc.C) {
	agenttest.CheckMissingInputs(c, watcher.Manifold(s.config), s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestValidate(c *gc.C) {
	agenttest.CheckInvalidConfigs(c, s.config, []agenttest.InvalidConfig[watcher.ManifoldConfig]{
		{Mutate: func(cfg *watcher.ManifoldConfig) { cfg.ReaderName = "" }, Err: "empty ReaderName not valid"},
		{Mutate: func(cfg *watcher.ManifoldConfig) { cfg.Model = names.NewModelTag("x") }, Err: `model tag "model-x" not valid`},
		{Mutate: func(cfg *watcher.ManifoldConfig) { cfg.NewWorker = nil }, Err: "nil NewWorker not valid"},
	}, watcher.Manifold, s.resources())
	c.Assert(s.started, gc.HasLen, 0)
}

func (s *manifoldSuite) TestStartPassesConfig(c *gc.C) {
	w, err := watcher.Manifold(s.config).Start(context.Background(), agenttest.StubGetter(s.resources()))
	c.Assert(err, gc.IsNil)
	workertest.CleanKill(agenttest.C(c), w)
	c.Assert(s.started, gc.DeepEquals, []watcher.Config{{Reader: s.reader, Model: modelA}})
}

func (s *manifoldSuite) TestOutputFillsTheWatcherOrAnyInterfaceItImplements(c *gc.C) {
	w := watcher.NewDeadWatcher(errors.New("dead"))
	output := watcher.Manifold(s.config).Output
	var got *watcher.Watcher
	c.Assert(output(w, &got), gc.IsNil)
	c.Assert(got, gc.Equals, w)
	var presence watcher.PresenceWatcher
	c.Assert(output(w, &presence), gc.IsNil)
	c.Assert(presence, gc.Equals, watcher.PresenceWatcher(w))
	var narrow interface {
		Alive(string) (bool, error)
	}
	c.Assert(output(w, &narrow), gc.IsNil)
	c.Assert(narrow, gc.NotNil)
	var wrong *int
	c.Assert(output(w, &wrong), gc.ErrorMatches, `expected \*\*watcher.Watcher or a pointer to an interface it implements, got \*\*int`)
	c.Assert(output(workertest.NewErrorWorker(nil), &got), gc.ErrorMatches, `expected \*watcher.Watcher, got .*`)
}

func (s *manifoldSuite) TestConfigValidation(c *gc.C) {
	clk := agenttest.NewClock()
	valid := watcher.Config{Base: s.db.Collection("presence"), Model: modelA, Clock: clk}
	for i, t := range []struct {
		mutate func(*watcher.Config)
		err    string
	}{
		{func(cfg *watcher.Config) { cfg.Base = nil }, "nil Reader and nil Base not valid"},
		{func(cfg *watcher.Config) { cfg.Reader = s.reader }, "both Reader and Base not valid"},
		{func(cfg *watcher.Config) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *watcher.Config) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *watcher.Config) { cfg.Period = -1 }, "negative Period not valid"},
		{func(cfg *watcher.Config) { cfg.SyncInterval = -1 }, "negative SyncInterval not valid"},
		{func(cfg *watcher.Config) { cfg.LogLength = -1 }, "negative LogLength not valid"},
		{func(cfg *watcher.Config) { cfg.LogAge = -1 }, "negative LogAge not valid"},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		w, err := watcher.New(cfg)
		c.Check(w, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
