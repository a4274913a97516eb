package presencereader

import (
	"context"
	"sync"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/ratelog"
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
	// LogEvery is how often the reader logs a line of one cause (one
	// format) at most: a database outage, a controller written with
	// another Period or a thousand bad documents cost one line each
	// LogEvery, which says how many it stands for.
	LogEvery = time.Minute

	// maxLogCauses is how many causes of lines the reader tells apart;
	// lines of others share one.
	maxLogCauses = 32
)

// Reader loads the presence of every model and feeds the Views made with
// NewView. Its methods are safe for concurrent use, and none of them
// blocks once the reader is dying.
type Reader struct {
	config   Config
	catacomb catacomb.Catacomb
	requests requests
	results  chan loadResult
	// wakes carries the news that a writer wrote, from the change stream
	// and the notices, and the push path's changes of state.
	wakes  chan struct{}
	push   *pushState
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
	// touched are the senders handed a change since the Sync callers
	// were last answered (see finishLoad), and answered counts those
	// answers.
	touched  []*sender
	answered uint64
	// round counts the dispatches of changes, a load's or hints' (see
	// applyHints): a sender or subscription is named once a round.
	round       uint64
	hintChanges []change              // the changes of state the latest hints made
	hintsTaken  int                   // the notices' changes taken, for Report
	logs        map[string]*changeLog // model -> its change log, while viewed
	openLogs    []*changeLog          // the logs a load added to
	toWake      []*Subscription       // the subscriptions a load's dispatch woke
	views       int
	subCount    int
	failures    int
	justLoaded  bool            // the first load was just applied; its states go out as initial ones
	skippedNow  int             // how many documents the last load skipped
	named       map[string]bool // the skipped documents a line has named, of the last load's
	lines       *ratelog.Limiter
	clocks      map[string]*writerClock
	// observed is the reader's observed time (see observe) when the
	// clock read observedRaw; lastLoadEnd is when, on it, the last load
	// ended.
	observed, observedRaw, lastLoadEnd time.Time
	// planned is how long after the last load ended the next was due
	// (see nextLoad).
	planned time.Duration
}

// New starts a Reader. It loads at once, and then when a notice comes and
// when time alone may change what it reports, or every SyncInterval
// while it cannot tail the notices (see nextLoad).
func New(config Config) (*Reader, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	config = config.withDefaults()
	r := &Reader{
		config:     config,
		requests:   newRequests(),
		results:    make(chan loadResult),
		wakes:      make(chan struct{}, 1),
		push:       &pushState{retry: make(chan struct{}, 1)},
		pings:      schema.Pings(config.Base),
		beings:     schema.Beings(config.Base),
		stats:      map[string]any{},
		view:       newView(),
		registries: make(map[string]*registry),
		logs:       make(map[string]*changeLog),
		lines:      ratelog.New(LogEvery, maxLogCauses),
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
	res, ok := reqSync{}.invoke(r, r.catacomb.Dying())
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

// deathErr returns the error the reader's methods answer with once it is
// dying: its own error, or ErrStopped.
func (r *Reader) deathErr() error {
	return catacomb.DeathError(&r.catacomb, ErrStopped)
}

// logf logs an error, if the reader has a Logger: one line per format
// at most every LogEvery, which says how many lines like it were held
// back since the last (LoadStats.LinesHeld counts them all). It reports
// whether the line was written.
func (r *Reader) logf(format string, args ...any) bool {
	if r.config.Logger == nil {
		return false
	}
	ok, held := r.lines.Allow(format, r.config.Clock.Now())
	if !ok {
		return false
	}
	if held > 0 {
		format += " (and %d more like it since)"
		args = append(args, held)
	}
	r.config.Logger.Errorf(format, args...)
	return true
}

// String returns a description of the reader for logs.
func (r *Reader) String() string {
	return "presence reader"
}

// loop serves the requests (see requests.go), one at a time, and starts
// a load when one is due (see nextLoad), on a wake, and when a caller
// asks for one; the loads run in goroutines of their own, one at a time.
func (r *Reader) loop() error {
	timer := r.config.Clock.NewTimer(r.config.SyncInterval)
	defer timer.Stop()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		r.watchChanges(r.catacomb.Context(context.Background()))
	}()
	tailing := make(chan struct{})
	go func() {
		defer close(tailing)
		if !r.config.NoPush {
			r.tailNotices(r.catacomb.Context(context.Background()))
		}
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
			<-tailing
			return r.catacomb.ErrDying()
		case req := <-r.requests.watch:
			r.addWatch(req)
		case req := <-r.requests.unwatch:
			r.removeWatch(req.view, req.key, req.ch)
		case req := <-r.requests.alive:
			r.answerAlive(req)
		case req := <-r.requests.sync:
			r.queueLoad(req)
		case req := <-r.requests.subscribe:
			r.addSubscription(req.sub)
		case req := <-r.requests.unsubscribe:
			r.removeSubscription(req.sub)
		case req := <-r.requests.attach:
			req.respond(r.attach(req.model))
		case req := <-r.requests.snapshot:
			r.snapshot(req)
		case req := <-r.requests.detach:
			r.detach(req.view)
			req.respond()
		case req := <-r.requests.modelStats:
			req.respond(r.modelStats(req.model))
		case <-r.wakes:
			r.applyHints()
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
			r.retryPush(res.at.Add(res.took))
			next := r.nextLoad(res)
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
