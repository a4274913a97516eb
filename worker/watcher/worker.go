// Package watcher reads the ping documents of one model and tells
// subscribers which keys are alive.
//
// A Watcher loads every SyncInterval with one query for the model's ping
// documents of the current and previous slot (plus, when it meets a writer
// or an index it does not know, one query for beings documents). A key is
// alive while any of its pingers is: an agent that reconnects through
// another controller does not flap dead.
//
// A failed or missing read is never a death. When a load fails the watcher
// keeps its last view, logs the error and tries again at the next sync; for
// one Period after it can read again it reports no death that was not
// recorded by Disconnect, so that batchers have time to write the pings
// they buffered.
//
// Delivery never blocks the watcher: every channel passed to Watch is fed
// by a goroutine of its own, and every Subscription is pulled by its
// reader; each holds at most one pending change per key.
package watcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/catacomb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	pcatacomb "github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// ErrStopped is returned by a Watcher's methods once it is stopping or
// stopped, unless it died with an error of its own.
const ErrStopped = errors.ConstError("presence watcher stopped")

// ErrNotLoaded is returned by Alive when the watcher has not yet managed a
// single load, so it knows nothing.
const ErrNotLoaded = errors.ConstError("presence not loaded yet")

// forgetAfter is how many loads a writer may be absent before the watcher
// forgets its keys' indexes.
const forgetAfter = 16

// Change is a key's new state.
type Change struct {
	Key   string
	Alive bool
}

// Logger is the logging a Watcher needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a Watcher needs.
type Config struct {
	// Base is the base presence collection. It must not be nil.
	Base *mongo.Collection

	// Model is the model whose keys are watched. It must be a valid
	// model tag.
	Model names.ModelTag

	// Clock gives the time. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// Period is the slot length, the same as the pingers'. Zero means
	// schema.DefaultPeriod; it must not be negative.
	Period time.Duration

	// SyncInterval is the time between loads. Zero means
	// schema.DefaultSyncInterval; it must not be negative.
	SyncInterval time.Duration

	// OnLoad, if not nil, is called after every load, once the view is
	// updated and before the changes are handed to subscribers, from the
	// watcher's goroutine, e.g. to feed metrics. It must return quickly.
	OnLoad func(LoadStats)
}

// LoadStats describes one load.
type LoadStats struct {
	// Took is how long the database took to answer, by the watcher's
	// clock.
	Took time.Duration
	// Keys is how many keys the watcher knows; Alive how many of them
	// it reports alive.
	Keys, Alive int
	// Changes is how many keys changed state.
	Changes int
	// Err is why the load failed, or nil.
	Err error
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if config.Base == nil {
		return errors.NotValidf("nil Base")
	}
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
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
	return nil
}

// Watcher tells subscribers which keys of a model are alive. Its methods
// are safe for concurrent use, and none of them blocks once the watcher is
// dying.
type Watcher struct {
	config   Config
	catacomb catacomb.Catacomb
	requests chan any
	results  chan loadResult
	pings    *mongo.Collection
	beings   *mongo.Collection

	senderWG sync.WaitGroup

	statsMu sync.Mutex
	stats   map[string]any

	// The fields below are owned by the loop goroutine.
	view         *view
	gen          uint64
	loaded       bool
	lastErr      error
	healthySince time.Time
	failing      bool
	inFlight     bool
	nextWaiters  []reqSync
	curWaiters   []reqSync
	pendingAlive []reqAlive
	senders      map[chan<- Change]*sender
	watchers     map[int32][]*sender
	keySubs      map[int32][]*Subscription
	allSubs      map[*Subscription]bool
	newSubs      []*Subscription
	newWatches   []reqWatch
	touched      []*sender
	subCount     int
	justLoaded   bool // the first load was just applied; its states go out as initial ones
}

// New starts a Watcher. It loads at once and then every SyncInterval.
func New(config Config) (*Watcher, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if config.Period == 0 {
		config.Period = schema.DefaultPeriod
	}
	if config.SyncInterval == 0 {
		config.SyncInterval = schema.DefaultSyncInterval
	}
	w := newWatcher(config)
	w.pings = schema.Pings(config.Base)
	w.beings = schema.Beings(config.Base)
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "presence watcher",
		Site: &w.catacomb,
		Work: w.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

func newWatcher(config Config) *Watcher {
	return &Watcher{
		config:   config,
		requests: make(chan any),
		results:  make(chan loadResult),
		stats:    map[string]any{},
		view:     newView(),
		senders:  make(map[chan<- Change]*sender),
		watchers: make(map[int32][]*sender),
		keySubs:  make(map[int32][]*Subscription),
		allSubs:  make(map[*Subscription]bool),
	}
}

// NewDeadWatcher returns a Watcher that is already dead with err: Alive
// and Next fail with it, Watch sends nothing. It stands in for a watcher
// that could not be made.
func NewDeadWatcher(err error) *Watcher {
	w := newWatcher(Config{})
	_ = catacomb.Invoke(catacomb.Plan{
		Name: "dead presence watcher",
		Site: &w.catacomb,
		Work: func() error { return err },
	})
	_ = w.catacomb.Wait()
	return w
}

// String returns a description of the watcher for logs.
func (w *Watcher) String() string {
	return fmt.Sprintf("presence watcher for %s", w.config.Model.Id())
}

// Kill is part of the worker.Worker interface.
func (w *Watcher) Kill() {
	w.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (w *Watcher) Wait() error {
	return w.catacomb.Wait()
}

// Stop kills the watcher and waits for it to stop.
func (w *Watcher) Stop() error {
	w.Kill()
	return w.Wait()
}

// Dead returns a channel that is closed once the watcher has stopped.
func (w *Watcher) Dead() <-chan struct{} {
	return w.catacomb.Dead()
}

// Err returns the error the watcher stopped with, nil while it runs or if
// it stopped cleanly.
func (w *Watcher) Err() error {
	select {
	case <-w.catacomb.Dead():
		return w.catacomb.Wait()
	default:
		return nil
	}
}

type reqWatch struct {
	key string
	ch  chan<- Change
}

type reqUnwatch struct {
	key string
	ch  chan<- Change
}

type reqAlive struct {
	key   string
	reply chan aliveResult
}

type aliveResult struct {
	alive bool
	err   error
}

// reqSync asks for a load. reply, when not nil, gets the outcome once the
// load has been applied.
type reqSync struct {
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

// send hands req to the loop, or gives up once the watcher is dying.
func (w *Watcher) send(req any) bool {
	select {
	case w.requests <- req:
		return true
	case <-w.catacomb.Dying():
		return false
	}
}

// Watch starts reporting key's state on ch: the current state first (once
// the watcher has loaded), then every change. Delivery runs in a goroutine
// per channel, so an unread ch delays nobody else; while ch is unread at
// most one change per key waits, the latest. Watching a key twice on one
// channel sends the current state again. An invalid key is logged and
// ignored; so is a nil channel.
func (w *Watcher) Watch(key string, ch chan<- Change) {
	if err := schema.ValidateKey(key); err != nil || ch == nil {
		w.logf("ignoring Watch(%q, %v): invalid key or nil channel", key, ch)
		return
	}
	w.send(reqWatch{key: key, ch: ch})
}

// Unwatch stops reporting key on ch. A change for key still waiting for
// ch is dropped.
func (w *Watcher) Unwatch(key string, ch chan<- Change) {
	w.send(reqUnwatch{key: key, ch: ch})
}

// Alive reports whether key is alive in the watcher's current view. Before
// the first load it waits for it; if that load fails it returns
// ErrNotLoaded with the cause. It fails with ErrStopped once the watcher
// stops.
func (w *Watcher) Alive(key string) (bool, error) {
	if err := schema.ValidateKey(key); err != nil {
		return false, errors.Trace(err)
	}
	reply := make(chan aliveResult, 1)
	if !w.send(reqAlive{key: key, reply: reply}) {
		return false, w.deathErr()
	}
	select {
	case r := <-reply:
		return r.alive, r.err
	case <-w.catacomb.Dying():
		return false, w.deathErr()
	}
}

// Sync loads now and blocks until the changes found have been delivered to
// every channel passed to Watch (or superseded by later ones). A channel
// that is never read therefore makes Sync wait, though never the watcher;
// use Refresh to wait for the load alone. It returns at once if the watcher
// is stopping.
func (w *Watcher) Sync() {
	res, ok := w.load()
	if !ok {
		return
	}
	for _, s := range res.senders {
		if !s.waitDelivered(res.gen, w.catacomb.Dying()) {
			return
		}
	}
}

// StartSync asks for a load now and returns without waiting for it.
func (w *Watcher) StartSync() {
	w.send(reqSync{})
}

// Refresh loads now and returns once the view reflects the load, with the
// load's error; it does not wait for deliveries. It fails with ErrStopped
// once the watcher stops.
func (w *Watcher) Refresh() error {
	res, ok := w.load()
	if !ok {
		return w.deathErr()
	}
	return res.err
}

func (w *Watcher) load() (syncResult, bool) {
	reply := make(chan syncResult, 1)
	if !w.send(reqSync{reply: reply}) {
		return syncResult{}, false
	}
	select {
	case res := <-reply:
		return res, true
	case <-w.catacomb.Dying():
		return syncResult{}, false
	}
}

// Subscribe returns a Subscription to keys, or to every key of the model
// when none is given. See Subscription. On a dead watcher, or with an
// invalid key, the subscription's Next fails with the reason.
func (w *Watcher) Subscribe(keys ...string) *Subscription {
	sub := newSubscription(w, append([]string(nil), keys...))
	for _, key := range keys {
		if err := schema.ValidateKey(key); err != nil {
			sub.err = errors.Trace(err)
			return sub
		}
	}
	if !w.send(reqSubscribe{sub: sub}) {
		sub.err = w.deathErr()
	}
	return sub
}

// Report is part of the dependency.Reporter interface.
func (w *Watcher) Report() map[string]any {
	w.statsMu.Lock()
	defer w.statsMu.Unlock()
	out := make(map[string]any, len(w.stats))
	for k, v := range w.stats {
		out[k] = v
	}
	return out
}

func (w *Watcher) deathErr() error {
	return pcatacomb.DeathError(&w.catacomb, ErrStopped)
}

func (w *Watcher) logf(format string, args ...any) {
	if w.config.Logger != nil {
		w.config.Logger.Errorf(format, args...)
	}
}

func (w *Watcher) loop() error {
	defer w.stopSenders()
	timer := w.config.Clock.NewTimer(w.config.SyncInterval)
	defer timer.Stop()
	w.startLoad()
	fired := false
	for {
		select {
		case <-w.catacomb.Dying():
			if w.inFlight {
				<-w.results
			}
			return w.catacomb.ErrDying()
		case req := <-w.requests:
			w.handle(req)
		case res := <-w.results:
			w.inFlight = false
			w.finishLoad(res)
			if len(w.nextWaiters) > 0 {
				w.startLoad()
			}
			// Loads start every SyncInterval: the read's own time
			// does not stretch the interval.
			next := max(w.config.SyncInterval-res.took, 0)
			if fired {
				timer.Reset(next)
				fired = false
			} else {
				pcatacomb.Rearm(timer, next)
			}
		case <-timer.Chan():
			// The timer is set again once the load is done, so that
			// loads never overlap.
			fired = true
			if !w.inFlight {
				w.startLoad()
			}
		}
	}
}

// handle serves one request. It must only be called from the loop
// goroutine.
func (w *Watcher) handle(req any) {
	switch req := req.(type) {
	case reqWatch:
		w.addWatch(req)
	case reqUnwatch:
		w.removeWatch(req)
	case reqAlive:
		if !w.loaded && w.lastErr == nil {
			w.pendingAlive = append(w.pendingAlive, req)
			return
		}
		req.reply <- w.alive(req.key)
	case reqSync:
		w.nextWaiters = append(w.nextWaiters, req)
		if !w.inFlight {
			w.startLoad()
		}
	case reqSubscribe:
		w.addSubscription(req.sub)
	case reqUnsubscribe:
		w.removeSubscription(req.sub)
	}
}

func (w *Watcher) alive(key string) aliveResult {
	if !w.loaded {
		return aliveResult{err: fmt.Errorf("%w: %w", ErrNotLoaded, w.lastErr)}
	}
	id, ok := w.view.ids[key]
	return aliveResult{alive: ok && w.view.alive[id]}
}

func (w *Watcher) addWatch(req reqWatch) {
	s := w.senders[req.ch]
	if s == nil {
		s = newSender(req.ch)
		w.senders[req.ch] = s
		w.senderWG.Add(1)
		go func() {
			defer w.senderWG.Done()
			s.run(w.catacomb.Dying())
		}()
	}
	id := w.view.id(req.key)
	if !contains(w.watchers[id], s) {
		w.watchers[id] = append(w.watchers[id], s)
		s.refs++
	}
	if !w.loaded {
		w.newWatches = append(w.newWatches, req)
		return
	}
	s.enqueue(req.key, w.view.alive[id], w.gen, true)
}

func (w *Watcher) removeWatch(req reqUnwatch) {
	s := w.senders[req.ch]
	id, ok := w.view.ids[req.key]
	if s == nil || !ok || !contains(w.watchers[id], s) {
		return
	}
	w.watchers[id] = without(w.watchers[id], s)
	if len(w.watchers[id]) == 0 {
		delete(w.watchers, id)
	}
	s.drop(req.key)
	s.refs--
	if s.refs == 0 {
		close(s.quit)
		delete(w.senders, req.ch)
	}
}

func (w *Watcher) addSubscription(sub *Subscription) {
	w.subCount++
	if sub.all {
		w.allSubs[sub] = true
	} else {
		for _, key := range sub.keys {
			id := w.view.id(key)
			if !contains(w.keySubs[id], sub) {
				w.keySubs[id] = append(w.keySubs[id], sub)
			}
		}
	}
	if !w.loaded {
		w.newSubs = append(w.newSubs, sub)
		return
	}
	sub.snapshot(w.states(sub))
}

func (w *Watcher) removeSubscription(sub *Subscription) {
	w.subCount--
	delete(w.allSubs, sub)
	for _, key := range sub.keys {
		if id, ok := w.view.ids[key]; ok {
			w.keySubs[id] = without(w.keySubs[id], sub)
			if len(w.keySubs[id]) == 0 {
				delete(w.keySubs, id)
			}
		}
	}
}

// states returns the current state of sub's keys.
func (w *Watcher) states(sub *Subscription) []Change {
	if !sub.all {
		out := make([]Change, 0, len(sub.keys))
		for _, key := range sub.keys {
			out = append(out, Change{Key: key, Alive: w.view.alive[w.view.ids[key]]})
		}
		return out
	}
	out := make([]Change, 0, len(w.view.keys))
	for id, key := range w.view.keys {
		out = append(out, Change{Key: key, Alive: w.view.alive[id]})
	}
	return out
}

// loadResult is what one load read.
type loadResult struct {
	at      time.Time
	slot    int64
	writers []writerBits
	beings  []schema.BeingsDoc
	fresh   map[string]fresh
	err     error
	took    time.Duration
}

// fresh is the newest keys a writer carried in its ping documents.
type fresh struct {
	from int
	keys []string
}

// startLoad starts a load in a goroutine of its own, so that requests are
// served while the database answers. It must only be called from the loop
// goroutine.
func (w *Watcher) startLoad() {
	w.inFlight = true
	w.gen++
	w.curWaiters, w.nextWaiters = w.nextWaiters, nil
	known := w.view.known()
	now := w.config.Clock.Now()
	ctx := w.catacomb.Context(context.Background())
	go func() {
		res := w.read(ctx, now, known)
		res.took = w.config.Clock.Now().Sub(now)
		w.results <- res
	}()
}

// read queries the ping documents of the current and previous slot, and
// the beings documents of writers with indexes beyond what known says.
func (w *Watcher) read(ctx context.Context, now time.Time, known map[string]int) loadResult {
	uuid := w.config.Model.Id()
	slot := schema.Slot(now, w.config.Period)
	res := loadResult{at: now, slot: slot}
	cur, err := w.pings.Find(ctx, bson.D{
		{Key: schema.FieldModel, Value: uuid},
		{Key: schema.FieldSlot, Value: bson.D{{Key: "$in", Value: bson.A{slot - 1, slot}}}},
	})
	if err != nil {
		res.err = errors.Annotate(err, "cannot read pings")
		return res
	}
	var docs []schema.PingDoc
	if err := cur.All(ctx, &docs); err != nil {
		res.err = errors.Annotate(err, "cannot read pings")
		return res
	}
	byWriter := make(map[string]int)
	var need bson.A
	for _, doc := range docs {
		i, ok := byWriter[doc.Writer]
		if !ok {
			i = len(res.writers)
			byWriter[doc.Writer] = i
			res.writers = append(res.writers, writerBits{writer: doc.Writer})
		}
		wb := &res.writers[i]
		if f, ok := res.fresh[doc.Writer]; len(doc.Fresh) > 0 && (!ok || doc.FreshFrom+len(doc.Fresh) > f.from+len(f.keys)) {
			if res.fresh == nil {
				res.fresh = make(map[string]fresh)
			}
			res.fresh[doc.Writer] = fresh{from: doc.FreshFrom, keys: doc.Fresh}
		}
		if doc.Slot == slot {
			wb.aliveCur = schema.DecodeBits(nil, doc.Alive)
			wb.deadCur = schema.DecodeBits(nil, doc.Dead)
		} else {
			wb.alivePrev = schema.DecodeBits(nil, doc.Alive)
			wb.deadPrev = schema.DecodeBits(nil, doc.Dead)
		}
	}
	for _, wb := range res.writers {
		n, ok := known[wb.writer]
		if !ok {
			n = 0
		}
		if f, carried := res.fresh[wb.writer]; carried && n >= 0 && f.from <= n {
			n = max(n, f.from+len(f.keys))
		}
		if n >= 0 && highest(wb) < n {
			continue
		}
		// Only the chunks from the first unknown index on: a writer's
		// chunks below that never change.
		first := 0
		if ok && n > 0 {
			first = n / schema.ChunkSize
		}
		need = append(need, bson.D{
			{Key: schema.FieldWriter, Value: wb.writer},
			{Key: schema.FieldChunk, Value: bson.D{{Key: "$gte", Value: first}}},
		})
	}
	if len(need) == 0 {
		return res
	}
	cur, err = w.beings.Find(ctx, bson.D{
		{Key: schema.FieldModel, Value: uuid},
		{Key: "$or", Value: need},
	})
	if err != nil {
		res.err = errors.Annotate(err, "cannot read beings")
		return res
	}
	if err := cur.All(ctx, &res.beings); err != nil {
		res.err = errors.Annotate(err, "cannot read beings")
	}
	return res
}

// highest returns the highest index set in any of wb's bitmaps, or -1.
func highest(wb writerBits) int {
	top := -1
	for _, words := range [][]uint64{wb.aliveCur, wb.deadCur, wb.alivePrev, wb.deadPrev} {
		for i := len(words) - 1; i >= 0; i-- {
			if words[i] != 0 {
				top = max(top, i*64+63-leadingZeros(words[i]))
				break
			}
		}
	}
	return top
}

// finishLoad applies a load, dispatches the changes and answers the
// callers that waited for it. It must only be called from the loop
// goroutine.
func (w *Watcher) finishLoad(res loadResult) {
	var changes []change
	if res.err != nil {
		w.failed(res)
	} else {
		changes = w.applied(res)
	}
	alive := w.record(res)
	if w.config.OnLoad != nil {
		w.config.OnLoad(LoadStats{Took: res.took, Keys: len(w.view.keys), Alive: alive, Changes: len(changes), Err: res.err})
	}
	w.touched = nil
	for _, c := range changes {
		w.dispatch(c.key, c.alive)
	}
	if w.justLoaded {
		w.justLoaded = false
		w.firstDispatch()
	}
	for _, waiter := range w.curWaiters {
		if waiter.reply != nil {
			waiter.reply <- syncResult{err: res.err, gen: w.gen, senders: w.touched}
		}
	}
	w.curWaiters = nil
	for _, req := range w.pendingAlive {
		req.reply <- w.alive(req.key)
	}
	w.pendingAlive = nil
}

func (w *Watcher) failed(res loadResult) {
	w.lastErr = res.err
	w.failing = true
	w.touched = nil
	w.logf("%s: %v (keeping the last view)", w, res.err)
}

// applied applies a successful load to the view and returns the keys
// whose state changed, for finishLoad to dispatch. The slice is reused by
// the next load.
func (w *Watcher) applied(res loadResult) []change {
	if w.failing {
		w.failing = false
		w.healthySince = res.at
	}
	w.lastErr = nil
	for _, doc := range res.beings {
		w.view.learn(doc.Writer, doc.Chunk*schema.ChunkSize, doc.Keys)
	}
	for writer, f := range res.fresh {
		w.view.learn(writer, f.from, f.keys)
	}
	hold := !w.healthySince.IsZero() && res.at.Sub(w.healthySince) < w.config.Period
	changes := w.view.apply(res.writers, w.gen, hold)
	if w.view.unknown > 0 && w.config.Logger != nil {
		w.config.Logger.Debugf("%s: %d live indexes with no known key; fetching beings again", w, w.view.unknown)
	}
	if w.gen > forgetAfter {
		w.view.forget(w.gen - forgetAfter)
	}
	if !w.loaded {
		w.loaded = true
		w.justLoaded = true
		return nil
	}
	return changes
}

// firstDispatch sends the initial states that waited for the first load.
func (w *Watcher) firstDispatch() {
	for _, req := range w.newWatches {
		if s := w.senders[req.ch]; s != nil {
			id := w.view.ids[req.key]
			if contains(w.watchers[id], s) {
				s.enqueue(req.key, w.view.alive[id], w.gen, true)
				w.touch(s)
			}
		}
	}
	w.newWatches = nil
	for _, sub := range w.newSubs {
		sub.snapshot(w.states(sub))
	}
	w.newSubs = nil
}

// dispatch hands one change to every channel and subscription that wants
// it; none of them can block.
func (w *Watcher) dispatch(id int32, alive bool) {
	key := w.view.keys[id]
	for _, s := range w.watchers[id] {
		s.enqueue(key, alive, w.gen, false)
		w.touch(s)
	}
	for _, sub := range w.keySubs[id] {
		sub.push(key, alive)
	}
	for sub := range w.allSubs {
		sub.push(key, alive)
	}
}

func (w *Watcher) touch(s *sender) {
	if s.touched != w.gen {
		s.touched = w.gen
		w.touched = append(w.touched, s)
	}
}

// record updates what Report shows and returns how many keys are alive.
func (w *Watcher) record(res loadResult) int {
	alive := 0
	for _, a := range w.view.alive {
		if a {
			alive++
		}
	}
	w.statsMu.Lock()
	defer w.statsMu.Unlock()
	w.stats["model"] = w.config.Model.Id()
	w.stats["loads"] = w.gen
	w.stats["keys"] = len(w.view.keys)
	w.stats["alive"] = alive
	w.stats["writers"] = len(w.view.writer)
	w.stats["channels"] = len(w.senders)
	w.stats["subscriptions"] = w.subCount
	w.stats["last-load"] = res.took.String()
	if res.err != nil {
		w.stats["last-error"] = res.err.Error()
		w.stats["failures"] = toInt(w.stats["failures"]) + 1
	} else {
		delete(w.stats, "last-error")
	}
	return alive
}

func (w *Watcher) stopSenders() {
	w.senderWG.Wait()
}

func toInt(v any) int {
	n, _ := v.(int)
	return n
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
