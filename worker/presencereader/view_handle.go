package presencereader

import (
	"sync"

	"github.com/juju/errors"
	"github.com/juju/names/v5"

	"github.com/presencekit/presence/internal/schema"
)

// View is one model's window on a Reader: what a watcher of that model
// serves. It costs the database nothing: the reader's loads feed every
// view. Its methods are safe for concurrent use and none of them hangs
// once the view's owner or the reader is dying.
type View struct {
	r        *Reader
	model    string
	dying    <-chan struct{}
	deathErr func() error
	wg       sync.WaitGroup

	// log is the model's change log, shared by its views.
	log *changeLog

	// senders and subs are owned by the reader's loop goroutine.
	senders map[chan<- Change]*sender
	subs    map[*Subscription]bool
}

// NewView returns a View of model. dying is closed when the view's owner
// starts dying, and deathErr then says why (ErrStopped-style when the
// owner stops cleanly); the owner must call Close once dying is closed.
// NewView fails with a NotValid error for a bad model, and with the
// reader's error once the reader is dying.
func (r *Reader) NewView(model names.ModelTag, dying <-chan struct{}, deathErr func() error) (*View, error) {
	if err := validModel(model); err != nil {
		return nil, errors.Trace(err)
	}
	if dying == nil || deathErr == nil {
		return nil, errors.NotValidf("nil dying channel or death error")
	}
	log, ok := reqAttach{model: model.Id()}.invoke(r, dying)
	if !ok {
		return nil, r.deathErr()
	}
	return &View{
		r:        r,
		model:    model.Id(),
		dying:    dying,
		deathErr: deathErr,
		log:      log,
		senders:  make(map[chan<- Change]*sender),
		subs:     make(map[*Subscription]bool),
	}, nil
}

// validModel returns a NotValid error unless model names a model.
func validModel(model names.ModelTag) error {
	return errors.Trace(schema.ValidateModel(model))
}

// Model returns the UUID of the view's model.
func (v *View) Model() string {
	return v.model
}

// err returns the owner's error if it is dying, else the reader's.
func (v *View) err() error {
	select {
	case <-v.dying:
		return v.deathErr()
	default:
		return v.r.deathErr()
	}
}

// Watch starts reporting key's state on ch: the current state first (once
// the reader has loaded), then every change. Delivery runs in a goroutine
// per channel, so an unread ch delays nobody else; while ch is unread at
// most one change per key waits, the latest. Watching a key twice on one
// channel sends the current state again. It fails with a NotValid error
// for an invalid key or a nil channel, and with the view's error once it
// is dying.
func (v *View) Watch(key string, ch chan<- Change) error {
	if err := schema.ValidateKey(key); err != nil {
		return errors.Trace(err)
	}
	if ch == nil {
		return errors.NotValidf("nil channel")
	}
	if !(reqWatch{view: v, key: key, ch: ch}).invoke(v.r, v.dying) {
		return v.err()
	}
	return nil
}

// Unwatch stops reporting key on ch. A change for key still waiting for
// ch is dropped.
func (v *View) Unwatch(key string, ch chan<- Change) {
	reqUnwatch{view: v, key: key, ch: ch}.invoke(v.r, v.dying)
}

// Alive reports whether key is alive in the reader's current view. Before
// the first load it waits for it; if that load fails it returns
// ErrNotLoaded with the cause.
func (v *View) Alive(key string) (bool, error) {
	if err := schema.ValidateKey(key); err != nil {
		return false, errors.Trace(err)
	}
	res, ok := reqAlive{model: v.model, key: key}.invoke(v.r, v.dying)
	if !ok {
		return false, v.err()
	}
	return res.alive, res.err
}

// Sync asks the reader to load now and blocks until the changes it found
// have been delivered to this view's Watch channels (or superseded by
// later ones). It returns the load's error; a channel that is never read
// makes Sync wait, though never the reader.
func (v *View) Sync() error {
	res, ok := reqSync{view: v}.invoke(v.r, v.dying)
	if !ok {
		return v.err()
	}
	for _, s := range res.senders {
		if !s.waitDelivered(res.gen, v.dying) {
			return v.err()
		}
	}
	return res.err
}

// StartSync asks the reader to load now and returns without waiting.
func (v *View) StartSync() {
	reqSync{}.start(v.r, v.dying)
}

// Refresh asks the reader to load now and returns once the view reflects
// the load, with the load's error; it does not wait for deliveries.
func (v *View) Refresh() error {
	res, ok := reqSync{}.invoke(v.r, v.dying)
	if !ok {
		return v.err()
	}
	return res.err
}

// Subscribe returns a Subscription to keys of the view's model, or to
// every key of it when none is given, that starts with a snapshot and
// coalesces changes: SubscribeWith(SubscribeConfig{Keys: keys, Coalesce:
// true}). On a dying view, or with an invalid key, the subscription's
// Next fails with the reason.
func (v *View) Subscribe(keys ...string) *Subscription {
	return v.SubscribeWith(SubscribeConfig{Keys: keys, Coalesce: true})
}

// SubscribeWith returns a Subscription as config says: to some keys or
// to all, from a snapshot or resuming after a position, every change or
// coalesced. On a dying view, or with an invalid key, the subscription's
// Next fails with the reason.
func (v *View) SubscribeWith(config SubscribeConfig) *Subscription {
	sub := newSubscription(v, config)
	for _, key := range config.Keys {
		if err := schema.ValidateKey(key); err != nil {
			sub.err = errors.Trace(err)
			return sub
		}
	}
	if !(reqSubscribe{sub: sub}).invoke(v.r, v.dying) {
		sub.err = v.err()
	}
	return sub
}

// Position returns the position of the latest change the view's model
// logged: a subscription resuming after it gets the changes from now on.
func (v *View) Position() Position {
	v.log.mu.RLock()
	defer v.log.mu.RUnlock()
	return v.log.position()
}

// Report returns what the reader knows of the view's model: its keys, how
// many are alive, who listens, and what its change log holds
// (log-entries, log-bytes, and the positions log-oldest and log-position
// between which subscribers can resume).
func (v *View) Report() map[string]any {
	out, ok := reqModelStats{model: v.model}.invoke(v.r, v.dying)
	if !ok {
		return map[string]any{"model": v.model, "error": v.err().Error()}
	}
	return out
}

// Close removes everything the view registered and waits for its delivery
// goroutines to end. The owner calls it once its dying channel is closed.
func (v *View) Close() {
	reqDetach{view: v}.invoke(v.r)
	v.wg.Wait()
}
