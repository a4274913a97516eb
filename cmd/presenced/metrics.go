package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/internal/commands"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

// metrics are presenced's Prometheus metrics. Their series are per model
// at most, never per agent.
type metrics struct {
	registry    *prometheus.Registry
	pings       prometheus.Counter
	flushes     *prometheus.CounterVec
	syncs       prometheus.Histogram
	alive       prometheus.Gauge
	leases      *prometheus.GaugeVec
	leasesKnown *prometheus.GaugeVec
	frozen      *prometheus.GaugeVec
	detections  *prometheus.HistogramVec
	slow        prometheus.Counter
	skipped     prometheus.Counter
	skew        prometheus.Gauge
	skews       *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	held        prometheus.Gauge
	stalled     prometheus.Gauge
	flushTime   prometheus.Histogram
	unexplained prometheus.Counter
	errs        *prometheus.CounterVec
	restarts    *prometheus.CounterVec
	commands    commands.Counter
	// flushInterval is what a flush must take less than to keep pace.
	flushInterval time.Duration

	clock clock.Clock

	mu       sync.Mutex
	lastLoad presencereader.LoadStats
	loadedAt time.Time // of the latest load, failed or not
	loaded   bool
	started  map[string]bool // workers started at least once
	lastSlow time.Time       // of the latest slow flush
}

// newMetrics returns the metrics of the demo, or (demo false) those of a
// read-only follower of a deployment, which writes nothing and simulates
// nothing.
func newMetrics(flushInterval time.Duration, demo bool, clk clock.Clock) *metrics {
	m := &metrics{
		clock:         clk,
		flushInterval: flushInterval,
		started:       make(map[string]bool),
		registry:      prometheus.NewRegistry(),
		pings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_ping_documents_written_total",
			Help: "Ping and beings documents written by the ping batchers.",
		}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_flushes_total",
			Help: "Ping batcher flushes, by result.",
		}, []string{"result"}),
		syncs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presence_sync_seconds",
			Help:    "Time the presence reader's database reads took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		alive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_alive_agents",
			Help: "Agents alive in every model, as the controller's presence reader reports.",
		}),
		leasesKnown: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "presence_leases",
			Help: "Applications with a leadership lease, held or not, per model: those above presence_leases_held have no leader.",
		}, []string{"model"}),
		frozen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "presence_leases_frozen",
			Help: "Leases frozen per model: granted to nobody until an operator runs presenced lease reset.",
		}, []string{"model"}),
		leases: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "presence_leases_held",
			Help: "Applications with a leader, per model.",
		}, []string{"model"}),
		detections: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "presence_detection_seconds",
			Help:    "Time from a simulated leave or crash to the watcher reporting the death.",
			Buckets: prometheus.ExponentialBuckets(0.05, 1.6, 16),
		}, []string{"cause"}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_slow_flushes_total",
			Help: "Flushes that took longer than a flush interval: detection is falling behind.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_skipped_documents_total",
			Help: "Documents the presence reader skipped as invalid, counted once per load that met them.",
		}),
		skew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_max_clock_skew_seconds",
			Help: "The largest clock difference the presence reader measured against any writer (an upper bound).",
		}),
		skews: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "presence_clock_skew_seconds",
			Help: "The clock difference the presence reader measured against each writer (a controller's ping batcher): the reader's clock minus the writer's, an upper bound that includes write and read delays.",
		}, []string{"writer"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_reader_loads_total",
			Help: "Presence reader loads, by result.",
		}, []string{"result"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_reader_held_keys",
			Help: "Keys the presence reader keeps alive without a live ping, because their writer is late or the database just stalled: detection is slower while it is above zero.",
		}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_reader_stalled",
			Help: "1 while no writer is on time, which the presence reader takes for a stall of the database.",
		}),
		flushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presence_flush_seconds",
			Help:    "Time the ping batchers' flushes took, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		unexplained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_unexplained_deaths_total",
			Help: "Deaths the watchers reported that no simulated leave or crash explains: false deaths.",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_database_errors_total",
			Help: "Failed database calls, by operation (read: the presence reader's loads; write: the ping batchers' flushes) and kind (timeout, network, server, other).",
		}, []string{"op", "kind"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_worker_restarts_total",
			Help: "Workers the dependency engine started again after their first start, by manifold (without the model prefix).",
		}, []string{"worker"}),
	}
	m.registry.MustRegister(m.syncs, m.alive, m.leases, m.leasesKnown, m.frozen, m.skipped, m.skew, m.skews, m.failures, m.held, m.stalled, m.errs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "presence_database_write_commands_total",
			Help: "Insert, update and delete commands sent to the database.",
		}, func() float64 { return float64(m.commands.Writes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "presence_reader_push",
			Help: "1 while the presence reader tails the notices (it reads when a writer says so), 0 while it polls every sync.",
		}, func() float64 {
			return m.loadFigure(func(l presencereader.LoadStats) float64 { return boolFigure(l.Push) })
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "presence_reader_push_breaks_total",
			Help: "Times the presence reader's push path broke or could not start, since the reader started; it polls until it recovers.",
		}, func() float64 {
			return m.loadFigure(func(l presencereader.LoadStats) float64 { return float64(l.PushBreaks) })
		}),
	)
	if demo {
		m.registry.MustRegister(m.pings, m.flushes, m.detections, m.slow, m.flushTime, m.unexplained, m.restarts)
	}
	for _, op := range []string{"read", "write"} {
		for _, kind := range []string{"timeout", "network", "server", "other"} {
			if demo || op == "read" {
				m.errs.WithLabelValues(op, kind)
			}
		}
	}
	return m
}

// errorKind classifies a database error for presence_database_errors_total.
func errorKind(err error) string {
	var server mongo.ServerError
	switch {
	case mongo.IsTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case mongo.IsNetworkError(err):
		return "network"
	case errors.As(err, &server):
		return "server"
	}
	return "other"
}

// RecordStart is part of the dependency.Metrics interface: it counts the
// starts of a worker after its first as restarts.
func (m *metrics) RecordStart(name string) {
	kind := name
	if i := strings.IndexByte(name, '-'); i > 0 && name[0] == 'm' {
		if _, err := strconv.Atoi(name[1:i]); err == nil {
			kind = name[i+1:]
		}
	}
	m.mu.Lock()
	again := m.started[name]
	m.started[name] = true
	m.mu.Unlock()
	if again {
		m.restarts.WithLabelValues(kind).Inc()
	}
}

// onLeases sets presence_leases, presence_leases_held and
// presence_leases_frozen from the leases a follower read.
func (m *metrics) onLeases(leases []leaseStatus) {
	held, known, frozen := make(map[string]int), make(map[string]int), make(map[string]int)
	for _, l := range leases {
		known[l.Model]++
		if l.Held {
			held[l.Model]++
		}
		if l.Invalid != "" {
			frozen[l.Model]++
		}
	}
	for model, n := range known {
		m.leasesKnown.WithLabelValues(model).Set(float64(n))
		m.leases.WithLabelValues(model).Set(float64(held[model]))
		m.frozen.WithLabelValues(model).Set(float64(frozen[model]))
	}
}

// warnings says what slows detection down at now, as the latest load and
// the flushes of the last rateWindow show it.
func (m *metrics) warnings(now time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	switch {
	case !m.loaded:
	case m.lastLoad.Err != nil:
		out = append(out, fmt.Sprintf("cannot read presence (keeping the last view): %v", m.lastLoad.Err))
	case m.lastLoad.Stalled:
		out = append(out, fmt.Sprintf("no controller is on time: the database is suspected; %d keys held alive", m.lastLoad.Held))
	case m.lastLoad.Held > 0:
		out = append(out, fmt.Sprintf("falling behind: %d keys held alive without a live ping (a controller is late)", m.lastLoad.Held))
	}
	if m.loaded && !m.lastLoad.Push && m.lastLoad.PushBreaks > 0 {
		out = append(out, fmt.Sprintf("no push: the reader polls every sync until it can tail the notices again (%d breaks)", m.lastLoad.PushBreaks))
	}
	if !m.lastSlow.IsZero() && now.Sub(m.lastSlow) < rateWindow {
		out = append(out, "falling behind: flushes slower than --flush in the last 10s")
	}
	return out
}

// health returns nil if the reader's latest load succeeded and was no
// older than within at now, else why not.
func (m *metrics) health(now time.Time, within time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.loaded:
		return errors.New("presence not read yet")
	case m.lastLoad.Err != nil:
		return fmt.Errorf("cannot read presence: %v", m.lastLoad.Err)
	case now.Sub(m.loadedAt) > within:
		return fmt.Errorf("no presence read for %v", now.Sub(m.loadedAt).Round(time.Second))
	}
	return nil
}

func (m *metrics) onFlush(s pingbatcher.FlushStats) {
	if s.Documents > 0 || s.Err != nil {
		m.flushTime.Observe(s.Took.Seconds())
	}
	if s.Took > m.flushInterval && (s.Documents > 0 || s.Err != nil) {
		m.slow.Inc()
		m.mu.Lock()
		m.lastSlow = m.clock.Now()
		m.mu.Unlock()
	}
	if s.Err != nil {
		m.flushes.WithLabelValues("error").Inc()
		m.errs.WithLabelValues("write", errorKind(s.Err)).Inc()
		return
	}
	m.flushes.WithLabelValues("ok").Inc()
	m.pings.Add(float64(s.Documents))
}

// onLoad is the presence reader's OnLoad: it must return quickly.
func (m *metrics) onLoad(s presencereader.LoadStats) {
	m.mu.Lock()
	m.lastLoad, m.loaded = s, true
	m.loadedAt = m.clock.Now()
	m.mu.Unlock()
	m.syncs.Observe(s.Took.Seconds())
	m.skipped.Add(float64(s.Skipped))
	m.skew.Set(s.MaxSkew.Seconds())
	// One series per writer the reader measures now: a retired
	// controller's goes.
	m.skews.Reset()
	for writer, skew := range s.Skews {
		m.skews.WithLabelValues(writer).Set(skew.Seconds())
	}
	if s.Err != nil {
		m.failures.WithLabelValues("error").Inc()
		m.errs.WithLabelValues("read", errorKind(s.Err)).Inc()
		return
	}
	m.failures.WithLabelValues("ok").Inc()
	m.alive.Set(float64(s.Alive))
	m.held.Set(float64(s.Held))
	if s.Stalled {
		m.stalled.Set(1)
	} else {
		m.stalled.Set(0)
	}
}

// monitor returns client options that count the database commands.
func (m *metrics) monitor() *mongooptions.ClientOptions {
	return m.commands.Options()
}

// rateWindow is the window over which /status and the terminal compute
// rates, so that any number of pollers see the same figures.
const rateWindow = 10 * time.Second

// writeRate turns the count of write commands into writes per second
// over the last rateWindow. Samples come from the demo's loop, every
// second; reading a rate changes nothing. It is safe for concurrent use.
type writeRate struct {
	m       *metrics
	mu      sync.Mutex
	samples []rateSample // oldest first, none older than rateWindow before the newest
}

type rateSample struct {
	at     time.Time
	writes int
}

func newWriteRate(m *metrics, now time.Time) *writeRate {
	return &writeRate{m: m, samples: []rateSample{{at: now, writes: m.commands.Writes()}}}
}

// sample records the count of writes at now.
func (r *writeRate) sample(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, rateSample{at: now, writes: r.m.commands.Writes()})
	for len(r.samples) > 2 && now.Sub(r.samples[1].at) >= rateWindow {
		r.samples = r.samples[1:]
	}
}

// perSecond returns the writes per second between the oldest sample
// within rateWindow before now (or the oldest, if younger) and the
// current count.
func (r *writeRate) perSecond(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := r.samples[0]
	for _, s := range r.samples {
		if now.Sub(s.at) <= rateWindow {
			from = s
			break
		}
	}
	elapsed := now.Sub(from.at).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return float64(r.m.commands.Writes()-from.writes) / elapsed
}

// loadFigure returns f of the latest load.
func (m *metrics) loadFigure(f func(presencereader.LoadStats) float64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f(m.lastLoad)
}

// boolFigure returns 1 for true, 0 for false.
func boolFigure(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
