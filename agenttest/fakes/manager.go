package fakes

import (
	"context"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"

	"github.com/presencekit/presence/worker/leaseexpiry"
)

// Manager is an in-memory leaseexpiry.Manager over a clock (a testclock in
// tests): at most one holder per application, a claim valid for its
// duration from the call, fences that rise on every change of holder,
// pins that keep a lease past its expiry, and BlockUntilLeadershipReleased
// waiting on the clock. It validates names and durations as the real
// manager does. It is a leaseexpiry.ManagerWorker, as the real one is:
// Stop it (or Kill it) to fail every waiting and later call with
// leaseexpiry.ErrStopped. Its methods are safe for concurrent use.
type Manager struct {
	clock       clock.Clock
	maxDuration time.Duration

	mu       sync.Mutex
	leases   map[string]*fakeLease
	fence    int64
	changed  chan struct{}
	stopped  bool
	stopping chan struct{}
}

var _ leaseexpiry.ManagerWorker = (*Manager)(nil)

type fakeLease struct {
	holder string
	expiry time.Time
	fence  int64
	pins   map[string]bool
}

// NewManager returns a Manager on clk with no lease held.
func NewManager(clk clock.Clock) *Manager {
	return &Manager{
		clock:       clk,
		maxDuration: leaseexpiry.DefaultMaxDuration,
		leases:      make(map[string]*fakeLease),
		changed:     make(chan struct{}),
		stopping:    make(chan struct{}),
	}
}

// Stop makes every call fail with leaseexpiry.ErrStopped, waiting ones
// included. It is safe to call more than once.
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.stopped {
		m.stopped = true
		close(m.stopping)
	}
}

// Kill is part of the worker.Worker interface: it is Stop.
func (m *Manager) Kill() {
	m.Stop()
}

// Wait is part of the worker.Worker interface: it returns nil once the
// manager is stopped.
func (m *Manager) Wait() error {
	<-m.stopping
	return nil
}

// Holder returns the unit holding application's lease now, or "".
func (m *Manager) Holder(application string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.heldLocked(application); l != nil {
		return l.holder
	}
	return ""
}

// heldLocked returns application's lease if it is held now.
func (m *Manager) heldLocked(application string) *fakeLease {
	l := m.leases[application]
	if l == nil || l.holder == "" {
		return nil
	}
	if len(l.pins) == 0 && !m.clock.Now().Before(l.expiry) {
		return nil
	}
	return l
}

// changeLocked wakes every waiting Block.
func (m *Manager) changeLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// ClaimLeadership is part of leaseexpiry.Manager.
func (m *Manager) ClaimLeadership(application, unit string, duration time.Duration) error {
	return m.ClaimLeadershipContext(context.Background(), application, unit, duration)
}

// ClaimLeadershipContext is part of leaseexpiry.Manager.
func (m *Manager) ClaimLeadershipContext(ctx context.Context, application, unit string, duration time.Duration) error {
	if err := leaseexpiry.ValidateUnit(application, unit); err != nil {
		return errors.Trace(err)
	}
	if duration <= 0 || duration > m.maxDuration {
		return errors.NotValidf("duration %v (must be in (0, %v])", duration, m.maxDuration)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return err
	}
	l := m.heldLocked(application)
	if l != nil && l.holder != unit {
		return errors.Annotatef(leaseexpiry.ErrClaimDenied, "%q for %q", unit, application)
	}
	if l == nil {
		m.fence++
		l = &fakeLease{holder: unit, fence: m.fence, pins: m.pinsOf(application)}
		m.leases[application] = l
		m.changeLocked()
	}
	if expiry := m.clock.Now().Add(duration); expiry.After(l.expiry) {
		l.expiry = expiry
	}
	return nil
}

// pinsOf returns the pins application's lease has, which outlive its
// holders.
func (m *Manager) pinsOf(application string) map[string]bool {
	if l := m.leases[application]; l != nil {
		return l.pins
	}
	return make(map[string]bool)
}

func (m *Manager) usable(ctx context.Context) error {
	if m.stopped {
		return leaseexpiry.ErrStopped
	}
	return errors.Trace(ctx.Err())
}

// CheckLeadership is part of leaseexpiry.Manager.
func (m *Manager) CheckLeadership(application, unit string) (leaseexpiry.Token, error) {
	return m.CheckLeadershipContext(context.Background(), application, unit)
}

// CheckLeadershipContext is part of leaseexpiry.Manager.
func (m *Manager) CheckLeadershipContext(ctx context.Context, application, unit string) (leaseexpiry.Token, error) {
	if err := leaseexpiry.ValidateUnit(application, unit); err != nil {
		return nil, errors.Trace(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return nil, err
	}
	l := m.heldLocked(application)
	if l == nil || l.holder != unit {
		return nil, errors.Annotatef(leaseexpiry.ErrNotHeld, "%q for %q", unit, application)
	}
	return &token{m: m, application: application, unit: unit, fence: l.fence}, nil
}

// BlockUntilLeadershipReleased is part of leaseexpiry.Manager.
func (m *Manager) BlockUntilLeadershipReleased(application string) error {
	return m.BlockUntilLeadershipReleasedContext(context.Background(), application)
}

// BlockUntilLeadershipReleasedContext is part of leaseexpiry.Manager: it
// returns once the lease is released or has expired unpinned on the
// clock.
func (m *Manager) BlockUntilLeadershipReleasedContext(ctx context.Context, application string) error {
	if err := leaseexpiry.ValidateApplication(application); err != nil {
		return errors.Trace(err)
	}
	for {
		m.mu.Lock()
		if err := m.usable(ctx); err != nil {
			m.mu.Unlock()
			return err
		}
		l := m.heldLocked(application)
		if l == nil {
			m.mu.Unlock()
			return nil
		}
		changed := m.changed
		var expired <-chan time.Time
		if len(l.pins) == 0 {
			expired = m.clock.After(l.expiry.Sub(m.clock.Now()))
		}
		m.mu.Unlock()
		select {
		case <-changed:
		case <-expired:
		case <-m.stopping:
			return leaseexpiry.ErrStopped
		case <-ctx.Done():
			return errors.Trace(ctx.Err())
		}
	}
}

// ReleaseLeadership is part of leaseexpiry.Manager.
func (m *Manager) ReleaseLeadership(application, unit string) error {
	return m.ReleaseLeadershipContext(context.Background(), application, unit)
}

// ReleaseLeadershipContext is part of leaseexpiry.Manager.
func (m *Manager) ReleaseLeadershipContext(ctx context.Context, application, unit string) error {
	if err := leaseexpiry.ValidateUnit(application, unit); err != nil {
		return errors.Trace(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return err
	}
	l := m.heldLocked(application)
	if l == nil || l.holder != unit {
		return errors.Annotatef(leaseexpiry.ErrNotHeld, "%q for %q", unit, application)
	}
	l.holder = ""
	m.changeLocked()
	return nil
}

// PinLeadership is part of leaseexpiry.Manager.
func (m *Manager) PinLeadership(application, entity string) error {
	return m.PinLeadershipContext(context.Background(), application, entity)
}

// PinLeadershipContext is part of leaseexpiry.Manager.
func (m *Manager) PinLeadershipContext(ctx context.Context, application, entity string) error {
	return m.pin(ctx, application, entity, true)
}

// UnpinLeadership is part of leaseexpiry.Manager.
func (m *Manager) UnpinLeadership(application, entity string) error {
	return m.UnpinLeadershipContext(context.Background(), application, entity)
}

// UnpinLeadershipContext is part of leaseexpiry.Manager.
func (m *Manager) UnpinLeadershipContext(ctx context.Context, application, entity string) error {
	return m.pin(ctx, application, entity, false)
}

func (m *Manager) pin(ctx context.Context, application, entity string, pinned bool) error {
	if err := leaseexpiry.ValidateApplication(application); err != nil {
		return errors.Trace(err)
	}
	if entity == "" || len(entity) > leaseexpiry.MaxNameLength {
		return errors.NotValidf("entity of %d bytes (want 1 to %d)", len(entity), leaseexpiry.MaxNameLength)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return err
	}
	l := m.leases[application]
	if l == nil {
		l = &fakeLease{pins: make(map[string]bool)}
		m.leases[application] = l
	}
	if pinned {
		l.pins[entity] = true
	} else {
		delete(l.pins, entity)
	}
	m.changeLocked()
	return nil
}

// token is a fake leadership token.
type token struct {
	m                 *Manager
	application, unit string
	fence             int64
}

// Check is part of leaseexpiry.Token.
func (t *token) Check() error {
	return t.CheckContext(context.Background())
}

// CheckContext is part of leaseexpiry.Token: it fails with
// leaseexpiry.ErrNotHeld once the unit lost the lease, even if it
// claimed it again since (a new term has a new fence).
func (t *token) CheckContext(ctx context.Context) error {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	if err := t.m.usable(ctx); err != nil {
		return err
	}
	l := t.m.heldLocked(t.application)
	if l == nil || l.holder != t.unit || l.fence != t.fence {
		return errors.Annotatef(leaseexpiry.ErrNotHeld, "%q for %q", t.unit, t.application)
	}
	return nil
}

// Fence is part of leaseexpiry.Token.
func (t *token) Fence() int64 {
	return t.fence
}

// Guard is part of leaseexpiry.Token: the guard of the application's lease
// in the model ModelUUID names, with the token's fence, for GuardedDocs or
// a real collection alike.
func (t *token) Guard() leaseexpiry.Guard {
	g, err := leaseexpiry.NewGuard(ModelUUID, t.application, t.fence)
	if err != nil {
		// The application was validated when the token was made.
		panic(err)
	}
	return g
}
