// Package leasestore is a controller's one view of the leases of every
// model it hosts. A Store has one reader: a loop whose every read (one
// query of every model's leases of a namespace) is at once the tick and
// the answer to whatever waits for a read. Each read publishes the view
// for the per-model leadership managers (worker/leaseexpiry) and wakes
// whoever waits on a change, answers the leadership checks made before it
// began, confirms every claim whose insert ended before it began, expires
// every lapsed, unpinned lease with one insert, and every PruneEvery reads
// removes the terms it found superseded. Reads follow one another at once
// while anything waits for one, and come at least every MaxSleep from the
// start of the last however few claims come: claims bring a read sooner,
// never later. The claims of every model's manager are written by a
// writer beside the reader, as one insert (lease.Client.InsertClaims) as
// soon as they come, or together once the insert in flight returns; a
// claim then waits for the next read that begins after its insert ended,
// and needs no read of its own. So one query of the leases runs at a
// time, a read never waits for an insert of claims nor an insert for a
// read, and a controller's lease work per read is that read
// and at most one insert of expiries and one delete, whatever the number
// of models, leases and claims; frozen leases are counted in Report.
//
// Safety comes from package lease: every change is a unique-_id insert of
// a lease's next term, and a claim is granted only once a read that began
// after its insert shows its term as the lease's latest (lease.Confirm),
// so the store adds no safety of its own and none is lost when several
// stores (controllers) share a database. The view is a cache: it only
// ever serves waits (who may stop waiting for a release), the choice of
// what to expire, and the terms a claim is first tried on, which a stale
// view can only make fail, never wrongly succeed; a claim that the view
// would deny is decided on the next read instead.
//
// Every database call has a deadline (CallTimeout) and is cancelled when
// the store is killed, so a hung server neither blocks the loop for ever
// nor delays a stop.
package leasestore

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
)

const (
	// DefaultNamespace is the namespace served when Namespace is empty:
	// application leadership, as worker/leaseexpiry uses it.
	DefaultNamespace = "application-leadership"

	// DefaultMaxSleep is the longest from one read's start to the next's
	// when MaxSleep is zero.
	DefaultMaxSleep = time.Second

	// DefaultPruneEvery is how many reads pass between prunes when
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

	// MaxSleep is the longest from the start of one read (a tick: the
	// read, the expiry of what lapsed and, every PruneEvery reads, a
	// prune) to the start of the next, however few claims come; a read
	// that takes longer is followed by the next at once. Claims and
	// checks bring a read sooner, never later, and so does a held lease
	// that becomes free sooner. Zero means DefaultMaxSleep; it must not
	// be negative.
	MaxSleep time.Duration

	// PruneEvery is how many reads pass between removals of superseded
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

type claimResult struct {
	info lease.Info
	err  error
}

// readRequest asks for the latest term of a lease, from a read that
// begins after the request.
type readRequest struct {
	key   lease.Key
	reply chan claimResult
}

// queue holds what waits for a read to begin (checks, and claims to
// confirm or to decide on) and the claims that a read has decided to
// write again. It is goroutine-safe.
type queue struct {
	mu        sync.Mutex
	checks    []readRequest
	unread    []claimRequest
	rewritten []claimRequest
	// read and write are signalled (without blocking) when the reader,
	// or the writer, has something to do.
	read, write chan struct{}
}

func newQueue() *queue {
	return &queue{read: make(chan struct{}, 1), write: make(chan struct{}, 1)}
}

// signal wakes whoever waits on ch, unless it has a wake-up already.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// check queues r for the next read.
func (q *queue) check(r readRequest) {
	q.mu.Lock()
	q.checks = append(q.checks, r)
	q.mu.Unlock()
	signal(q.read)
}

// await queues claims for the next read: to confirm those inserted, to
// decide on the others.
func (q *queue) await(claims []claimRequest) {
	q.add(&q.unread, claims, q.read)
}

// add appends claims to *list and wakes whoever waits on wake.
func (q *queue) add(list *[]claimRequest, claims []claimRequest, wake chan struct{}) {
	if len(claims) == 0 {
		return
	}
	q.mu.Lock()
	*list = append(*list, claims...)
	q.mu.Unlock()
	signal(wake)
}

// forRead returns and forgets what waits for a read to begin.
func (q *queue) forRead() ([]readRequest, []claimRequest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	checks, claims := q.checks, q.unread
	q.checks, q.unread = nil, nil
	return checks, claims
}

// rewrite hands claims decided on a read to the writer.
func (q *queue) rewrite(claims []claimRequest) {
	q.add(&q.rewritten, claims, q.write)
}

// forWrite returns and forgets the claims handed to the writer.
func (q *queue) forWrite() []claimRequest {
	q.mu.Lock()
	defer q.mu.Unlock()
	claims := q.rewritten
	q.rewritten = nil
	return claims
}

// Store is the shared lease view of a controller. It is a worker; its
// methods are safe for concurrent use and none hangs once it stops.
type Store struct {
	config   Config
	catacomb catacomb.Catacomb
	claims   chan claimRequest
	queue    *queue
	stats    *stats

	mu   sync.Mutex
	view *view
	// begun counts the reads begun, for ReadsBegun.
	begun atomic.Uint64

	// ticks is owned by the loop goroutine.
	ticks int
}

// New starts a Store. It reads the leases at once.
func New(config Config) (*Store, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	s := &Store{
		config: config.withDefaults(),
		claims: make(chan claimRequest),
		queue:  newQueue(),
		stats:  newStats(),
		view:   &view{models: map[string]map[string]lease.Info{}, changed: make(chan struct{})},
	}
	w, err := newWriter(s)
	if err != nil {
		return nil, errors.Trace(err)
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "lease store",
		Site: &s.catacomb,
		Work: s.loop,
		Init: []worker.Worker{w},
	}); err != nil {
		worker.Stop(w)
		return nil, errors.Trace(err)
	}
	return s, nil
}

// Kill is part of the worker.Worker interface. It cancels the database
// calls in flight, if any.
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
// successful read (with the expiries written through the store since then
// applied), the time that read began, and a channel that is closed once a
// newer view replaces this one. readAt is zero until a read has
// succeeded. The map is the caller's own. It never blocks.
func (s *Store) Leases(model string) (leases map[string]lease.Info, readAt time.Time, readSeq uint64, changed <-chan struct{}) {
	v := s.current()
	return maps.Clone(v.models[model]), v.readAt, v.readSeq, v.changed
}

// ReadsBegun is part of the leaseexpiry.Store interface.
func (s *Store) ReadsBegun() uint64 {
	return s.begun.Load()
}

// Refresh asks for a read as soon as the reader is free, e.g. after a
// release written around the store; requests made before that read begins
// are served by it. It never blocks.
func (s *Store) Refresh() {
	signal(s.queue.read)
}

// ask waits for the answer to a request on reply, giving up once ctx
// ends or the store stops.
func (s *Store) ask(ctx context.Context, reply <-chan claimResult) (lease.Info, error) {
	select {
	case r := <-reply:
		return r.info, r.err
	case <-s.catacomb.Dying():
		return lease.Info{}, catacomb.DeathError(&s.catacomb, ErrStopped)
	case <-ctx.Done():
		return lease.Info{}, ctx.Err()
	}
}

// Read returns key's latest term (its zero Info when it has none) as the
// next read that begins after the call finds it, as a leadership check
// needs: never from the view, which may be older than a release. Every
// read of the store answers all the checks made before it began. It
// fails with a NotValid error for a key outside the store's namespace or
// model, the database's error, ctx's error, or ErrStopped.
func (s *Store) Read(ctx context.Context, key lease.Key) (lease.Info, error) {
	if err := s.serves(key); err != nil {
		return lease.Info{}, errors.Trace(err)
	}
	select {
	case <-s.catacomb.Dying():
		return lease.Info{}, catacomb.DeathError(&s.catacomb, ErrStopped)
	default:
	}
	req := readRequest{key: key, reply: make(chan claimResult, 1)}
	s.queue.check(req)
	return s.ask(ctx, req.reply)
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

// loop is the reader: it reads whenever something waits for a read, and
// at least every MaxSleep from the start of the last read (sooner when a
// held lease becomes free sooner). A failed read fails whatever waited for
// it, so that while the server fails the store reads no more often than
// callers ask, and otherwise every MaxSleep from the failure.
func (s *Store) loop() error {
	timer := s.config.Clock.NewTimer(s.tick())
	defer timer.Stop()
	for {
		select {
		case <-s.catacomb.Dying():
			return s.catacomb.ErrDying()
		case <-timer.Chan():
		case <-s.queue.read:
		}
		// No alarm while the tick runs: a test clock sees the loop
		// waiting only once the tick is done.
		if !timer.Stop() {
			select {
			case <-timer.Chan():
			default:
			}
		}
		timer.Reset(s.tick())
	}
}

// call returns the context of one database call. The caller must cancel
// it when the call returns.
func (s *Store) call() (context.Context, context.CancelFunc) {
	return catacomb.Call(&s.catacomb, s.config.CallTimeout)
}

// tick reads, publishes the view, answers the checks and claims that
// waited for a read, expires every lapsed lease on that read and every
// PruneEvery ticks removes the terms that read found superseded: one
// read and at most one write of each kind, whatever the number of leases
// and claims. It returns the time until the next tick is due. It must
// only be called from the loop goroutine.
func (s *Store) tick() time.Duration {
	s.ticks++
	// Whatever is queued from here on waits for the next read.
	select {
	case <-s.queue.read:
	default:
	}
	checks, claims := s.queue.forRead()
	at := s.config.Clock.Now()
	snap, err := s.read()
	if err != nil {
		s.fail(checks, claims, err)
		return s.config.MaxSleep
	}
	s.answer(checks, claims, snap.Leases)
	s.expire(snap)
	if s.ticks%s.config.PruneEvery == 0 {
		ctx, cancel := s.call()
		n, err := s.config.Client.PruneOn(ctx, snap)
		cancel()
		if err != nil {
			s.logError("cannot prune lease terms: %v", err)
		} else if n > 0 && s.config.Logger != nil {
			s.config.Logger.Debugf("pruned %d lease terms", n)
		}
	}
	return s.nextTick(at)
}

// read reads the leases and publishes them. A failed read keeps the last
// view. It must only be called from the loop goroutine.
func (s *Store) read() (lease.Snapshot, error) {
	seq := s.begun.Add(1)
	at := s.config.Clock.Now()
	ctx, cancel := s.call()
	snap, err := s.config.Client.Snapshot(ctx, s.config.Namespace, s.config.Model.Id())
	cancel()
	if err != nil {
		s.stats.failed(err)
		s.logError("%v (keeping the last view)", err)
		return snap, errors.Trace(err)
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
	return snap, nil
}

// answer answers the checks and claims that waited for a read on latest,
// what that read found: it grants each inserted claim that lease.Confirm
// confirms, and hands the writer the claims to write on latest (those it
// did not insert yet, and those whose first term was superseded). It
// must only be called from the loop goroutine.
func (s *Store) answer(checks []readRequest, claims []claimRequest, latest map[lease.Key]lease.Info) {
	if len(checks) > 0 {
		s.stats.batch("check", len(checks), nil)
	}
	for _, r := range checks {
		r.reply <- claimResult{info: latest[r.key]}
	}
	var again []claimRequest
	for _, c := range claims {
		cur := latest[c.claim.Key]
		if !c.inserted {
			c.basis, c.decided = cur, true
			again = append(again, c)
			continue
		}
		err := lease.Confirm(c.claim.Key, c.term, cur)
		switch {
		case err == nil:
			c.reply <- claimResult{info: c.term}
		case c.attempts == 0:
			c.attempts++
			c.inserted, c.basis, c.decided = false, cur, true
			again = append(again, c)
		default:
			c.reply <- claimResult{err: err}
		}
	}
	s.queue.rewrite(again)
}

// fail answers the checks that waited for a read that failed with err,
// and the claims whose second read it was; the others wait for the next
// read, which begins after their inserts too, so that one slow read does
// not fail every claim of a busy controller.
func (s *Store) fail(checks []readRequest, claims []claimRequest, err error) {
	if len(checks) > 0 {
		s.stats.batch("check", len(checks), err)
	}
	for _, r := range checks {
		r.reply <- claimResult{err: err}
	}
	var again []claimRequest
	for _, c := range claims {
		if c.failedReads++; c.failedReads < 2 {
			again = append(again, c)
			continue
		}
		c.reply <- claimResult{err: errors.Annotate(err, "cannot read the leases of a claim")}
	}
	s.queue.await(again)
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

// nextTick returns the time until the next tick is due: MaxSleep after
// at, the start of the last read, or sooner when a held, unpinned lease
// becomes free sooner; at once if that time has passed. A lease that
// should be free already but is still held (its expiry failed) is looked
// at again after a twentieth of MaxSleep, so that the loop cannot spin.
// It must only be called from the loop goroutine.
func (s *Store) nextTick(at time.Time) time.Duration {
	now := s.config.Clock.Now()
	next := at.Add(s.config.MaxSleep).Sub(now)
	for _, leases := range s.current().models {
		for _, info := range leases {
			if info.Holder == "" || info.Pinned() {
				continue
			}
			if free := info.FreeAt.Sub(now); free <= 0 {
				next = min(next, s.config.MaxSleep/20)
			} else {
				next = min(next, free)
			}
		}
	}
	return max(next, 0)
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
