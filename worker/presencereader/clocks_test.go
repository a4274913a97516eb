package presencereader_test

import (
	"context"
	"fmt"
	"strings"
	"time"

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
	"github.com/presencekit/presence/worker/presencereader"
)

// clocksSuite runs two controllers and a reader, each on a client and a
// clock of its own (a SkewClock over one testclock), and moves the clocks
// apart: presence must need nothing of their clocks but their rate.
type clocksSuite struct {
	agenttest.MongoSuite
	runs int
}

var _ = gc.Suite(&clocksSuite{})

const (
	clocksPeriod = schema.DefaultPeriod
	// clocksStep is the harness's pace: each step moves the base clock
	// on, pings every live key, flushes both batchers and loads once.
	clocksStep = time.Second
	// clocksRun is how long each scenario runs, by the base clock.
	clocksRun = 70 * time.Second
)

var clocksModel = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000c10c")

// controller is a batcher and the keys its pingers keep alive, on a clock
// of its own.
type controller struct {
	clock *agenttest.SkewClock
	base  *mongo.Collection
	b     *pingbatcher.PingBatcher
	ids   map[string]pinger.Identity
	live  map[string]bool
}

// ping pings every live key in the slot of the controller's clock, as
// its pingers would, registering again when the batcher asks.
func (ctl *controller) ping(c *gc.C) {
	for key := range ctl.live {
		id, ok := ctl.ids[key]
		err := errors.Cause(pinger.ErrUnknownIdentity)
		if ok {
			err = ctl.b.Ping(id, schema.Slot(ctl.clock.Now(), clocksPeriod))
		}
		if errors.Is(err, pinger.ErrUnknownIdentity) {
			id, err = ctl.b.Register(ctl.base, clocksModel, key)
			c.Assert(err, gc.IsNil)
			ctl.ids[key] = id
			err = ctl.b.Ping(id, schema.Slot(ctl.clock.Now(), clocksPeriod))
		}
		c.Assert(err, gc.IsNil)
	}
}

// expect is what a key must read: alive from its start until its end, or
// dead within bound of its end.
type expect struct {
	start, end time.Duration
	bound      time.Duration
	owner      int
}

// clockScenario is one run: the controllers' and the reader's offsets at
// the start, and what happens at each step (at is the base clock's time
// since the start).
type clockScenario struct {
	offsets [3]time.Duration // controller 0, controller 1, the reader
	events  func(h *clockHarness, at time.Duration)
}

// clockHarness runs a clockScenario.
type clockHarness struct {
	base   *testclock.Clock
	ctls   [2]*controller
	reader *agenttest.SkewClock
	r      *presencereader.Reader
	view   *presencereader.View
	logger *agenttest.Logger
}

// clockFigures is what a run saw: keys read dead while they were alive,
// deaths seen later than their bound (or never), and the first of either.
type clockFigures struct {
	falseDeaths, lateDeaths int
	first                   string
}

// keys are the scenario's keys: two that stay alive, one on each
// controller; on controller 0, one that comes up at 30 s, one that
// disconnects at 40 s and one whose pinger stops at 50 s.
var clockKeys = map[string]expect{
	"stay-0": {end: clocksRun, owner: 0},
	"stay-1": {end: clocksRun, owner: 1},
	"new":    {start: 30 * time.Second, end: clocksRun, owner: 0},
	"disc":   {end: 40 * time.Second, bound: clocksStep, owner: 0},
	"stop":   {end: 50 * time.Second, bound: clocksPeriod + 2*clocksStep, owner: 0},
}

func (s *clocksSuite) newHarness(c *gc.C, sc clockScenario) *clockHarness {
	h := &clockHarness{base: agenttest.NewClock(), logger: &agenttest.Logger{}}
	// Each run has collections of its own: what an earlier run's writers
	// left would be read, and judged, by this one.
	s.runs++
	name := fmt.Sprintf("presence%d", s.runs)
	for i := range h.ctls {
		clk, err := agenttest.NewSkewClock(h.base, sc.offsets[i], 0)
		c.Assert(err, gc.IsNil)
		base := s.NewDB(c).Collection(name)
		b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clk, Period: clocksPeriod, FlushInterval: 24 * time.Hour})
		c.Assert(err, gc.IsNil)
		h.ctls[i] = &controller{clock: clk, base: base, b: b, ids: map[string]pinger.Identity{}, live: map[string]bool{}}
	}
	var err error
	h.reader, err = agenttest.NewSkewClock(h.base, sc.offsets[2], 0)
	c.Assert(err, gc.IsNil)
	h.r, err = presencereader.New(presencereader.Config{
		Base: s.NewDB(c).Collection(name), Clock: h.reader, Period: clocksPeriod,
		SyncInterval: clocksStep, Logger: h.logger,
	})
	c.Assert(err, gc.IsNil)
	dying := make(chan struct{})
	h.view, err = h.r.NewView(clocksModel, dying, func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	return h
}

func (h *clockHarness) kill(c *gc.C) {
	h.view.Close()
	workertest.CleanKill(agenttest.C(c), h.r)
	for _, ctl := range h.ctls {
		workertest.CleanKill(agenttest.C(c), ctl.b)
	}
}

// run runs sc for clocksRun and returns what the reader saw.
func (s *clocksSuite) run(c *gc.C, sc clockScenario) clockFigures {
	h := s.newHarness(c, sc)
	defer h.kill(c)
	var out clockFigures
	fail := func(format string, args ...any) {
		if out.first == "" {
			out.first = fmt.Sprintf(format, args...)
		}
	}
	deadSince := map[string]time.Duration{}
	for at := time.Duration(0); at <= clocksRun; at += clocksStep {
		if at > 0 {
			// No load a notice woke may span the step (see
			// agenttest.Settle).
			agenttest.Settle(c, h.ctls[0].base, []agenttest.Batcher{h.ctls[0].b, h.ctls[1].b}, []agenttest.Reader{h.r})
			h.base.Advance(clocksStep)
		}
		if sc.events != nil {
			sc.events(h, at)
		}
		for key, e := range clockKeys {
			ctl := h.ctls[e.owner]
			switch {
			case at == e.start:
				ctl.live[key] = true
			case at == e.end && e.end < clocksRun && key == "disc":
				delete(ctl.live, key)
				c.Assert(ctl.b.Disconnect(ctl.ids[key], schema.Slot(ctl.clock.Now(), clocksPeriod)), gc.IsNil)
			case at == e.end && e.end < clocksRun:
				delete(ctl.live, key)
				ctl.b.Release(ctl.ids[key])
			}
		}
		for _, ctl := range h.ctls {
			ctl.ping(c)
			c.Assert(ctl.b.Sync(), gc.IsNil)
		}
		c.Assert(h.r.Refresh(), gc.IsNil)
		for key, e := range clockKeys {
			alive, err := h.view.Alive(key)
			c.Assert(err, gc.IsNil)
			switch {
			case at >= e.start && at < e.end && !alive:
				out.falseDeaths++
				fail("%s read dead at %v", key, at)
			case e.end < clocksRun && at >= e.end && alive:
				if at-e.end >= e.bound {
					out.lateDeaths++
					fail("%s still alive at %v, %v after its end", key, at, at-e.end)
				}
			case e.end < clocksRun && at >= e.end && !alive:
				if _, ok := deadSince[key]; !ok {
					deadSince[key] = at
				}
			}
		}
	}
	for key, e := range clockKeys {
		if _, ok := deadSince[key]; e.end < clocksRun && !ok {
			out.lateDeaths++
			fail("%s never read dead", key)
		}
	}
	return out
}

// check runs sc and asserts no false death, and every death seen within
// its bound (the positive control: the harness can see a death).
func (s *clocksSuite) check(c *gc.C, sc clockScenario) {
	got := s.run(c, sc)
	c.Logf("false deaths %d, deaths late or missed %d", got.falseDeaths, got.lateDeaths)
	c.Check(got, gc.Equals, clockFigures{}, gc.Commentf("%s", got.first))
}

// at returns events that call f once, at the base clock's time t.
func at(t time.Duration, f func(h *clockHarness)) func(h *clockHarness, now time.Duration) {
	return func(h *clockHarness, now time.Duration) {
		if now == t {
			f(h)
		}
	}
}

func (s *clocksSuite) TestAWriterClockSteppedBackByAPeriodCostsNoKey(c *gc.C) {
	s.check(c, clockScenario{events: at(20*time.Second, func(h *clockHarness) { h.ctls[0].clock.Step(-clocksPeriod) })})
}

func (s *clocksSuite) TestAWriterClockSteppedBackByAnHourCostsNoKey(c *gc.C) {
	s.check(c, clockScenario{events: at(20*time.Second, func(h *clockHarness) { h.ctls[0].clock.Step(-time.Hour) })})
}

func (s *clocksSuite) TestAWriterClockSteppedForwardAnHourAndBackCostsNoKey(c *gc.C) {
	forward := at(20*time.Second, func(h *clockHarness) { h.ctls[0].clock.Step(time.Hour) })
	back := at(25*time.Second, func(h *clockHarness) { h.ctls[0].clock.Step(-time.Hour) })
	s.check(c, clockScenario{events: func(h *clockHarness, now time.Duration) {
		forward(h, now)
		back(h, now)
	}})
}

// offsets are the offsets a clock runs at for the tests of clocks that
// run ahead or behind.
var offsets = []time.Duration{
	clocksPeriod / 2, clocksPeriod, 5 * clocksPeriod, time.Hour,
	-clocksPeriod / 2, -clocksPeriod, -5 * clocksPeriod, -time.Hour,
}

func (s *clocksSuite) TestAWriterClockAheadOrBehindCostsNoKey(c *gc.C) {
	for _, offset := range offsets {
		c.Logf("writer's clock off by %v", offset)
		s.check(c, clockScenario{offsets: [3]time.Duration{offset, 0, 0}})
	}
}

func (s *clocksSuite) TestAWriterClockDriftingCostsNoKey(c *gc.C) {
	for _, rate := range []float64{schema.MaxRate, -schema.MaxRate} {
		c.Logf("writer's clock drifting at %v", rate)
		s.check(c, clockScenario{events: at(0, func(h *clockHarness) {
			c.Assert(h.ctls[0].clock.SetDrift(rate), gc.IsNil)
		})})
	}
}

func (s *clocksSuite) TestTheReaderClockSteppedCostsNoKey(c *gc.C) {
	for _, step := range []time.Duration{-clocksPeriod, -time.Hour, clocksPeriod, time.Hour} {
		c.Logf("reader's clock stepped by %v", step)
		s.check(c, clockScenario{events: at(20*time.Second, func(h *clockHarness) { h.reader.Step(step) })})
	}
}

func (s *clocksSuite) TestTheReaderClockAheadBehindOrDriftingCostsNoKey(c *gc.C) {
	for _, offset := range offsets {
		c.Logf("reader's clock off by %v", offset)
		s.check(c, clockScenario{offsets: [3]time.Duration{0, 0, offset}})
	}
	for _, rate := range []float64{schema.MaxRate, -schema.MaxRate} {
		c.Logf("reader's clock drifting at %v", rate)
		s.check(c, clockScenario{events: at(0, func(h *clockHarness) {
			c.Assert(h.reader.SetDrift(rate), gc.IsNil)
		})})
	}
}

// newest returns controller ctl's writer and the latest slot it wrote.
func (s *clocksSuite) newest(c *gc.C, ctl *controller) (string, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	var writer string
	for _, id := range ctl.ids {
		writer = id.Writer
	}
	var doc schema.PingDoc
	err := schema.Pings(ctl.base).FindOne(ctx, bson.D{{Key: schema.FieldWriter, Value: writer}},
		options.FindOne().SetSort(bson.D{{Key: schema.FieldSlot, Value: -1}})).Decode(&doc)
	c.Assert(err, gc.IsNil)
	return writer, doc.Slot
}

func (s *clocksSuite) TestADocumentClaimingASlotItsWriterCannotHaveReachedMasksNobody(c *gc.C) {
	var hostile []string
	insert := at(20*time.Second, func(h *clockHarness) {
		writer, slot := s.newest(c, h.ctls[0])
		every := bson.Binary{Data: []byte{0xff, 0xff}}
		for _, doc := range []bson.D{
			// A far-future slot under the right _id...
			{{Key: "_id", Value: schema.PingID(slot+1000, writer)}, {Key: "slot", Value: slot + 1000}},
			// ...and the next slot under another's _id.
			{{Key: "_id", Value: schema.PingID(slot+5000, writer)}, {Key: "slot", Value: slot + 1}},
		} {
			doc = append(doc, bson.D{{Key: "writer", Value: writer}, {Key: "period", Value: int64(clocksPeriod)},
				{Key: "alive", Value: every}, {Key: "dead", Value: every}}...)
			_, err := schema.Pings(h.ctls[0].base).InsertOne(context.Background(), doc)
			c.Assert(err, gc.IsNil)
			hostile = append(hostile, doc[0].Value.(string))
		}
	})
	var logger *agenttest.Logger
	s.check(c, clockScenario{events: func(h *clockHarness, now time.Duration) {
		logger = h.logger
		insert(h, now)
	}})
	for _, id := range hostile {
		named := 0
		for _, line := range logger.Entries() {
			if strings.Contains(line, "skipping") && strings.Contains(line, id) {
				named++
			}
		}
		c.Check(named, gc.Equals, 1, gc.Commentf("%s in %s", id, strings.Join(logger.Entries(), "\n")))
	}
}
