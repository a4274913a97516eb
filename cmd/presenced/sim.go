package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/watcher"
)

// simulation drives agents: each is a pinger that joins, leaves cleanly
// (Disconnect) or crashes (Stop without a word) and comes back.
type simulation struct {
	opts    options
	base    *mongo.Collection
	models  []names.ModelTag
	batcher pinger.PingRecorder
	clock   clock.Clock
	rand    *rand.Rand

	mu     sync.Mutex
	agents []*agent
	events map[string]event // key -> what the simulation last did to it
}

type agent struct {
	key     string
	model   names.ModelTag
	pinger  *pinger.Pinger
	running bool
}

type event struct {
	what string
	at   time.Time
}

func newSimulation(o options, base *mongo.Collection, models []names.ModelTag, batcher pinger.PingRecorder, clk clock.Clock) *simulation {
	return &simulation{
		opts: o, base: base, models: models, batcher: batcher, clock: clk,
		rand:   rand.New(rand.NewPCG(uint64(clk.Now().UnixNano()), 42)),
		events: make(map[string]event),
	}
}

// start starts every agent, printing progress.
func (s *simulation) start(ctx context.Context, out io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < s.opts.agents; i++ {
		model := s.models[i%len(s.models)]
		key := fmt.Sprintf("machine-%d", i)
		p, err := pinger.New(pinger.Config{
			Base: s.base, Model: model, Key: key,
			Recorder: func() pinger.PingRecorder { return s.batcher },
			Clock:    s.clock, Period: s.opts.period,
		})
		if err != nil {
			return err
		}
		if err := p.Start(); err != nil {
			return err
		}
		s.agents = append(s.agents, &agent{key: key, model: model, pinger: p, running: true})
		if (i+1)%1000 == 0 || i+1 == s.opts.agents {
			fmt.Fprintf(out, "started %d/%d agents\n", i+1, s.opts.agents)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// step makes one agent join, leave or crash.
func (s *simulation) step(out io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.agents[s.rand.IntN(len(s.agents))]
	now := s.clock.Now()
	var what string
	switch {
	case !a.running:
		what = "joins"
		if err := a.pinger.Start(); err != nil {
			fmt.Fprintf(out, "%s cannot rejoin: %v\n", a.key, err)
			return
		}
		a.running = true
	case s.rand.IntN(2) == 0:
		what = "leaves"
		_ = a.pinger.Disconnect()
		a.running = false
	default:
		what = "crashes"
		_ = a.pinger.Stop()
		a.running = false
	}
	s.events[a.model.Id()+"/"+a.key] = event{what: what, at: now}
	fmt.Fprintf(out, "   sim: %s %s\n", a.key, what)
}

// describe says what a watcher reported and how long after the cause.
func (s *simulation) describe(model names.ModelTag, c watcher.Change) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	state := "DEAD "
	if c.Alive {
		state = "ALIVE"
	}
	line := fmt.Sprintf("%s %s in model …%s", state, c.Key, model.Id()[24:])
	if e, ok := s.events[model.Id()+"/"+c.Key]; ok {
		line += fmt.Sprintf(" (%s %.1fs ago)", e.what, s.clock.Now().Sub(e.at).Seconds())
	}
	return line
}

// stop stops every agent cleanly.
func (s *simulation) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.agents {
		a.pinger.Kill()
		_ = a.pinger.Wait()
	}
}
