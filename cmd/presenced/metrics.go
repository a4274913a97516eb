package main

import (
	"sync"
	"time"

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
	detections  *prometheus.HistogramVec
	slow        prometheus.Counter
	skipped     prometheus.Counter
	skew        prometheus.Gauge
	failures    *prometheus.CounterVec
	held        prometheus.Gauge
	stalled     prometheus.Gauge
	flushTime   prometheus.Histogram
	unexplained prometheus.Counter
	commands    commands.Counter
	// flushInterval is what a flush must take less than to keep pace.
	flushInterval time.Duration
}

func newMetrics(flushInterval time.Duration) *metrics {
	m := &metrics{
		flushInterval: flushInterval,
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
	}
	m.registry.MustRegister(m.pings, m.flushes, m.syncs, m.alive, m.leases, m.detections,
		m.slow, m.skipped, m.skew, m.failures, m.held, m.stalled, m.flushTime, m.unexplained,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "presence_database_write_commands_total",
			Help: "Insert, update and delete commands sent to the database.",
		}, func() float64 { return float64(m.commands.Writes()) }),
	)
	return m
}

func (m *metrics) onFlush(s pingbatcher.FlushStats) {
	if s.Documents > 0 || s.Err != nil {
		m.flushTime.Observe(s.Took.Seconds())
	}
	if s.Took > m.flushInterval && (s.Documents > 0 || s.Err != nil) {
		m.slow.Inc()
	}
	if s.Err != nil {
		m.flushes.WithLabelValues("error").Inc()
		return
	}
	m.flushes.WithLabelValues("ok").Inc()
	m.pings.Add(float64(s.Documents))
}

func (m *metrics) onLoad(s presencereader.LoadStats) {
	m.syncs.Observe(s.Took.Seconds())
	m.skipped.Add(float64(s.Skipped))
	m.skew.Set(s.MaxSkew.Seconds())
	if s.Err != nil {
		m.failures.WithLabelValues("error").Inc()
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

// writeRate turns the count of write commands into writes per second
// since the previous call. It is safe for concurrent use.
type writeRate struct {
	m    *metrics
	mu   sync.Mutex
	last int
	at   time.Time
}

func newWriteRate(m *metrics, now time.Time) *writeRate {
	return &writeRate{m: m, last: m.commands.Writes(), at: now}
}

func (r *writeRate) perSecond(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	writes := r.m.commands.Writes()
	rate := float64(writes-r.last) / now.Sub(r.at).Seconds()
	r.last, r.at = writes, now
	return rate
}
