// Package leaseexpiry is application leadership over a lease.Client: the
// Manager that units claim leadership through, the tokens that let a
// leader fence its writes, and waits until a lease is released.
//
// Safety comes from package lease: every change is a unique-_id insert of
// the next term, so at most one unit holds a lease at any instant across
// any number of managers sharing a database, given clocks within the
// client's ClockSkew. A manager serves one model and stands on a Store,
// the controller's one view of every model's leases (worker/leasestore):
// the store reads once per tick for all models, batches the claims of
// every model's manager (renewing 1,000 leases costs one read and one
// insert), expires what runs out (an alarm at the earliest expiry, from
// the injected clock) and prunes superseded terms. Checks, releases and
// pins go to the database for their one lease. A manager given no Store
// runs a private one for its model.
package leaseexpiry

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leasestore"
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

	// ClaimLeadershipContext is ClaimLeadership that also gives up with
	// ctx's error once ctx ends.
	ClaimLeadershipContext(ctx context.Context, applicationName, unitName string, duration time.Duration) error

	// CheckLeadership returns a Token for unitName's leadership, read
	// from the database, or fails with ErrNotHeld.
	CheckLeadership(applicationName, unitName string) (Token, error)

	// CheckLeadershipContext is CheckLeadership that also gives up with
	// ctx's error once ctx ends.
	CheckLeadershipContext(ctx context.Context, applicationName, unitName string) (Token, error)

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

	// ReleaseLeadershipContext is ReleaseLeadership that also gives up
	// with ctx's error once ctx ends.
	ReleaseLeadershipContext(ctx context.Context, applicationName, unitName string) error

	// PinLeadership stops applicationName's leadership from expiring
	// (e.g. during an upgrade) until every entity that pinned it has
	// unpinned it.
	PinLeadership(applicationName, entity string) error

	// PinLeadershipContext is PinLeadership that also gives up with
	// ctx's error once ctx ends.
	PinLeadershipContext(ctx context.Context, applicationName, entity string) error

	// UnpinLeadership removes entity's pin.
	UnpinLeadership(applicationName, entity string) error

	// UnpinLeadershipContext is UnpinLeadership that also gives up with
	// ctx's error once ctx ends.
	UnpinLeadershipContext(ctx context.Context, applicationName, entity string) error
}

// Token is proof of leadership at the time it was made. Check it right
// before acting as the leader, and make the writes it guards with
// UpdateGuarded (or store Fence beside them and compare it yourself), so
// that a deposed leader's late write never lands over a newer leader's.
type Token interface {
	// Check reads the lease and fails with ErrNotHeld once the unit no
	// longer leads with this fence, or with the database's error.
	Check() error

	// CheckContext is Check that also gives up with ctx's error once
	// ctx ends.
	CheckContext(ctx context.Context) error

	// Fence returns the lease's fence number, which rises whenever the
	// leader changes: a write tagged with a lower fence than one already
	// stored came from a deposed leader.
	Fence() int64

	// Guard returns what a guarded write of this leader stores and
	// compares (see UpdateGuarded): the lease's fence field and Fence.
	Guard() Guard
}

// ManagerWorker is a Manager that runs as a worker.
type ManagerWorker interface {
	worker.Worker
	Manager
}

// block is a caller of BlockUntilLeadershipReleased: only a read that
// began after the call (its readSeq above after) may release it, so that
// a view older than the call (one that has not seen a claim yet) never
// does, whatever a test clock says.
type block struct {
	lease string
	after uint64
	done  chan struct{}
}

type manager struct {
	config   ManagerConfig
	store    Store
	client   lease.Client
	catacomb catacomb.Catacomb
	blocks   chan block
	stats    *stats

	mu      sync.Mutex
	claimed map[string]lease.Info // lease -> the latest term claimed through here
}

// NewManager starts a Manager over config.Store, or over a private store
// of its own (which it stops when it stops) when config.Store is nil.
func NewManager(config ManagerConfig) (ManagerWorker, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	config = config.withDefaults()
	m := &manager{
		config:  config,
		store:   config.Store,
		blocks:  make(chan block),
		claimed: make(map[string]lease.Info),
		stats:   newStats(),
	}
	var init []worker.Worker
	if m.store == nil {
		var logger leasestore.Logger
		if config.Logger != nil {
			logger = config.Logger
		}
		private, err := leasestore.New(leasestore.Config{
			Client:     config.Client,
			Clock:      config.Clock,
			Namespace:  Namespace,
			Model:      config.Model,
			MaxSleep:   config.MaxSleep,
			PruneEvery: config.PruneEvery,
			Logger:     logger,
		})
		if err != nil {
			return nil, errors.Annotate(err, "cannot start the lease store")
		}
		m.store = private
		init = append(init, private)
	}
	m.client = m.store.Client()
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "leadership manager",
		Site: &m.catacomb,
		Work: m.loop,
		Init: init,
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
	return catacomb.DeathError(&m.catacomb, ErrStopped)
}

// dying reports whether the manager is stopping.
func (m *manager) dying() bool {
	select {
	case <-m.catacomb.Dying():
		return true
	default:
		return false
	}
}

// MaxNameLength is the longest application name, and pinning entity, a
// Manager accepts; a unit name may add "/" and its number.
const MaxNameLength = 255

// ValidateApplication returns a NotValid error unless application is an
// application name of at most MaxNameLength bytes: what every Manager
// method checks first.
func ValidateApplication(application string) error {
	if len(application) > MaxNameLength {
		return errors.NotValidf("application name of %d bytes (at most %d)", len(application), MaxNameLength)
	}
	if !names.IsValidApplication(application) {
		return errors.NotValidf("application name %q", application)
	}
	return nil
}

// ValidateUnit returns a NotValid error unless application is valid and
// unit is a valid unit name of that application.
func ValidateUnit(application, unit string) error {
	if err := ValidateApplication(application); err != nil {
		return err
	}
	if len(unit) > MaxNameLength+11 {
		return errors.NotValidf("unit name of %d bytes", len(unit))
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
	return m.ClaimLeadershipContext(context.Background(), application, unit, duration)
}

// ClaimLeadershipContext is part of the Manager interface.
func (m *manager) ClaimLeadershipContext(ctx context.Context, application, unit string, duration time.Duration) error {
	if err := ValidateUnit(application, unit); err != nil {
		return errors.Trace(err)
	}
	if duration <= 0 || duration > m.config.MaxDuration {
		return errors.NotValidf("duration %v (must be in (0, %v])", duration, m.config.MaxDuration)
	}
	if m.dying() {
		return m.deathErr()
	}
	// The store bounds its own database calls; this context only ends
	// the wait when the manager stops or the caller gives up.
	ctx, cancel := catacomb.CallFrom(ctx, &m.catacomb, 0)
	defer cancel()
	info, err := m.store.Claim(ctx, lease.Claim{Key: m.key(application), Request: lease.Request{Holder: unit, Duration: duration}})
	switch {
	case err == nil:
		m.stats.claimed(nil)
		m.mu.Lock()
		m.claimed[application] = info
		m.mu.Unlock()
		return nil
	case errors.Is(err, lease.ErrHeld), errors.Is(err, lease.ErrInvalid):
		m.stats.claimed(nil)
		return errors.Annotatef(ErrClaimDenied, "%q for %q", unit, application)
	case m.dying():
		return m.deathErr()
	}
	err = errors.Annotatef(err, "cannot claim leadership of %q for %q", application, unit)
	m.stats.claimed(err)
	return err
}

// CheckLeadership is part of the Manager interface.
func (m *manager) CheckLeadership(application, unit string) (Token, error) {
	return m.CheckLeadershipContext(context.Background(), application, unit)
}

// CheckLeadershipContext is part of the Manager interface.
func (m *manager) CheckLeadershipContext(ctx context.Context, application, unit string) (Token, error) {
	if err := ValidateUnit(application, unit); err != nil {
		return nil, errors.Trace(err)
	}
	info, err := m.read(ctx, application)
	if err != nil {
		return nil, errors.Trace(err)
	}
	if !info.HeldBy(unit, m.config.Clock.Now()) {
		return nil, errors.Annotatef(ErrNotHeld, "%q of %q", unit, application)
	}
	return &token{m: m, application: application, unit: unit, fence: info.Fence}, nil
}

// read reads one lease from the database through the store, which
// batches the reads of every model's checks, giving up when the manager
// stops, ctx ends or CallTimeout passes.
func (m *manager) read(ctx context.Context, application string) (lease.Info, error) {
	ctx, cancel := catacomb.CallFrom(ctx, &m.catacomb, CallTimeout)
	defer cancel()
	var info lease.Info
	var err error
	if mongo.SessionFromContext(ctx) != nil {
		// A read inside the caller's session (a transaction's
		// assertion) cannot join the store's batch.
		info, err = m.readInSession(ctx, application)
	} else {
		info, err = m.store.Read(ctx, m.key(application))
	}
	if err != nil {
		if m.dying() {
			return lease.Info{}, m.deathErr()
		}
		return lease.Info{}, errors.Annotatef(err, "cannot read leadership of %q", application)
	}
	return info, nil
}

// readInSession reads one lease through the lease client with ctx, and so
// in the session ctx carries, which must belong to the lease collection's
// client.
func (m *manager) readInSession(ctx context.Context, application string) (lease.Info, error) {
	key := m.key(application)
	infos, err := m.client.ReadMany(ctx, []lease.Key{key})
	if err != nil {
		return lease.Info{}, errors.Trace(err)
	}
	return infos[key], nil
}

// BlockUntilLeadershipReleased is part of the Manager interface.
func (m *manager) BlockUntilLeadershipReleased(application string) error {
	return m.BlockUntilLeadershipReleasedContext(context.Background(), application)
}

// BlockUntilLeadershipReleasedContext is part of the Manager interface.
func (m *manager) BlockUntilLeadershipReleasedContext(ctx context.Context, application string) error {
	if err := ValidateApplication(application); err != nil {
		return err
	}
	b := block{lease: application, after: m.store.ReadsBegun(), done: make(chan struct{})}
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
	return m.ReleaseLeadershipContext(context.Background(), application, unit)
}

// ReleaseLeadershipContext is part of the Manager interface.
func (m *manager) ReleaseLeadershipContext(ctx context.Context, application, unit string) error {
	if err := ValidateUnit(application, unit); err != nil {
		return errors.Trace(err)
	}
	err := m.change(ctx, application, func(ctx context.Context, key lease.Key) error {
		return m.client.Release(ctx, key, unit)
	})
	if errors.Is(err, lease.ErrNotHeld) {
		return errors.Annotatef(ErrNotHeld, "%q of %q", unit, application)
	}
	return errors.Trace(err)
}

// PinLeadership is part of the Manager interface.
func (m *manager) PinLeadership(application, entity string) error {
	return m.pin(context.Background(), application, entity, true)
}

// PinLeadershipContext is part of the Manager interface.
func (m *manager) PinLeadershipContext(ctx context.Context, application, entity string) error {
	return m.pin(ctx, application, entity, true)
}

// UnpinLeadership is part of the Manager interface.
func (m *manager) UnpinLeadership(application, entity string) error {
	return m.pin(context.Background(), application, entity, false)
}

// UnpinLeadershipContext is part of the Manager interface.
func (m *manager) UnpinLeadershipContext(ctx context.Context, application, entity string) error {
	return m.pin(ctx, application, entity, false)
}

func (m *manager) pin(ctx context.Context, application, entity string, pinned bool) error {
	if err := ValidateApplication(application); err != nil {
		return err
	}
	if entity == "" || len(entity) > MaxNameLength {
		return errors.NotValidf("entity of %d bytes (want 1 to %d)", len(entity), MaxNameLength)
	}
	return errors.Trace(m.change(ctx, application, func(ctx context.Context, key lease.Key) error {
		if pinned {
			return m.client.Pin(ctx, key, entity)
		}
		return m.client.Unpin(ctx, key, entity)
	}))
}

// change runs f, retrying once if another writer got in first, and asks
// the store to read the change, so that blocked callers see a release
// without waiting for the next tick.
func (m *manager) change(ctx context.Context, application string, f func(context.Context, lease.Key) error) error {
	if m.dying() {
		return m.deathErr()
	}
	ctx, cancel := catacomb.CallFrom(ctx, &m.catacomb, CallTimeout)
	defer cancel()
	err := f(ctx, m.key(application))
	if errors.Is(err, lease.ErrInvalid) {
		err = f(ctx, m.key(application))
	}
	if err != nil {
		if m.dying() {
			return m.deathErr()
		}
		return err
	}
	m.store.Refresh()
	return nil
}

// loop releases blocked callers whenever the store's view of the model
// shows their lease free.
func (m *manager) loop() error {
	defer m.releaseOnStop()
	blocked := make(map[string][]block)
	for {
		leases, readAt, readSeq, changed := m.store.Leases(m.config.Model.Id())
		if !readAt.IsZero() {
			m.stats.refreshed(leases, readAt)
			wake(blocked, leases, readAt, readSeq)
		}
		m.stats.setBlocked(len(blocked))
		select {
		case <-m.catacomb.Dying():
			return m.catacomb.ErrDying()
		case b := <-m.blocks:
			blocked[b.lease] = append(blocked[b.lease], b)
			// Only a read that begins now may answer it.
			m.store.Refresh()
		case <-changed:
		}
	}
}

// wake releases the callers blocked on leases that a successful read,
// begun at readAt and numbered readSeq, shows free (released, or expired
// and unpinned, at that time), if they called before the read began.
func wake(blocked map[string][]block, leases map[string]lease.Info, readAt time.Time, readSeq uint64) {
	for name, waiters := range blocked {
		if !leases[name].Free(readAt) {
			continue
		}
		kept := waiters[:0]
		for _, b := range waiters {
			if readSeq <= b.after {
				kept = append(kept, b)
			} else {
				close(b.done)
			}
		}
		if len(kept) == 0 {
			delete(blocked, name)
		} else {
			blocked[name] = kept
		}
	}
}

// stopReleaseTimeout bounds the releases of ReleaseOnStop, in all, so
// that a stop stays short whatever the database does.
const stopReleaseTimeout = 2 * time.Second

// releaseOnStop releases the leases claimed here, when configured to,
// unless they were extended or changed elsewhere since (a unit whose agent
// moved to another controller keeps what it was granted there),
// within stopReleaseTimeout.
func (m *manager) releaseOnStop() {
	if !m.config.ReleaseOnStop {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.catacomb.Context(context.Background())), stopReleaseTimeout)
	defer cancel()
	m.mu.Lock()
	claimed := maps.Clone(m.claimed)
	m.mu.Unlock()
	for name, info := range claimed {
		err := m.client.ReleaseTerm(ctx, m.key(name), info)
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
	return t.CheckContext(context.Background())
}

// CheckContext is part of the Token interface.
func (t *token) CheckContext(ctx context.Context) error {
	info, err := t.m.read(ctx, t.application)
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

// Guard is part of the Token interface.
func (t *token) Guard() Guard {
	return guardFor(t.m.config.Model.Id(), t.application, t.fence)
}
