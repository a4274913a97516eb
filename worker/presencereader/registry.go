package presencereader

import (
	"fmt"
	"time"
)

// The registry of who listens to each model: the views attached, their
// Watch channels and their subscriptions, and the answers the loop gives
// from the view (Alive, snapshots, a model's report). Everything here is
// owned by the loop goroutine.

// registry is who listens to one model. It is owned by the loop
// goroutine.
type registry struct {
	watchers map[string][]*sender
	keySubs  map[string][]*Subscription
	allSubs  map[*Subscription]bool
	subs     int
}

// empty reports whether nobody listens to the model.
func (g *registry) empty() bool {
	return len(g.watchers) == 0 && g.subs == 0
}

// registry returns model's registry, which it makes if the model has
// none. It must only be called from the loop goroutine.
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

// tidy forgets model's registry once nobody listens. It must only be
// called from the loop goroutine.
func (r *Reader) tidy(model string) {
	if g := r.registries[model]; g != nil && g.empty() {
		delete(r.registries, model)
	}
}

// addWatch starts reporting req's key on req's channel, starting the
// channel's sender if it has none, and queues the key's current state,
// or holds it for the first load. It must only be called from the loop
// goroutine.
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

// removeWatch stops reporting key on ch, and stops ch's sender once it
// reports no key. It must only be called from the loop goroutine.
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

// addSubscription registers sub with its view and its model. It must
// only be called from the loop goroutine.
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
// reader has loaded. It must only be called from the loop goroutine.
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

// removeSubscription forgets sub, if it is registered. It must only be
// called from the loop goroutine.
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

// attach counts a view of model and returns the model's change log,
// which it makes if the model has none. It must only be called from the
// loop goroutine.
func (r *Reader) attach(model string) *changeLog {
	r.views++
	l := r.logs[model]
	if l == nil {
		l = newChangeLog(r.config.LogLength)
		r.logs[model] = l
	}
	l.refs++
	l.unviewed = time.Time{}
	return l
}

// detach removes everything v registered and stops its senders. It must
// only be called from the loop goroutine.
func (r *Reader) detach(v *View) {
	r.views--
	if l := r.logs[v.model]; l != nil {
		l.refs--
		if l.refs == 0 {
			// The log outlives its views by LogAge, so that the
			// subscribers of a watcher that restarts can resume.
			l.unviewed = r.observe(r.config.Clock.Now())
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

// states returns the current state of sub's keys. It must only be called
// from the loop goroutine.
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

// answerAlive answers req, or holds it until the first load is applied
// or fails. It must only be called from the loop goroutine.
func (r *Reader) answerAlive(req reqAlive) {
	if !r.loaded && r.lastErr == nil {
		r.pendingAlive = append(r.pendingAlive, req)
		return
	}
	req.respond(r.alive(req.model, req.key))
}

// alive returns whether key of model is alive, or why it cannot say. It
// must only be called from the loop goroutine.
func (r *Reader) alive(model, key string) aliveResult {
	if !r.loaded {
		return aliveResult{err: fmt.Errorf("%w: %w", ErrNotLoaded, r.lastErr)}
	}
	return aliveResult{alive: r.view.lookup(model, key)}
}

// modelStats returns what the reader knows of model (see View.Report).
// It must only be called from the loop goroutine.
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

// contains reports whether x is in list.
func contains[T comparable](list []T, x T) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

// without removes every x from list, in place, and returns what is left.
func without[T comparable](list []T, x T) []T {
	out := list[:0]
	for _, y := range list {
		if y != x {
			out = append(out, y)
		}
	}
	return out
}
