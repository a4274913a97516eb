package presence_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
)

var fullSoak = flag.Bool("soak.full", false, "run the 30-day soak (several minutes) instead of the CI one")

// soakSuite runs controllers for simulated days of churn and checks that
// nothing grows with it.
type soakSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&soakSuite{})

const (
	// soakPeriod is the Period, scaled up so that a simulated day is 48
	// slots; every interval scales with it.
	soakPeriod  = time.Hour
	soakStep    = soakPeriod / 2
	soakModels  = 50 // created and removed over the whole soak
	soakLive    = 4  // models alive at once
	soakKeys    = 8  // keys per model
	soakPerStep = 8  // churn cycles per step
)

// soakController is one controller: a batcher and a reader.
type soakController struct {
	batcher *pingbatcher.PingBatcher
	reader  *presencereader.Reader
	stats   *soakStats
}

// soakStats keeps a reader's latest LoadStats.
type soakStats struct {
	mu   sync.Mutex
	last presencereader.LoadStats
}

func (s *soakStats) onLoad(st presencereader.LoadStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = st
}

func (s *soakStats) get() presencereader.LoadStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// soakSample is what is sampled every simulated hour.
type soakSample struct {
	Heap                            uint64
	Keys, Models, LogEntries, Skips int
	Pings, Beings, Removed, Leases  int
}

// soak is one run's state.
type soak struct {
	c       *gc.C
	s       *soakSuite
	clk     *testclock.Clock
	rnd     *rand.Rand
	ctrl    [2]*soakController
	pruner  *pruner.Pruner
	leases  lease.Client
	models  []names.ModelTag
	next    int
	keys    map[string]pinger.Identity // model/key -> identity, for live keys
	owner   map[string]int             // model/key -> controller
	views   []*presencereader.View
	dying   chan struct{}
	watch   chan presencereader.Change // never read
	slow    []*presencereader.Subscription
	cycles  int
	samples []soakSample
}

func (s *soakSuite) TestNothingGrowsWithChurnOverSimulatedDays(c *gc.C) {
	days := 3
	if *fullSoak {
		days = 30
	}
	k := &soak{c: c, s: s, clk: agenttest.NewClock(), rnd: rand.New(rand.NewPCG(1, 2)),
		keys: map[string]pinger.Identity{}, owner: map[string]int{}, dying: make(chan struct{}), watch: make(chan presencereader.Change)}
	base := s.DB.Collection("presence")
	var err error
	k.pruner, err = pruner.New(pruner.Config{Base: base, Clock: k.clk, Interval: 1000 * time.Hour, Period: soakPeriod})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), k.pruner)
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
	steps := days * 24 * int(time.Hour/soakStep)
	for range soakLive - 1 {
		k.turnModels()
	}
	modelEvery := steps / (soakModels - soakLive + 1)
	for step := 0; step < steps; step++ {
		if step%modelEvery == 0 {
			k.turnModels()
		}
		if step%(24*int(time.Hour/soakStep)) == 12*int(time.Hour/soakStep) {
			k.restart()
		}
		k.churn()
		k.tick(step)
	}
	k.check(days)
}

// start starts a controller.
func (k *soak) start() *soakController {
	base := k.s.DB.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: k.clk, Period: soakPeriod, FlushInterval: 1000 * time.Hour})
	k.c.Assert(err, gc.IsNil)
	st := &soakStats{}
	r, err := presencereader.New(presencereader.Config{Base: base, Clock: k.clk, Period: soakPeriod, SyncInterval: 1000 * time.Hour,
		LogAge: 2 * soakPeriod, OnLoad: st.onLoad})
	k.c.Assert(err, gc.IsNil)
	return &soakController{batcher: b, reader: r, stats: st}
}

func (k *soak) stop(ctl *soakController) {
	workertest.CleanKill(agenttest.C(k.c), ctl.batcher)
	workertest.CleanKill(agenttest.C(k.c), ctl.reader)
}

// restart restarts controller 1, every simulated day at noon, with a
// new writer id: its keys register
// again with the new batcher.
func (k *soak) restart() {
	k.stop(k.ctrl[1])
	k.ctrl[1] = k.start()
	for mk, ctl := range k.owner {
		if ctl == 1 {
			model, key := splitKey(mk)
			id, err := k.ctrl[1].batcher.Register(nil, model, key)
			k.c.Assert(err, gc.IsNil)
			k.keys[mk] = id
		}
	}
}

// turnModels creates a model, with a lease and its subscribers on
// controller 0, and removes the oldest once soakLive are alive.
func (k *soak) turnModels() {
	if len(k.models) == soakLive {
		gone := k.models[0]
		k.models = k.models[1:]
		for mk, ctl := range k.owner {
			if model, _ := splitKey(mk); model == gone {
				k.ctrl[ctl].batcher.Release(k.keys[mk])
				delete(k.keys, mk)
				delete(k.owner, mk)
			}
		}
		k.views[0].Close()
		k.views, k.slow = k.views[1:], k.slow[1:]
		k.c.Assert(presence.RemoveModel(context.Background(), k.s.DB, gone), gc.IsNil)
	}
	model := names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", k.next))
	k.next++
	k.models = append(k.models, model)
	_, err := k.leases.Claim(context.Background(), lease.Key{Namespace: leaseexpiry.Namespace, Model: model.Id(), Lease: "app"},
		lease.Request{Holder: "app/0", Duration: soakPeriod})
	k.c.Assert(err, gc.IsNil)
	v, err := k.ctrl[0].reader.NewView(model, k.dying, func() error { return presencereader.ErrStopped })
	k.c.Assert(err, gc.IsNil)
	for i := range soakKeys {
		k.c.Assert(v.Watch(fmt.Sprintf("machine-%d", i), k.watch), gc.IsNil)
	}
	v.Subscribe() // never read
	k.views = append(k.views, v)
	k.slow = append(k.slow, v.SubscribeWith(presencereader.SubscribeConfig{Coalesce: false}))
}

// churn runs soakPerStep cycles: a key starts, Disconnects or stops
// silently.
func (k *soak) churn() {
	for range soakPerStep {
		model := k.models[k.rnd.IntN(len(k.models))]
		key := fmt.Sprintf("machine-%d", k.rnd.IntN(soakKeys))
		mk := model.Id() + "/" + key
		id, live := k.keys[mk]
		switch {
		case !live:
			ctl := k.rnd.IntN(2)
			id, err := k.ctrl[ctl].batcher.Register(nil, model, key)
			k.c.Assert(err, gc.IsNil)
			k.keys[mk], k.owner[mk] = id, ctl
		case k.rnd.IntN(2) == 0:
			_ = k.ctrl[k.owner[mk]].batcher.Disconnect(id, schema.Slot(k.clk.Now(), soakPeriod))
			fallthrough
		default:
			k.ctrl[k.owner[mk]].batcher.Release(id)
			delete(k.keys, mk)
			delete(k.owner, mk)
		}
		k.cycles++
	}
}

// tick moves a slot on: every live key pings, both controllers flush
// and load, the pruner prunes, a slow subscriber reads, and every hour a
// sample is taken.
func (k *soak) tick(step int) {
	k.clk.Advance(soakStep)
	slot := schema.Slot(k.clk.Now(), soakPeriod)
	for mk, id := range k.keys {
		k.c.Assert(k.ctrl[k.owner[mk]].batcher.Ping(id, slot), gc.IsNil)
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

// sample records what the soak watches.
func (k *soak) sample() {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := k.ctrl[0].stats.get()
	base := k.s.DB.Collection("presence")
	k.samples = append(k.samples, soakSample{
		Heap: ms.HeapAlloc, Keys: st.Keys, Models: st.Models, LogEntries: st.LogEntries,
		Skips: k.ctrl[0].reader.Report()["skipped-documents"].(int),
		Pings: k.count(schema.Pings(base)), Beings: k.count(schema.Beings(base)),
		Removed: k.count(schema.Removed(base)), Leases: k.count(k.s.DB.Collection("leases")),
	})
}

// count counts coll's documents.
func (k *soak) count(coll *mongo.Collection) int {
	n, err := coll.CountDocuments(context.Background(), bson.D{})
	k.c.Assert(err, gc.IsNil)
	return int(n)
}

// check asserts that every sample after the first day is within 10% of
// the first day's peak (or one more, for small counts).
func (k *soak) check(days int) {
	c := k.c
	perDay := 24
	peak := maxSample(k.samples[:perDay])
	worst := maxSample(k.samples[perDay:])
	c.Logf("%d churn cycles over %d simulated days, %d hourly samples", k.cycles, days, len(k.samples))
	c.Logf("first-day peak: %+v", peak)
	c.Logf("later peak:     %+v", worst)
	for d := 0; d < days; d++ {
		c.Logf("day %2d peak: %+v", d+1, maxSample(k.samples[d*perDay:(d+1)*perDay]))
	}
	within := func(name string, later, first int) {
		// 10%, or one for the small counts of the CI run.
		c.Check(float64(later) <= max(1.1*float64(first), float64(first+1)), gc.Equals, true, gc.Commentf("%s: %d after the first day, %d in it", name, later, first))
	}
	within("keys", worst.Keys, peak.Keys)
	within("models", worst.Models, peak.Models)
	within("log entries", worst.LogEntries, peak.LogEntries)
	within("skip records", worst.Skips, peak.Skips)
	within("pings", worst.Pings, peak.Pings)
	within("beings", worst.Beings, peak.Beings)
	// Removal markers are not held to it: a marker goes once no writer
	// names the model, and a long-lived writer names every model it
	// served until the batcher retires it (most of its 4,096 or more
	// indexes released). They are logged above.
	within("leases", worst.Leases, peak.Leases)
	within("heap", int(worst.Heap), int(peak.Heap))
}

func maxSample(samples []soakSample) soakSample {
	var out soakSample
	for _, s := range samples {
		out.Heap = max(out.Heap, s.Heap)
		out.Keys, out.Models = max(out.Keys, s.Keys), max(out.Models, s.Models)
		out.LogEntries, out.Skips = max(out.LogEntries, s.LogEntries), max(out.Skips, s.Skips)
		out.Pings, out.Beings = max(out.Pings, s.Pings), max(out.Beings, s.Beings)
		out.Removed, out.Leases = max(out.Removed, s.Removed), max(out.Leases, s.Leases)
	}
	return out
}

// splitKey splits "model/key".
func splitKey(mk string) (names.ModelTag, string) {
	return names.NewModelTag(mk[:36]), mk[37:]
}
