package presence

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencerecorder"
)

// DefaultPollInterval is how often a ConnectionAgent looks again while it
// waits, when PollInterval is zero.
const DefaultPollInterval = time.Second

// ConnectionAgentConfig holds what NewConnectionAgent needs.
type ConnectionAgentConfig struct {
	// Recorder holds the API servers' connections. It must not be nil.
	Recorder presencerecorder.Recorder

	// Model is the agent's model. It must be a valid model tag.
	Model names.ModelTag

	// Agent is the agent's tag string, as its connections record it. It
	// must not be empty.
	Agent string

	// Clock times WaitAgentPresence. It must not be nil.
	Clock clock.Clock

	// PollInterval is how often WaitAgentPresence looks again: the
	// recorder does not notify. Zero means DefaultPollInterval; it must
	// not be negative.
	PollInterval time.Duration
}

// Validate returns a NotValid error naming the first bad field.
func (config ConnectionAgentConfig) Validate() error {
	if config.Recorder == nil {
		return errors.NotValidf("nil Recorder")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.Agent == "" {
		return errors.NotValidf("empty Agent")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.PollInterval < 0 {
		return errors.NotValidf("negative PollInterval")
	}
	return nil
}

// ConnectionAgent is an Agent whose presence comes from its connections to
// the API servers instead of pings: alive while any of its connections in
// its model is Alive. Choose it, or PresenceAgent, per agent type. Its
// methods are safe for concurrent use.
type ConnectionAgent struct {
	config ConnectionAgentConfig
}

var _ Agent = (*ConnectionAgent)(nil)

// NewConnectionAgent returns an Agent over a presence recorder.
func NewConnectionAgent(config ConnectionAgentConfig) (*ConnectionAgent, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if config.PollInterval == 0 {
		config.PollInterval = DefaultPollInterval
	}
	return &ConnectionAgent{config: config}, nil
}

// AgentPresence is part of the Agent interface. A Missing agent (its server
// went away) is not alive.
func (a *ConnectionAgent) AgentPresence() (bool, error) {
	status, err := a.config.Recorder.Connections().ForModel(a.config.Model.Id()).AgentStatus(a.config.Agent)
	if err != nil {
		return false, errors.Annotatef(err, "cannot read presence of %q", a.config.Agent)
	}
	return status == presencerecorder.Alive, nil
}

// SetAgentPresence is part of the Agent interface. It always fails with a
// NotSupported error: connection presence is set by connecting to an API
// server, which records it.
func (a *ConnectionAgent) SetAgentPresence() (*pinger.Pinger, error) {
	return nil, errors.NotSupportedf("setting the presence of %q (it comes from its API connections)", a.config.Agent)
}

// WaitAgentPresence is part of the Agent interface. It looks every
// PollInterval and fails with a Timeout error once timeout passes.
func (a *ConnectionAgent) WaitAgentPresence(timeout time.Duration) error {
	if timeout <= 0 {
		return errors.NotValidf("non-positive timeout %v", timeout)
	}
	deadline := a.config.Clock.NewTimer(timeout)
	defer deadline.Stop()
	poll := a.config.Clock.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-deadline.Chan():
			return errors.Timeoutf("waiting for presence of %q after %v", a.config.Agent, timeout)
		case <-poll.Chan():
			alive, err := a.AgentPresence()
			if err != nil || alive {
				return errors.Trace(err)
			}
			poll.Reset(a.config.PollInterval)
		}
	}
}
