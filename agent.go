package presence

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/watcher"
)

// Agent is what an agent type exposes about its own presence.
type Agent interface {
	// AgentPresence reports whether the agent is alive.
	AgentPresence() (bool, error)

	// SetAgentPresence starts keeping the agent alive and returns the
	// pinger doing it; stop it (Stop, or Disconnect to report the death
	// at once) when the agent goes away.
	SetAgentPresence() (*pinger.Pinger, error)

	// WaitAgentPresence blocks until the agent is alive, or fails with a
	// Timeout error after timeout.
	WaitAgentPresence(timeout time.Duration) error
}

// Batcher is what an Agent needs of a ping batcher:
// *pingbatcher.PingBatcher fits.
type Batcher interface {
	pinger.PingRecorder

	// Sync writes everything recorded so far and returns the error.
	Sync() error
}

// AgentWatcher is what an Agent needs of a watcher:
// *watcher.Watcher and watcher.PresenceWatcher fit.
type AgentWatcher interface {
	// Alive reports whether key is alive in the current view.
	Alive(key string) (bool, error)

	// Refresh loads now and returns once the view reflects the load.
	Refresh() error

	// Subscribe returns a pull-based subscription to keys.
	Subscribe(keys ...string) watcher.Subscription
}

// AgentConfig holds what NewAgent needs.
type AgentConfig struct {
	// Key is the agent's global key, e.g. its tag string. It must not be
	// empty.
	Key string

	// Model is the agent's model. It must be a valid model tag.
	Model names.ModelTag

	// Base is the base presence collection, which the Batcher checks is
	// the one it writes to. Nil means the Batcher's own, unchecked: what
	// a test on agenttest/fakes, with no database, gives.
	Base *mongo.Collection

	// Batcher records the agent's pings. It must not be nil.
	Batcher Batcher

	// Watcher answers whether the agent is alive; it must watch Model.
	// It must not be nil. *watcher.Watcher fits, and so does the fake in
	// agenttest/fakes.
	Watcher AgentWatcher

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Period is the slot length. Zero means the Batcher's, which is
	// what an agent on a controller set wants; any other value must
	// equal the Batcher's, or SetAgentPresence fails with a NotValid
	// error. It must not be negative.
	Period time.Duration
}

// Validate returns a NotValid error naming the first bad field.
func (config AgentConfig) Validate() error {
	if err := schema.ValidateKey(config.Key); err != nil {
		return errors.Trace(err)
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.Batcher == nil {
		return errors.NotValidf("nil Batcher")
	}
	if config.Watcher == nil {
		return errors.NotValidf("nil Watcher")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	return nil
}

// PresenceAgent is an Agent whose presence is kept by pings. Its methods
// are safe for concurrent use.
type PresenceAgent struct {
	config AgentConfig
}

var _ Agent = (*PresenceAgent)(nil)

// NewAgent returns an Agent over a ping batcher and a watcher.
func NewAgent(config AgentConfig) (*PresenceAgent, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	return &PresenceAgent{config: config}, nil
}

// AgentPresence is part of the Agent interface. It answers from the
// watcher's current view.
func (a *PresenceAgent) AgentPresence() (bool, error) {
	alive, err := a.config.Watcher.Alive(a.config.Key)
	return alive, errors.Annotatef(err, "cannot read presence of %q", a.config.Key)
}

// SetAgentPresence is part of the Agent interface. It starts a pinger,
// writes its first ping and has the watcher load it, so that
// AgentPresence reports true when it returns, and every other watcher of
// the database at its next sync. If the write fails, the pinger is
// stopped and the error returned; a Period that differs from the
// Batcher's is a NotValid error, never a silently dead agent.
func (a *PresenceAgent) SetAgentPresence() (*pinger.Pinger, error) {
	p, err := pinger.New(pinger.Config{
		Base:     a.config.Base,
		Model:    a.config.Model,
		Key:      a.config.Key,
		Recorder: func() pinger.PingRecorder { return a.config.Batcher },
		Clock:    a.config.Clock,
		Period:   a.config.Period,
	})
	if err != nil {
		return nil, errors.Trace(err)
	}
	if err := p.Start(); err != nil {
		return nil, errors.Trace(err)
	}
	if err := a.config.Batcher.Sync(); err != nil {
		_ = p.Stop()
		return nil, errors.Annotatef(err, "cannot write presence of %q", a.config.Key)
	}
	if err := a.config.Watcher.Refresh(); err != nil {
		_ = p.Stop()
		return nil, errors.Annotatef(err, "cannot read presence of %q", a.config.Key)
	}
	return p, nil
}

// WaitAgentPresence is part of the Agent interface. It fails at once if
// the watcher stops, and with a Timeout error once timeout passes on the
// configured clock.
func (a *PresenceAgent) WaitAgentPresence(timeout time.Duration) error {
	if timeout <= 0 {
		return errors.NotValidf("non-positive timeout %v", timeout)
	}
	sub := a.config.Watcher.Subscribe(a.config.Key)
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	timer := a.config.Clock.NewTimer(timeout)
	defer timer.Stop()
	go func() {
		select {
		case <-timer.Chan():
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		changes, err := sub.Next(ctx)
		if errors.Is(err, context.Canceled) {
			return errors.Timeoutf("waiting for presence of %q after %v", a.config.Key, timeout)
		}
		if err != nil {
			return errors.Annotatef(err, "cannot wait for presence of %q", a.config.Key)
		}
		for _, c := range changes {
			if c.Alive {
				return nil
			}
		}
	}
}

// RemovePresenceForModel removes model's presence under base, as
// RemoveModelFrom does, but not its leases, for callers written for
// per-model storage. It fails with a NotValid error for a nil base or a
// bad model.
//
// Deprecated: use RemoveModel or RemoveModelFrom, which remove the
// model's leases too.
func RemovePresenceForModel(ctx context.Context, base *mongo.Collection, model names.ModelTag) error {
	return errors.Trace(removePresence(ctx, base, model))
}
