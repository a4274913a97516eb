// Package leasestore is a controller's one view of the leases of every
// model it hosts. A Store reads every model's leases of a namespace in one
// query per tick, holds that view for the per-model leadership managers
// (worker/leaseexpiry), expires every lapsed, unpinned lease with one
// insert on that read, wakes whoever waits on a change, every PruneEvery
// ticks removes the terms that read found superseded, and writes the
// claims of every model's manager as one ClaimMany per round. A tick
// comes at least every MaxSleep however often claims come: a claim may
// bring it sooner, never later. A controller's lease work per tick is thus
// one read and at most one insert and one delete, whatever the number of
// models and leases; frozen leases are counted in Report.
//
// Safety comes from package lease: every change is a unique-_id insert of
// a lease's next term, so the store adds no safety of its own and none is
// lost when several stores (controllers) share a database. The view is a
// cache: it only ever serves waits (who may stop waiting for a release)
// and the choice of what to expire; claims and checks are decided by the
// database.
//
// Every database call has a deadline (CallTimeout) and is cancelled when
// the store is killed, so a hung server neither blocks the loop for ever
// nor delays a stop.
package leasestore

import (
	"context"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
)

const (
	// DefaultNamespace is the namespace served when Namespace is empty:
	// application leadership, as worker/leaseexpiry uses it.
	DefaultNamespace = "application-leadership"

	// DefaultMaxSleep is the longest the store waits between reads when
	// MaxSleep is zero.
	DefaultMaxSleep = time.Second

	// DefaultPruneEvery is how many ticks pass between prunes when
	// PruneEvery is zero.
	DefaultPruneEvery = 10

	// MaxCallTimeout is the longest any database call of the store may
	// take, and the default CallTimeout for a MaxSleep of 2s or more.
	MaxCallTimeout = 5 * time.Second

	// MinCallTimeout is the shortest default CallTimeout, whatever
	// MaxSleep.
	MinCallTimeout = time.Second
)

// ErrStopped is returned by Claim once the store is stopping or stopped,
// unless it died with an error of its own.
const ErrStopped = errors.ConstError("lease store stopped")

// Logger is the logging a Store needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what New needs.
type Config struct {
	// Client stores the leases. It must not be nil.
	Client lease.Client

	// Clock gives the time; it must be the clock the Client uses, and
	// must not be nil.
	Clock clock.Clock

	// Namespace is the lease namespace served. Empty means
	// DefaultNamespace.
	Namespace string

	// Model, when set, limits the store to that model's leases, for a
	// manager that runs a store of its own. The zero tag means every
	// model: a controller's store. A set tag must be valid.
	Model names.ModelTag

	// MaxSleep is the longest the store waits between ticks (a read,
	// the expiry of what lapsed and, every PruneEvery ticks, a prune),
	// however often claims come: a claim may bring a tick sooner, never
	// later. A tick comes sooner when a held lease becomes free sooner.
	// Zero means DefaultMaxSleep; it must not be negative.
	MaxSleep time.Duration

	// PruneEvery is how many ticks pass between removals of superseded
	// terms. Zero means DefaultPruneEvery; it must not be negative.
	PruneEvery int

	// CallTimeout bounds every database call. Zero means three
	// MaxSleeps, within [MinCallTimeout, MaxCallTimeout]; it must not
	// be negative nor above MaxCallTimeout.
	CallTimeout time.Duration

	// Logger is optional; nil means silent.
	Logger Logger
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Client == nil {
		return errors.NotValidf("nil Client")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.Model != (names.ModelTag{}) {
		if err := schema.ValidateModel(config.Model); err != nil {
			return errors.Trace(err)
		}
	}
	if config.MaxSleep < 0 {
		return errors.NotValidf("negative MaxSleep")
	}
	if config.PruneEvery < 0 {
		return errors.NotValidf("negative PruneEvery")
	}
	if config.CallTimeout < 0 || config.CallTimeout > MaxCallTimeout {
		return errors.NotValidf("CallTimeout %v (must be in [0, %v])", config.CallTimeout, MaxCallTimeout)
	}
	return nil
}

func (config Config) withDefaults() Config {
	if config.Namespace == "" {
		config.Namespace = DefaultNamespace
	}
	if config.MaxSleep == 0 {
		config.MaxSleep = DefaultMaxSleep
	}
	if config.PruneEvery == 0 {
		config.PruneEvery = DefaultPruneEvery
	}
	if config.CallTimeout == 0 {
		config.CallTimeout = min(max(3*config.MaxSleep, MinCallTimeout), MaxCallTimeout)
	}
	return config
}

// view is one published state of the leases: never changed once
// published, replaced as a whole.
type view struct {
	// models holds each model's leases by name.
	models map[string]map[string]lease.Info
	// readAt is when the read behind the view began; zero before the
	// first successful read. readSeq is that read's place in the order
	// reads began in.
	readAt  time.Time
	readSeq uint64
	// changed is closed when a newer view replaces this one.
	changed chan struct{}
}

type claimRequest struct {
	claim    lease.Claim
	reply    chan claimResult
	attempts int
}

type claimResult struct {
	info lease.Info
	err  error
}

// readRequest asks for the latest term of a lease.
type readRequest struct {
	key   lease.Key
	reply chan claimResult
}

// Store is the shared lease view of a controller. It is a worker; its
// methods are safe for concurrent use and none hangs once it stops.
type Store struct {
	config   Config
	catacomb catacomb.Catacomb
	claims   chan claimRequest
	reads    chan readRequest
	refresh  chan struct{}
	stats    *stats

	mu   sync.Mutex
	view *view
	// begun counts the reads begun, for ReadsBegun.
	begun atomic.Uint64

	// The fields below are owned by the loop goroutine.
	ticks      int
	readFailed bool
}

// New starts a Store. It reads the leases at once.
func New(config Config) (*Store, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	s := &Store{
		config:  config.withDefaults(),
		claims:  make(chan claimRequest),
		reads:   make(chan readRequest),
		refresh: make(chan struct{}, 1),
		stats:   newStats(),
		view:    &view{models: map[string]map[string]lease.Info{}, changed: make(chan struct{})},
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "lease store",
		Site: &s.catacomb,
		Work: s.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return s, nil
}

// Kill is part of the worker.Worker interface. It cancels the database
// call in flight, if any.
func (s *Store) Kill() {
	s.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (s *Store) Wait() error {
	return s.catacomb.Wait()
}

// Dead returns a channel that is closed once the store has stopped.
func (s *Store) Dead() <-chan struct{} {
	return s.catacomb.Dead()
}

// Report is part of the dependency.Reporter interface.
func (s *Store) Report() map[string]any {
	return s.stats.report()
}

// Client returns the lease client the store reads and writes through, for
// the calls that need no batching (releases, pins).
func (s *Store) Client() lease.Client {
	return s.config.Client
}

// Leases returns model's leases by name as of the store's latest
// successful read (with the claims and expiries written through the store
// since then applied), the time that read began, and a channel that is
// closed once a newer view replaces this one. readAt is zero until a read
// has succeeded. The map is the caller's own. It never blocks.
func (s *Store) Leases(model string) (leases map[string]lease.Info, readAt time.Time, readSeq uint64, changed <-chan struct{}) {
	s.mu.Lock()
	v := s.view
	s.mu.Unlock()
	return maps.Clone(v.models[model]), v.readAt, v.readSeq, v.changed
}

// ReadsBegun is part of the leaseexpiry.Store interface.
func (s *Store) ReadsBegun() uint64 {
	return s.begun.Load()
}

// Refresh asks for a read as soon as the loop is free, e.g. after a
// release written around the store; requests made before that read begins
// are served by it. It never blocks.
func (s *Store) Refresh() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// Claim claims or extends a lease as lease.Client.ClaimMany does, in the
// next batch that the store writes: every claim that arrives while one
// batch is written goes in the next, and claims that arrive together at
// an idle store (a burst of renewals) go in one batch, after a wait of a
// few milliseconds at most on the store's clock and none on a test's
// clock that stands still. A claim that loses a race to another
// writer is tried once more. It returns the lease's new term, or
// lease.ErrHeld, lease.ErrNotHeld, lease.ErrInvalid, a NotValid error for
// a key outside the store's namespace or model, the database's error,
// ctx's error, or ErrStopped. A claim whose caller gave up may still be
// written.
func (s *Store) Claim(ctx context.Context, claim lease.Claim) (lease.Info, error) {
	if err := s.serves(claim.Key); err != nil {
		return lease.Info{}, errors.Trace(err)
	}
	req := claimRequest{claim: claim, reply: make(chan claimResult, 1)}
	return ask(ctx, s, s.claims, req, req.reply)
}

// ask hands req to the loop on requests and waits for its answer on
// reply, giving up once ctx ends or the store stops.
func ask[T any](ctx context.Context, s *Store, requests chan<- T, req T, reply <-chan claimResult) (lease.Info, error) {
	select {
	case requests <- req:
	case <-s.catacomb.Dying():
		return lease.Info{}, catacomb.DeathError(&s.catacomb, ErrStopped)
	case <-ctx.Done():
		return lease.Info{}, ctx.Err()
	}
	select {
	case r := <-reply:
		return r.info, r.err
	case <-s.catacomb.Dying():
		return lease.Info{}, catacomb.DeathError(&s.catacomb, ErrStopped)
	case <-ctx.Done():
		return lease.Info{}, ctx.Err()
	}
}

// Read returns key's latest term from the database (its zero Info when
// it has none), as a leadership check needs: never from the view, which
// may be older than a release. Every read that arrives while one is made
// goes in the next, which reads all of their keys with one query. It
// fails with a NotValid error for a key outside the store's namespace or
// model, the database's error, ctx's error, or ErrStopped.
func (s *Store) Read(ctx context.Context, key lease.Key) (lease.Info, error) {
	if err := s.serves(key); err != nil {
		return lease.Info{}, errors.Trace(err)
	}
	req := readRequest{key: key, reply: make(chan claimResult, 1)}
	return ask(ctx, s, s.reads, req, req.reply)
}

// serves returns a NotValid error unless key is of the store's namespace
// and model.
func (s *Store) serves(key lease.Key) error {
	if key.Namespace != s.config.Namespace {
		return errors.NotValidf("namespace %q (the store serves %q)", key.Namespace, s.config.Namespace)
	}
	if model := s.config.Model.Id(); model != "" && key.Model != model {
		return errors.NotValidf("model %q (the store serves %q)", key.Model, model)
	}
	return nil
}

// handleReads reads first's key and those of every read already waiting
// with one query, and answers them. It must only be called from the loop
// goroutine.
func (s *Store) handleReads(first readRequest) {
	batch := []readRequest{first}
drain:
	for {
		select {
		case r := <-s.reads:
			batch = append(batch, r)
		default:
			break drain
		}
	}
	keys := make([]lease.Key, len(batch))
	for i, r := range batch {
		keys[i] = r.key
	}
	ctx, cancel := s.call()
	infos, err := s.config.Client.ReadMany(ctx, keys)
	cancel()
	s.stats.batch("check", len(batch), err)
	for _, r := range batch {
		r.reply <- claimResult{info: infos[r.key], err: err}
	}
}

func (s *Store) loop() error {
	s.read()
	wait := s.nextTick()
	timer := s.config.Clock.NewTimer(wait)
	defer timer.Stop()
	due := s.config.Clock.Now().Add(wait)
	// sooner moves the tick to when the leases need it, if that is
	// sooner than it is due: never later, so that claims or refreshes,
	// however often they come, cannot put off a tick, and the store reads,
	// expires and prunes at least every MaxSleep.
	sooner := func() {
		wait := s.nextTick()
		if at := s.config.Clock.Now().Add(wait); at.Before(due) {
			catacomb.Rearm(timer, wait)
			due = at
		}
	}
	for {
		select {
		case <-s.catacomb.Dying():
			return s.catacomb.ErrDying()
		case c := <-s.claims:
			answers := s.handleClaims(c)
			// Set the alarm for the new leases before anyone
			// hears of them.
			sooner()
			for _, a := range answers {
				a.reply <- a.result
			}
		case r := <-s.reads:
			s.handleReads(r)
		case <-s.refresh:
			s.read()
			sooner()
		case <-timer.Chan():
			s.tick()
			wait := s.nextTick()
			timer.Reset(wait)
			due = s.config.Clock.Now().Add(wait)
		}
	}
}

// call returns the context of one database call. The caller must cancel
// it when the call returns.
func (s *Store) call() (context.Context, context.CancelFunc) {
	return catacomb.Call(&s.catacomb, s.config.CallTimeout)
}

// gather adds to batch the claims that arrive until the store has seen
// none for a quiet time, as the comment on loneQuiet says, and returns it.
// It must only be called from the loop goroutine.
func (s *Store) gather(batch []claimRequest) []claimRequest {
	start := s.config.Clock.Now()
	last, seen, still := start, start, 0
	for {
		select {
		case c := <-s.claims:
			batch = append(batch, c)
			last = s.config.Clock.Now()
			continue
		default:
		}
		quiet, looks := loneQuiet, loneLooks
		if len(batch) > 1 {
			quiet, looks = burstQuiet, burstLooks
		}
		now := s.config.Clock.Now()
		if now.Equal(seen) {
			still++
		} else {
			seen, still = now, 0
		}
		if now.Sub(last) >= quiet || now.Sub(start) >= maxGather || still >= looks {
			return batch
		}
		runtime.Gosched()
	}
}

// answer is the result of a claim, to be sent on its reply channel.
type answer struct {
	reply  chan<- claimResult
	result claimResult
}

// A batch is gathered without a timer, so that a claim on a test's clock
// needs no advancing: between looks for more claims the loop yields its
// processor, so that callers already on their way reach the batch, and it
// stops looking once no claim has arrived for a quiet time on the store's
// clock. A lone claim waits loneQuiet, a few per cent of a round trip.
// Once two or more claims have come together (a burst: a controller's
// units renewing at once, or claiming after a restart) the loop waits
// burstQuiet, so that the burst makes one batch, one insert and one
// confirming read, rather than a first few claims alone and the rest in a
// second batch. Claims that keep arriving are written after maxGather at
// most. On a clock that stands still (a test's) the loop stops after
// loneLooks or burstLooks looks in a row that saw the clock unmoved.
const (
	loneQuiet  = 200 * time.Microsecond
	burstQuiet = 5 * time.Millisecond
	maxGather  = 20 * time.Millisecond
	loneLooks  = 64
	burstLooks = 16384
)

// handleClaims writes first and every claim that comes with it as one
// batch, then the claims that lost a race, once more, and returns their
// answers. It must only be called from the loop goroutine.
func (s *Store) handleClaims(first claimRequest) []answer {
	batch := s.gather([]claimRequest{first})
	var answers []answer
	for len(batch) > 0 {
		batch = s.writeClaims(batch, &answers)
	}
	return answers
}

// writeClaims writes one batch, adds the answers of its claims to answers
// and returns those to try again. It must only be called from the loop
// goroutine.
func (s *Store) writeClaims(batch []claimRequest, answers *[]answer) []claimRequest {
	claims := make([]lease.Claim, len(batch))
	for i, c := range batch {
		claims[i] = c.claim
	}
	ctx, cancel := s.call()
	var infos []lease.Info
	var errs []error
	var err error
	if basis := s.basis(batch); basis != nil {
		infos, errs, err = s.config.Client.ClaimManyOn(ctx, claims, basis)
	} else {
		infos, errs, err = s.config.Client.ClaimMany(ctx, claims)
	}
	cancel()
	s.stats.batch("claim", len(batch), err)
	if err != nil {
		err = errors.Annotatef(err, "cannot claim %d leases", len(batch))
		for _, c := range batch {
			*answers = append(*answers, answer{c.reply, claimResult{err: err}})
		}
		return nil
	}
	granted := make(map[lease.Key]lease.Info)
	var again []claimRequest
	for i, c := range batch {
		switch {
		case errs[i] == nil:
			granted[c.claim.Key] = infos[i]
			*answers = append(*answers, answer{c.reply, claimResult{info: infos[i]}})
		case errors.Is(errs[i], lease.ErrInvalid) && c.attempts == 0:
			c.attempts++
			again = append(again, c)
		default:
			*answers = append(*answers, answer{c.reply, claimResult{err: errs[i]}})
		}
	}
	s.apply(granted)
	return again
}

// basis returns the view's terms of the batch's leases when no claim in
// it would be denied on the view alone: every claim is a first attempt,
// and the view shows its lease free, absent or held by the claimant. The
// batch then claims on the view, without a read of its own; a view that
// is out of date costs a lost insert or a failed confirmation and a
// retry, never a wrong grant. Otherwise it returns nil and the batch
// reads afresh, so that a contender is never denied on a view that
// predates a release. It must only be called from the loop goroutine.
func (s *Store) basis(batch []claimRequest) map[lease.Key]lease.Info {
	v := s.current()
	if v.readAt.IsZero() {
		return nil
	}
	now := s.config.Clock.Now()
	out := make(map[lease.Key]lease.Info, len(batch))
	for _, c := range batch {
		info := v.models[c.claim.Key.Model][c.claim.Key.Lease]
		if c.attempts > 0 || (info.Holder != c.claim.Request.Holder && !info.Free(now)) {
			return nil
		}
		if info.Term > 0 {
			out[c.claim.Key] = info
		}
	}
	return out
}

// tick reads, expires every lapsed lease on that read, and every
// PruneEvery ticks removes the terms that read found superseded: one read
// and at most one write of each kind, whatever the number of leases. It
// must only be called from the loop goroutine.
func (s *Store) tick() {
	s.ticks++
	snap, ok := s.read()
	if !ok {
		return
	}
	s.expire(snap)
	if s.ticks%s.config.PruneEvery != 0 {
		return
	}
	ctx, cancel := s.call()
	n, err := s.config.Client.PruneOn(ctx, snap)
	cancel()
	if err != nil {
		s.logError("cannot prune lease terms: %v", err)
	} else if n > 0 && s.config.Logger != nil {
		s.config.Logger.Debugf("pruned %d lease terms", n)
	}
}

// read reads the leases and publishes them. A failed read keeps the last
// view. It must only be called from the loop goroutine.
func (s *Store) read() (lease.Snapshot, bool) {
	seq := s.begun.Add(1)
	at := s.config.Clock.Now()
	ctx, cancel := s.call()
	snap, err := s.config.Client.Snapshot(ctx, s.config.Namespace, s.config.Model.Id())
	cancel()
	s.readFailed = err != nil
	if err != nil {
		s.stats.failed(err)
		s.logError("%v (keeping the last view)", err)
		return snap, false
	}
	models := make(map[string]map[string]lease.Info)
	frozen := 0
	for key, info := range snap.Leases {
		if models[key.Model] == nil {
			models[key.Model] = make(map[string]lease.Info)
		}
		models[key.Model][key.Lease] = info
		if info.Invalid != "" {
			frozen++
		}
	}
	s.publish(models, at, seq)
	s.stats.read(len(models), len(snap.Leases), frozen)
	return snap, true
}

// expire expires, with one insert, every held and unpinned lease that
// snap, read at the view's readAt, shows free. It must only be called
// from the loop goroutine.
func (s *Store) expire(snap lease.Snapshot) {
	readAt := s.current().readAt
	var lapsed []lease.Key
	for key, info := range snap.Leases {
		if info.Holder != "" && info.Free(readAt) {
			lapsed = append(lapsed, key)
		}
	}
	if len(lapsed) == 0 {
		return
	}
	ctx, cancel := s.call()
	errs, err := s.config.Client.ExpireManyOn(ctx, lapsed, snap.Leases)
	cancel()
	if err != nil {
		s.logError("cannot expire %d leases: %v", len(lapsed), err)
		return
	}
	expired := make(map[lease.Key]lease.Info)
	for i, key := range lapsed {
		switch {
		case errs[i] == nil:
			info := snap.Leases[key]
			info.Holder, info.Term, info.Foreign = "", info.Term+1, ""
			expired[key] = info
		case errors.Is(errs[i], lease.ErrHeld), errors.Is(errs[i], lease.ErrInvalid):
			// Changed meanwhile: the next read shows how.
		default:
			s.logError("cannot expire lease %q of model %q: %v", key.Lease, key.Model, errs[i])
		}
	}
	s.stats.expired(len(expired))
	s.apply(expired)
}

// current returns the published view.
func (s *Store) current() *view {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// apply publishes the current view with the given terms written through
// the store, keeping its read time. It must only be called from the loop
// goroutine.
func (s *Store) apply(terms map[lease.Key]lease.Info) {
	if len(terms) == 0 {
		return
	}
	v := s.current()
	models := maps.Clone(v.models)
	for key := range terms {
		if leases, ok := v.models[key.Model]; ok {
			models[key.Model] = maps.Clone(leases)
		} else {
			models[key.Model] = make(map[string]lease.Info)
		}
	}
	for key, info := range terms {
		models[key.Model][key.Lease] = info
	}
	s.publish(models, v.readAt, v.readSeq)
}

// publish replaces the view and wakes whoever waits on the old one.
func (s *Store) publish(models map[string]map[string]lease.Info, readAt time.Time, readSeq uint64) {
	s.mu.Lock()
	old := s.view
	s.view = &view{models: models, readAt: readAt, readSeq: readSeq, changed: make(chan struct{})}
	s.mu.Unlock()
	close(old.changed)
}

// nextTick returns the time until the earliest held, unpinned lease
// becomes free, at most MaxSleep. A lease that should be free already but
// is still held (its expiry failed) is looked at again after a twentieth
// of MaxSleep, so that the loop cannot spin; after a failed read, after
// MaxSleep. It must only be called from the loop goroutine.
func (s *Store) nextTick() time.Duration {
	if s.readFailed {
		return s.config.MaxSleep
	}
	now := s.config.Clock.Now()
	next := s.config.MaxSleep
	for _, leases := range s.current().models {
		for _, info := range leases {
			if info.Holder == "" || info.Pinned() {
				continue
			}
			next = min(next, info.FreeAt.Sub(now))
		}
	}
	if next <= 0 {
		return s.config.MaxSleep / 20
	}
	return next
}

// logError logs unless the store is dying: a call cut short by Kill is no
// failure worth a line.
func (s *Store) logError(format string, args ...any) {
	if s.config.Logger == nil {
		return
	}
	select {
	case <-s.catacomb.Dying():
		return
	default:
	}
	s.config.Logger.Errorf(format, args...)
}
