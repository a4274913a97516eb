package presence_test

import (
	"fmt"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence"
)

// This example adds presence and leadership for one model to an agent's
// dependency engine. Consumers declare the set's manifolds as inputs and
// get the watcher, the leadership manager or the recorder from Output.
func ExampleManifolds() {
	engine, err := dependency.NewEngine(dependency.EngineConfig{
		IsFatal:          func(error) bool { return false },
		WorstError:       func(err, _ error) error { return err },
		ErrorDelay:       3 * time.Second,
		BounceDelay:      10 * time.Millisecond,
		BackoffFactor:    1.2,
		BackoffResetTime: time.Minute,
		MaxDelay:         time.Minute,
		Clock:            clock.WallClock,
		Metrics:          dependency.DefaultMetrics(),
		Logger:           silent{},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = worker.Stop(engine) }()

	manifolds := presence.Manifolds(presence.ManifoldsConfig{
		DatabaseName: "database",
		Model:        names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a"),
		Clock:        clock.WallClock,
		AgentKey:     "machine-0", // this agent's own presence
		APIServer:    true,
	})
	// An engine with no database manifold of its own can use this one.
	manifolds["database"] = presence.DatabaseManifold("mongodb://localhost:27017", "juju")
	if err := dependency.Install(engine, manifolds); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(manifolds), "manifolds installed")
	// Output: 11 manifolds installed
}

// This example adds presence and leadership for a controller hosting many
// models: one controller set (ping batcher, presence reader, pruner, lease
// store) and a small set per model whose watcher and lease manager are
// views over the controller's workers, so the database cost does not grow
// with the number of models.
func ExampleControllerManifolds() {
	manifolds := presence.ControllerManifolds(presence.ControllerManifoldsConfig{
		DatabaseName: "database",
		Clock:        clock.WallClock,
	})
	manifolds["database"] = presence.DatabaseManifold("mongodb://localhost:27017", "juju")
	for i := 0; i < 3; i++ {
		model := names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i))
		for name, m := range presence.ModelManifolds(presence.ModelManifoldsConfig{
			DatabaseName: "database",
			Model:        model,
			Prefix:       model.Id() + "-", // one set per model in one engine
		}) {
			manifolds[name] = m
		}
	}
	fmt.Println(dependency.Validate(manifolds) == nil, len(manifolds), "manifolds")
	// Output: true 15 manifolds
}

type silent struct{}

func (silent) Tracef(string, ...any) {}
func (silent) Debugf(string, ...any) {}
func (silent) Infof(string, ...any)  {}
func (silent) Errorf(string, ...any) {}
