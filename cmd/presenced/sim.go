package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/worker/pinger"
)

// What the simulation does to an agent.
const (
	causeStart = "start"
	causeJoin  = "join"
	causeLeave = "leave"
	causeCrash = "crash"
)

// simulation drives agents (pingers that join, leave cleanly and crash
// silently) and units that contend for leadership, through whatever
// outputs the engine currently gives.
type simulation struct {
	opts    options
	reg     *registry
	metrics *metrics
	clock   clock.Clock
	out     io.Writer
	term    *terminal

	mu         sync.Mutex
	rand       *rand.Rand
	agents     []*agent
	units      [][]*unit // per model
	leaders    []map[string]leader
	last       map[string]event // "model/key" -> the simulation's last act
	lastUp     map[string]event // "model/key" -> its last start or join
	recent     []detection
	detected   map[string]int
	stopped    bool
	unitsWG    sync.WaitGroup
	stopUnits  chan struct{}
	printLines bool
}

type agent struct {
	model   int
	key     string
	pinger  *pinger.Pinger
	running bool
	ended   chan struct{} // closed when the current run ends
}

type unit struct {
	app, name string
	crashed   bool
}

type leader struct {
	Unit  string `json:"unit"`
	Fence int64  `json:"fence"`
}

type event struct {
	cause string
	at    time.Time
	// seen is set on a start or join once the watcher reported the
	// agent alive after it.
	seen bool
}

type detection struct {
	Time    string  `json:"time"` // RFC 3339, when the watcher reported it
	Model   string  `json:"model"`
	Key     string  `json:"key"`
	Alive   bool    `json:"alive"`
	Cause   string  `json:"cause"`
	Seconds float64 `json:"seconds"`
}

func newSimulation(o options, reg *registry, m *metrics, clk clock.Clock, out io.Writer, term *terminal) *simulation {
	s := &simulation{
		opts: o, reg: reg, metrics: m, clock: clk, out: out, term: term,
		rand:       rand.New(rand.NewPCG(uint64(clk.Now().UnixNano()), 7)),
		last:       make(map[string]event),
		lastUp:     make(map[string]event),
		detected:   make(map[string]int),
		stopUnits:  make(chan struct{}),
		printLines: true,
	}
	for range reg.models {
		var units []*unit
		for a := 0; a < o.apps; a++ {
			app := "app" + strconv.Itoa(a)
			for u := 0; u < o.units; u++ {
				units = append(units, &unit{app: app, name: fmt.Sprintf("%s/%d", app, u)})
			}
		}
		s.units = append(s.units, units)
		s.leaders = append(s.leaders, make(map[string]leader))
	}
	return s
}

func (s *simulation) recorder(model int) func() pinger.PingRecorder {
	return func() pinger.PingRecorder {
		o, _ := s.reg.get(model)
		if o.batcher == nil {
			return nil
		}
		return o.batcher
	}
}

// start starts every agent and the leadership contest, printing progress.
func (s *simulation) start(ctx context.Context) error {
	n := len(s.reg.models)
	for i := 0; i < s.opts.agents; i++ {
		model := i % n
		o, _ := s.reg.get(model)
		p, err := pinger.New(pinger.Config{
			Base: o.base, Model: s.reg.models[model], Key: "machine-" + strconv.Itoa(i),
			Recorder: s.recorder(model), Clock: s.clock, Period: s.opts.period,
		})
		if err != nil {
			return err
		}
		a := &agent{model: model, key: "machine-" + strconv.Itoa(i), pinger: p}
		s.mu.Lock()
		s.agents = append(s.agents, a)
		s.startAgent(a, causeStart)
		s.mu.Unlock()
		if (i+1)%500 == 0 || i+1 == s.opts.agents {
			fmt.Fprintf(s.out, "started %d/%d agents\n", i+1, s.opts.agents)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	for i := range s.reg.models {
		s.unitsWG.Add(1)
		go s.contend(i)
	}
	return nil
}

// startAgent starts a's pinger. s.mu must be held.
func (s *simulation) startAgent(a *agent, cause string) {
	if err := a.pinger.Start(); err != nil {
		a.running = false
		return
	}
	a.running = true
	a.ended = make(chan struct{})
	ended, p := a.ended, a.pinger
	go func() {
		_ = p.Wait()
		close(ended)
	}()
	e := event{cause: cause, at: s.clock.Now()}
	s.last[s.eventKey(a.model, a.key)] = e
	s.lastUp[s.eventKey(a.model, a.key)] = e
}

func (s *simulation) eventKey(model int, key string) string {
	return strconv.Itoa(model) + "/" + key
}

// step makes one agent or unit join, leave or crash, and restarts agents
// whose pinger ended on its own (its batcher was replaced).
func (s *simulation) step() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	for _, a := range s.agents {
		if a.running && closed(a.ended) {
			s.startAgent(a, causeJoin)
		}
	}
	if s.opts.apps > 0 && s.rand.IntN(10) == 0 {
		units := s.units[s.rand.IntN(len(s.units))]
		u := units[s.rand.IntN(len(units))]
		u.crashed = !u.crashed
		return
	}
	a := s.agents[s.rand.IntN(len(s.agents))]
	switch {
	case !a.running:
		s.startAgent(a, causeJoin)
	case s.rand.IntN(2) == 0:
		_ = a.pinger.Disconnect()
		a.running = false
		s.last[s.eventKey(a.model, a.key)] = event{cause: causeLeave, at: s.clock.Now()}
	default:
		_ = a.pinger.Stop()
		a.running = false
		s.last[s.eventKey(a.model, a.key)] = event{cause: causeCrash, at: s.clock.Now()}
	}
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// contend has model i's live units claim leadership every period for two
// periods, as juju's units do; a crashed unit stops claiming, so its
// leadership moves once its lease runs out.
func (s *simulation) contend(i int) {
	defer s.unitsWG.Done()
	ticker := s.clock.NewTimer(0)
	defer ticker.Stop()
	for {
		select {
		case <-s.stopUnits:
			return
		case <-ticker.Chan():
		}
		o, _ := s.reg.get(i)
		s.mu.Lock()
		units := append([]*unit(nil), s.units[i]...)
		crashed := make(map[string]bool)
		for _, u := range units {
			crashed[u.name] = u.crashed
		}
		s.mu.Unlock()
		leaders := make(map[string]leader)
		for _, u := range units {
			if crashed[u.name] || o.manager == nil {
				continue
			}
			if err := o.manager.ClaimLeadership(u.app, u.name, 2*s.opts.period); err != nil {
				continue
			}
			if token, err := o.manager.CheckLeadership(u.app, u.name); err == nil {
				leaders[u.app] = leader{Unit: u.name, Fence: token.Fence()}
			}
		}
		s.mu.Lock()
		s.leaders[i] = leaders
		s.mu.Unlock()
		s.metrics.leases.WithLabelValues(s.reg.models[i].Id()).Set(float64(len(leaders)))
		s.metrics.leasesKnown.WithLabelValues(s.reg.models[i].Id()).Set(float64(s.opts.apps))
		ticker.Reset(s.opts.period)
	}
}

// detected records what a watcher reported, with its latency when the
// simulation caused it, and prints it.
func (s *simulation) report(model int, key string, alive bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := detection{Time: s.clock.Now().UTC().Format(time.RFC3339Nano), Model: s.reg.models[model].Id(), Key: key, Alive: alive}
	k := s.eventKey(model, key)
	e, ok := s.last[k]
	if up, upOK := s.lastUp[k]; alive && upOK && !up.seen {
		// The agent came up and may have gone again since: this is
		// the late report of its coming up.
		e, ok = up, true
		up.seen = true
		s.lastUp[k] = up
	}
	if ok {
		wanted := (e.cause == causeJoin || e.cause == causeStart) == alive
		if wanted {
			d.Cause = e.cause
			d.Seconds = s.clock.Now().Sub(e.at).Seconds()
			if !alive {
				s.metrics.detections.WithLabelValues(e.cause).Observe(d.Seconds)
			}
		}
	}
	s.detected[d.Cause]++
	if !alive && d.Cause == "" {
		// Nothing the simulation did explains it: a false death.
		s.metrics.unexplained.Inc()
	}
	s.recent = append(s.recent, d)
	if len(s.recent) > 20 {
		s.recent = s.recent[len(s.recent)-20:]
	}
	if !s.printLines || d.Cause == causeStart {
		return
	}
	state := "DEAD "
	if alive {
		state = "ALIVE"
	}
	line := fmt.Sprintf("%s %-14s model %d", state, key, model)
	if d.Cause != "" {
		line += fmt.Sprintf("  %.2fs after %s", d.Seconds, d.Cause)
	}
	s.term.line(line, false)
}

// snapshot returns the leaders of each model and the recent detections.
func (s *simulation) snapshot() ([]map[string]leader, []detection, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	leaders := make([]map[string]leader, len(s.leaders))
	for i, l := range s.leaders {
		leaders[i] = make(map[string]leader, len(l))
		for k, v := range l {
			leaders[i][k] = v
		}
	}
	counts := make(map[string]int, len(s.detected))
	for k, v := range s.detected {
		counts[k] = v
	}
	return leaders, append([]detection(nil), s.recent...), counts
}

// stop stops every agent and unit.
func (s *simulation) stop() {
	s.mu.Lock()
	s.stopped = true
	agents := s.agents
	s.mu.Unlock()
	close(s.stopUnits)
	s.unitsWG.Wait()
	for _, a := range agents {
		a.pinger.Kill()
	}
	for _, a := range agents {
		_ = a.pinger.Wait()
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
