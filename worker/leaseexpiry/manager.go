// Package leaseexpiry is application leadership over a lease.Client: the
// Manager that units claim leadership through, the tokens that let a
// leader fence its writes, and the expiry of leases that run out.
//
// Safety comes from package lease: every change is a unique-_id insert of
// the next term, so at most one unit holds a lease at any instant across
// any number of managers sharing a database, given clocks within the
// client's ClockSkew. The manager adds batching (every claim that arrives
// while one batch is written goes in the next: renewing 1,000 leases costs
// one read and one insert), expiry (an alarm at the earliest expiry, from
// the injected clock), wake-ups for callers blocked until a lease is
// released, and pruning of superseded terms.
package leaseexpiry

import (
	"context"
	"sort"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/catacomb"

	pcatacomb "github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/lease"
)

// Sentinel errors, by when they occur.
const (
	// ErrClaimDenied is returned by ClaimLeadership when another unit
	// holds the leadership.
	ErrClaimDenied = errors.ConstError("leadership claim denied")

	// ErrNotHeld is returned by CheckLeadership, Token.Check and
	// ReleaseLeadership when the unit does not hold the leadership.
	ErrNotHeld = errors.ConstError("leadership not held")

	// ErrStopped is returned by every method once the manager is
	// stopping or stopped, unless it died with an error of its own.
	ErrStopped = errors.ConstError("leadership manager stopped")
)

// Manager grants and checks application leadership. Its methods are safe
// for concurrent use; none of them hangs once the manager stops.
type Manager interface {
	// ClaimLeadership makes unitName the leader of applicationName for
	// at least duration from the call, or extends its leadership. It
	// fails with ErrClaimDenied when another unit leads, with a NotValid
	// error for bad names or durations, and with the database's error
	// when it cannot tell.
	ClaimLeadership(applicationName, unitName string, duration time.Duration) error

	// CheckLeadership returns a Token for unitName's leadership, read
	// from the database, or fails with ErrNotHeld.
	CheckLeadership(applicationName, unitName string) (Token, error)

	// BlockUntilLeadershipReleased blocks until applicationName has no
	// leader: released, or expired and unpinned. It returns within one
	// tick of that; it fails with ErrStopped if the manager stops first.
	BlockUntilLeadershipReleased(applicationName string) error

	// BlockUntilLeadershipReleasedContext is BlockUntilLeadershipReleased
	// that also gives up with ctx's error.
	BlockUntilLeadershipReleasedContext(ctx context.Context, applicationName string) error

	// ReleaseLeadership ends unitName's leadership at once, so that
	// another unit can claim it. It fails with ErrNotHeld.
	ReleaseLeadership(applicationName, unitName string) error

	// PinLeadership stops applicationName's leadership from expiring
	// (e.g. during an upgrade) until every entity that pinned it has
	// unpinned it.
	PinLeadership(applicationName, entity string) error

	// UnpinLeadership removes entity's pin.
	UnpinLeadership(applicationName, entity string) error
}

// Token is proof of leadership at the time it was made. Check it right
// before acting as the leader; store Fence beside the writes it guards.
type Token interface {
	// Check reads the lease and fails with ErrNotHeld once the unit no
	// longer leads with this fence, or with the database's error.
	Check() error

	// Fence returns the lease's fence number, which rises whenever the
	// leader changes: a write tagged with a lower fence than one already
	// stored came from a deposed leader.
	Fence() int64
}

// ManagerWorker is a Manager that runs as a worker.
type ManagerWorker interface {
	worker.Worker
	Manager
}

type claim struct {
	key      lease.Key
	request  lease.Request
	reply    chan error
	attempts int
}

type block struct {
	lease string
	done  chan struct{}
}

type manager struct {
	config   ManagerConfig
	catacomb catacomb.Catacomb
	claims   chan claim
	blocks   chan block
	changed  chan string

	// The fields below are owned by the loop goroutine.
	leases     map[string]lease.Info
	blocked    map[string][]chan struct{}
	claimed    map[string]string // lease -> unit claimed through here
	ticks      int
	readFailed bool
	stats      *stats
}

// NewManager starts a Manager. It reads the model's leases at once.
func NewManager(config ManagerConfig) (ManagerWorker, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	m := &manager{
		config:  config.withDefaults(),
		claims:  make(chan claim),
		blocks:  make(chan block),
		changed: make(chan string, 1),
		leases:  make(map[string]lease.Info),
		blocked: make(map[string][]chan struct{}),
		claimed: make(map[string]string),
		stats:   newStats(),
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "leadership manager",
		Site: &m.catacomb,
		Work: m.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return m, nil
}

// Kill is part of the worker.Worker interface.
func (m *manager) Kill() {
	m.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (m *manager) Wait() error {
	return m.catacomb.Wait()
}

// Report is part of the dependency.Reporter interface.
func (m *manager) Report() map[string]any {
	return m.stats.report()
}

func (m *manager) key(application string) lease.Key {
	return lease.Key{Namespace: Namespace, Model: m.config.Model.Id(), Lease: application}
}

func (m *manager) deathErr() error {
	return pcatacomb.DeathError(&m.catacomb, ErrStopped)
}

func validateUnit(application, unit string) error {
	if !names.IsValidApplication(application) {
		return errors.NotValidf("application name %q", application)
	}
	if !names.IsValidUnit(unit) {
		return errors.NotValidf("unit name %q", unit)
	}
	if owner, err := names.UnitApplication(unit); err != nil || owner != application {
		return errors.NotValidf("unit %q of application %q", unit, application)
	}
	return nil
}

// ClaimLeadership is part of the Manager interface.
func (m *manager) ClaimLeadership(application, unit string, duration time.Duration) error {
	if err := validateUnit(application, unit); err != nil {
		return errors.Trace(err)
	}
	if duration <= 0 || duration > m.config.MaxDuration {
		return errors.NotValidf("duration %v (must be in (0, %v])", duration, m.config.MaxDuration)
	}
	reply := make(chan error, 1)
	c := claim{key: m.key(application), request: lease.Request{Holder: unit, Duration: duration}, reply: reply}
	select {
	case m.claims <- c:
	case <-m.catacomb.Dying():
		return m.deathErr()
	}
	select {
	case err := <-reply:
		return err
	case <-m.catacomb.Dying():
		return m.deathErr()
	}
}

// CheckLeadership is part of the Manager interface.
func (m *manager) CheckLeadership(application, unit string) (Token, error) {
	if err := validateUnit(application, unit); err != nil {
		return nil, errors.Trace(err)
	}
	info, err := m.read(application)
	if err != nil {
		return nil, errors.Trace(err)
	}
	if !info.HeldBy(unit, m.config.Clock.Now()) {
		return nil, errors.Annotatef(ErrNotHeld, "%q of %q", unit, application)
	}
	return &token{m: m, application: application, unit: unit, fence: info.Fence}, nil
}

// read reads one lease from the database, giving up when the manager
// stops.
func (m *manager) read(application string) (lease.Info, error) {
	ctx := m.catacomb.Context(context.Background())
	infos, err := m.config.Client.Leases(ctx, Namespace, m.config.Model.Id(), application)
	if err != nil {
		select {
		case <-m.catacomb.Dying():
			return lease.Info{}, m.deathErr()
		default:
		}
		return lease.Info{}, errors.Annotatef(err, "cannot read leadership of %q", application)
	}
	return infos[m.key(application)], nil
}

// BlockUntilLeadershipReleased is part of the Manager interface.
func (m *manager) BlockUntilLeadershipReleased(application string) error {
	return m.BlockUntilLeadershipReleasedContext(context.Background(), application)
}

// BlockUntilLeadershipReleasedContext is part of the Manager interface.
func (m *manager) BlockUntilLeadershipReleasedContext(ctx context.Context, application string) error {
	if !names.IsValidApplication(application) {
		return errors.NotValidf("application name %q", application)
	}
	b := block{lease: application, done: make(chan struct{})}
	select {
	case m.blocks <- b:
	case <-m.catacomb.Dying():
		return m.deathErr()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-b.done:
		return nil
	case <-m.catacomb.Dying():
		return m.deathErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReleaseLeadership is part of the Manager interface.
func (m *manager) ReleaseLeadership(application, unit string) error {
	if err := validateUnit(application, unit); err != nil {
		return errors.Trace(err)
	}
	err := m.change(application, func(ctx context.Context, key lease.Key) error {
		return m.config.Client.Release(ctx, key, unit)
	})
	if errors.Is(err, lease.ErrNotHeld) {
		return errors.Annotatef(ErrNotHeld, "%q of %q", unit, application)
	}
	return errors.Trace(err)
}

// PinLeadership is part of the Manager interface.
func (m *manager) PinLeadership(application, entity string) error {
	return m.pin(application, entity, true)
}

// UnpinLeadership is part of the Manager interface.
func (m *manager) UnpinLeadership(application, entity string) error {
	return m.pin(application, entity, false)
}

func (m *manager) pin(application, entity string, pinned bool) error {
	if !names.IsValidApplication(application) {
		return errors.NotValidf("application name %q", application)
	}
	if entity == "" {
		return errors.NotValidf("empty entity")
	}
	return errors.Trace(m.change(application, func(ctx context.Context, key lease.Key) error {
		if pinned {
			return m.config.Client.Pin(ctx, key, entity)
		}
		return m.config.Client.Unpin(ctx, key, entity)
	}))
}

// change runs f, retrying once if another writer got in first, and tells
// the loop that the lease changed.
func (m *manager) change(application string, f func(context.Context, lease.Key) error) error {
	ctx := m.catacomb.Context(context.Background())
	err := f(ctx, m.key(application))
	if errors.Is(err, lease.ErrInvalid) {
		err = f(ctx, m.key(application))
	}
	if err != nil {
		return err
	}
	select {
	case m.changed <- application:
	default:
	}
	return nil
}

func (m *manager) loop() error {
	defer m.releaseOnStop()
	ctx := m.catacomb.Context(context.Background())
	m.refresh(ctx)
	timer := m.config.Clock.NewTimer(m.nextTick())
	defer timer.Stop()
	for {
		select {
		case <-m.catacomb.Dying():
			return m.catacomb.ErrDying()
		case c := <-m.claims:
			m.handleClaims(ctx, c)
		case b := <-m.blocks:
			m.blocked[b.lease] = append(m.blocked[b.lease], b.done)
			m.wake()
		case <-m.changed:
			m.refresh(ctx)
		case <-timer.Chan():
			m.tick(ctx)
			timer.Reset(m.nextTick())
			continue
		}
		// The earliest expiry may have moved.
		pcatacomb.Rearm(timer, m.nextTick())
	}
}

// handleClaims writes c and every claim already waiting as one batch.
// It must only be called from the loop goroutine.
func (m *manager) handleClaims(ctx context.Context, first claim) {
	batch := []claim{first}
drain:
	for {
		select {
		case c := <-m.claims:
			batch = append(batch, c)
		default:
			break drain
		}
	}
	for len(batch) > 0 {
		batch = m.writeClaims(ctx, batch)
	}
}

// writeClaims writes one batch and returns the claims to try again: those
// that lost a race to another writer, once.
func (m *manager) writeClaims(ctx context.Context, batch []claim) []claim {
	claims := make([]lease.Claim, len(batch))
	for i, c := range batch {
		claims[i] = lease.Claim{Key: c.key, Request: c.request}
	}
	infos, errs, err := m.config.Client.ClaimMany(ctx, claims)
	m.stats.claimBatch(len(batch), err)
	if err != nil {
		err = errors.Annotate(err, "cannot claim leadership")
		for _, c := range batch {
			c.reply <- err
		}
		return nil
	}
	var again []claim
	for i, c := range batch {
		switch {
		case errs[i] == nil:
			m.leases[c.key.Lease] = infos[i]
			m.claimed[c.key.Lease] = c.request.Holder
			c.reply <- nil
		case errors.Is(errs[i], lease.ErrInvalid) && c.attempts == 0:
			c.attempts++
			again = append(again, c)
		case errors.Is(errs[i], lease.ErrHeld), errors.Is(errs[i], lease.ErrInvalid):
			c.reply <- errors.Annotatef(ErrClaimDenied, "%q for %q", c.request.Holder, c.key.Lease)
		default:
			c.reply <- errs[i]
		}
	}
	return again
}

// tick refreshes, expires what ran out, wakes blocked callers and now and
// then prunes. It must only be called from the loop goroutine.
func (m *manager) tick(ctx context.Context) {
	m.ticks++
	if !m.refresh(ctx) {
		return
	}
	now := m.config.Clock.Now()
	var expired []string
	for name, info := range m.leases {
		if info.Holder != "" && info.Free(now) {
			expired = append(expired, name)
		}
	}
	sort.Strings(expired)
	for _, name := range expired {
		err := m.config.Client.Expire(ctx, m.key(name))
		switch {
		case err == nil:
			m.stats.expired()
		case errors.Is(err, lease.ErrHeld), errors.Is(err, lease.ErrInvalid):
			// Within the clock-skew margin, or changed meanwhile:
			// the next tick looks again.
		default:
			m.logError("cannot expire leadership of %q: %v", name, err)
		}
	}
	if len(expired) > 0 {
		m.refresh(ctx)
	}
	if m.ticks%m.config.PruneEvery == 0 {
		if _, err := m.config.Client.Prune(ctx, Namespace, m.config.Model.Id()); err != nil {
			m.logError("cannot prune leadership terms: %v", err)
		}
	}
}

// refresh reads every lease of the model and wakes blocked callers. A
// failed read keeps the last view. It must only be called from the loop
// goroutine.
func (m *manager) refresh(ctx context.Context) bool {
	infos, err := m.config.Client.Leases(ctx, Namespace, m.config.Model.Id())
	m.readFailed = err != nil
	if err != nil {
		m.stats.failed(err)
		m.logError("cannot read leadership: %v", err)
		return false
	}
	clear(m.leases)
	for key, info := range infos {
		m.leases[key.Lease] = info
	}
	m.stats.refreshed(m.leases, m.config.Clock.Now())
	m.wake()
	return true
}

// wake releases the callers blocked on leases that nobody holds. It must
// only be called from the loop goroutine.
func (m *manager) wake() {
	now := m.config.Clock.Now()
	for name, waiters := range m.blocked {
		if !m.leases[name].Free(now) {
			continue
		}
		for _, done := range waiters {
			close(done)
		}
		delete(m.blocked, name)
	}
	m.stats.setBlocked(len(m.blocked))
}

// nextTick returns the time until the earliest lease becomes free, at
// most MaxSleep. A lease that should be free already but is still held
// (its expiry failed) is looked at again after a twentieth of MaxSleep,
// so that the loop cannot spin; after a failed read, after MaxSleep.
func (m *manager) nextTick() time.Duration {
	if m.readFailed {
		return m.config.MaxSleep
	}
	now := m.config.Clock.Now()
	next := m.config.MaxSleep
	for _, info := range m.leases {
		if info.Holder == "" || info.Pinned() {
			continue
		}
		next = min(next, info.FreeAt.Sub(now))
	}
	if next <= 0 {
		return m.config.MaxSleep / 20
	}
	return next
}

// releaseOnStop releases the leases claimed here, when configured to.
func (m *manager) releaseOnStop() {
	if !m.config.ReleaseOnStop {
		return
	}
	ctx := context.WithoutCancel(m.catacomb.Context(context.Background()))
	for name, unit := range m.claimed {
		err := m.config.Client.Release(ctx, m.key(name), unit)
		if err != nil && !errors.Is(err, lease.ErrNotHeld) {
			m.logError("cannot release leadership of %q on stop: %v", name, err)
		}
	}
}

func (m *manager) logError(format string, args ...any) {
	if m.config.Logger != nil {
		m.config.Logger.Errorf(format, args...)
	}
}

type token struct {
	m           *manager
	application string
	unit        string
	fence       int64
}

// Check is part of the Token interface.
func (t *token) Check() error {
	info, err := t.m.read(t.application)
	if err != nil {
		return errors.Trace(err)
	}
	if !info.HeldBy(t.unit, t.m.config.Clock.Now()) || info.Fence != t.fence {
		return errors.Annotatef(ErrNotHeld, "%q of %q", t.unit, t.application)
	}
	return nil
}

// Fence is part of the Token interface.
func (t *token) Fence() int64 {
	return t.fence
}
