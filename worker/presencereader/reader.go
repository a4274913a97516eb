// Package presencereader is the presence reader of a controller: one
// worker that loads every model's presence from the database and feeds the
// per-model views that watchers (package worker/watcher) wrap.
//
// A Reader loads every SyncInterval with one query for the ping documents
// of the last schema.ReadSlots slots, whatever the number of models: every
// writer (ping batcher) keeps one ping document per slot for all of its
// models, so the query returns O(writers) documents. Each writer is judged
// by its own latest two slots, and a writer that falls behind by its
// progress over time (see view.apply): a slow writer is not a death. When a writer names
// indexes the reader does not know, one more query fetches the writer's
// beings documents from the first unknown chunk on; a beings read that
// fails or ends at the deadline keeps what it brought. A key is alive
// while any of its pingers is: an agent that reconnects through another
// controller does not flap dead.
//
// A failed or missing read is never a death. Every load has a deadline
// (see Config.SyncInterval), so a stalled read is a failed one; when a load
// fails the reader keeps its last view, logs the error and tries again at
// the next sync; for one Period after it can read again it reports no
// death that was not recorded by Disconnect, so that batchers have time to
// write the pings they buffered. A document that does not decode, names
// impossible indexes or was written with another Period is skipped and
// logged once, never applied.
//
// Delivery never blocks the reader: every channel passed to a View's Watch
// is fed by a goroutine of its own and holds at most one pending change
// per key, and every Subscription is pulled by its reader from the
// model's change log.
//
// The change log of a model numbers every change the model's views
// report (see Position), so that a subscriber that went away can resume
// after the last change it took (see SubscribeConfig.After). It is shared
// by the model's views, lives while any of them does and for LogAge
// after the last one closes (so that a watcher that restarts keeps its
// subscribers' positions), and is bounded by
// count (Config.LogLength, enforced as changes arrive) and by age
// (Config.LogAge, pruned on every load: it adds no timer). A subscriber
// that asks for changes the log no longer holds gets a reset and a
// snapshot, never a silent gap.
package presencereader

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// Sentinel errors, by when they occur.
const (
	// ErrStopped is returned by the methods of a Reader or View once it
	// is stopping or stopped, unless it died with an error of its own.
	ErrStopped = errors.ConstError("presence reader stopped")

	// ErrNotLoaded is returned by Alive when the reader has not yet
	// managed a single load, so it knows nothing.
	ErrNotLoaded = errors.ConstError("presence not loaded yet")
)

const (
	// forgetAfter is how many successful loads a writer may be absent
	// from before the reader forgets its indexes.
	forgetAfter = 16

	// minReadTimeout is the shortest deadline a load gets.
	minReadTimeout = 2 * time.Second

	// DefaultMaxStallPeriods is Config.MaxStall's default, in Periods.
	DefaultMaxStallPeriods = 12

	// DefaultLogLength is Config.LogLength's default: at 32 bytes an
	// entry, a model's change log holds at most about 320 KB.
	DefaultLogLength = 10000

	// DefaultLogAge is Config.LogAge's default.
	DefaultLogAge = 5 * time.Minute
)

// Logger is the logging a Reader needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a Reader needs.
type Config struct {
	// Base is the base presence collection. It must not be nil.
	Base *mongo.Collection

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// Period is the slot length, the same as the pingers' and the
	// batchers'; documents stamped with another are skipped. Zero means
	// schema.DefaultPeriod; it must not be negative.
	Period time.Duration

	// SyncInterval is the time between loads. A load that takes longer
	// than SyncInterval (and than two seconds) fails. Zero means
	// schema.DefaultSyncInterval; it must not be negative.
	SyncInterval time.Duration

	// MaxStall is how long the reader holds the keys of late writers
	// while no writer at all is on time, which it takes for a stall of
	// the database (writes held up, say, by a majority write concern
	// waiting for a secondary) rather than for the death of every
	// controller at once; then their keys read dead. While any writer is
	// on time, a late writer's keys hold for one Period only (longer
	// for a writer that has lately been slow). Both are counted from the
	// writer's last progress, or from the end of the last stall or run
	// of failed loads if that is later: a writer is not judged by its
	// silence while the database was in trouble, and one the trouble
	// caught within its bound keeps its keys for MaxStall after it,
	// until it writes again. Zero means DefaultMaxStallPeriods Periods;
	// it must not be negative.
	MaxStall time.Duration

	// LogLength is how many changes the change log of each model keeps
	// at most, for subscribers that resume after a position (see
	// SubscribeConfig.After); the oldest go first. Zero means
	// DefaultLogLength; it must not be negative.
	LogLength int

	// LogAge is how long the change log of each model keeps a change;
	// loads prune older ones. Zero means DefaultLogAge; it must not be
	// negative.
	LogAge time.Duration

	// OnLoad, if not nil, is called after every load, once the view is
	// updated and before the changes are handed to subscribers, from the
	// reader's goroutine, e.g. to feed metrics. It must return quickly.
	OnLoad func(LoadStats)

	// Wake, if not nil, makes the reader load at once (or as soon as the
	// load in flight ends) whenever it receives: a batcher in the same
	// process sends on it after a flush that carries a Disconnect or a
	// key coming up (see pingbatcher.FlushStats.Prompt), so that this
	// process's watchers see it without waiting for SyncInterval. Other
	// processes' readers still see it at their next sync, or at once
	// where the server has change streams.
	Wake <-chan struct{}
}

// LoadStats describes one load.
type LoadStats struct {
	// Took is how long the database took to answer, by the reader's
	// clock.
	Took time.Duration
	// Models, Writers and Keys are how many of each the reader knows;
	// Alive how many keys it reports alive.
	Models, Writers, Keys, Alive int
	// Changes is how many keys changed state.
	Changes int
	// Held is how many keys the load kept alive although it found no
	// live ping for them, because their writer was late or the database
	// had just stalled: detection is slower than usual while it is not
	// zero.
	Held int
	// Stalled is whether no writer was on time: the reader suspects
	// the database and holds every late writer's keys for MaxStall.
	Stalled bool
	// Skipped is how many documents the load skipped as invalid.
	Skipped int
	// MaxSkew is the largest clock difference measured between the
	// reader and any writer (an upper bound: it includes the write's and
	// the read's delays).
	MaxSkew time.Duration
	// Skews is the clock difference measured against each writer, by
	// writer id (the reader's clock minus the writer's, so positive
	// means the writer is behind; the same upper bound as MaxSkew). It
	// has one entry per controller, never per agent, and is only set
	// when OnLoad is: the caller owns it.
	Skews map[string]time.Duration
	// LogEntries is how many changes the change logs of every model
	// viewed hold, and LogBytes the memory they take, after the load.
	LogEntries, LogBytes int
	// Err is why the load failed, or nil.
	Err error
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.Period < 0 {
		return errors.NotValidf("negative Period")
	}
	if config.SyncInterval < 0 {
		return errors.NotValidf("negative SyncInterval")
	}
	if config.MaxStall < 0 {
		return errors.NotValidf("negative MaxStall")
	}
	if config.LogLength < 0 {
		return errors.NotValidf("negative LogLength")
	}
	if config.LogAge < 0 {
		return errors.NotValidf("negative LogAge")
	}
	return nil
}

// Reader loads the presence of every model and feeds the Views made with
// NewView. Its methods are safe for concurrent use, and none of them
// blocks once the reader is dying.
type Reader struct {
	config   Config
	catacomb catacomb.Catacomb
	requests chan any
	results  chan loadResult
	// wakes carries the change stream's news that a writer wrote.
	wakes  chan struct{}
	pings  *mongo.Collection
	beings *mongo.Collection

	statsMu sync.Mutex
	stats   map[string]any

	// The fields below are owned by the loop goroutine.
	view         *view
	gen          uint64
	okLoads      uint64 // successful loads
	loaded       bool
	lastErr      error
	healthySince time.Time
	failing      bool
	inFlight     bool
	nextWaiters  []reqSync
	curWaiters   []reqSync
	pendingAlive []reqAlive
	registries   map[string]*registry
	newWatches   []reqWatch
	newSubs      []reqSnapshot
	touched      []*sender
	logs         map[string]*changeLog // model -> its change log, while viewed
	openLogs     []*changeLog          // the logs a load added to
	toWake       []*Subscription       // the subscriptions a load's dispatch woke
	views        int
	subCount     int
	failures     int
	justLoaded   bool // the first load was just applied; its states go out as initial ones
	skipped      map[string]bool
	clocks       map[string]*writerClock
}

// writerClock is what the reader measured of one writer's clock.
type writerClock struct {
	lastAt  int64            // the newest stamp seen
	samples [8]time.Duration // the latest skew samples, a ring
	n       int
	warned  bool
}

// skew returns the smallest recent sample: the reader's clock minus the
// writer's, plus the write's and the read's delays, which are never
// negative, so the smallest sample is the closest bound.
func (wc *writerClock) skew() time.Duration {
	out := wc.samples[0]
	for _, d := range wc.samples[1:min(wc.n, len(wc.samples))] {
		out = min(out, d)
	}
	return out
}

// registry is who listens to one model. It is owned by the loop
// goroutine.
type registry struct {
	watchers map[string][]*sender
	keySubs  map[string][]*Subscription
	allSubs  map[*Subscription]bool
	subs     int
}

func (g *registry) empty() bool {
	return len(g.watchers) == 0 && g.subs == 0
}

// New starts a Reader. It loads at once and then every SyncInterval.
func New(config Config) (*Reader, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if config.Period == 0 {
		config.Period = schema.DefaultPeriod
	}
	if config.SyncInterval == 0 {
		config.SyncInterval = schema.DefaultSyncInterval
	}
	if config.MaxStall == 0 {
		config.MaxStall = DefaultMaxStallPeriods * config.Period
	}
	if config.LogLength == 0 {
		config.LogLength = DefaultLogLength
	}
	if config.LogAge == 0 {
		config.LogAge = DefaultLogAge
	}
	r := &Reader{
		config:     config,
		requests:   make(chan any),
		results:    make(chan loadResult),
		wakes:      make(chan struct{}, 1),
		pings:      schema.Pings(config.Base),
		beings:     schema.Beings(config.Base),
		stats:      map[string]any{},
		view:       newView(),
		registries: make(map[string]*registry),
		logs:       make(map[string]*changeLog),
		skipped:    make(map[string]bool),
		clocks:     make(map[string]*writerClock),
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "presence reader",
		Site: &r.catacomb,
		Work: r.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return r, nil
}

// Kill is part of the worker.Worker interface.
func (r *Reader) Kill() {
	r.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (r *Reader) Wait() error {
	return r.catacomb.Wait()
}

// Dead returns a channel that is closed once the reader has stopped.
func (r *Reader) Dead() <-chan struct{} {
	return r.catacomb.Dead()
}

// Period returns the slot length the reader works with.
func (r *Reader) Period() time.Duration {
	return r.config.Period
}

// Refresh loads now and returns once the view reflects the load, with the
// load's error; it does not wait for deliveries. It fails with ErrStopped
// once the reader stops.
func (r *Reader) Refresh() error {
	res, ok := r.load(nil, r.catacomb.Dying())
	if !ok {
		return r.deathErr()
	}
	return res.err
}

// Report is part of the dependency.Reporter interface.
func (r *Reader) Report() map[string]any {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	out := make(map[string]any, len(r.stats))
	for k, v := range r.stats {
		out[k] = v
	}
	return out
}

func (r *Reader) deathErr() error {
	return catacomb.DeathError(&r.catacomb, ErrStopped)
}

func (r *Reader) logf(format string, args ...any) {
	if r.config.Logger != nil {
		r.config.Logger.Errorf(format, args...)
	}
}

type reqWatch struct {
	view *View
	key  string
	ch   chan<- Change
}

type reqUnwatch struct {
	view *View
	key  string
	ch   chan<- Change
}

type reqAlive struct {
	model string
	key   string
	reply chan aliveResult
}

type aliveResult struct {
	alive bool
	err   error
}

// reqSync asks for a load. reply, when not nil, gets the outcome once the
// load has been applied, with the senders of view that it touched.
type reqSync struct {
	view  *View
	reply chan syncResult
}

type syncResult struct {
	err     error
	gen     uint64
	senders []*sender
}

type reqSubscribe struct {
	sub *Subscription
}

type reqUnsubscribe struct {
	sub *Subscription
}

// reqSnapshot asks for a snapshot of sub's keys, a reset if set.
type reqSnapshot struct {
	sub   *Subscription
	reset bool
}

type reqDetach struct {
	view *View
	done chan struct{}
}

type reqModelStats struct {
	model string
	reply chan map[string]any
}

// send hands req to the loop, or gives up once the reader or stop is
// closed.
func (r *Reader) send(req any, stop <-chan struct{}) bool {
	select {
	case r.requests <- req:
		return true
	case <-r.catacomb.Dying():
		return false
	case <-stop:
		return false
	}
}

// load asks for a load and waits for its outcome.
func (r *Reader) load(v *View, stop <-chan struct{}) (syncResult, bool) {
	reply := make(chan syncResult, 1)
	if !r.send(reqSync{view: v, reply: reply}, stop) {
		return syncResult{}, false
	}
	select {
	case res := <-reply:
		return res, true
	case <-r.catacomb.Dying():
		return syncResult{}, false
	case <-stop:
		return syncResult{}, false
	}
}

func (r *Reader) loop() error {
	timer := r.config.Clock.NewTimer(r.config.SyncInterval)
	defer timer.Stop()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		r.watchChanges(r.catacomb.Context(context.Background()))
	}()
	r.startLoad()
	fired, woken := false, false
	for {
		select {
		case <-r.catacomb.Dying():
			if r.inFlight {
				<-r.results
			}
			<-watching
			return r.catacomb.ErrDying()
		case req := <-r.requests:
			r.handle(req)
		case <-r.wakes:
			woken = r.wake(woken)
		case <-r.config.Wake:
			woken = r.wake(woken)
		case res := <-r.results:
			r.inFlight = false
			r.finishLoad(res)
			if len(r.nextWaiters) > 0 || woken {
				woken = false
				r.startLoad()
			}
			// Loads start every SyncInterval: the read's own time
			// does not stretch the interval.
			next := max(r.config.SyncInterval-res.took, 0)
			if fired {
				timer.Reset(next)
				fired = false
			} else {
				catacomb.Rearm(timer, next)
			}
		case <-timer.Chan():
			// The timer is set again once the load is done, so that
			// loads never overlap.
			fired = true
			if !r.inFlight {
				r.startLoad()
			}
		}
	}
}

// wake answers the news that a writer wrote: it loads now, or reports
// that a load must follow the one in flight, so that the change is not
// missed. It must only be called from the loop goroutine.
func (r *Reader) wake(woken bool) bool {
	if r.inFlight {
		return true
	}
	r.startLoad()
	return woken
}

// handle serves one request. It must only be called from the loop
// goroutine.
func (r *Reader) handle(req any) {
	switch req := req.(type) {
	case reqWatch:
		r.addWatch(req)
	case reqUnwatch:
		r.removeWatch(req.view, req.key, req.ch)
	case reqAlive:
		if !r.loaded && r.lastErr == nil {
			r.pendingAlive = append(r.pendingAlive, req)
			return
		}
		req.reply <- r.alive(req.model, req.key)
	case reqSync:
		r.nextWaiters = append(r.nextWaiters, req)
		if !r.inFlight {
			r.startLoad()
		}
	case reqSubscribe:
		r.addSubscription(req.sub)
	case reqUnsubscribe:
		r.removeSubscription(req.sub)
	case reqAttach:
		r.views++
		l := r.logs[req.model]
		if l == nil {
			l = newChangeLog(r.config.LogLength)
			r.logs[req.model] = l
		}
		l.refs++
		l.unviewed = time.Time{}
		req.reply <- l
	case reqSnapshot:
		r.snapshot(req)
	case reqDetach:
		r.detach(req.view)
		close(req.done)
	case reqModelStats:
		req.reply <- r.modelStats(req.model)
	}
}

func (r *Reader) alive(model, key string) aliveResult {
	if !r.loaded {
		return aliveResult{err: fmt.Errorf("%w: %w", ErrNotLoaded, r.lastErr)}
	}
	return aliveResult{alive: r.view.lookup(model, key)}
}

func (r *Reader) registry(model string) *registry {
	g := r.registries[model]
	if g == nil {
		g = &registry{
			watchers: make(map[string][]*sender),
			keySubs:  make(map[string][]*Subscription),
			allSubs:  make(map[*Subscription]bool),
		}
		r.registries[model] = g
	}
	return g
}

// tidy forgets model's registry once nobody listens.
func (r *Reader) tidy(model string) {
	if g := r.registries[model]; g != nil && g.empty() {
		delete(r.registries, model)
	}
}

func (r *Reader) addWatch(req reqWatch) {
	v := req.view
	s := v.senders[req.ch]
	if s == nil {
		s = newSender(req.ch, v)
		v.senders[req.ch] = s
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			s.run(v.dying)
		}()
	}
	g := r.registry(v.model)
	if !contains(g.watchers[req.key], s) {
		g.watchers[req.key] = append(g.watchers[req.key], s)
		s.refs++
	}
	if !r.loaded {
		r.newWatches = append(r.newWatches, req)
		return
	}
	s.enqueue(req.key, r.view.lookup(v.model, req.key), r.gen, true)
}

func (r *Reader) removeWatch(v *View, key string, ch chan<- Change) {
	s := v.senders[ch]
	g := r.registries[v.model]
	if s == nil || g == nil || !contains(g.watchers[key], s) {
		return
	}
	g.watchers[key] = without(g.watchers[key], s)
	if len(g.watchers[key]) == 0 {
		delete(g.watchers, key)
	}
	s.drop(key)
	s.refs--
	if s.refs == 0 {
		close(s.quit)
		delete(v.senders, ch)
	}
	r.tidy(v.model)
}

func (r *Reader) addSubscription(sub *Subscription) {
	r.subCount++
	sub.v.subs[sub] = true
	g := r.registry(sub.v.model)
	g.subs++
	if sub.all {
		g.allSubs[sub] = true
	} else {
		for _, key := range sub.keys {
			if !contains(g.keySubs[key], sub) {
				g.keySubs[key] = append(g.keySubs[key], sub)
			}
		}
	}
}

// snapshot answers a subscription's request for a snapshot, once the
// reader has loaded.
func (r *Reader) snapshot(req reqSnapshot) {
	if !req.sub.v.subs[req.sub] {
		return
	}
	if !r.loaded {
		r.newSubs = append(r.newSubs, req)
		return
	}
	req.sub.snapshot(r.states(req.sub), req.sub.log.position(), req.reset)
}

func (r *Reader) removeSubscription(sub *Subscription) {
	if !sub.v.subs[sub] {
		return
	}
	delete(sub.v.subs, sub)
	r.subCount--
	g := r.registries[sub.v.model]
	if g == nil {
		return
	}
	g.subs--
	delete(g.allSubs, sub)
	for _, key := range sub.keys {
		g.keySubs[key] = without(g.keySubs[key], sub)
		if len(g.keySubs[key]) == 0 {
			delete(g.keySubs, key)
		}
	}
	r.tidy(sub.v.model)
}

// detach removes everything v registered.
func (r *Reader) detach(v *View) {
	r.views--
	if l := r.logs[v.model]; l != nil {
		l.refs--
		if l.refs == 0 {
			// The log outlives its views by LogAge, so that the
			// subscribers of a watcher that restarts can resume.
			l.unviewed = r.config.Clock.Now()
		}
	}
	for sub := range v.subs {
		r.removeSubscription(sub)
	}
	if g := r.registries[v.model]; g != nil {
		for key, list := range g.watchers {
			kept := list[:0]
			for _, s := range list {
				if s.owner != v {
					kept = append(kept, s)
				}
			}
			if len(kept) == 0 {
				delete(g.watchers, key)
			} else {
				g.watchers[key] = kept
			}
		}
	}
	for ch, s := range v.senders {
		close(s.quit)
		delete(v.senders, ch)
	}
	r.tidy(v.model)
}

// states returns the current state of sub's keys.
func (r *Reader) states(sub *Subscription) []Change {
	if !sub.all {
		out := make([]Change, 0, len(sub.keys))
		for _, key := range sub.keys {
			out = append(out, Change{Key: key, Alive: r.view.lookup(sub.v.model, key)})
		}
		return out
	}
	m := r.view.models[sub.v.model]
	if m == nil {
		return nil
	}
	out := make([]Change, 0, len(m.all))
	for _, id := range m.all {
		out = append(out, Change{Key: r.view.keys[id], Alive: r.view.alive[id]})
	}
	return out
}

func (r *Reader) modelStats(model string) map[string]any {
	out := map[string]any{"model": model, "keys": 0, "alive": 0}
	if m := r.view.models[model]; m != nil {
		out["keys"], out["alive"] = len(m.all), m.alive
	}
	if g := r.registries[model]; g != nil {
		out["watched-keys"] = len(g.watchers)
		out["subscriptions"] = g.subs
	}
	if l := r.logs[model]; l != nil {
		out["log-entries"] = l.n
		out["log-bytes"] = l.bytes()
		out["log-position"] = l.position().String()
		out["log-oldest"] = Position{View: l.id, Seq: l.floor()}.String()
	}
	return out
}

// loadResult is what one load read.
type loadResult struct {
	at      time.Time
	slot    int64
	writers []writerBits
	stamps  writerAt
	beings  []schema.BeingsDoc
	fresh   map[string]fresh
	skipped []string // why documents were skipped, one per document
	err     error
	// beingsErr is why beings documents could not be read; the pings
	// were, so the load still counts.
	beingsErr error
	took      time.Duration
}

// writerAt is the newest clock stamp a writer put in its ping documents.
type writerAt map[string]int64

// fresh is the newest entries a writer carried in its ping documents.
type fresh struct {
	from    int
	entries schema.Entries
}

// startLoad starts a load in a goroutine of its own, so that requests are
// served while the database answers. It must only be called from the loop
// goroutine.
func (r *Reader) startLoad() {
	r.inFlight = true
	r.gen++
	r.curWaiters, r.nextWaiters = r.nextWaiters, nil
	known := r.view.known()
	now := r.config.Clock.Now()
	go func() {
		res := r.read(now, known)
		res.took = r.config.Clock.Now().Sub(now)
		r.results <- res
	}()
}

// read queries the ping documents of the current and previous slot, and
// the beings documents of writers with indexes beyond what known says.
// The ping read has a deadline of one SyncInterval (at least
// minReadTimeout); the beings read, which brings many keys at once after a
// writer starts, half a Period (at least as long).
func (r *Reader) read(now time.Time, known map[string]int) loadResult {
	ctx, cancel := catacomb.Call(&r.catacomb, max(r.config.SyncInterval, minReadTimeout))
	defer cancel()
	slot := schema.Slot(now, r.config.Period)
	res := loadResult{at: now, slot: slot}
	cur, err := r.pings.Find(ctx, bson.D{
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$gt", Value: slot - schema.ReadSlots}}},
	})
	if err != nil {
		res.err = errors.Annotate(err, "cannot read pings")
		return res
	}
	defer cur.Close(context.WithoutCancel(ctx))
	byWriter := make(map[string]int)
	for cur.Next(ctx) {
		var doc schema.PingDoc
		if err := cur.Decode(&doc); err != nil {
			res.skipped = append(res.skipped, fmt.Sprintf("ping document %v: %v", cur.Current.Lookup(schema.FieldID), err))
			continue
		}
		if err := r.check(doc); err != nil {
			res.skipped = append(res.skipped, fmt.Sprintf("ping document %v: %v", cur.Current.Lookup(schema.FieldID), err))
			continue
		}
		res.addPing(doc, byWriter)
	}
	if err := cur.Err(); err != nil {
		res.err = errors.Annotate(err, "cannot read pings")
		return res
	}
	for i := range res.writers {
		res.writers[i].late = res.writers[i].slot < slot-1
	}
	need := res.unknownBeings(known)
	if len(need) == 0 {
		return res
	}
	ctx, cancel = catacomb.Call(&r.catacomb, max(r.config.Period/2, r.config.SyncInterval, minReadTimeout))
	defer cancel()
	// The pings are read: a failed beings read costs only the keys it
	// did not bring, which the next load fetches.
	if chunks := chunkCount(need); chunks <= maxPointReads {
		r.readChunks(ctx, need, &res)
	} else {
		r.scanChunks(ctx, need, &res)
	}
	return res
}

// maxPointReads is the most beings documents a load reads one by one,
// each by its _id: a new key or two, the usual case, costs a read or
// two that every server answers from its _id index (the embedded
// server has no other index: its scan of 100,000 keys' beings takes a
// second or more). Beyond it a load fetches them with one query.
const maxPointReads = 8

// chunkCount returns how many beings documents need names.
func chunkCount(need []beingsRange) int {
	n := 0
	for _, b := range need {
		n += b.last - b.first + 1
	}
	return n
}

// readChunks reads the beings documents need names, each by its _id, into
// res. It stops at the first error.
func (r *Reader) readChunks(ctx context.Context, need []beingsRange, res *loadResult) {
	for _, b := range need {
		for chunk := b.first; chunk <= b.last; chunk++ {
			raw, err := r.beings.FindOne(ctx, bson.D{{Key: schema.FieldID, Value: schema.BeingsID(b.writer, chunk)}}).Raw()
			if errors.Is(err, mongo.ErrNoDocuments) {
				// Not written yet, or pruned: the bits it would name
				// stay unknown, which holds their deaths.
				continue
			}
			if err != nil {
				res.beingsErr = errors.Annotatef(err, "cannot read beings after %d documents", len(res.beings))
				return
			}
			r.addBeings(raw, res, func(doc schema.BeingsDoc) error {
				if doc.Writer != b.writer || doc.Chunk != chunk {
					return errors.NotValidf("writer %q chunk %d under the _id of writer %q chunk %d", doc.Writer, doc.Chunk, b.writer, chunk)
				}
				return nil
			})
		}
	}
}

// scanChunks reads the beings documents need names with one query into
// res.
func (r *Reader) scanChunks(ctx context.Context, need []beingsRange, res *loadResult) {
	or := make(bson.A, len(need))
	for i, b := range need {
		or[i] = bson.D{
			{Key: schema.FieldWriter, Value: b.writer},
			{Key: schema.FieldChunk, Value: bson.D{{Key: "$gte", Value: b.first}, {Key: "$lte", Value: b.last}}},
		}
	}
	cur, err := r.beings.Find(ctx, bson.D{{Key: "$or", Value: or}},
		options.Find().SetSort(bson.D{{Key: schema.FieldWriter, Value: 1}, {Key: schema.FieldChunk, Value: 1}}))
	if err != nil {
		res.beingsErr = errors.Annotate(err, "cannot read beings")
		return
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		r.addBeings(cur.Current, res, nil)
	}
	if err := cur.Err(); err != nil {
		res.beingsErr = errors.Annotatef(err, "cannot read beings after %d documents", len(res.beings))
	}
}

// addBeings decodes and validates one beings document, with check if it
// is not nil, and adds it to res, or records it as skipped.
func (r *Reader) addBeings(raw bson.Raw, res *loadResult, check func(schema.BeingsDoc) error) {
	var doc schema.BeingsDoc
	err := bson.Unmarshal(raw, &doc)
	if err == nil {
		err = doc.Validate()
	}
	if err == nil && check != nil {
		err = check(doc)
	}
	if err != nil {
		res.skipped = append(res.skipped, fmt.Sprintf("beings document %v: %v", raw.Lookup(schema.FieldID), err))
		return
	}
	res.beings = append(res.beings, doc)
}

// check returns why doc must not be applied, or nil.
func (r *Reader) check(doc schema.PingDoc) error {
	if err := doc.Validate(); err != nil {
		return errors.Trace(err)
	}
	if doc.Period != int64(r.config.Period) {
		return errors.Errorf("written with period %v, this reader's is %v", time.Duration(doc.Period), r.config.Period)
	}
	return nil
}

// addPing adds one valid ping document to res.
// Of a writer's documents it keeps the latest slot's and the one before
// it, whatever the reader's own slot: a writer is judged by its own
// latest two slots.
func (res *loadResult) addPing(doc schema.PingDoc, byWriter map[string]int) {
	i, ok := byWriter[doc.Writer]
	if !ok {
		i = len(res.writers)
		byWriter[doc.Writer] = i
		res.writers = append(res.writers, writerBits{writer: doc.Writer, slot: doc.Slot - 2})
	}
	wb := &res.writers[i]
	if res.stamps == nil {
		res.stamps = make(writerAt)
	}
	res.stamps[doc.Writer] = max(res.stamps[doc.Writer], doc.At)
	if f, ok := res.fresh[doc.Writer]; doc.Fresh.Len() > 0 && (!ok || doc.FreshFrom+doc.Fresh.Len() > f.from+f.entries.Len()) {
		if res.fresh == nil {
			res.fresh = make(map[string]fresh)
		}
		res.fresh[doc.Writer] = fresh{from: doc.FreshFrom, entries: doc.Fresh}
	}
	alive, dead := schema.DecodeBits(nil, doc.Alive), schema.DecodeBits(nil, doc.Dead)
	switch {
	case doc.Slot > wb.slot:
		if doc.Slot == wb.slot+1 {
			wb.alivePrev, wb.deadPrev = wb.aliveCur, wb.deadCur
		} else {
			wb.alivePrev, wb.deadPrev = nil, nil
		}
		wb.aliveCur, wb.deadCur, wb.slot = alive, dead, doc.Slot
	case doc.Slot == wb.slot-1:
		wb.alivePrev, wb.deadPrev = alive, dead
	}
}

// beingsRange names the beings documents of one writer's chunks first
// to last.
type beingsRange struct {
	writer      string
	first, last int
}

// unknownBeings returns the beings documents to read for writers whose
// bits go beyond the indexes the view knows (known) and the ping
// documents carry: from the first unknown index's chunk to the highest
// bit's.
func (res *loadResult) unknownBeings(known map[string]int) []beingsRange {
	var need []beingsRange
	for _, wb := range res.writers {
		n, ok := known[wb.writer]
		if !ok {
			n = 0
		}
		if f, carried := res.fresh[wb.writer]; carried && n >= 0 && f.from <= n {
			n = max(n, f.from+f.entries.Len())
		}
		top := highest(wb)
		if n >= 0 && top < n {
			continue
		}
		// Only the chunks from the first unknown index on: a writer's
		// chunks below that never change.
		first := 0
		if ok && n > 0 {
			first = n / schema.ChunkSize
		}
		need = append(need, beingsRange{writer: wb.writer, first: first, last: max(first, top/schema.ChunkSize)})
	}
	return need
}

// finishLoad applies a load, dispatches the changes and answers the
// callers that waited for it. It must only be called from the loop
// goroutine.
func (r *Reader) finishLoad(res loadResult) {
	var changes []change
	if res.err != nil {
		r.failed(res)
	} else {
		changes = r.applied(res)
	}
	r.reportSkipped(res.skipped)
	if res.beingsErr != nil {
		r.logf("%s: %v (the next load fetches the rest)", r, res.beingsErr)
	}
	// The changes go into the logs first, so that OnLoad sees what they
	// hold; subscribers are woken for them once they are published,
	// after OnLoad.
	now := res.at.Add(res.took)
	r.pruneLogs(now)
	for _, c := range changes {
		r.log(c.id, c.alive, now)
	}
	r.unlockLogs()
	alive, logEntries, logBytes := r.record(res)
	if r.config.OnLoad != nil {
		r.config.OnLoad(LoadStats{
			Took: res.took, Models: len(r.view.models), Writers: len(r.view.writer),
			Keys: len(r.view.keys), Alive: alive, Changes: len(changes), Skipped: len(res.skipped),
			Held: r.view.holding, Stalled: r.view.stalled,
			MaxSkew: r.maxSkew(), Skews: r.skews(), LogEntries: logEntries, LogBytes: logBytes, Err: res.err,
		})
	}
	r.touched = nil
	for _, c := range changes {
		r.dispatch(c.id, c.alive)
	}
	r.publishLogs()
	if r.justLoaded {
		r.justLoaded = false
		r.firstDispatch()
	}
	for _, waiter := range r.curWaiters {
		if waiter.reply != nil {
			waiter.reply <- syncResult{err: res.err, gen: r.gen, senders: touchedBy(r.touched, waiter.view)}
		}
	}
	r.curWaiters = nil
	for _, req := range r.pendingAlive {
		req.reply <- r.alive(req.model, req.key)
	}
	r.pendingAlive = nil
}

// touchedBy returns the senders of v among touched.
func touchedBy(touched []*sender, v *View) []*sender {
	if v == nil {
		return nil
	}
	var out []*sender
	for _, s := range touched {
		if s.owner == v {
			out = append(out, s)
		}
	}
	return out
}

// reportSkipped logs each skipped document once.
func (r *Reader) reportSkipped(skipped []string) {
	for _, why := range skipped {
		if !r.skipped[why] {
			r.skipped[why] = true
			r.logf("%s: skipping %s", r, why)
		}
	}
}

func (r *Reader) failed(res loadResult) {
	r.lastErr = res.err
	r.failing = true
	r.view.troubleBegins(res.at, r.config.Period, r.config.MaxStall)
	r.failures++
	r.logf("%s: %v (keeping the last view)", r, res.err)
}

// String returns a description of the reader for logs.
func (r *Reader) String() string {
	return "presence reader"
}

// applied applies a successful load to the view and returns the entities
// whose state changed, for finishLoad to dispatch. The slice is reused by
// the next load.
func (r *Reader) applied(res loadResult) []change {
	// A load that stalled (and those that failed before it) may have
	// kept the batchers from writing too: they get a Period from the end
	// of the first load that came back promptly or succeeded, not from
	// its start, to catch up before a quiet key counts as dead.
	if r.failing || res.took > r.stallAfter() {
		r.failing = false
		r.healthySince = res.at.Add(res.took)
		r.view.troubleBegins(res.at, r.config.Period, r.config.MaxStall)
		r.view.troubleEnds(r.healthySince)
	}
	r.lastErr = nil
	for _, doc := range res.beings {
		r.view.learn(doc.Writer, doc.Chunk*schema.ChunkSize, doc.Entries)
	}
	for writer, f := range res.fresh {
		r.view.learn(writer, f.from, f.entries)
	}
	r.measureClocks(res)
	hold := !r.healthySince.IsZero() && res.at.Before(r.healthySince.Add(r.config.Period))
	now := res.at.Add(res.took)
	wasStalled := r.view.stalled
	// Writers are aged by successful loads only: an outage of any
	// length must not make the reader forget a writer it will see
	// again, and then fetch all of its beings anew.
	r.okLoads++
	changes := r.view.apply(res.writers, r.okLoads, hold, now, r.config.Period, r.config.MaxStall)
	if r.view.stalled != wasStalled {
		if r.view.stalled {
			r.logf("%s: no writer is on time: suspecting the database, holding the keys of late writers for up to %v", r, r.config.MaxStall)
		} else {
			r.logf("%s: a writer is on time again", r)
		}
	}
	if r.view.unknown > 0 && r.config.Logger != nil {
		r.config.Logger.Debugf("%s: %d live indexes with no known key; fetching beings again", r, r.view.unknown)
	}
	if r.okLoads > forgetAfter {
		r.view.forget(r.okLoads-forgetAfter, now.Add(-max(r.config.MaxStall, r.config.Period)))
	}
	if !r.loaded {
		r.loaded = true
		r.justLoaded = true
		return nil
	}
	return changes
}

// measureClocks takes a skew sample from every writer whose stamp is new
// since the last load, and warns once per writer whose clock is more than
// a quarter of a Period away from the reader's: at half a Period its live
// keys would start to read dead. It must only be called from the loop
// goroutine.
func (r *Reader) measureClocks(res loadResult) {
	seen := res.at.Add(res.took)
	for writer, at := range res.stamps {
		wc := r.clocks[writer]
		if wc == nil {
			wc = &writerClock{}
			r.clocks[writer] = wc
		}
		if at <= wc.lastAt {
			continue
		}
		wc.lastAt = at
		wc.samples[wc.n%len(wc.samples)] = seen.Sub(time.Unix(0, at))
		wc.n++
		skew := wc.skew()
		if abs(skew) > r.config.Period/4 && !wc.warned {
			wc.warned = true
			r.logf("%s: writer %s's clock is about %v behind this reader's (negative: ahead); at half a Period (%v) its live keys would read dead",
				r, writer, skew.Round(time.Millisecond), r.config.Period/2)
		}
	}
	for writer := range r.clocks {
		if _, ok := r.view.writer[writer]; !ok {
			if _, now := res.stamps[writer]; !now {
				delete(r.clocks, writer)
			}
		}
	}
}

// maxSkew returns the largest clock skew measured against any writer.
func (r *Reader) maxSkew() time.Duration {
	var out time.Duration
	for _, wc := range r.clocks {
		if wc.n > 0 {
			out = max(out, abs(wc.skew()))
		}
	}
	return out
}

// skews returns the clock skew measured against each writer.
func (r *Reader) skews() map[string]time.Duration {
	out := make(map[string]time.Duration, len(r.clocks))
	for writer, wc := range r.clocks {
		if wc.n > 0 {
			out[writer] = wc.skew()
		}
	}
	return out
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// stallAfter is how long a load may take before the reader treats it as
// a stall of the database, after which it holds deaths as after an
// outage.
func (r *Reader) stallAfter() time.Duration {
	return min(r.config.Period/2, minReadTimeout)
}

// firstDispatch sends the initial states that waited for the first load.
func (r *Reader) firstDispatch() {
	for _, req := range r.newWatches {
		s := req.view.senders[req.ch]
		g := r.registries[req.view.model]
		if s != nil && g != nil && contains(g.watchers[req.key], s) {
			s.enqueue(req.key, r.view.lookup(req.view.model, req.key), r.gen, true)
			r.touch(s)
		}
	}
	r.newWatches = nil
	for _, req := range r.newSubs {
		r.snapshot(req)
	}
	r.newSubs = nil
}

// log adds one change, applied at now, to its model's change log, if the
// model is viewed. The log stays locked until unlockLogs, so that the
// changes of a load are appended under one lock.
func (r *Reader) log(id int32, alive bool, now time.Time) {
	l := r.logs[r.view.owner[id].uuid]
	if l == nil {
		return
	}
	if !l.locked {
		l.mu.Lock()
		l.locked = true
		if !l.added {
			l.added = true
			r.openLogs = append(r.openLogs, l)
		}
	}
	l.add(r.view.keys[id], alive, now)
}

// unlockLogs releases the logs that log locked; no lock is held while
// OnLoad runs.
func (r *Reader) unlockLogs() {
	for _, l := range r.openLogs {
		if l.locked {
			l.locked = false
			l.mu.Unlock()
		}
	}
}

// dispatch hands one change to every channel that wants it, and names
// the subscriptions to its key for publishLogs to wake. None of them can
// block.
func (r *Reader) dispatch(id int32, alive bool) {
	m := r.view.owner[id]
	g := r.registries[m.uuid]
	if g == nil {
		return
	}
	key := r.view.keys[id]
	for _, s := range g.watchers[key] {
		s.enqueue(key, alive, r.gen, false)
		r.touch(s)
	}
	for _, sub := range g.keySubs[key] {
		if sub.woken != r.gen {
			sub.woken = r.gen
			r.toWake = append(r.toWake, sub)
		}
	}
}

// publishLogs wakes the subscribers of the logs that log added to: those
// to every key through the log, and those that dispatch named one by
// one.
func (r *Reader) publishLogs() {
	for _, l := range r.openLogs {
		l.added = false
		l.publish()
	}
	clear(r.openLogs)
	r.openLogs = r.openLogs[:0]
	for _, sub := range r.toWake {
		sub.wake()
	}
	clear(r.toWake)
	r.toWake = r.toWake[:0]
}

// pruneLogs removes the changes older than LogAge from every log, and the
// logs that no view has used for LogAge, on the reader's load ticks: it
// sets no timer of its own.
func (r *Reader) pruneLogs(now time.Time) {
	cutoff := now.Add(-r.config.LogAge)
	for model, l := range r.logs {
		if l.refs == 0 && l.unviewed.Before(cutoff) {
			delete(r.logs, model)
			continue
		}
		if l.prunable(cutoff) {
			l.mu.Lock()
			l.prune(cutoff)
			l.mu.Unlock()
		}
	}
}

func (r *Reader) touch(s *sender) {
	if s.touched != r.gen {
		s.touched = r.gen
		r.touched = append(r.touched, s)
	}
}

// record updates what Report shows and returns how many keys are alive,
// and how many entries and bytes the change logs hold.
func (r *Reader) record(res loadResult) (alive, logEntries, logBytes int) {
	for _, m := range r.view.models {
		alive += m.alive
	}
	for _, l := range r.logs {
		logEntries += l.n
		logBytes += l.bytes()
	}
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	r.stats["loads"] = r.gen
	r.stats["models"] = len(r.view.models)
	r.stats["keys"] = len(r.view.keys)
	r.stats["alive"] = alive
	r.stats["writers"] = len(r.view.writer)
	r.stats["views"] = r.views
	r.stats["subscriptions"] = r.subCount
	r.stats["skipped-documents"] = len(r.skipped)
	r.stats["max-clock-skew"] = r.maxSkew().String()
	r.stats["failures"] = r.failures
	r.stats["held"] = r.view.holding
	r.stats["stalled"] = r.view.stalled
	r.stats["last-load"] = res.took.String()
	r.stats["log-entries"] = logEntries
	r.stats["log-bytes"] = logBytes
	if res.err != nil {
		r.stats["last-error"] = res.err.Error()
	} else {
		delete(r.stats, "last-error")
	}
	return alive, logEntries, logBytes
}

// validModel returns a NotValid error unless model names a model.
func validModel(model names.ModelTag) error {
	return errors.Trace(schema.ValidateModel(model))
}

func contains[T comparable](list []T, x T) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

func without[T comparable](list []T, x T) []T {
	out := list[:0]
	for _, y := range list {
		if y != x {
			out = append(out, y)
		}
	}
	return out
}
