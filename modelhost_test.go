package presence_test

import (
	"context"
	"strings"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/goleak"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/leasestore"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/watcher"
)

// modelHostSuite runs a controller set and a model host in a real engine
// on the embedded server.
type modelHostSuite struct {
	agenttest.MongoSuite
	// purge is the hosts' PurgeRemoved.
	purge bool
}

var _ = gc.Suite(&modelHostSuite{})

// up says that a model's agent is up and its watcher reachable.
type up struct {
	model names.ModelTag
	w     watcher.PresenceWatcher
}

// hostEngine starts an engine with a controller set and a model host over
// models, logging (outer and nested engines, and workers) to logger; each
// model's agent key is its index's machine, and each model's consumer
// sends on ups once its agent is up. extra, if not nil, adds manifolds
// to every model.
func (s *modelHostSuite) hostEngine(c *gc.C, logger *agenttest.Logger, models presence.ModelSource, ups chan<- up, extra func(names.ModelTag) dependency.Manifolds) *dependency.Engine {
	engine, err := dependency.NewEngine(agenttest.EngineConfig(logger))
	c.Assert(err, gc.IsNil)
	manifolds := presence.ControllerManifolds(presence.ControllerManifoldsConfig{
		DatabaseName:  "database",
		Clock:         agenttest.NewClock(),
		Logger:        logger,
		FlushInterval: time.Hour,
		SyncInterval:  time.Hour,
		PruneInterval: time.Hour,
	})
	manifolds["database"] = presence.DatabaseManifold(s.Server.URI(), s.DB.Name())
	manifolds["models"] = presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database",
		Models:       models,
		PurgeRemoved: s.purge,
		Logger:       logger,
		EngineConfig: func(names.ModelTag) dependency.EngineConfig { return agenttest.EngineConfig(logger) },
		Model: func(model names.ModelTag) presence.ModelManifoldsConfig {
			return presence.ModelManifoldsConfig{AgentKey: "machine-" + model.Id()[len(model.Id())-1:], ReleaseOnStop: true}
		},
		Manifolds: func(model names.ModelTag) dependency.Manifolds {
			manifolds := dependency.Manifolds{"consumer": upManifold(model, ups)}
			if extra != nil {
				for name, m := range extra(model) {
					manifolds[name] = m
				}
			}
			return manifolds
		},
	})
	c.Assert(dependency.Install(engine, manifolds), gc.IsNil)
	return engine
}

// upManifold sends model's watcher on ups once model's agent is up.
func upManifold(model names.ModelTag, ups chan<- up) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{presence.AgentName, presence.WatcherName},
		Start: func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := getter.Get(presence.AgentName, nil); err != nil {
				return nil, errors.Trace(err)
			}
			var w watcher.PresenceWatcher
			if err := getter.Get(presence.WatcherName, &w); err != nil {
				return nil, errors.Trace(err)
			}
			select {
			case ups <- up{model: model, w: w}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

// waitUp waits for n models to come up and returns them by model.
func waitUp(c *gc.C, ups <-chan up, n int) map[names.ModelTag]watcher.PresenceWatcher {
	got := make(map[names.ModelTag]watcher.PresenceWatcher)
	for len(got) < n {
		select {
		case u := <-ups:
			got[u.model] = u.w
		case <-time.After(agenttest.LongWait):
			c.Fatalf("only %d of %d models came up", len(got), n)
		}
	}
	return got
}

// waitStopped waits for a removed model's watcher w to stop.
func waitStopped(c *gc.C, w watcher.PresenceWatcher) {
	agenttest.WaitFor(c, agenttest.LongWait, "the removed model's watcher stopped", func() bool {
		_, err := w.Alive("machine-1")
		return errors.Is(err, watcher.ErrStopped)
	})
}

func errorsIn(entries []string) []string {
	var errs []string
	for _, e := range entries {
		if strings.HasPrefix(e, "ERROR ") {
			errs = append(errs, e)
		}
	}
	return errs
}

func (s *modelHostSuite) TestTheHostRunsAnEngineForEachModelAndFollowsTheSource(c *gc.C) {
	defer goleak.VerifyNone(c, goleak.IgnoreCurrent())
	models := presence.NewModelList(hostedModel(1), hostedModel(2))
	ups := make(chan up, 10)
	engine := s.hostEngine(c, &agenttest.Logger{}, models, ups, nil)
	defer workertest.CleanKill(agenttest.C(c), engine)
	first := waitUp(c, ups, 2)

	// Each model sees its own agent alive and not the other's.
	for model, w := range first {
		own := "machine-" + model.Id()[len(model.Id())-1:]
		alive, err := w.Alive(own)
		c.Assert(err, gc.IsNil)
		c.Check(alive, gc.Equals, true, gc.Commentf("%s in %s", own, model.Id()))
	}

	// A model that comes gets an engine; one that goes loses its own,
	// and the others keep theirs.
	models.Add(hostedModel(3))
	c.Assert(waitUp(c, ups, 1), gc.HasLen, 1)
	models.Remove(hostedModel(1))
	waitStopped(c, first[hostedModel(1)])
	alive, err := first[hostedModel(2)].Alive("machine-2")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)

	// The host reports each running model's engine.
	var report map[string]any
	agenttest.WaitFor(c, agenttest.LongWait, "two models reported", func() bool {
		manifolds := engine.Report()[dependency.KeyManifolds].(map[string]any)
		report, _ = manifolds["models"].(map[string]any)[dependency.KeyReport].(map[string]any)
		return len(report["models"].(map[string]any)) == 2
	})
	reported := report["models"].(map[string]any)
	c.Assert(reported[hostedModel(2).Id()], gc.NotNil)
	c.Assert(reported[hostedModel(3).Id()], gc.NotNil)
}

// A clean stop of the outer engine logs no ERROR, from the outer engine,
// the nested ones or any worker: the host stops the model engines before
// the controller workers they use. Each run also makes one model worker
// fail on purpose and requires its ERROR to be seen, so the logger is
// known to hear the nested engines.
func (s *modelHostSuite) TestACleanStopLogsNoError(c *gc.C) {
	const runs = 10
	for run := 0; run < runs; run++ {
		logger := &agenttest.Logger{}
		ups := make(chan up, 10)
		failed := make(chan struct{})
		failOnce := func(model names.ModelTag) dependency.Manifolds {
			if model != hostedModel(1) {
				return nil
			}
			return dependency.Manifolds{"fails-once": {
				Start: func(context.Context, dependency.Getter) (worker.Worker, error) {
					select {
					case <-failed:
						return workertest.NewErrorWorker(nil), nil
					default:
						close(failed)
						return nil, errors.New("deliberate failure")
					}
				},
			}}
		}
		models := presence.NewModelList(hostedModel(1), hostedModel(2), hostedModel(3))
		engine := s.hostEngine(c, logger, models, ups, failOnce)
		waitUp(c, ups, 3)
		<-failed
		agenttest.WaitFor(c, agenttest.LongWait, "the deliberate failure logged", func() bool {
			return len(errorsIn(logger.Entries())) > 0
		})
		before := len(logger.Entries())
		c.Assert(errorsIn(logger.Entries()), gc.HasLen, 1)
		c.Assert(errorsIn(logger.Entries())[0], gc.Matches, `.*"fails-once" manifold worker returned unexpected error: deliberate failure`)

		workertest.CleanKill(agenttest.C(c), engine)
		after := logger.Entries()[before:]
		c.Assert(errorsIn(after), gc.HasLen, 0, gc.Commentf("run %d", run))
		c.Logf("run %d: %d entries after the kill, none at ERROR", run, len(after))
	}
}

func (s *modelHostSuite) TestAModelSourceThatClosesStopsTheHost(c *gc.C) {
	closed := presence.ModelSourceFunc(func(context.Context) (<-chan []names.ModelTag, error) {
		ch := make(chan []names.ModelTag)
		close(ch)
		return ch, nil
	})
	logger := &agenttest.Logger{}
	engine := s.hostEngine(c, logger, closed, make(chan up), nil)
	defer workertest.CleanKill(agenttest.C(c), engine)
	agenttest.WaitFor(c, agenttest.LongWait, "an error for the closed source", func() bool {
		return strings.Contains(strings.Join(errorsIn(logger.Entries()), "\n"), presence.ErrModelSourceClosed.Error())
	})
}

type modelHostConfigSuite struct{}

var _ = gc.Suite(&modelHostConfigSuite{})

func (s *modelHostConfigSuite) TestInputsAreTheControllerOutputsAndTheSource(c *gc.C) {
	m := presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database", ControllerPrefix: "c-", ModelsName: "my-models",
	})
	c.Assert(m.Inputs, gc.DeepEquals, []string{
		"database", "c-" + presence.ClockName, "c-" + presence.PingBatcherName,
		"c-" + presence.ReaderName, "c-" + presence.LeaseStoreName, "my-models",
	})
	m = presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database", ClockName: "clock", Models: presence.NewModelList(),
	})
	c.Assert(m.Inputs, gc.DeepEquals, []string{
		"database", "clock", presence.PingBatcherName, presence.ReaderName, presence.LeaseStoreName,
	})
}

func (s *modelHostConfigSuite) TestAnInvalidConfigFailsTheStart(c *gc.C) {
	for i, t := range []struct {
		config presence.ModelHostConfig
		err    string
	}{
		{presence.ModelHostConfig{Models: presence.NewModelList()}, "empty DatabaseName not valid"},
		{presence.ModelHostConfig{DatabaseName: "d"}, "Models and ModelsName both set or both empty not valid"},
		{presence.ModelHostConfig{DatabaseName: "d", Models: presence.NewModelList(), ModelsName: "m"}, "Models and ModelsName both set or both empty not valid"},
	} {
		c.Logf("case %d", i)
		c.Check(t.config.Validate(), gc.ErrorMatches, t.err)
		_, err := presence.ModelHostManifold(t.config).Start(context.Background(), agenttest.StubGetter(nil))
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}

func (s *modelHostConfigSuite) TestEachMissingInputFailsTheStartWithErrMissing(c *gc.C) {
	m := presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database", ModelsName: "models",
	})
	agenttest.CheckMissingInputs(c, m, map[string]any{
		"database":               &mongo.Database{},
		presence.ClockName:       agenttest.NewClock(),
		presence.PingBatcherName: pingbatcher.NewDeadPingBatcher(errors.New("dead")),
		presence.ReaderName:      &presencereader.Reader{},
		presence.LeaseStoreName:  &leasestore.Store{},
		"models":                 presence.NewModelList(),
	})
}

func (s *modelHostConfigSuite) TestAModelListSendsTheWholeSetAfterEachChange(c *gc.C) {
	l := presence.NewModelList(hostedModel(2), hostedModel(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := l.WatchModels(ctx)
	c.Assert(err, gc.IsNil)
	next := func() []names.ModelTag {
		select {
		case models := <-ch:
			return models
		case <-time.After(agenttest.LongWait):
			c.Fatalf("no models")
		}
		return nil
	}
	c.Assert(next(), gc.DeepEquals, []names.ModelTag{hostedModel(1), hostedModel(2)})
	l.Remove(hostedModel(1))
	l.Add(hostedModel(3))
	// A slow reader skips to the latest set.
	got := next()
	if len(got) == 1 {
		got = next()
	}
	c.Assert(got, gc.DeepEquals, []names.ModelTag{hostedModel(2), hostedModel(3)})
	c.Assert(l.Models(), gc.DeepEquals, got)
}
