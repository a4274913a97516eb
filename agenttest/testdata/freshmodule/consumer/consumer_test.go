package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"example.com/agent/consumer"
	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/agenttest/fakes"
)

func modelTag(i int) names.ModelTag {
	return names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i))
}

func receive(c *gc.C, results <-chan string) string {
	select {
	case r := <-results:
		return r
	case <-time.After(agenttest.LongWait):
		c.Fatalf("no result")
	}
	return ""
}

func TestPackage(t *testing.T) { gc.TestingT(t) }

type fakeSuite struct{}

var _ = gc.Suite(&fakeSuite{})

func (s *fakeSuite) TestLeadsOnlyWhileAlive(c *gc.C) {
	w := fakes.NewWatcher()
	defer w.Stop()
	m := fakes.NewManager(agenttest.NewClock())
	led, err := consumer.LeadIfAlive(w, m, "machine-0", "mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(led, gc.Equals, false)
	w.Set("machine-0", true)
	led, err = consumer.LeadIfAlive(w, m, "machine-0", "mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(led, gc.Equals, true)
	c.Assert(m.Holder("mysql"), gc.Equals, "mysql/0")
}

// The consumer's manifold, in an engine, on fakes offered under the model
// set's names: a unit test of what each model runs, with no database.
func (s *fakeSuite) TestTheManifoldLeadsOnFakes(c *gc.C) {
	w := fakes.NewWatcher()
	m := fakes.NewManager(agenttest.NewClock())
	w.Set("machine-0", true)
	results := make(chan string, 1)
	engine := agenttest.NewEngine(c)
	defer workertest.CleanKill(agenttest.C(c), engine)
	c.Assert(dependency.Install(engine, dependency.Manifolds{
		presence.WatcherName:      agenttest.ValueManifold(w),
		presence.LeaseManagerName: agenttest.ValueManifold(m),
		"consumer":                consumer.Manifold("machine-0", "mysql", "mysql/0", results),
	}), gc.IsNil)
	c.Assert(receive(c, results), gc.Equals, "mysql/0 leads: true")
	workertest.CleanKill(agenttest.C(c), w)
	workertest.CleanKill(agenttest.C(c), m)
}

type serverSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&serverSuite{})

func (s *serverSuite) TestTheEmbeddedServerStarts(c *gc.C) {
	_, err := s.DB.Collection("c").InsertOne(context.Background(), bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.IsNil)
}

// A controller with three nested models on the embedded server: the
// controller set once, a model host, and the consumer in each model; a
// clean stop logs no error.
func (s *serverSuite) TestAControllerWithThreeModels(c *gc.C) {
	logger := &agenttest.Logger{}
	engine, err := dependency.NewEngine(agenttest.EngineConfig(logger))
	c.Assert(err, gc.IsNil)
	manifolds := presence.ControllerManifolds(presence.ControllerManifoldsConfig{DatabaseName: "database", Clock: agenttest.NewClock(), Logger: logger})
	manifolds["database"] = presence.DatabaseManifold(s.Server.URI(), s.DB.Name())
	results := make(chan string, 3)
	manifolds["models"] = presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database",
		Models:       presence.NewModelList(modelTag(1), modelTag(2), modelTag(3)),
		Logger:       logger,
		Model: func(names.ModelTag) presence.ModelManifoldsConfig {
			return presence.ModelManifoldsConfig{AgentKey: "machine-0"}
		},
		Manifolds: func(names.ModelTag) dependency.Manifolds {
			// The agent is up before the consumer looks.
			m := consumer.Manifold("machine-0", "mysql", "mysql/0", results)
			m.Inputs = append(m.Inputs, presence.AgentName)
			start := m.Start
			m.Start = func(ctx context.Context, getter dependency.Getter) (worker.Worker, error) {
				if err := getter.Get(presence.AgentName, nil); err != nil {
					return nil, err
				}
				return start(ctx, getter)
			}
			return dependency.Manifolds{"consumer": m}
		},
	})
	c.Assert(dependency.Install(engine, manifolds), gc.IsNil)
	for i := 0; i < 3; i++ {
		c.Assert(receive(c, results), gc.Equals, "mysql/0 leads: true")
	}
	workertest.CleanKill(agenttest.C(c), engine)
	for _, e := range logger.Entries() {
		c.Check(strings.HasPrefix(e, "ERROR"), gc.Equals, false, gc.Commentf("%s", e))
	}
}
