// Package watcher is one model's presence watcher: it tells subscribers
// which of the model's keys are alive.
//
// A Watcher is a view over a presence reader (package
// worker/presencereader), which loads every model of the controller with
// one query per sync: a watcher sends no query of its own, so a controller
// with a thousand models reads the database as often as one with a single
// model. Config.Reader names the controller's reader; a Watcher made with
// Config.Base instead runs a private reader of its own, which suits a
// process that watches one model.
//
// A failed or missing read is never a death (see presencereader). Delivery
// never blocks the reader: every channel passed to Watch is fed by a
// goroutine of its own and holds at most one pending change per key, and
// every Subscription is pulled by its reader from the model's bounded
// change log, so a subscriber can resume after the position of the last
// change it took (see SubscribeConfig.After).
package watcher

import (
	"context"

	"fmt"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/presencereader"
)

// Sentinel errors, by when they occur.
const (
	// ErrStopped is returned by a Watcher's methods once it is stopping
	// or stopped, unless it died with an error of its own.
	ErrStopped = errors.ConstError("presence watcher stopped")

	// ErrNotLoaded is returned by Alive when the reader has not yet
	// managed a single load, so it knows nothing.
	ErrNotLoaded = presencereader.ErrNotLoaded

	// ErrReaderStopped is what a Watcher dies with when its shared
	// reader stops first; the engine restarts both.
	ErrReaderStopped = errors.ConstError("presence reader stopped")
)

// Change is a key's new state.
type Change = presencereader.Change

// Subscription is a pull-based view of some keys (or all keys) of one
// model: the first Next returns a snapshot, later ones the changes since
// the previous call, at most one per key. *presencereader.Subscription
// implements it, and so do the fakes in agenttest/fakes.
type Subscription interface {
	// Next returns the snapshot on its first call and the changes since
	// the previous call afterwards, blocking until there is something to
	// return. It fails with ctx's error, with ErrSubscriptionClosed
	// after Close, and with the watcher's error once it stops.
	Next(ctx context.Context) ([]Change, error)

	// Close ends the subscription; it is safe to call more than once.
	Close()
}

// ResumableSubscription is a Subscription that also says where each
// change is in the model's change log, so that a consumer that goes away
// can resume after the last position it saw (SubscribeConfig.After) and
// get exactly what it missed, or an explicit reset. Watcher.SubscribeWith
// returns one; *presencereader.Subscription implements it.
type ResumableSubscription interface {
	Subscription

	// NextBatch is Next with positions: the first call returns the
	// snapshot (or, resuming, the changes after the position, or a
	// reset and a snapshot), later calls the changes since.
	NextBatch(ctx context.Context) (Batch, error)
}

// PresenceWatcher is what consumers of a model's presence use: the
// watcher manifold's Output fills a *PresenceWatcher (as well as a
// **Watcher, or a pointer to any narrower interface of the consumer's
// own). *Watcher implements it; agenttest/fakes has a fake.
type PresenceWatcher interface {
	// Watch reports key's state on ch: the current state first, then
	// every change. An invalid key or a nil channel is ignored (and
	// logged, if the watcher has a logger): Watch returns nothing, so
	// check a key with Alive first when it comes from outside.
	Watch(key string, ch chan<- Change)

	// Unwatch stops reporting key on ch.
	Unwatch(key string, ch chan<- Change)

	// Alive reports whether key is alive in the current view.
	Alive(key string) (bool, error)

	// Subscribe returns a pull-based Subscription to keys, or to every
	// key of the model when none is given.
	Subscribe(keys ...string) Subscription

	// Sync loads now and blocks until the changes found have been
	// delivered to every channel passed to Watch.
	Sync()

	// StartSync loads now without waiting.
	StartSync()

	// Refresh loads now and returns once the view reflects the load,
	// with the load's error.
	Refresh() error
}

var _ PresenceWatcher = (*Watcher)(nil)

// ErrSubscriptionClosed is returned by Subscription.Next after Close.
const ErrSubscriptionClosed = presencereader.ErrSubscriptionClosed

// SubscribeConfig says what a Subscription follows, from where, and how;
// see presencereader.SubscribeConfig.
type SubscribeConfig = presencereader.SubscribeConfig

// Position is a place in a model's change log, to resume a subscription
// after; see presencereader.Position.
type Position = presencereader.Position

// Batch is one answer of a Subscription; see presencereader.Batch.
type Batch = presencereader.Batch

// Event is a Change at its Position; see presencereader.Event.
type Event = presencereader.Event

// ParsePosition reads a Position written by Position.String; see
// presencereader.ParsePosition.
func ParsePosition(s string) (Position, error) {
	p, err := presencereader.ParsePosition(s)
	return p, errors.Trace(err)
}

// LoadStats describes one load of a private reader.
type LoadStats = presencereader.LoadStats

// Logger is the logging a Watcher needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// Config holds what a Watcher needs: a Model and either a Reader (the
// controller's) or a Base with a Clock (for a private reader).
type Config struct {
	// Reader is the controller's presence reader, shared by every
	// model's watcher. When it is nil, Base and Clock must be set and
	// the watcher runs a private reader.
	Reader *presencereader.Reader

	// Model is the model whose keys are watched. It must be a valid
	// model tag.
	Model names.ModelTag

	// Logger is optional; nil means silent.
	Logger Logger

	// Base is the base presence collection of a private reader. It must
	// be nil when Reader is set.
	Base *mongo.Collection

	// Clock gives a private reader the time. It must not be nil when
	// Reader is nil.
	Clock clock.Clock

	// Period and SyncInterval configure a private reader (see
	// presencereader.Config); zero means the default. Neither may be
	// negative.
	Period, SyncInterval time.Duration

	// LogLength and LogAge bound a private reader's change log, from
	// which subscriptions resume (see presencereader.Config); zero means
	// the default. Neither may be negative.
	LogLength int
	LogAge    time.Duration

	// OnLoad, if not nil, is called after every load of a private
	// reader, e.g. to feed metrics. It must return quickly.
	OnLoad func(LoadStats)

	// NoPush turns a private reader's push path off: it then loads
	// every SyncInterval and when asked (see presencereader.Config).
	NoPush bool
}

// Validate returns a NotValid error naming the first bad field.
func (config Config) Validate() error {
	if err := schema.ValidateModel(config.Model); err != nil {
		return errors.Trace(err)
	}
	if config.Reader != nil {
		if config.Base != nil {
			return errors.NotValidf("both Reader and Base")
		}
		return nil
	}
	if config.Base == nil {
		return errors.NotValidf("nil Reader and nil Base")
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
	if config.LogLength < 0 {
		return errors.NotValidf("negative LogLength")
	}
	if config.LogAge < 0 {
		return errors.NotValidf("negative LogAge")
	}
	return nil
}

// Watcher tells subscribers which keys of one model are alive. Its
// methods are safe for concurrent use, and none of them blocks once the
// watcher is dying.
type Watcher struct {
	config   Config
	catacomb catacomb.Catacomb
	reader   *presencereader.Reader
	view     *presencereader.View
	ready    chan struct{}
}

// New starts a Watcher of config.Model over config.Reader, or over a
// private reader when config.Reader is nil.
func New(config Config) (*Watcher, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	w := &Watcher{config: config, reader: config.Reader, ready: make(chan struct{})}
	var owned []worker.Worker
	if w.reader == nil {
		r, err := presencereader.New(presencereader.Config{
			Base:         config.Base,
			Clock:        config.Clock,
			Logger:       config.Logger,
			Period:       config.Period,
			SyncInterval: config.SyncInterval,
			LogLength:    config.LogLength,
			LogAge:       config.LogAge,
			OnLoad:       config.OnLoad,
			NoPush:       config.NoPush,
		})
		if err != nil {
			return nil, errors.Trace(err)
		}
		w.reader = r
		owned = append(owned, r)
	}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "presence watcher",
		Site: &w.catacomb,
		Work: w.loop,
		Init: owned,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	view, err := w.reader.NewView(config.Model, w.catacomb.Dying(), w.deathErr)
	if err != nil {
		w.catacomb.Kill(err)
		close(w.ready)
		return nil, errors.Annotate(w.catacomb.Wait(), "cannot watch the model")
	}
	w.view = view
	close(w.ready)
	return w, nil
}

// NewDeadWatcher returns a Watcher that is already dead with err: Alive
// and Next fail with it, Watch sends nothing. It stands in for a watcher
// that could not be made.
func NewDeadWatcher(err error) *Watcher {
	w := &Watcher{ready: make(chan struct{})}
	close(w.ready)
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

// Watch starts reporting key's state on ch: the current state first (once
// the reader has loaded), then every change. The first value is what the
// database said at the last load: for a pinger that has just started and
// whose first ping is not written yet it is dead, then alive a flush and
// a sync later; get the model set's agent (presence.AgentName) first to
// never see that for the agent's own key. Delivery runs in a goroutine
// per channel, so an unread ch delays nobody else; while ch is unread at
// most one change per key waits, the latest. Watching a key twice on one
// channel sends the current state again. An invalid key or a nil channel
// is logged and ignored.
func (w *Watcher) Watch(key string, ch chan<- Change) {
	if w.view == nil {
		return
	}
	if err := w.view.Watch(key, ch); err != nil && errors.Is(err, errors.NotValid) {
		w.logf("ignoring Watch(%q): %v", key, err)
	}
}

// Unwatch stops reporting key on ch. A change for key still waiting for
// ch is dropped.
func (w *Watcher) Unwatch(key string, ch chan<- Change) {
	if w.view != nil {
		w.view.Unwatch(key, ch)
	}
}

// Alive reports whether key is alive in the reader's current view. Before
// the first load it waits for it; if that load fails it returns
// ErrNotLoaded with the cause. It fails with ErrStopped once the watcher
// stops.
func (w *Watcher) Alive(key string) (bool, error) {
	if w.view == nil {
		return false, w.deathErr()
	}
	alive, err := w.view.Alive(key)
	return alive, errors.Trace(err)
}

// Sync asks the reader to load now and blocks until the changes found have
// been delivered to every channel passed to Watch (or superseded by later
// ones). A channel that is never read therefore makes Sync wait, though
// never the reader; use Refresh to wait for the load alone. It returns at
// once if the watcher is stopping.
func (w *Watcher) Sync() {
	if w.view != nil {
		_ = w.view.Sync()
	}
}

// StartSync asks the reader to load now and returns without waiting.
func (w *Watcher) StartSync() {
	if w.view != nil {
		w.view.StartSync()
	}
}

// Refresh asks the reader to load now and returns once the view reflects
// the load, with the load's error; it does not wait for deliveries. It
// fails with ErrStopped once the watcher stops.
func (w *Watcher) Refresh() error {
	if w.view == nil {
		return w.deathErr()
	}
	return errors.Trace(w.view.Refresh())
}

// Subscribe returns a Subscription to keys, or to every key of the model
// when none is given. See presencereader.Subscription. On a dead watcher,
// or with an invalid key, the subscription's Next fails with the reason.
func (w *Watcher) Subscribe(keys ...string) Subscription {
	if w.view == nil {
		return presencereader.NewFailedSubscription(w.deathErr())
	}
	return w.view.Subscribe(keys...)
}

// SubscribeWith returns a Subscription as config says: to some keys or
// to all, from a snapshot or resuming after a position, every change or
// coalesced. See presencereader.View.SubscribeWith. On a dead watcher,
// or with an invalid key, the subscription's Next fails with the reason.
func (w *Watcher) SubscribeWith(config SubscribeConfig) ResumableSubscription {
	if w.view == nil {
		return presencereader.NewFailedSubscription(w.deathErr())
	}
	return w.view.SubscribeWith(config)
}

// Position returns the position of the latest change of the model: a
// subscription resuming after it gets the changes from now on. A dead
// watcher returns the zero Position.
func (w *Watcher) Position() Position {
	if w.view == nil {
		return Position{}
	}
	return w.view.Position()
}

// Report is part of the dependency.Reporter interface: the model's keys,
// how many are alive, and who listens.
func (w *Watcher) Report() map[string]any {
	if w.view == nil {
		return map[string]any{"error": w.deathErr().Error()}
	}
	return w.view.Report()
}

func (w *Watcher) deathErr() error {
	return catacomb.DeathError(&w.catacomb, ErrStopped)
}

func (w *Watcher) logf(format string, args ...any) {
	if w.config.Logger != nil {
		w.config.Logger.Errorf(format, args...)
	}
}

func (w *Watcher) loop() error {
	select {
	case <-w.ready:
	case <-w.catacomb.Dying():
		return w.catacomb.ErrDying()
	}
	if w.view != nil {
		defer w.view.Close()
	}
	select {
	case <-w.catacomb.Dying():
		return w.catacomb.ErrDying()
	case <-w.reader.Dead():
		select {
		case <-w.catacomb.Dying():
			return w.catacomb.ErrDying()
		default:
		}
		if err := w.reader.Wait(); err != nil {
			return errors.Annotate(err, "presence reader failed")
		}
		return ErrReaderStopped
	}
}
