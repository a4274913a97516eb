package presence_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/embedded"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/watcher"
)

// This example is an agent's whole wiring: its own clock and database
// manifolds, presencekit's sets for one model on them (ClockName names
// the agent's clock, so the set adds none), and two consumers, one
// watching a key and one claiming leadership. The watching consumer gets
// presence.AgentName's output before it watches, so its first Watch
// already sees the agent's own key alive. The embedded server stands in
// for MongoDB.
func ExampleManifolds() {
	srv, stop, err := startEmbedded()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	engine, err := dependency.NewEngine(dependency.EngineConfig{
		IsFatal:          func(error) bool { return false },
		WorstError:       func(err, _ error) error { return err },
		ErrorDelay:       100 * time.Millisecond,
		BounceDelay:      10 * time.Millisecond,
		BackoffFactor:    1.2,
		BackoffResetTime: time.Minute,
		MaxDelay:         time.Second,
		Clock:            clock.WallClock,
		Metrics:          dependency.DefaultMetrics(),
		Logger:           silent{},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = worker.Stop(engine) }()

	// The agent's own manifolds.
	manifolds := dependency.Manifolds{
		"clock":    clockManifold(clock.WallClock),
		"database": presence.DatabaseManifold(srv.URI(), "agent"),
	}
	// presencekit's sets for one model, on the agent's clock.
	maps.Copy(manifolds, presence.Manifolds(presence.ManifoldsConfig{
		DatabaseName:  "database",
		ClockName:     "clock",
		Model:         names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a"),
		AgentKey:      "machine-0", // this agent's own presence
		ReleaseOnStop: true,
	}))
	// Two consumers: each asks for a narrow interface, which a unit test
	// can fill with a fake from agenttest/fakes.
	results := make(chan string, 2)
	manifolds["machine-watcher"] = dependency.Manifold{
		Inputs: []string{presence.AgentName, presence.WatcherName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			// Getting the agent is what makes this wait for it: the
			// engine starts a manifold whatever its inputs, and Get
			// fails with dependency.ErrMissing until they run.
			var agent presence.Agent
			if err := getter.Get(presence.AgentName, &agent); err != nil {
				return nil, err
			}
			var w watcher.PresenceWatcher
			if err := getter.Get(presence.WatcherName, &w); err != nil {
				return nil, err
			}
			return newFuncWorker(func(dying <-chan struct{}) error {
				changes := make(chan watcher.Change)
				w.Watch("machine-0", changes)
				defer w.Unwatch("machine-0", changes)
				select {
				case change := <-changes:
					results <- fmt.Sprintf("%s alive: %v", change.Key, change.Alive)
				case <-dying:
				}
				<-dying
				return nil
			})
		},
	}
	manifolds["mysql-leader"] = dependency.Manifold{
		Inputs: []string{presence.LeaseManagerName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			var leadership leaseexpiry.Manager
			if err := getter.Get(presence.LeaseManagerName, &leadership); err != nil {
				return nil, err
			}
			return newFuncWorker(func(dying <-chan struct{}) error {
				if err := leadership.ClaimLeadership("mysql", "mysql/0", time.Minute); err != nil {
					return err
				}
				token, err := leadership.CheckLeadership("mysql", "mysql/0")
				if err != nil {
					return err
				}
				results <- fmt.Sprintf("mysql/0 leads mysql with fence %d", token.Fence())
				<-dying
				return nil
			})
		},
	}
	if err := dependency.Install(engine, manifolds); err != nil {
		fmt.Println(err)
		return
	}
	got := []string{<-results, <-results}
	sort.Strings(got)
	fmt.Println(strings.Join(got, "\n"))
	// Output:
	// machine-0 alive: true
	// mysql/0 leads mysql with fence 1
}

// startEmbedded starts the embedded server in a temporary directory and
// returns it with the function that stops it and removes the directory.
func startEmbedded() (*embedded.Server, func(), error) {
	dir, err := os.MkdirTemp("", "presence-example-")
	if err != nil {
		return nil, nil, err
	}
	srv, err := embedded.Start(embedded.Config{Dir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	return srv, func() {
		srv.Stop()
		_ = os.RemoveAll(dir)
	}, nil
}

// clockManifold is an agent's own clock manifold: it outputs clk as a
// clock.Clock.
func clockManifold(clk clock.Clock) dependency.Manifold {
	return dependency.Manifold{
		Start: func(context.Context, dependency.Getter) (worker.Worker, error) {
			return newFuncWorker(func(dying <-chan struct{}) error {
				<-dying
				return nil
			})
		},
		Output: func(_ worker.Worker, out any) error {
			target, ok := out.(*clock.Clock)
			if !ok {
				return fmt.Errorf("expected *clock.Clock, got %T", out)
			}
			*target = clk
			return nil
		},
	}
}

// funcWorker runs a function on a catacomb until it is killed.
type funcWorker struct {
	catacomb catacomb.Catacomb
}

func newFuncWorker(run func(dying <-chan struct{}) error) (worker.Worker, error) {
	w := &funcWorker{}
	err := catacomb.Invoke(catacomb.Plan{
		Name: "example",
		Site: &w.catacomb,
		Work: func() error { return run(w.catacomb.Dying()) },
	})
	return w, err
}

// Kill is part of the worker.Worker interface.
func (w *funcWorker) Kill() { w.catacomb.Kill(nil) }

// Wait is part of the worker.Worker interface.
func (w *funcWorker) Wait() error { return w.catacomb.Wait() }

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

// This example is a controller hosting three models: the controller set
// once, and a model host that runs, in a nested engine per model, the
// model's set and a consumer of the user's own. A clean stop stops the
// models' engines before the controller's workers.
func ExampleModelHostManifold() {
	srv, stop, err := startEmbedded()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	engine, err := dependency.NewEngine(presence.ModelEngineConfig(nil))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = worker.Stop(engine) }()

	manifolds := presence.ControllerManifolds(presence.ControllerManifoldsConfig{DatabaseName: "database", Clock: clock.WallClock})
	manifolds["database"] = presence.DatabaseManifold(srv.URI(), "controller")
	models := presence.NewModelList() // or your own ModelSource
	for i := 1; i <= 3; i++ {
		models.Add(names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i)))
	}
	leaders := make(chan string, 3)
	manifolds["models"] = presence.ModelHostManifold(presence.ModelHostConfig{
		DatabaseName: "database",
		Models:       models,
		Model: func(names.ModelTag) presence.ModelManifoldsConfig {
			return presence.ModelManifoldsConfig{AgentKey: "machine-0", ReleaseOnStop: true}
		},
		Manifolds: func(m names.ModelTag) dependency.Manifolds {
			return dependency.Manifolds{"mysql": leaderManifold(m, leaders)}
		},
	})
	if err := dependency.Install(engine, manifolds); err != nil {
		fmt.Println(err)
		return
	}
	got := []string{<-leaders, <-leaders, <-leaders}
	sort.Strings(got)
	fmt.Println(strings.Join(got, "\n"))
	// Output: model ...001: machine-0 alive: true, mysql/0 leads
	// model ...002: machine-0 alive: true, mysql/0 leads
	// model ...003: machine-0 alive: true, mysql/0 leads
}

// leaderManifold is a model's consumer: once the model's agent is up, it
// claims leadership of mysql and sends what it sees to results.
func leaderManifold(model names.ModelTag, results chan<- string) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{presence.AgentName, presence.LeaseManagerName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			var agent presence.Agent
			var leadership leaseexpiry.Manager
			if err := getter.Get(presence.AgentName, &agent); err != nil {
				return nil, err
			}
			if err := getter.Get(presence.LeaseManagerName, &leadership); err != nil {
				return nil, err
			}
			return newFuncWorker(func(dying <-chan struct{}) error {
				alive, err := agent.AgentPresence()
				if err != nil {
					return err
				}
				if err := leadership.ClaimLeadership("mysql", "mysql/0", time.Minute); err != nil {
					return err
				}
				results <- fmt.Sprintf("model ...%s: machine-0 alive: %v, mysql/0 leads", model.Id()[33:], alive)
				<-dying
				return nil
			})
		},
	}
}
