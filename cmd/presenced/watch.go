package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
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

	// subscribe returns a subscription to every key of model as config
	// says (its Keys are not used), and a channel that is closed once
	// the subscription should be replaced (nil if never): the demo's
	// engine restarts watchers.
	subscribe(model string, config presencereader.SubscribeConfig) (subscription, <-chan struct{})

	// position returns the position of model's latest change, whose
	// View names model's change log; zero if model has none yet.
	position(model string) presencereader.Position
}

// subscription is what a source's subscribe returns; a
// *presencereader.Subscription to every key of a model is one.
type subscription interface {
	// NextBatch returns the snapshot (or, resuming, the changes after
	// the position, or a reset and a snapshot) on its first call, then
	// the changes since the previous call, blocking until there are
	// some.
	NextBatch(ctx context.Context) (presencereader.Batch, error)
	// Close ends the subscription.
	Close()
}

// watchLine is one line of a watch stream. A key's line carries its model
// and whether any writer ever wrote it ("known"); a key no model knows is
// reported once, in the snapshot, as known:false, with no state. A change
// carries its position in its model's change log; the snapshot_end line
// carries every model's position, which is what a client resumes after
// (after=, one per model) when it reconnects. A reset line says that what
// follows for its model (or, without a model, for a position no model
// here knows) replaces what the client knew.
type watchLine struct {
	Model       string            `json:"model,omitempty"`
	Key         string            `json:"key,omitempty"`
	Known       *bool             `json:"known,omitempty"`
	Alive       *bool             `json:"alive,omitempty"`
	Position    string            `json:"position,omitempty"`
	Snapshot    bool              `json:"snapshot,omitempty"`
	Reset       bool              `json:"reset,omitempty"`
	After       string            `json:"after,omitempty"`
	SnapshotEnd bool              `json:"snapshot_end,omitempty"`
	Positions   map[string]string `json:"positions,omitempty"`
	Keepalive   bool              `json:"keepalive,omitempty"`
	Time        string            `json:"time,omitempty"` // RFC 3339
}

// watchRequest is what a watch stream follows.
type watchRequest struct {
	// model narrows the stream to one model; empty means every model.
	model string
	// keys are the keys to follow; none means every key.
	keys []string
	// after are the positions to resume after, at most one per model.
	after []presencereader.Position
	// coalesce reports at most one change per key and answer.
	coalesce bool
}

// parseWatchQuery checks a /watch request's parameters: key= (any number,
// each a valid key), model= (at most one), after= (positions, as the
// stream's lines give them) and coalesce= (a boolean). Anything else is an
// error
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
		case "after":
			if len(values) > maxWatchKeys {
				return req, errors.NotValidf("more than %d positions", maxWatchKeys)
			}
			for _, value := range values {
				after, err := presencereader.ParsePosition(value)
				if err != nil {
					return req, errors.Trace(err)
				}
				if !after.IsZero() {
					req.after = append(req.after, after)
				}
			}
		case "coalesce":
			coalesce, err := strconv.ParseBool(values[len(values)-1])
			if len(values) != 1 || err != nil {
				return req, errors.NotValidf("coalesce %q (want one true or false)", values)
			}
			req.coalesce = coalesce
		default:
			return req, errors.NotValidf("parameter %q", name)
		}
	}
	return req, nil
}

// watchHandler serves /watch: the stream of streamWatch, one JSON object
// per line, with its status and headers sent at once; a bad parameter
// gets 400 (404 for a model the source cannot have) and a JSON error.
// Beyond limits.maxStreams open streams (counted by gate) a request gets
// 503 and its connection is closed; a stream whose client does not take a
// line within limits.writeTimeout is closed.
func watchHandler(src source, clk clock.Clock, limits streamLimits, gate *streamGate) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		query, err := url.ParseQuery(r.URL.RawQuery)
		if err == nil {
			var req watchRequest
			if req, err = parseWatchQuery(src, query); err == nil {
				serveStream(w, r, src, req, clk, limits, gate)
				return
			}
		}
		status := http.StatusBadRequest
		if errors.Is(err, errors.NotFound) {
			status = http.StatusNotFound
		}
		jsonError(w, status, err)
	}
}

// serveStream answers a valid /watch request, within the limits.
func serveStream(w http.ResponseWriter, r *http.Request, src source, req watchRequest, clk clock.Clock, limits streamLimits, gate *streamGate) {
	if !gate.enter() {
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "10")
		jsonError(w, http.StatusServiceUnavailable, errStreamsFull)
		return
	}
	defer gate.leave()
	out := newLineWriter(w, limits.writeTimeout)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if !out.flush() {
		return
	}
	_ = streamWatch(r.Context(), src, req, out, clk, limits.keepalive)
}

// jsonError answers status with {"error": err}.
func jsonError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// lineSink is where streamWatch sends a stream's lines.
type lineSink interface {
	// send sends line, or holds it until the next flush, and reports
	// whether the stream can go on.
	send(line watchLine) bool
	// flush sends the lines held, and reports whether the stream can
	// go on.
	flush() bool
}

// sendFunc is a lineSink that sends each line at once: flush has nothing
// to send.
type sendFunc func(watchLine) bool

func (f sendFunc) send(line watchLine) bool { return f(line) }

func (sendFunc) flush() bool { return true }

// writeLines returns a lineSink for streamWatch that writes one JSON
// object per line to out.
func writeLines(out io.Writer) lineSink {
	enc := json.NewEncoder(out)
	return sendFunc(func(line watchLine) bool { return enc.Encode(line) == nil })
}

// modelEvent is what a model's puller hands the stream: a subscription's
// batch, or why the model can no longer be followed.
type modelEvent struct {
	model string
	batch presencereader.Batch
	first bool // the model's first batch: its snapshot, or its resume
	err   error
}

// streamWatch sends the snapshot of req's keys (every key if none) in
// every model the request covers, each line with its model, then a key
// that no model knows as known:false, then a snapshot_end line with every
// model's position; after that, every change with its position, and a
// keepalive line every keepalive when nothing else is sent.
//
// A model whose position is in req.after resumes instead: its part of
// the snapshot is the changes after that position, every transition
// unless req.coalesce; when its change log no longer holds them, a reset
// line for the model and its snapshot. A position that no model's log
// knows (another process, an earlier run) gets a reset line of its own:
// the models it may have been are sent as snapshots. There is never a
// silent gap.
//
// Each model is pulled from a subscription of its own, so a slow stream
// stalls nobody; when the source replaces a subscription, the new one
// resumes after the last position sent. The lines are flushed to out
// whenever the stream would wait, not line by line. It returns when ctx
// is done (nil), when out fails (nil: the client went away), or with the
// error that stopped a model's subscription.
func streamWatch(ctx context.Context, src source, req watchRequest, out lineSink, clk clock.Clock, keepalive time.Duration) error {
	send := out.send
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan modelEvent)
	pulling := make(map[string]bool)
	waiting := 0 // models whose first batch has not come yet
	models := func() []string {
		if req.model != "" {
			return []string{req.model}
		}
		return src.models()
	}
	// resume maps each model's log to where the client left it.
	resume := make(map[string]presencereader.Position, len(req.after))
	for _, after := range req.after {
		resume[after.View] = after
	}
	pull := func(model string) {
		pulling[model] = true
		waiting++
		after := resume[src.position(model).View]
		delete(resume, after.View)
		config := presencereader.SubscribeConfig{After: after, Coalesce: req.coalesce}
		go pullModel(ctx, src, model, config, events)
	}
	for _, model := range models() {
		pull(model)
	}
	for _, after := range req.after {
		if _, unknown := resume[after.View]; unknown {
			// Answered with a reset: a model found later starts
			// from its snapshot, not from this position.
			delete(resume, after.View)
			if !send(watchLine{Reset: true, After: after.String()}) {
				return nil
			}
		}
	}

	wanted := make(map[string]bool, len(req.keys))
	for _, key := range req.keys {
		wanted[key] = true
	}
	// state is the last state sent of each key, by model; positions the
	// last position of each model.
	state := make(map[string]map[string]bool)
	positions := make(map[string]string)
	snapshotDone := false
	// resumed is set once a model resumes: its unchanged keys are not
	// in state, and the client knows them (and which keys no model
	// knew) from before.
	resumed := false
	endSnapshot := func() bool {
		snapshotDone = true
		unknown := req.keys
		if resumed {
			unknown = nil
		}
		for _, key := range unknown {
			known := false
			for _, keys := range state {
				_, in := keys[key]
				known = known || in
			}
			if !known && !send(watchLine{Key: key, Known: ptr(false), Snapshot: true}) {
				return false
			}
		}
		return send(watchLine{SnapshotEnd: true, Positions: maps.Clone(positions), Time: clk.Now().UTC().Format(time.RFC3339)})
	}
	if waiting == 0 && !endSnapshot() {
		return nil
	}

	timer := clk.NewTimer(keepalive)
	defer timer.Stop()
	for {
		if !out.flush() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if ev.err != nil {
				return errors.Annotatef(ev.err, "cannot follow model %s", ev.model)
			}
			if !sendBatch(ev, wanted, state, send) {
				return nil
			}
			if end := ev.batch.End; !end.IsZero() {
				positions[ev.model] = end.String()
			}
			if ev.first {
				resumed = resumed || !ev.batch.Snapshot
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

// sendBatch sends the lines of one model's batch: a reset line first if
// the batch is a reset, then each event of a wanted key (every key if
// none is wanted) that changes what the stream last sent of it. It
// reports whether every send succeeded. The states of a snapshot are
// marked snapshot; a resumed model's changes, sent before the snapshot
// ends, are changes with their positions.
func sendBatch(ev modelEvent, wanted map[string]bool, state map[string]map[string]bool, send func(watchLine) bool) bool {
	keys := state[ev.model]
	if keys == nil || ev.batch.Reset {
		keys = make(map[string]bool)
		state[ev.model] = keys
	}
	if ev.batch.Reset && !send(watchLine{Model: ev.model, Reset: true}) {
		return false
	}
	for _, e := range ev.batch.Events {
		if len(wanted) > 0 && !wanted[e.Key] {
			continue
		}
		if last, ok := keys[e.Key]; ok && last == e.Alive && e.Position.IsZero() {
			continue // a replaced subscription's snapshot
		}
		keys[e.Key] = e.Alive
		line := watchLine{
			Model: ev.model, Key: e.Key, Known: ptr(true), Alive: ptr(e.Alive),
			Position: e.Position.String(), Snapshot: ev.batch.Snapshot,
		}
		if !send(line) {
			return false
		}
	}
	return true
}

// pullModel hands events every batch of model's subscription, the first
// marked first; when the source replaces the subscription, the new one
// resumes after the last batch handed. It returns when ctx is done, or
// after handing an event with the error that ended a subscription the
// source does not replace.
func pullModel(ctx context.Context, src source, model string, config presencereader.SubscribeConfig, events chan<- modelEvent) {
	first := true
	for ctx.Err() == nil {
		sub, replaced := src.subscribe(model, config)
		for {
			batch, err := sub.NextBatch(ctx)
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
			case events <- modelEvent{model: model, batch: batch, first: first}:
				first = false
				if !batch.End.IsZero() {
					config.After = batch.End
				}
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

func (s demoSource) subscribe(model string, config presencereader.SubscribeConfig) (subscription, <-chan struct{}) {
	i := s.reg.modelIndex(model)
	if i < 0 {
		return presencereader.NewFailedSubscription(errors.NotFoundf("model %q", model)), nil
	}
	o, changed := s.reg.get(i)
	if o.watcher == nil {
		return presencereader.NewFailedSubscription(errors.New("watcher not started")), changed
	}
	return o.watcher.SubscribeWith(config), changed
}

func (s demoSource) position(model string) presencereader.Position {
	i := s.reg.modelIndex(model)
	if i < 0 {
		return presencereader.Position{}
	}
	o, _ := s.reg.get(i)
	if o.watcher == nil {
		return presencereader.Position{}
	}
	return o.watcher.Position()
}

// validModel returns id if it is a model UUID, else a NotValid error.
func validModel(id string) (string, error) {
	if !names.IsValidModel(id) {
		return "", errors.NotValidf("model %q (not a model UUID)", id)
	}
	return id, nil
}

func ptr[T any](v T) *T { return &v }
