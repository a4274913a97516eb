package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// model is the one model the agents of presencekit's side belong to.
var model = names.NewModelTag("00000000-0000-4000-8000-000000000000")

// counted is a client whose every command crosses a counting proxy of
// its own, so that each controller's commands are counted at the server
// apart.
type counted struct {
	proxy  *agenttest.Proxy
	client *mongo.Client
	base   *mongo.Collection
}

// connectCounted connects a client to srv through a proxy of its own.
func connectCounted(srv *agenttest.Server) (*counted, error) {
	proxy, uri, err := srv.NewProxy()
	if err != nil {
		return nil, err
	}
	client, err := mongo.Connect(mongooptions.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		_ = proxy.Close()
		return nil, err
	}
	return &counted{proxy: proxy, client: client, base: client.Database("anchors").Collection("presence")}, nil
}

// close disconnects the client and closes its proxy.
func (c *counted) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.client.Disconnect(ctx)
	_ = c.proxy.Close()
}

// observer is another controller's reader and watcher, recording what
// its subscription reports.
type observer struct {
	r    *presencereader.Reader
	w    *watcher.Watcher
	seen *sightings
}

// newObserver starts a reader and a watcher of the model on base,
// polling only if noPush is set, and follows its subscription until ctx
// ends.
func newObserver(ctx context.Context, base *mongo.Collection, period time.Duration, noPush bool) (*observer, error) {
	r, err := presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, Period: period, NoPush: noPush})
	if err != nil {
		return nil, err
	}
	w, err := watcher.New(watcher.Config{Reader: r, Model: model})
	if err != nil {
		r.Kill()
		_ = r.Wait()
		return nil, err
	}
	ob := &observer{r: r, w: w, seen: newSightings()}
	sub := w.Subscribe()
	go func() {
		defer sub.Close()
		for {
			changes, err := sub.Next(ctx)
			if err != nil {
				return
			}
			now := time.Now()
			for _, c := range changes {
				ob.seen.saw(c.Key, c.Alive, now)
			}
		}
	}()
	return ob, nil
}

// stop stops the observer's workers.
func (ob *observer) stop() {
	ob.w.Kill()
	_ = ob.w.Wait()
	ob.r.Kill()
	_ = ob.r.Wait()
}

// writer is the controller the agents connect to: its batcher, its own
// reader (woken by its batcher, as ControllerManifolds wires them) and
// its pruner.
type writer struct {
	b      *pingbatcher.PingBatcher
	r      *presencereader.Reader
	pr     *pruner.Pruner
	base   *mongo.Collection
	period time.Duration
}

// newWriter starts a controller's presence workers on base with the
// library's defaults but for period.
func newWriter(base *mongo.Collection, period time.Duration) (*writer, error) {
	wake := make(chan struct{}, 1)
	self := &pingbatcher.Self{}
	w := &writer{base: base, period: period}
	var err error
	if w.b, err = pingbatcher.New(pingbatcher.Config{
		Base: base, Period: period, Clock: clock.WallClock,
		OnFlush: pingbatcher.WakeOnPrompt(wake, self.OnFlush(nil)),
	}); err != nil {
		return nil, err
	}
	if w.r, err = presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, Period: period, Wake: wake, Self: self.Writer}); err != nil {
		w.stop()
		return nil, err
	}
	if w.pr, err = pruner.New(pruner.Config{Base: base, Clock: clock.WallClock, Period: period}); err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

// pinger returns a pinger of key through the writer's batcher, not
// started.
func (w *writer) pinger(key string) (*pinger.Pinger, error) {
	return pinger.New(pinger.Config{
		Base: w.base, Model: model, Key: key, Clock: clock.WallClock, Period: w.period,
		Recorder: func() pinger.PingRecorder { return w.b },
	})
}

// stop stops the writer's workers.
func (w *writer) stop() {
	if w.pr != nil {
		w.pr.Kill()
		_ = w.pr.Wait()
	}
	if w.r != nil {
		w.r.Kill()
		_ = w.r.Wait()
	}
	w.b.Kill()
	_ = w.b.Wait()
}

// startPingers starts a pinger of each key and returns them, all killed
// on failure.
func (w *writer) startPingers(keys []string) ([]*pinger.Pinger, error) {
	var ps []*pinger.Pinger
	for _, key := range keys {
		p, err := w.pinger(key)
		if err == nil {
			err = p.Start()
		}
		if err != nil {
			killAll(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// killAll kills every pinger and waits for it.
func killAll(ps []*pinger.Pinger) {
	for _, p := range ps {
		p.Kill()
	}
	for _, p := range ps {
		_ = p.Wait()
	}
}

// measureOurs runs presencekit's side on the embedded server: a writer
// controller with agents agents, another controller reading with push
// and a third polling, each on a client whose commands a proxy counts;
// requests are counted over a rest window, then events agents start,
// Disconnect, start again and stop silently, each at random moments over
// a period, as the other controllers' watchers see them. It returns the
// push side's figures and the polling side's.
func measureOurs(o options, progress func(string, ...any)) (result, result, error) {
	push, poll := result{name: "presencekit, push", cpu: -1}, result{name: "presencekit, polling", cpu: -1}
	srv, err := agenttest.NewServer()
	if err != nil {
		return push, poll, err
	}
	defer func() { _ = srv.Destroy() }()
	pid := childNamed("embeddedmongo")
	progress("presencekit: embedded server at %s (pid %d)", srv.URI(), pid)
	var conns []*counted
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	for range 3 {
		c, err := connectCounted(srv)
		if err != nil {
			return push, poll, err
		}
		conns = append(conns, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := newWriter(conns[0].base, o.period)
	if err != nil {
		return push, poll, err
	}
	defer w.stop()
	pushOb, err := newObserver(ctx, conns[1].base, o.period, false)
	if err != nil {
		return push, poll, err
	}
	defer pushOb.stop()
	pollOb, err := newObserver(ctx, conns[2].base, o.period, true)
	if err != nil {
		return push, poll, err
	}
	defer pollOb.stop()

	began := time.Now()
	live := make([]string, o.agents)
	causes := make([]time.Time, o.agents)
	for i := range live {
		live[i], causes[i] = fmt.Sprintf("live-%d", i), began
	}
	pingers, err := w.startPingers(live)
	if err != nil {
		return push, poll, err
	}
	defer killAll(pingers)
	for _, ob := range []*observer{pushOb, pollOb} {
		if d := ob.seen.wait(live, causes, true, 2*time.Minute); len(d.got) != len(live) {
			return push, poll, fmt.Errorf("another controller saw %d of %d agents start", len(d.got), len(live))
		}
	}
	progress("presencekit: %d agents alive at both other controllers in %.1fs; resting %v", len(live), time.Since(began).Seconds(), o.rest)
	time.Sleep(o.period)

	before := make([]map[string]int, len(conns))
	for i, c := range conns {
		before[i] = c.proxy.Counts()
	}
	cpu := startCPU(pid)
	time.Sleep(o.rest)
	share := cpu.share()
	window := time.Since(cpu.at)
	var totals, writes [3]int
	var described [3]string
	for i, c := range conns {
		delta := countsSince(before[i], c.proxy.Counts())
		totals[i], writes[i] = commandTotals(delta)
		described[i] = describeCounts(delta)
	}
	for i, side := range []*result{&push, &poll} {
		side.requests = float64(totals[0]+totals[i+1]) / window.Seconds()
		side.writes = float64(writes[0]+writes[i+1]) / window.Seconds()
		side.hasRequests = true
		side.breakdown = fmt.Sprintf("in %v, the writer controller sent %s; the other controller %s", window.Round(time.Millisecond), described[0], described[i+1])
		progress("%s: %.1f requests/s: %s", side.name, side.requests, side.breakdown)
	}
	// The server serves both other controllers at once: its CPU is
	// theirs together, given for both.
	push.cpu = share
	progress("presencekit: embedded server CPU at rest (writer, push and polling controllers together): %s", percent(share))

	keys := eventKeys(o.events)
	rng := rand.New(rand.NewPCG(uint64(o.agents), uint64(o.events)))
	events := make([]*pinger.Pinger, len(keys))
	for i, key := range keys {
		if events[i], err = w.pinger(key); err != nil {
			killAll(events[:i])
			return push, poll, err
		}
	}
	defer killAll(events)
	timeout := 2*o.period + 5*time.Second
	var startErr error
	started := staggered(len(keys), o.period, rng, func(i int) {
		if err := events[i].Start(); err != nil && startErr == nil {
			startErr = err
		}
	})
	if startErr != nil {
		return push, poll, startErr
	}
	push.start = pushOb.seen.wait(keys, started, true, timeout)
	poll.start = pollOb.seen.wait(keys, started, true, timeout)
	left := staggered(len(keys), o.period, rng, func(i int) { _ = events[i].Disconnect() })
	push.leave = pushOb.seen.wait(keys, left, false, timeout)
	poll.leave = pollOb.seen.wait(keys, left, false, timeout)

	pushOb.seen.forget(keys)
	pollOb.seen.forget(keys)
	restarted := time.Now()
	for _, p := range events {
		if err := p.Start(); err != nil {
			return push, poll, err
		}
	}
	for i := range causes[:len(keys)] {
		causes[i] = restarted
	}
	pushOb.seen.wait(keys, causes[:len(keys)], true, timeout)
	// A long-lived agent has pinged in two slots before it dies.
	time.Sleep(o.period)
	silenced := staggered(len(keys), o.period, rng, func(i int) { _ = events[i].Stop() })
	push.silent = pushOb.seen.wait(keys, silenced, false, timeout+o.period)
	poll.silent = pollOb.seen.wait(keys, silenced, false, timeout+o.period)
	push.load = loadAverage()
	poll.load = push.load
	push.falseDeaths, poll.falseDeaths = pushOb.seen.falseDeaths(), pollOb.seen.falseDeaths()
	return push, poll, nil
}
