package pruner_test

import (
	"context"
	"fmt"
	"time"

	"github.com/juju/clock"
	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/pruner"
)

// clocksSuite runs three controllers, each a batcher on a client and a
// clock of its own (a SkewClock over one testclock), and a pruner in the
// second of them, on that controller's clock; the third controller dies
// during the run. It moves the clocks apart: whatever any clock says, the
// pruner must never delete a live writer's beings or latest pings, must
// keep documents bounded, and must remove a dead controller's documents
// within its window.
type clocksSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&clocksSuite{})

const (
	clocksPeriod = schema.DefaultPeriod
	// clocksStep is the harness's pace: each step moves the base clock
	// on, pings every live key (as often as pingers do) and flushes
	// every live batcher.
	clocksStep = clocksPeriod / 4
	// clocksInterval is the pruner's Interval: the harness prunes at
	// every multiple of it on the base clock, as the pruner's timer
	// would (a host's timers count monotonic time, which steps do not
	// move).
	clocksInterval = 2 * clocksPeriod
	// clocksRun is how long each scenario runs, by the base clock.
	clocksRun = 140 * time.Second
	// clocksDeath is when controller 2 dies, without a word.
	clocksDeath = 40 * time.Second
	// clocksKept is the most ping documents a live writer may have: the
	// window below its latest slot, its latest, and what it wrote in the
	// last two Intervals (four slots each): a prune deletes none of a
	// writer's documents until it has seen it move on by a step it can
	// have made, which a document that appears beyond its reach meanwhile
	// puts off by a prune.
	clocksKept = schema.KeepSlots + 1 + 2*int(clocksInterval/(clocksPeriod/2))
)

// clocksWindow is how long a dead writer's documents may stay (see the
// package doc): an Interval for a prune to see its last move, then two
// more prunes and three Periods; and an Interval more for the one gap or
// step of the pruner's clock that a scenario makes.
var clocksWindow = clocksInterval + max(2*clocksInterval, 3*clocksPeriod+clocksInterval) + clocksInterval

var clocksModel = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000c10c")

// clocksController is a batcher and the keys its pingers keep alive, on a
// clock of its own.
type clocksController struct {
	clock *agenttest.SkewClock
	base  *mongo.Collection
	b     *pingbatcher.PingBatcher
	ids   []pinger.Identity
	dead  bool
}

// ping pings every key in the slot of the controller's clock, as its
// pingers would, registering again when the batcher asks, and flushes.
func (ctl *clocksController) ping(c *gc.C) {
	for i := range ctl.ids {
		slot := schema.Slot(ctl.clock.Now(), clocksPeriod)
		err := ctl.b.Ping(ctl.ids[i], slot)
		if errors.Is(err, pinger.ErrUnknownIdentity) {
			ctl.ids[i], err = ctl.b.Register(ctl.base, clocksModel, fmt.Sprintf("key-%d", i))
			c.Assert(err, gc.IsNil)
			err = ctl.b.Ping(ctl.ids[i], slot)
		}
		c.Assert(err, gc.IsNil)
	}
	c.Assert(ctl.b.Sync(), gc.IsNil)
}

// writer returns the controller's writer id.
func (ctl *clocksController) writer() string {
	return ctl.ids[0].Writer
}

// pruneScenario is one run: the controllers' offsets at the start (the
// pruner's is controller 1's) and what happens at each step (at is the
// base clock's time since the start).
type pruneScenario struct {
	offsets [3]time.Duration
	events  func(h *pruneHarness, at time.Duration)
}

// pruneHarness runs a pruneScenario.
type pruneHarness struct {
	c      *gc.C
	base   *testclock.Clock
	ctls   [3]*clocksController
	pruner *pruner.Pruner
	pings  *mongo.Collection
	beings *mongo.Collection
	// ended holds, for every writer id a controller has had, when it
	// stopped being that controller's (retired or dead), or -1; owner
	// which controller's it is.
	ended map[string]time.Duration
	owner map[string]int
	// hostile holds the _ids of documents the scenario inserted, which
	// no writer wrote; those of live writers are not counted in their
	// bound.
	hostile map[string]bool
}

// pruneFigures is what a run saw: live writers' beings and latest ping
// documents deleted, prunes after which some writer had more documents
// than its bound allows, when the dead controller's documents had all
// gone (after its death; -1: never), and the first fault.
type pruneFigures struct {
	lostBeings, lostLatest, unbounded int
	deadGoneAfter                     time.Duration
	first                             string
}

// manualTimers is a clock whose timers never fire: the harness prunes by
// hand, at the pruner's Interval on the base clock.
type manualTimers struct {
	clock.Clock
	idle *testclock.Clock
}

// NewTimer is part of the clock.Clock interface.
func (m manualTimers) NewTimer(d time.Duration) clock.Timer {
	return m.idle.NewTimer(d)
}

func (s *clocksSuite) newHarness(c *gc.C, sc pruneScenario) *pruneHarness {
	h := &pruneHarness{c: c, base: agenttest.NewClock(), ended: map[string]time.Duration{}, owner: map[string]int{}, hostile: map[string]bool{}}
	for i := range h.ctls {
		clk, err := agenttest.NewSkewClock(h.base, sc.offsets[i], 0)
		c.Assert(err, gc.IsNil)
		base := s.NewDB(c).Collection("presence")
		b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clk, Period: clocksPeriod, FlushInterval: 24 * time.Hour})
		c.Assert(err, gc.IsNil)
		h.ctls[i] = &clocksController{clock: clk, base: base, b: b, ids: make([]pinger.Identity, 2)}
	}
	base := s.NewDB(c).Collection("presence")
	var err error
	h.pruner, err = pruner.New(pruner.Config{
		Base:     base,
		Clock:    manualTimers{Clock: h.ctls[1].clock, idle: agenttest.NewClock()},
		Period:   clocksPeriod,
		Interval: clocksInterval,
	})
	c.Assert(err, gc.IsNil)
	h.pings, h.beings = schema.Pings(s.DB.Collection("presence")), schema.Beings(s.DB.Collection("presence"))
	return h
}

func (h *pruneHarness) kill() {
	workertest.CleanKill(agenttest.C(h.c), h.pruner)
	for _, ctl := range h.ctls {
		if !ctl.dead {
			workertest.CleanKill(agenttest.C(h.c), ctl.b)
		}
	}
}

// docHead is what the harness reads of a document.
type docHead struct {
	ID     string `bson:"_id"`
	Writer string `bson:"writer"`
	Slot   int64  `bson:"slot"`
}

// heads returns every document of coll.
func (h *pruneHarness) heads(coll *mongo.Collection) []docHead {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{
		{Key: schema.FieldWriter, Value: 1}, {Key: schema.FieldSlot, Value: 1},
	}))
	h.c.Assert(err, gc.IsNil)
	var out []docHead
	h.c.Assert(cur.All(ctx, &out), gc.IsNil)
	return out
}

// needed returns the _ids of what each live controller's writer needs:
// its beings documents and its latest two ping documents.
func (h *pruneHarness) needed() map[string]bool {
	latest := map[string][2]docHead{}
	for _, doc := range h.heads(h.pings) {
		if h.hostile[doc.ID] {
			continue
		}
		top := latest[doc.Writer]
		switch {
		case top[0].ID == "" || doc.Slot > top[0].Slot:
			top[1], top[0] = top[0], doc
		case top[1].ID == "" || doc.Slot > top[1].Slot:
			top[1] = doc
		}
		latest[doc.Writer] = top
	}
	live := map[string]bool{}
	out := map[string]bool{}
	for _, ctl := range h.ctls {
		if !ctl.dead {
			live[ctl.writer()] = true
			for _, doc := range latest[ctl.writer()] {
				if doc.ID != "" {
					out["ping "+doc.ID] = true
				}
			}
		}
	}
	for _, doc := range h.heads(h.beings) {
		if live[doc.Writer] {
			out["beings "+doc.ID] = true
		}
	}
	return out
}

// owners notes every controller's current writer, and when each writer
// it had before stopped being its own.
func (h *pruneHarness) owners(at time.Duration) {
	current := map[string]bool{}
	for _, ctl := range h.ctls {
		if !ctl.dead {
			current[ctl.writer()] = true
		}
	}
	for i, ctl := range h.ctls {
		if w := ctl.writer(); current[w] {
			h.ended[w], h.owner[w] = -1, i
		}
	}
	for w, end := range h.ended {
		if end < 0 && !current[w] {
			h.ended[w] = at
		}
	}
}

// run runs sc for clocksRun and returns what the pruner did.
func (s *clocksSuite) run(c *gc.C, sc pruneScenario) pruneFigures {
	h := s.newHarness(c, sc)
	defer h.kill()
	out := pruneFigures{deadGoneAfter: -1}
	fail := func(format string, args ...any) {
		if out.first == "" {
			out.first = fmt.Sprintf(format, args...)
		}
	}
	for at := time.Duration(0); at <= clocksRun; at += clocksStep {
		if at > 0 {
			h.base.Advance(clocksStep)
		}
		if at > 0 && at%clocksInterval == 0 {
			// What the writers wrote by now is what the pruner's timer
			// finds: it fires before this step's flushes.
			before := h.needed()
			_, err := h.pruner.Prune(context.Background())
			c.Assert(err, gc.IsNil)
			after := h.needed()
			for id := range before {
				if !after[id] {
					if id[0] == 'b' {
						out.lostBeings++
					} else {
						out.lostLatest++
					}
					fail("prune at %v deleted %s", at, id)
				}
			}
			s.checkBounds(h, at, &out, fail)
		}
		if sc.events != nil {
			sc.events(h, at)
		}
		if at == clocksDeath {
			dying := h.ctls[2]
			dying.dead = true
			workertest.CleanKill(agenttest.C(c), dying.b)
		}
		for _, ctl := range h.ctls {
			if !ctl.dead {
				ctl.ping(c)
			}
		}
		h.owners(at)
		if at > clocksDeath && out.deadGoneAfter < 0 && !h.hasDead() {
			out.deadGoneAfter = at - clocksDeath
		}
	}
	if out.deadGoneAfter < 0 || out.deadGoneAfter > clocksWindow {
		fail("the dead controller's documents went %v after its death", out.deadGoneAfter)
	}
	return out
}

// hasDead reports whether any document of a writer of the dead
// controller remains.
func (h *pruneHarness) hasDead() bool {
	for _, doc := range append(h.heads(h.pings), h.heads(h.beings)...) {
		if owner, ok := h.owner[doc.Writer]; ok && owner == 2 {
			return true
		}
	}
	return false
}

// checkBounds counts, after the prune at at, the live writers with more
// ping documents than clocksKept (hostile ones aside), and the writers
// that stopped being any controller's more than clocksWindow ago but
// still have documents.
func (s *clocksSuite) checkBounds(h *pruneHarness, at time.Duration, out *pruneFigures, fail func(string, ...any)) {
	count := map[string]int{}
	for _, doc := range append(h.heads(h.pings), h.heads(h.beings)...) {
		if !h.hostile[doc.ID] || h.ended[doc.Writer] >= 0 {
			count[doc.Writer]++
		}
	}
	for w, n := range count {
		end, known := h.ended[w]
		switch {
		case known && end < 0 && n > clocksKept+1:
			out.unbounded++
			fail("writer %s has %d documents at %v", w, n, at)
		case known && end >= 0 && at-end > clocksWindow:
			out.unbounded++
			fail("writer %s has %d documents at %v, %v after it ended", w, n, at, at-end)
		}
	}
}

// check runs sc and asserts that the pruner deleted nothing a live
// writer needs, kept documents bounded, and removed the dead
// controller's within clocksWindow (the positive control: the harness
// sees documents go).
func (s *clocksSuite) check(c *gc.C, sc pruneScenario) {
	got := s.run(c, sc)
	c.Logf("live writers' beings lost %d, latest pings lost %d, prunes over bounds %d, dead controller's documents gone after %v",
		got.lostBeings, got.lostLatest, got.unbounded, got.deadGoneAfter)
	c.Check(got.lostBeings+got.lostLatest+got.unbounded, gc.Equals, 0, gc.Commentf("%s", got.first))
	c.Check(got.deadGoneAfter >= 0 && got.deadGoneAfter <= clocksWindow, gc.Equals, true, gc.Commentf("%s", got.first))
}

// at returns events that call f once, at the base clock's time t.
func at(t time.Duration, f func(h *pruneHarness)) func(h *pruneHarness, now time.Duration) {
	return func(h *pruneHarness, now time.Duration) {
		if now == t {
			f(h)
		}
	}
}

func (s *clocksSuite) TestADeadControllersDocumentsGoWithinTheWindow(c *gc.C) {
	got := s.run(c, pruneScenario{})
	c.Logf("dead controller's documents gone %v after its death (window %v)", got.deadGoneAfter, clocksWindow)
	c.Assert(got, gc.Equals, pruneFigures{deadGoneAfter: got.deadGoneAfter})
	c.Assert(got.deadGoneAfter > 0 && got.deadGoneAfter <= clocksWindow, gc.Equals, true)
}

func (s *clocksSuite) TestThePrunerClockSteppedDeletesNothingALiveWriterNeeds(c *gc.C) {
	for _, step := range []time.Duration{-clocksPeriod, -time.Hour, clocksPeriod, time.Hour} {
		c.Logf("pruner's clock stepped by %v", step)
		s.check(c, pruneScenario{events: at(50*time.Second, func(h *pruneHarness) { h.ctls[1].clock.Step(step) })})
	}
}

// offsets are the offsets a clock runs at for the tests of clocks that
// run ahead or behind.
var offsets = []time.Duration{
	clocksPeriod / 2, clocksPeriod, 5 * clocksPeriod, time.Hour,
	-clocksPeriod / 2, -clocksPeriod, -5 * clocksPeriod, -time.Hour,
}

func (s *clocksSuite) TestThePrunerClockAheadOrBehindDeletesNothingALiveWriterNeeds(c *gc.C) {
	for _, offset := range offsets {
		c.Logf("pruner's clock off by %v", offset)
		s.check(c, pruneScenario{offsets: [3]time.Duration{0, offset, 0}})
	}
}

func (s *clocksSuite) TestThePrunerClockDriftingDeletesNothingALiveWriterNeeds(c *gc.C) {
	for _, rate := range []float64{schema.MaxRate, -schema.MaxRate} {
		c.Logf("pruner's clock drifting at %v", rate)
		s.check(c, pruneScenario{events: at(0, func(h *pruneHarness) {
			c.Assert(h.ctls[1].clock.SetDrift(rate), gc.IsNil)
		})})
	}
}

func (s *clocksSuite) TestAWriterClockSteppedDeletesNothingALiveWriterNeeds(c *gc.C) {
	for _, steps := range [][]time.Duration{{-clocksPeriod}, {-time.Hour}, {time.Hour, -time.Hour}} {
		c.Logf("writer's clock stepped by %v", steps)
		s.check(c, pruneScenario{events: func(h *pruneHarness, now time.Duration) {
			for i, step := range steps {
				if now == 50*time.Second+time.Duration(i)*5*time.Second {
					h.ctls[0].clock.Step(step)
				}
			}
		}})
	}
}

func (s *clocksSuite) TestAFutureSlotDocumentGoesOnceItsWriterPassesItOrGoes(c *gc.C) {
	// An earlier version's batcher whose clock was ahead for a while
	// wrote slots its writer's sequence has not reached: one of a live
	// writer, a few Periods on, and one of the controller that dies,
	// an hour and more on.
	future := map[string]int{}
	insert := at(30*time.Second, func(h *pruneHarness) {
		for i, ahead := range map[int]int64{0: 12, 2: 1000} {
			writer := h.ctls[i].writer()
			var top docHead
			for _, doc := range h.heads(h.pings) {
				if doc.Writer == writer && doc.Slot > top.Slot {
					top = doc
				}
			}
			slot := top.Slot + ahead
			id := schema.PingID(slot, writer)
			_, err := h.pings.InsertOne(context.Background(), bson.D{
				{Key: "_id", Value: id}, {Key: "slot", Value: slot}, {Key: "writer", Value: writer},
				{Key: "period", Value: int64(clocksPeriod)}, {Key: "alive", Value: bson.Binary{Data: []byte{0xff}}},
			})
			c.Assert(err, gc.IsNil)
			h.hostile[id] = true
			future[id] = i
		}
	})
	var h *pruneHarness
	s.check(c, pruneScenario{events: func(hh *pruneHarness, now time.Duration) {
		h = hh
		insert(hh, now)
	}})
	for _, doc := range h.heads(h.pings) {
		_, left := future[doc.ID]
		c.Check(left, gc.Equals, false, gc.Commentf("future document %s of controller %d left", doc.ID, future[doc.ID]))
	}
}
