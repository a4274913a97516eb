package main

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/juju/clock"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// statusDoc is what /status answers.
type statusDoc struct {
	Time          string  `json:"time"`    // RFC 3339
	Started       string  `json:"started"` // RFC 3339
	UptimeSeconds int64   `json:"uptime_seconds"`
	RateWindow    float64 `json:"rate_window_seconds"`
	Agents        int     `json:"agents"`
	Alive         int     `json:"alive"`
	// WritesPerSecond is over the last RateWindow seconds.
	WritesPerSecond float64        `json:"writes_per_second"`
	Detections      map[string]int `json:"detections"`
	Models          []modelStatus  `json:"models"`
	Recent          []detection    `json:"recent"`
	// Warnings say what slows detection down now: a controller falling
	// behind, a stalled database, slow flushes, failing reads.
	Warnings []string `json:"warnings,omitempty"`
}

type modelStatus struct {
	Model   string            `json:"model"`
	Agents  int               `json:"agents"`
	Alive   int               `json:"alive"`
	Leaders map[string]leader `json:"leaders"`
}

func status(reg *registry, sim *simulation, m *metrics, clk clock.Clock, started time.Time, writesPerSecond float64) statusDoc {
	leaders, recent, counts := sim.snapshot()
	now := clk.Now()
	st := statusDoc{
		Time:            now.UTC().Format(time.RFC3339),
		Started:         started.UTC().Format(time.RFC3339),
		UptimeSeconds:   int64(now.Sub(started) / time.Second),
		RateWindow:      rateWindow.Seconds(),
		WritesPerSecond: writesPerSecond,
		Detections:      counts,
		Recent:          recent,
		Warnings:        m.warnings(now),
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

func newHandler(o options, reg *registry, sim *simulation, m *metrics, writes *writeRate, clk clock.Clock, started time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", noQuery(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rate := writes.perSecond(clk.Now())
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status(reg, sim, m, clk, started, rate))
	})))
	mux.HandleFunc("GET /watch", watchHandler(demoSource{reg: reg}, clk, o.streams, newStreamGate(o.streams.maxStreams)))
	mux.HandleFunc("GET /healthz", noQuery(healthz(m, clk, o.sync)))
	mux.Handle("GET /metrics", noQuery(promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})))
	// Profiles, for an operator who wants to see where a busy
	// controller's time goes.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return mux
}

func itoa(i int) string { return strconv.Itoa(i) }
