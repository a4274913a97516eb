package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/juju/clock"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/presencekit/presence/worker/watcher"
)

// statusDoc is what /status answers.
type statusDoc struct {
	Uptime          string         `json:"uptime"`
	Agents          int            `json:"agents"`
	Alive           int            `json:"alive"`
	WritesPerSecond float64        `json:"writes_per_second"`
	Detections      map[string]int `json:"detections"`
	Models          []modelStatus  `json:"models"`
	Recent          []detection    `json:"recent"`
}

type modelStatus struct {
	Model   string            `json:"model"`
	Agents  int               `json:"agents"`
	Alive   int               `json:"alive"`
	Leaders map[string]leader `json:"leaders"`
}

func status(reg *registry, sim *simulation, clk clock.Clock, started time.Time, writesPerSecond float64) statusDoc {
	leaders, recent, counts := sim.snapshot()
	st := statusDoc{
		Uptime:          clk.Now().Sub(started).Round(time.Second).String(),
		WritesPerSecond: writesPerSecond,
		Detections:      counts,
		Recent:          recent,
	}
	for i, model := range reg.models {
		ms := modelStatus{Model: model.Id(), Leaders: leaders[i]}
		for j := i; j < sim.opts.agents; j += len(reg.models) {
			ms.Agents++
		}
		if o, _ := reg.get(i); o.watcher != nil {
			if alive, ok := o.watcher.Report()["alive"].(int); ok {
				ms.Alive = alive
			}
		}
		st.Agents += ms.Agents
		st.Alive += ms.Alive
		st.Models = append(st.Models, ms)
	}
	return st
}

func newHandler(o options, reg *registry, sim *simulation, m *metrics, clk clock.Clock, started time.Time) http.Handler {
	mux := http.NewServeMux()
	writes := newWriteRate(m, clk.Now())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		rate := writes.perSecond(clk.Now())
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status(reg, sim, clk, started, rate))
	})
	mux.HandleFunc("GET /watch", func(w http.ResponseWriter, r *http.Request) {
		watch(w, r, reg, clk, o.keepalive)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	// Profiles, for an operator who wants to see where a busy
	// controller's time goes.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return mux
}

// watchLine is one line of a /watch stream.
type watchLine struct {
	Key       string `json:"key,omitempty"`
	Alive     *bool  `json:"alive,omitempty"`
	Snapshot  bool   `json:"snapshot,omitempty"`
	Keepalive bool   `json:"keepalive,omitempty"`
	Time      string `json:"time,omitempty"`
}

// watch streams one JSON object per line: the snapshot of the keys asked
// for (every key of the model if none), then every change, and a keepalive
// line when nothing happens. Each stream pulls from a subscription of its
// own, so a slow client stalls nobody. When the engine replaces the
// watcher, the stream sends a new snapshot.
func watch(w http.ResponseWriter, r *http.Request, reg *registry, clk clock.Clock, keepalive time.Duration) {
	model := 0
	if m := r.URL.Query().Get("model"); m != "" {
		if model = reg.modelIndex(m); model < 0 {
			http.Error(w, fmt.Sprintf("%v %q", errNoModel, m), http.StatusNotFound)
			return
		}
	}
	keys := r.URL.Query()["key"]
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
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
	for r.Context().Err() == nil {
		o, changed := reg.get(model)
		if !stream(r.Context(), o.watcher, keys, send, clk, keepalive) {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
		}
	}
}

// stream sends one watcher's snapshot and changes; it returns false when
// the client went away.
func stream(ctx context.Context, wt *watcher.Watcher, keys []string, send func(watchLine) bool, clk clock.Clock, keepalive time.Duration) bool {
	sub := wt.Subscribe(keys...)
	defer sub.Close()
	results := make(chan []watcher.Change)
	failed := make(chan error, 1)
	pullCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			changes, err := sub.Next(pullCtx)
			if err != nil {
				failed <- err
				return
			}
			select {
			case results <- changes:
			case <-pullCtx.Done():
				return
			}
		}
	}()
	timer := clk.NewTimer(keepalive)
	defer timer.Stop()
	snapshot := true
	for {
		select {
		case changes := <-results:
			for _, c := range changes {
				alive := c.Alive
				if !send(watchLine{Key: c.Key, Alive: &alive, Snapshot: snapshot}) {
					return false
				}
			}
			snapshot = false
		case <-timer.Chan():
			if !send(watchLine{Keepalive: true, Time: clk.Now().UTC().Format(time.RFC3339)}) {
				return false
			}
			timer.Reset(keepalive)
		case <-failed:
			return ctx.Err() == nil
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
