package presence

import (
	"context"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/enginekit"
	"github.com/presencekit/presence/internal/inputs"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// AgentManifoldConfig names the inputs of the manifold that outputs an
// agent's own Agent.
type AgentManifoldConfig struct {
	// ClockName, DatabaseName, BatcherName, WatcherName and PingerName
	// are the inputs: a clock.Clock, a *mongo.Database, a Batcher, the
	// model's watcher (an AgentWatcher) and the pinger that keeps Key
	// alive. None may be empty.
	ClockName, DatabaseName, BatcherName, WatcherName, PingerName string

	// Collection is the base presence collection's name; empty means
	// "presence".
	Collection string

	// Model is the agent's model; it must be a valid model tag.
	Model names.ModelTag

	// Key is the agent's key, the one the pinger keeps alive; it must be
	// valid.
	Key string
}

// Validate returns a NotValid error naming the first bad field.
func (config AgentManifoldConfig) Validate() error {
	for _, input := range []struct{ field, value string }{
		{"ClockName", config.ClockName},
		{"DatabaseName", config.DatabaseName},
		{"BatcherName", config.BatcherName},
		{"WatcherName", config.WatcherName},
		{"PingerName", config.PingerName},
	} {
		if input.value == "" {
			return errors.NotValidf("empty %s", input.field)
		}
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	return errors.Trace(schema.ValidateKey(config.Key))
}

// AgentManifold returns a manifold whose Output fills a *Agent (or a
// **PresenceAgent, or a pointer to any interface *PresenceAgent
// implements) for the agent whose key the pinger input keeps alive. Its
// Period is the batcher's, so it cannot disagree with the set.
//
// Its start writes the pinger's pings and has the watcher load them, so
// a consumer that gets this manifold's output before it looks (naming it
// among its inputs and calling getter.Get on it: the engine starts a
// manifold whatever its inputs, and Get fails with dependency.ErrMissing
// until they run) sees the agent's key alive from its first Watch, Alive
// or Subscribe: never the transient "dead" of a pinger whose first ping
// is not written yet. A write or
// read that fails fails the start, and the engine tries again.
func AgentManifold(config AgentManifoldConfig) dependency.Manifold {
	return dependency.Manifold{
		Inputs: []string{config.ClockName, config.DatabaseName, config.BatcherName, config.WatcherName, config.PingerName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			if err := config.Validate(); err != nil {
				return nil, errors.Trace(err)
			}
			clk, base, err := inputs.Names{
				ClockName:    config.ClockName,
				DatabaseName: config.DatabaseName,
				Collection:   config.Collection,
			}.Get(getter)
			if err != nil {
				return nil, errors.Trace(err)
			}
			agent, err := startAgent(config, getter, clk, base)
			if err != nil {
				return nil, errors.Trace(err)
			}
			return enginekit.NewValueWorker(agent, nil)
		},
		Output: func(in worker.Worker, out any) error {
			w, ok := in.(*enginekit.ValueWorker)
			if !ok {
				return errors.Errorf("expected an agent worker, got %T", in)
			}
			if !inputs.Assign(w.Value(), out) {
				return errors.Errorf("expected *presence.Agent or a pointer to an interface *presence.PresenceAgent implements, got %T", out)
			}
			return nil
		},
	}
}

// startAgent builds the agent over the inputs and waits until its key's
// pings are written and loaded.
func startAgent(config AgentManifoldConfig, getter dependency.Getter, clk clock.Clock, base *mongo.Collection) (*PresenceAgent, error) {
	var batcher Batcher
	if err := getter.Get(config.BatcherName, &batcher); err != nil {
		return nil, errors.Trace(err)
	}
	var w AgentWatcher
	if err := getter.Get(config.WatcherName, &w); err != nil {
		return nil, errors.Trace(err)
	}
	// The pinger is an input only so that this starts after it: its
	// pings are what the sync below writes.
	var running *pinger.Pinger
	if err := getter.Get(config.PingerName, &running); err != nil {
		return nil, errors.Trace(err)
	}
	agent, err := NewAgent(AgentConfig{
		Key: config.Key, Model: config.Model, Base: base, Batcher: batcher, Watcher: w, Clock: clk,
	})
	if err != nil {
		return nil, errors.Trace(err)
	}
	if err := batcher.Sync(); err != nil {
		return nil, errors.Annotatef(err, "cannot write presence of %q", config.Key)
	}
	if err := w.Refresh(); err != nil {
		return nil, errors.Annotatef(err, "cannot read presence of %q", config.Key)
	}
	return agent, nil
}
