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
	"github.com/presencekit/presence/internal/benchkit"
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
	seen *benchkit.Sightings
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
	return &observer{r: r, w: w, seen: benchkit.NewSightings(ctx, w.Subscribe())}, nil
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
// library's defaults but for period, its reader polling only if noPush
// is set.
func newWriter(base *mongo.Collection, period time.Duration, noPush bool) (*writer, error) {
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
	if w.r, err = presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, Period: period, Wake: wake, Self: self.Writer, NoPush: noPush}); err != nil {
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

// measureOurs runs presencekit's side on a fresh embedded server: a
// writer controller with agents agents and another controller reading,
// with push or (noPush) polling only, both controllers alike, each on a
// client whose commands a proxy counts; requests and the server's CPU are
// measured over a rest window, then events agents start, Disconnect,
// start again and stop silently, each at random moments over a period, as
// the other controller's watcher sees them.
func measureOurs(o options, noPush bool, progress func(string, ...any)) (result, error) {
	res := result{name: "presencekit, push", cpu: -1}
	if noPush {
		res.name = "presencekit, polling"
	}
	srv, err := agenttest.NewServer()
	if err != nil {
		return res, err
	}
	defer func() { _ = srv.Destroy() }()
	pid := childNamed("embeddedmongo")
	progress("%s: embedded server at %s (pid %d)", res.name, srv.URI(), pid)
	var conns []*counted
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	for range 2 {
		c, err := connectCounted(srv)
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := newWriter(conns[0].base, o.period, noPush)
	if err != nil {
		return res, err
	}
	defer w.stop()
	ob, err := newObserver(ctx, conns[1].base, o.period, noPush)
	if err != nil {
		return res, err
	}
	defer ob.stop()

	began := time.Now()
	live := make([]string, o.agents)
	causes := make([]time.Time, o.agents)
	for i := range live {
		live[i], causes[i] = fmt.Sprintf("live-%d", i), began
	}
	pingers, err := w.startPingers(live)
	if err != nil {
		return res, err
	}
	defer killAll(pingers)
	if d := detect(ob.seen, live, causes, true, 2*time.Minute); len(d.got) != len(live) {
		return res, fmt.Errorf("the other controller saw %d of %d agents start", len(d.got), len(live))
	}
	progress("%s: %d agents alive at the other controller in %.1fs; resting %v", res.name, len(live), time.Since(began).Seconds(), o.rest)
	time.Sleep(o.period)

	before := []map[string]int{conns[0].proxy.Counts(), conns[1].proxy.Counts()}
	res.load = load1() + " at rest"
	cpu := startCPU(pid)
	time.Sleep(o.rest)
	res.cpu = cpu.share()
	window := time.Since(cpu.at)
	writer := countsSince(before[0], conns[0].proxy.Counts())
	other := countsSince(before[1], conns[1].proxy.Counts())
	writerTotal, writerWrites := commandTotals(writer)
	otherTotal, otherWrites := commandTotals(other)
	res.requests = float64(writerTotal+otherTotal) / window.Seconds()
	res.writes = float64(writerWrites+otherWrites) / window.Seconds()
	res.hasRequests = true
	res.breakdown = fmt.Sprintf("in %v the writer controller sent %s; the other controller %s", window.Round(time.Millisecond), describeCounts(writer), describeCounts(other))
	progress("%s: %.1f requests/s, server CPU %s: %s", res.name, res.requests, percent(res.cpu), res.breakdown)

	keys := eventKeys(o.events)
	rng := rand.New(rand.NewPCG(uint64(o.agents), uint64(o.events)))
	events := make([]*pinger.Pinger, len(keys))
	for i, key := range keys {
		if events[i], err = w.pinger(key); err != nil {
			killAll(events[:i])
			return res, err
		}
	}
	defer killAll(events)
	timeout := 2*o.period + 5*time.Second
	var startErr error
	started := benchkit.Staggered(len(keys), o.period, rng, func(i int) {
		if err := events[i].Start(); err != nil && startErr == nil {
			startErr = err
		}
	})
	if startErr != nil {
		return res, startErr
	}
	res.start = detect(ob.seen, keys, started, true, timeout)
	left := benchkit.Staggered(len(keys), o.period, rng, func(i int) { _ = events[i].Disconnect() })
	res.leave = detect(ob.seen, keys, left, false, timeout)

	ob.seen.Forget(keys)
	restarted := time.Now()
	for _, p := range events {
		if err := p.Start(); err != nil {
			return res, err
		}
	}
	for i := range causes[:len(keys)] {
		causes[i] = restarted
	}
	detect(ob.seen, keys, causes[:len(keys)], true, timeout)
	// A long-lived agent has pinged in two slots before it dies.
	time.Sleep(o.period)
	silenced := benchkit.Staggered(len(keys), o.period, rng, func(i int) { _ = events[i].Stop() })
	res.silent = detect(ob.seen, keys, silenced, false, timeout+o.period)
	res.load += ", " + load1() + " at the end"
	res.falseDeaths = ob.seen.Unexpected()
	return res, nil
}
