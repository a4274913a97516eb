package presence_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/juju/errors"

	"github.com/juju/clock/testclock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/memstat"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/internal/soakstat"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
)

var (
	fullSoak    = flag.Bool("soak.full", false, "run the 30-day soak (a few minutes) instead of the CI one")
	soakProfile = flag.String("soak.profile", "", "write heap profiles of the soak's first and last days into this directory")
)

// soakSuite runs controllers for simulated days of churn and checks that
// nothing grows with it.
type soakSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&soakSuite{})

const (
	// soakPeriod is the Period, scaled up so that a simulated day is 48
	// slots; every interval scales with it.
	soakPeriod = time.Hour
	soakStep   = soakPeriod / 2
	// soakTurn is how often a model is created and the oldest removed:
	// 250 models over the 30 days, 34 over the CI's 3. A simulated day
	// is then like every other (turns, the restart at noon and the
	// churn, which is deterministic), so its peak is the steady state's.
	soakTurn    = 3 * time.Hour
	soakLive    = 10 // models alive at once
	soakKeys    = 60 // key names per model
	soakAlive   = 40 // keys alive per model at any time
	soakWatched = 8  // keys per model watched on unread channels
	soakPerStep = 8  // churn cycles per step: a key stops, another starts
)

// soakController is one controller: a batcher and a reader.
type soakController struct {
	batcher *pingbatcher.PingBatcher
	reader  *presencereader.Reader
	stats   *soakstat.LastLoad
}

// soak is one run's state.
type soak struct {
	c       *gc.C
	s       *soakSuite
	clk     *testclock.Clock
	ctrl    [2]*soakController
	pruner  *pruner.Pruner
	leases  lease.Client
	models  []names.ModelTag
	next    int
	keys    map[string]pinger.Identity // model/key -> identity, for live keys
	owner   map[string]int             // model/key -> controller
	first   map[names.ModelTag]int     // model -> its longest-lived key
	views   []*presencereader.View
	dying   chan struct{}
	watch   chan presencereader.Change // never read
	slow    []*presencereader.Subscription
	cycles  int
	samples []soakstat.Sample
}

func (s *soakSuite) TestNothingGrowsWithChurnOverSimulatedDays(c *gc.C) {
	days := 3
	if *fullSoak {
		days = 30
	}
	memstat.Enable()
	k := &soak{c: c, s: s, clk: agenttest.NewClock(),
		keys: map[string]pinger.Identity{}, owner: map[string]int{}, first: map[names.ModelTag]int{}, dying: make(chan struct{}), watch: make(chan presencereader.Change)}
	// Nothing here waits for the workers' timers, but testclock counts
	// every one set in a buffer of 10,000 notifications that it panics
	// on once full: read them.
	go func() {
		for {
			select {
			case <-k.clk.Alarms():
			case <-k.dying:
				return
			}
		}
	}()
	base := s.DB.Collection("presence")
	var err error
	k.pruner, err = pruner.New(pruner.Config{Base: base, Clock: k.clk, Interval: 1000 * time.Hour, Period: soakPeriod})
	c.Assert(err, gc.IsNil)
	defer func() { workertest.CleanKill(agenttest.C(c), k.pruner) }()
	k.leases, err = lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: k.clk})
	c.Assert(err, gc.IsNil)
	for i := range k.ctrl {
		k.ctrl[i] = k.start()
	}
	defer func() {
		close(k.dying)
		for _, v := range k.views {
			v.Close()
		}
		for _, ctl := range k.ctrl {
			k.stop(ctl)
		}
	}()
	perDay := 24 * int(time.Hour/soakStep)
	steps := days * perDay
	for range soakLive - 1 {
		k.turnModels()
	}
	modelEvery := int(soakTurn / soakStep)
	for step := 0; step < steps; step++ {
		if step%modelEvery == 0 {
			k.turnModels()
		}
		if step%perDay == perDay/2 {
			k.restart()
		}
		k.churn()
		k.tick(step)
		if step == perDay-1 || step == steps-1 {
			k.profile(step/perDay + 1)
		}
	}
	k.check(days)
}

// profile writes a heap profile of the end of day into the directory
// -soak.profile names, if any.
func (k *soak) profile(day int) {
	if *soakProfile == "" {
		return
	}
	f, err := os.Create(filepath.Join(*soakProfile, fmt.Sprintf("heap-day%02d.pprof", day)))
	k.c.Assert(err, gc.IsNil)
	defer f.Close()
	runtime.GC()
	k.c.Assert(pprof.Lookup("heap").WriteTo(f, 0), gc.IsNil)
}

// start starts a controller.
func (k *soak) start() *soakController {
	base := k.s.DB.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: k.clk, Period: soakPeriod, FlushInterval: 1000 * time.Hour})
	k.c.Assert(err, gc.IsNil)
	st := &soakstat.LastLoad{}
	r, err := presencereader.New(presencereader.Config{Base: base, Clock: k.clk, Period: soakPeriod, SyncInterval: 1000 * time.Hour,
		LogAge: 2 * soakPeriod, OnLoad: st.OnLoad})
	k.c.Assert(err, gc.IsNil)
	return &soakController{batcher: b, reader: r, stats: st}
}

func (k *soak) stop(ctl *soakController) {
	workertest.CleanKill(agenttest.C(k.c), ctl.batcher)
	workertest.CleanKill(agenttest.C(k.c), ctl.reader)
}

// restart restarts controller 1, every simulated day at noon, with a
// new writer id: its keys register again with the new batcher.
func (k *soak) restart() {
	k.stop(k.ctrl[1])
	k.ctrl[1] = k.start()
	for mk, ctl := range k.owner {
		if ctl == 1 {
			k.register(mk, 1)
		}
	}
}

// register registers model/key mk with controller ctl, as a pinger does
// when it starts or when its writer was retired.
func (k *soak) register(mk string, ctl int) {
	model, key := splitKey(mk)
	id, err := k.ctrl[ctl].batcher.Register(nil, model, key)
	k.c.Assert(err, gc.IsNil)
	k.keys[mk], k.owner[mk] = id, ctl
}

// turnModels creates a model, with soakAlive live keys, a lease and its
// subscribers on controller 0, and removes the oldest once soakLive are
// alive: its keys stop, and it is removed.
func (k *soak) turnModels() {
	if len(k.models) == soakLive {
		gone := k.models[0]
		k.models = k.models[1:]
		for i := range soakKeys {
			if mk := soakKey(gone, i); k.live(mk) {
				k.stopKey(mk, false)
			}
		}
		delete(k.first, gone)
		k.views[0].Close()
		k.views, k.slow = k.views[1:], k.slow[1:]
		k.c.Assert(presence.RemoveModel(context.Background(), k.s.DB, gone), gc.IsNil)
	}
	model := names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", k.next))
	k.next++
	k.models = append(k.models, model)
	for i := range soakAlive {
		k.register(soakKey(model, i), i%2)
	}
	_, err := k.leases.Claim(context.Background(), lease.Key{Namespace: leaseexpiry.Namespace, Model: model.Id(), Lease: "app"},
		lease.Request{Holder: "app/0", Duration: soakPeriod})
	k.c.Assert(err, gc.IsNil)
	v, err := k.ctrl[0].reader.NewView(model, k.dying, func() error { return presencereader.ErrStopped })
	k.c.Assert(err, gc.IsNil)
	for i := range soakWatched {
		k.c.Assert(v.Watch(fmt.Sprintf("machine-%d", i), k.watch), gc.IsNil)
	}
	v.Subscribe() // never read
	k.views = append(k.views, v)
	k.slow = append(k.slow, v.SubscribeWith(presencereader.SubscribeConfig{Coalesce: false}))
}

// soakKey returns model's key i as model/key.
func soakKey(model names.ModelTag, i int) string {
	return fmt.Sprintf("%s/machine-%d", model.Id(), i)
}

// live reports whether model/key mk is alive.
func (k *soak) live(mk string) bool {
	_, ok := k.keys[mk]
	return ok
}

// stopKey stops model/key mk, after a Disconnect if disconnect is set,
// else silently.
func (k *soak) stopKey(mk string, disconnect bool) {
	b := k.ctrl[k.owner[mk]].batcher
	if disconnect {
		// The identity may be a retired writer's: then it is unknown.
		_ = b.Disconnect(k.keys[mk], schema.Slot(k.clk.Now(), soakPeriod))
	}
	b.Release(k.keys[mk])
	delete(k.keys, mk)
	delete(k.owner, mk)
}

// churn runs soakPerStep cycles, each in the next model in turn: the
// model's longest-lived key stops (Disconnects, or stops silently, in
// turn) and its longest-stopped one starts, on each controller in
// turn; so soakAlive keys of each model live at any time, and as many
// keys go each step, which makes the bounds on what the view remembers
// of gone keys steady rather than a random walk.
func (k *soak) churn() {
	for range soakPerStep {
		model := k.models[k.cycles%len(k.models)]
		first := k.first[model]
		k.stopKey(soakKey(model, first%soakKeys), k.cycles%2 == 0)
		k.register(soakKey(model, (first+soakAlive)%soakKeys), k.cycles/2%2)
		k.first[model] = first + 1
		k.cycles++
	}
}

// tick moves a slot on once the controllers are settled: every live key
// pings, both controllers flush and load, the pruner prunes, a slow
// subscriber reads, and every hour a sample is taken.
func (k *soak) tick(step int) {
	k.settle()
	k.clk.Advance(soakStep)
	slot := schema.Slot(k.clk.Now(), soakPeriod)
	for mk := range k.keys {
		k.ping(mk, slot)
	}
	for _, ctl := range k.ctrl {
		k.c.Assert(ctl.batcher.Sync(), gc.IsNil)
	}
	_, err := k.pruner.Prune(context.Background())
	k.c.Assert(err, gc.IsNil)
	for _, ctl := range k.ctrl {
		k.c.Assert(ctl.reader.Refresh(), gc.IsNil)
	}
	if step%12 == 0 {
		for _, sub := range k.slow {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			_, _ = sub.Next(ctx)
			cancel()
		}
	}
	if step%int(time.Hour/soakStep) == 0 {
		k.sample()
	}
}

// settle flushes what churn left (the batchers append their notices)
// and returns once no load of either reader is in flight or asked for,
// so that the clock moves on between loads, as time passes between the
// loads of a controller at rest (see agenttest.Settle: without it,
// push's loads in flight while the clock moved half a Period were
// stalls to the readers, every few simulated hours, and the keys grew
// from 839 on day 1 to 1,724 on day 3).
func (k *soak) settle() {
	agenttest.Settle(k.c, k.s.DB.Collection("presence"),
		[]agenttest.Batcher{k.ctrl[0].batcher, k.ctrl[1].batcher}, []agenttest.Reader{k.ctrl[0].reader, k.ctrl[1].reader})
}

// ping pings model/key mk in slot; a pinger whose writer was retired
// (it named a removed model) registers again and pings.
func (k *soak) ping(mk string, slot int64) {
	err := k.ctrl[k.owner[mk]].batcher.Ping(k.keys[mk], slot)
	if errors.Is(err, pinger.ErrUnknownIdentity) {
		k.register(mk, k.owner[mk])
		err = k.ctrl[k.owner[mk]].batcher.Ping(k.keys[mk], slot)
	}
	k.c.Assert(err, gc.IsNil)
}

// sample records what the soak watches.
func (k *soak) sample() {
	ctl := k.ctrl[0]
	sample, err := soakstat.Take(context.Background(), ctl.reader, ctl.stats.Get(), ctl.batcher, k.s.DB.Collection("presence"), k.s.DB.Collection("leases"))
	k.c.Assert(err, gc.IsNil)
	k.samples = append(k.samples, sample)
}

// check asserts that every figure of soakstat.Figures, after the first
// day, is within 10% of its first day's peak (or its slack).
func (k *soak) check(days int) {
	c := k.c
	perDay := 24
	peak := soakstat.Max(k.samples[:perDay])
	worst := soakstat.Max(k.samples[perDay:])
	c.Logf("%d churn cycles over %d simulated days, %d hourly samples", k.cycles, days, len(k.samples))
	c.Logf("first-day peak: %v", peak)
	c.Logf("later peak:     %v", worst)
	for d := 0; d < days; d++ {
		c.Logf("day %2d peak: %v", d+1, soakstat.Max(k.samples[d*perDay:(d+1)*perDay]))
	}
	for _, f := range soakstat.Figures {
		c.Check(f.Within(worst, peak), gc.Equals, true,
			gc.Commentf("%s: %d after the first day, %d in it", f.Name, f.Get(worst), f.Get(peak)))
	}
}

// splitKey splits "model/key".
func splitKey(mk string) (names.ModelTag, string) {
	return names.NewModelTag(mk[:36]), mk[37:]
}
