package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/presencereader"
)

// maxWatchKeys is how many keys one /watch request may name.
const maxWatchKeys = 1000

// source is where a watch stream reads presence from: the demo's
// watchers, or a read-only reader over a deployment.
type source interface {
	// models returns the UUIDs of the models a stream searches when no
	// model narrows it. A stream asks again at every keepalive, so that
	// it follows models that appear later.
	models() []string

	// model returns the UUID that a model= parameter names, or an error
	// satisfying errors.NotValid for a bad one and errors.NotFound for
	// one the source can never have.
	model(id string) (string, error)

	// subscribe returns a subscription to every key of model, and a
	// channel that is closed once the subscription should be replaced
	// (nil if never): the demo's engine restarts watchers.
	subscribe(model string) (subscription, <-chan struct{})
}

// subscription is what a source's subscribe returns; a
// *presencereader.Subscription to every key of a model is one.
type subscription interface {
	// Next returns the snapshot on its first call, then the changes
	// since the previous call, blocking until there are some.
	Next(ctx context.Context) ([]presencereader.Change, error)
	// Close ends the subscription.
	Close()
}

// watchLine is one line of a watch stream. A key's line carries its model
// and whether any writer ever wrote it ("known"); a key no model knows is
// reported once, in the snapshot, as known:false, with no state.
type watchLine struct {
	Model       string `json:"model,omitempty"`
	Key         string `json:"key,omitempty"`
	Known       *bool  `json:"known,omitempty"`
	Alive       *bool  `json:"alive,omitempty"`
	Snapshot    bool   `json:"snapshot,omitempty"`
	SnapshotEnd bool   `json:"snapshot_end,omitempty"`
	Keepalive   bool   `json:"keepalive,omitempty"`
	Time        string `json:"time,omitempty"` // RFC 3339
}

// watchRequest is what a watch stream follows.
type watchRequest struct {
	// model narrows the stream to one model; empty means every model.
	model string
	// keys are the keys to follow; none means every key.
	keys []string
}

// parseWatchQuery checks a /watch request's parameters: key= (any number,
// each a valid key) and model= (at most one). Anything else is an error
// satisfying errors.NotValid, or errors.NotFound for a model the source
// cannot have.
func parseWatchQuery(src source, query map[string][]string) (watchRequest, error) {
	var req watchRequest
	for name, values := range query {
		switch name {
		case "key":
			if len(values) > maxWatchKeys {
				return req, errors.NotValidf("more than %d keys", maxWatchKeys)
			}
			for _, key := range values {
				if err := schema.ValidateKey(key); err != nil {
					return req, errors.Trace(err)
				}
			}
			req.keys = values
		case "model":
			if len(values) != 1 {
				return req, errors.NotValidf("more than one model")
			}
			model, err := src.model(values[0])
			if err != nil {
				return req, errors.Trace(err)
			}
			req.model = model
		default:
			return req, errors.NotValidf("parameter %q", name)
		}
	}
	return req, nil
}

// watchHandler serves /watch: the stream of streamWatch, one JSON object
// per line, with its status and headers sent at once; a bad parameter
// gets 400 (404 for a model the source cannot have) and a JSON error.
func watchHandler(src source, clk clock.Clock, keepalive time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := parseWatchQuery(src, r.URL.Query())
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, errors.NotFound) {
				status = http.StatusNotFound
			}
			jsonError(w, status, err)
			return
		}
		flusher, _ := w.(http.Flusher)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if flusher != nil {
			flusher.Flush()
		}
		enc := json.NewEncoder(w)
		send := func(line watchLine) bool {
			if err := enc.Encode(line); err != nil {
				return false
			}
			if flusher != nil {
				flusher.Flush()
			}
			return true
		}
		_ = streamWatch(r.Context(), src, req, send, clk, keepalive)
	}
}

// jsonError answers status with {"error": err}.
func jsonError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// writeLines returns a send function for streamWatch that writes one JSON
// object per line to out.
func writeLines(out io.Writer) func(watchLine) bool {
	enc := json.NewEncoder(out)
	return func(line watchLine) bool { return enc.Encode(line) == nil }
}

// modelEvent is what a model's puller hands the stream: a subscription's
// changes, or why the model can no longer be followed.
type modelEvent struct {
	model    string
	changes  []presencereader.Change
	snapshot bool // the first snapshot of the model
	err      error
}

// streamWatch sends the snapshot of req's keys (every key if none) in
// every model the request covers, each line with its model, then a key
// that no model knows as known:false, then a snapshot_end line; after
// that, every change, and a keepalive line every keepalive when nothing
// else is sent. Each model is pulled from a subscription of its own, so a
// slow stream stalls nobody; when the source replaces a subscription the
// stream sends only what changed meanwhile. It returns when ctx is done
// (nil), when send fails (nil: the client went away), or with the error
// that stopped a model's subscription.
func streamWatch(ctx context.Context, src source, req watchRequest, send func(watchLine) bool, clk clock.Clock, keepalive time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan modelEvent)
	pulling := make(map[string]bool)
	waiting := 0 // models whose first snapshot has not come yet
	models := func() []string {
		if req.model != "" {
			return []string{req.model}
		}
		return src.models()
	}
	pull := func(model string) {
		pulling[model] = true
		waiting++
		go pullModel(ctx, src, model, events)
	}
	for _, model := range models() {
		pull(model)
	}

	wanted := make(map[string]bool, len(req.keys))
	for _, key := range req.keys {
		wanted[key] = true
	}
	// state is the last state sent of each key, by model.
	state := make(map[string]map[string]bool)
	snapshotDone := false
	endSnapshot := func() bool {
		snapshotDone = true
		for _, key := range req.keys {
			known := false
			for _, keys := range state {
				_, in := keys[key]
				known = known || in
			}
			if !known && !send(watchLine{Key: key, Known: ptr(false), Snapshot: true}) {
				return false
			}
		}
		return send(watchLine{SnapshotEnd: true, Time: clk.Now().UTC().Format(time.RFC3339)})
	}
	if waiting == 0 && !endSnapshot() {
		return nil
	}

	timer := clk.NewTimer(keepalive)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if ev.err != nil {
				return errors.Annotatef(ev.err, "cannot follow model %s", ev.model)
			}
			keys := state[ev.model]
			if keys == nil {
				keys = make(map[string]bool)
				state[ev.model] = keys
			}
			for _, c := range ev.changes {
				if len(wanted) > 0 && !wanted[c.Key] {
					continue
				}
				if last, ok := keys[c.Key]; ok && last == c.Alive {
					continue // a replaced subscription's snapshot
				}
				keys[c.Key] = c.Alive
				line := watchLine{Model: ev.model, Key: c.Key, Known: ptr(true), Alive: ptr(c.Alive), Snapshot: !snapshotDone}
				if !send(line) {
					return nil
				}
			}
			if ev.snapshot {
				waiting--
				if waiting == 0 && !snapshotDone && !endSnapshot() {
					return nil
				}
			}
		case <-timer.Chan():
			if !send(watchLine{Keepalive: true, Time: clk.Now().UTC().Format(time.RFC3339)}) {
				return nil
			}
			for _, model := range models() {
				if !pulling[model] {
					pull(model)
				}
			}
			timer.Reset(keepalive)
		}
	}
}

// pullModel hands events every change of model's keys: the first
// snapshot (snapshot set), then every change; when the source replaces
// the subscription, the new one's snapshot goes as changes. It returns
// when ctx is done, or after handing an event with the error that ended
// a subscription the source does not replace.
func pullModel(ctx context.Context, src source, model string, events chan<- modelEvent) {
	first := true
	for ctx.Err() == nil {
		sub, replaced := src.subscribe(model)
		for {
			changes, err := sub.Next(ctx)
			if err != nil {
				sub.Close()
				if ctx.Err() != nil {
					return
				}
				if replaced == nil {
					select {
					case events <- modelEvent{model: model, err: err}:
					case <-ctx.Done():
					}
					return
				}
				break
			}
			select {
			case events <- modelEvent{model: model, changes: changes, snapshot: first}:
				first = false
			case <-ctx.Done():
				sub.Close()
				return
			}
		}
		select {
		case <-replaced:
		case <-ctx.Done():
		}
	}
}

// demoSource is the demo's models, followed through the engine's current
// watchers.
type demoSource struct {
	reg *registry
}

func (s demoSource) models() []string {
	out := make([]string, len(s.reg.models))
	for i, m := range s.reg.models {
		out[i] = m.Id()
	}
	return out
}

// model accepts a model's UUID or its index in the demo.
func (s demoSource) model(id string) (string, error) {
	if i := s.reg.modelIndex(id); i >= 0 {
		return s.reg.models[i].Id(), nil
	}
	if !names.IsValidModel(id) {
		return "", errors.NotValidf("model %q (neither a model UUID nor a model's index)", id)
	}
	return "", errors.NotFoundf("model %q", id)
}

func (s demoSource) subscribe(model string) (subscription, <-chan struct{}) {
	i := s.reg.modelIndex(model)
	if i < 0 {
		return presencereader.NewFailedSubscription(errors.NotFoundf("model %q", model)), nil
	}
	o, changed := s.reg.get(i)
	if o.watcher == nil {
		return presencereader.NewFailedSubscription(errors.New("watcher not started")), changed
	}
	return o.watcher.Subscribe(), changed
}

// validModel returns id if it is a model UUID, else a NotValid error.
func validModel(id string) (string, error) {
	if !names.IsValidModel(id) {
		return "", errors.NotValidf("model %q (not a model UUID)", id)
	}
	return id, nil
}

func ptr[T any](v T) *T { return &v }
