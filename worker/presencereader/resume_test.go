package presencereader_test

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
)

// resumeSuite checks the change log and the subscriptions that resume
// after a position, with a batcher and a reader on a test clock whose
// loads the tests drive.
type resumeSuite struct {
	agenttest.MongoSuite
	clock *testclock.Clock
	base  *mongo.Collection
	b     *pingbatcher.PingBatcher
	ids   map[string]pinger.Identity
	// cleanup runs at teardown, last first.
	cleanup []func()
}

var _ = gc.Suite(&resumeSuite{})

const resumePeriod = 30 * time.Second

var modelB = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")

func (s *resumeSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.base = s.DB.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, Clock: s.clock, Period: resumePeriod, FlushInterval: time.Hour})
	c.Assert(err, gc.IsNil)
	s.b = b
	s.ids = make(map[string]pinger.Identity)
	s.cleanup = nil
}

func (s *resumeSuite) TearDownTest(c *gc.C) {
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	workertest.CleanKill(agenttest.C(c), s.b)
	s.MongoSuite.TearDownTest(c)
}

// newReader starts a reader with config's log bounds, on the suite's
// clock, loading only when told, and a view of stressModel.
func (s *resumeSuite) newReader(c *gc.C, config presencereader.Config) (*presencereader.Reader, *presencereader.View) {
	config.Base, config.Clock, config.Period, config.SyncInterval = s.base, s.clock, resumePeriod, time.Hour
	r, err := presencereader.New(config)
	c.Assert(err, gc.IsNil)
	dying := make(chan struct{})
	v, err := r.NewView(stressModel, dying, func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() {
		close(dying)
		v.Close()
		workertest.CleanKill(agenttest.C(c), r)
	})
	return r, v
}

// set makes each key of stressModel in states alive or dead and has r
// load it: one load.
func (s *resumeSuite) set(c *gc.C, r *presencereader.Reader, states map[string]bool) {
	s.setIn(c, r, stressModel, states)
}

// setIn is set for the keys of model.
func (s *resumeSuite) setIn(c *gc.C, r *presencereader.Reader, model names.ModelTag, states map[string]bool) {
	slot := schema.Slot(s.clock.Now(), resumePeriod)
	for key, alive := range states {
		id, ok := s.ids[model.Id()+"/"+key]
		if !ok {
			var err error
			id, err = s.b.Register(s.base, model, key)
			c.Assert(err, gc.IsNil)
			s.ids[model.Id()+"/"+key] = id
			// A death needs a ping before it; within one slot the
			// death wins, so the key reads dead.
			c.Assert(s.b.Ping(id, slot), gc.IsNil)
		}
		if alive {
			c.Assert(s.b.Ping(id, slot), gc.IsNil)
		} else {
			c.Assert(s.b.Disconnect(id, slot), gc.IsNil)
		}
	}
	c.Assert(s.b.Sync(), gc.IsNil)
	c.Assert(r.Refresh(), gc.IsNil)
}

func nextBatch(c *gc.C, sub *presencereader.Subscription) presencereader.Batch {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	b, err := sub.NextBatch(ctx)
	c.Assert(err, gc.IsNil)
	return b
}

func assertNoBatch(c *gc.C, sub *presencereader.Subscription) {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.ShortWait)
	defer cancel()
	b, err := sub.NextBatch(ctx)
	c.Assert(err, gc.Equals, context.DeadlineExceeded, gc.Commentf("got %+v", b))
}

// ev is an event at seq of view, for comparisons.
func ev(view string, seq uint64, key string, alive bool) presencereader.Event {
	return presencereader.Event{
		Change:   presencereader.Change{Key: key, Alive: alive},
		Position: presencereader.Position{View: view, Seq: seq},
	}
}

// states returns a snapshot's events as a map.
func states(b presencereader.Batch) map[string]bool {
	out := make(map[string]bool)
	for _, e := range b.Events {
		out[e.Key] = e.Alive
	}
	return out
}

func (s *resumeSuite) TestResumeAfterAPositionGetsExactlyTheChangesAfterIt(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true})
	s.set(c, r, map[string]bool{"b": true})
	p := v.Position()
	c.Assert(p.Seq, gc.Equals, uint64(2))
	s.set(c, r, map[string]bool{"a": false})
	s.set(c, r, map[string]bool{"c": true})

	sub := v.SubscribeWith(presencereader.SubscribeConfig{After: p})
	defer sub.Close()
	b := nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, false)
	c.Assert(b.Snapshot, gc.Equals, false)
	c.Assert(b.Events, gc.DeepEquals, []presencereader.Event{ev(p.View, 3, "a", false), ev(p.View, 4, "c", true)})
	c.Assert(b.End, gc.Equals, presencereader.Position{View: p.View, Seq: 4})
	assertNoBatch(c, sub)

	// Then the changes that follow, and nothing else.
	s.set(c, r, map[string]bool{"b": false})
	b = nextBatch(c, sub)
	c.Assert(b.Events, gc.DeepEquals, []presencereader.Event{ev(p.View, 5, "b", false)})
	c.Assert(b.End, gc.Equals, presencereader.Position{View: p.View, Seq: 5})
}

func (s *resumeSuite) TestResumeAtTheLatestPositionAnswersAtOnceWithNoChanges(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true})
	p := v.Position()
	sub := v.SubscribeWith(presencereader.SubscribeConfig{After: p})
	defer sub.Close()
	b := nextBatch(c, sub)
	c.Assert(b, gc.DeepEquals, presencereader.Batch{End: p})
	assertNoBatch(c, sub)
}

func (s *resumeSuite) TestAPositionOlderThanTheLogByCountGetsAResetAndASnapshot(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{LogLength: 2})
	s.set(c, r, map[string]bool{"a": true})
	old := v.Position()
	s.set(c, r, map[string]bool{"b": true})
	s.set(c, r, map[string]bool{"a": false})
	c.Assert(v.Report()["log-entries"], gc.Equals, 2)
	// The log holds the changes after seq 1: resuming after 1 works,
	// after 0 does not.
	sub := v.SubscribeWith(presencereader.SubscribeConfig{After: old})
	defer sub.Close()
	b := nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, false)
	c.Assert(b.Events, gc.HasLen, 2)

	older := presencereader.Position{View: old.View, Seq: 0}
	sub = v.SubscribeWith(presencereader.SubscribeConfig{After: older})
	defer sub.Close()
	b = nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, true)
	c.Assert(b.Snapshot, gc.Equals, true)
	c.Assert(states(b), gc.DeepEquals, map[string]bool{"a": false, "b": true})
	c.Assert(b.End, gc.Equals, presencereader.Position{View: old.View, Seq: 3})
	for _, e := range b.Events {
		c.Assert(e.Position.IsZero(), gc.Equals, true, gc.Commentf("a snapshot's state is no place to resume from"))
	}
	// The snapshot's end is a place to resume from.
	s.set(c, r, map[string]bool{"b": false})
	b = nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, false)
	c.Assert(b.Events, gc.DeepEquals, []presencereader.Event{ev(old.View, 4, "b", false)})
}

func (s *resumeSuite) TestAPositionOlderThanTheLogByAgeGetsAResetAndASnapshot(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{LogAge: 10 * time.Second})
	s.set(c, r, map[string]bool{"a": true})
	p := presencereader.Position{View: v.Position().View}
	s.clock.Advance(5 * time.Second)
	s.set(c, r, map[string]bool{"b": true})
	// The next load, past the first change's age, prunes it (and only
	// it): the log has no timer of its own.
	s.clock.Advance(6 * time.Second)
	c.Assert(v.Report()["log-entries"], gc.Equals, 2)
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(v.Report()["log-entries"], gc.Equals, 1)

	sub := v.SubscribeWith(presencereader.SubscribeConfig{After: p})
	defer sub.Close()
	b := nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, true)
	c.Assert(states(b), gc.DeepEquals, map[string]bool{"a": true, "b": true})
	c.Assert(b.End.Seq, gc.Equals, uint64(2))

	sub = v.SubscribeWith(presencereader.SubscribeConfig{After: presencereader.Position{View: p.View, Seq: 1}})
	defer sub.Close()
	b = nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, false)
	c.Assert(b.Events, gc.DeepEquals, []presencereader.Event{ev(p.View, 2, "b", true)})
}

func (s *resumeSuite) TestAPositionFromAnotherViewGetsAReset(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true})
	here := v.Position()
	// Another reader (another process, or this one's next run) numbers
	// its changes under another identity, from the same start.
	r2, v2 := s.newReader(c, presencereader.Config{})
	c.Assert(r2.Refresh(), gc.IsNil)
	s.set(c, r2, map[string]bool{"b": true})
	there := v2.Position()
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(there.View, gc.Not(gc.Equals), here.View)
	c.Assert(there.Seq, gc.Equals, here.Seq)

	for _, after := range []presencereader.Position{
		there,
		{View: "elsewhere", Seq: 1},
		{View: here.View, Seq: v.Position().Seq + 1}, // beyond the log's end
	} {
		sub := v.SubscribeWith(presencereader.SubscribeConfig{After: after})
		b := nextBatch(c, sub)
		sub.Close()
		c.Assert(b.Reset, gc.Equals, true, gc.Commentf("after %v", after))
		c.Assert(states(b), gc.DeepEquals, map[string]bool{"a": true, "b": true})
		c.Assert(b.End, gc.Equals, v.Position())
	}
}

func (s *resumeSuite) TestViewsOfOneModelShareTheLogAndItsPositions(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true})
	p := v.Position()
	dying := make(chan struct{})
	other, err := r.NewView(stressModel, dying, func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	defer func() {
		close(dying)
		other.Close()
	}()
	c.Assert(other.Position(), gc.Equals, p)
	s.set(c, r, map[string]bool{"a": false})
	sub := other.SubscribeWith(presencereader.SubscribeConfig{After: p})
	defer sub.Close()
	c.Assert(nextBatch(c, sub).Events, gc.DeepEquals, []presencereader.Event{ev(p.View, 2, "a", false)})
}

func (s *resumeSuite) TestAKeyThatFlappedDuringTheGapIsReportedWithEachTransition(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true, "b": true})
	p := v.Position()
	s.set(c, r, map[string]bool{"a": false})
	s.set(c, r, map[string]bool{"a": true})
	s.set(c, r, map[string]bool{"b": false})

	sub := v.SubscribeWith(presencereader.SubscribeConfig{After: p})
	defer sub.Close()
	c.Assert(nextBatch(c, sub).Events, gc.DeepEquals, []presencereader.Event{
		ev(p.View, 3, "a", false), ev(p.View, 4, "a", true), ev(p.View, 5, "b", false),
	})
	// So does a subscription to the key alone.
	sub = v.SubscribeWith(presencereader.SubscribeConfig{Keys: []string{"a"}, After: p})
	defer sub.Close()
	c.Assert(nextBatch(c, sub).Events, gc.DeepEquals, []presencereader.Event{
		ev(p.View, 3, "a", false), ev(p.View, 4, "a", true),
	})
}

func (s *resumeSuite) TestACoalescedResumeReportsEachKeyOnceAtItsLatestPosition(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true, "b": true, "c": true})
	p := v.Position()
	s.set(c, r, map[string]bool{"b": false})
	s.set(c, r, map[string]bool{"a": false})
	s.set(c, r, map[string]bool{"b": true})  // b is back where it was
	s.set(c, r, map[string]bool{"c": false}) // c changes once
	s.set(c, r, map[string]bool{"a": true})
	s.set(c, r, map[string]bool{"a": false}) // a changes, three times

	sub := v.SubscribeWith(presencereader.SubscribeConfig{After: p, Coalesce: true})
	defer sub.Close()
	b := nextBatch(c, sub)
	c.Assert(b.Events, gc.DeepEquals, []presencereader.Event{ev(p.View, 7, "c", false), ev(p.View, 9, "a", false)})
	c.Assert(b.End.Seq, gc.Equals, uint64(9))
}

func (s *resumeSuite) TestPositionsRiseAcrossBatches(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	all := v.SubscribeWith(presencereader.SubscribeConfig{})
	defer all.Close()
	some := v.SubscribeWith(presencereader.SubscribeConfig{Keys: []string{"k1", "k3"}})
	defer some.Close()
	c.Assert(nextBatch(c, all).Snapshot, gc.Equals, true)
	c.Assert(nextBatch(c, some).Snapshot, gc.Equals, true)
	var seen, seenSome []uint64
	var ends []uint64
	for round := 0; round < 6; round++ {
		states := make(map[string]bool)
		for k := 0; k < 4; k++ {
			states[fmt.Sprintf("k%d", k)] = round%2 == 0
		}
		s.set(c, r, states)
		b := nextBatch(c, all)
		c.Assert(b.Events, gc.HasLen, 4)
		for _, e := range b.Events {
			seen = append(seen, e.Position.Seq)
		}
		c.Assert(b.End, gc.Equals, b.Events[3].Position)
		ends = append(ends, b.End.Seq)
		for _, e := range nextBatch(c, some).Events {
			seenSome = append(seenSome, e.Position.Seq)
		}
	}
	// Every change has the next number, batch after batch, and a
	// subscription to some keys sees their numbers in the same order.
	for i, seq := range seen {
		c.Assert(seq, gc.Equals, uint64(i+1))
	}
	c.Assert(sort.SliceIsSorted(seenSome, func(i, j int) bool { return seenSome[i] < seenSome[j] }), gc.Equals, true)
	c.Assert(seenSome, gc.HasLen, 12)
	c.Assert(ends, gc.DeepEquals, []uint64{4, 8, 12, 16, 20, 24})
}

func (s *resumeSuite) TestASubscriberTheLogsEndPassedGetsAResetNotABacklog(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{LogLength: 4})
	sub := v.SubscribeWith(presencereader.SubscribeConfig{})
	defer sub.Close()
	c.Assert(nextBatch(c, sub).Snapshot, gc.Equals, true)
	for round := 0; round < 5; round++ {
		s.set(c, r, map[string]bool{"a": round%2 == 0, "b": round%2 == 0})
	}
	b := nextBatch(c, sub)
	c.Assert(b.Reset, gc.Equals, true)
	c.Assert(states(b), gc.DeepEquals, map[string]bool{"a": true, "b": true})
	c.Assert(b.End.Seq, gc.Equals, uint64(10))
	// Then it follows the log again.
	s.set(c, r, map[string]bool{"a": false})
	c.Assert(nextBatch(c, sub).Events, gc.DeepEquals, []presencereader.Event{ev(b.End.View, 11, "a", false)})
}

func (s *resumeSuite) TestSubscribeStillStartsWithASnapshotAndCoalesces(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{})
	s.set(c, r, map[string]bool{"a": true})
	sub := v.Subscribe("a", "b")
	defer sub.Close()
	b := nextBatch(c, sub)
	c.Assert(b.Snapshot, gc.Equals, true)
	c.Assert(b.Reset, gc.Equals, false)
	c.Assert(b.End, gc.Equals, v.Position())
	c.Assert(states(b), gc.DeepEquals, map[string]bool{"a": true, "b": false})
	s.set(c, r, map[string]bool{"a": false})
	s.set(c, r, map[string]bool{"a": true})
	s.set(c, r, map[string]bool{"b": true})
	changes, err := sub.Next(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(changes, gc.DeepEquals, []presencereader.Change{{Key: "b", Alive: true}})
}

func (s *resumeSuite) TestAThousandIdleSubscribersKeepMemoryBounded(c *gc.C) {
	const (
		subs      = 1000
		keys      = 100
		rounds    = 20
		logLength = 500
	)
	r, v := s.newReader(c, presencereader.Config{LogLength: logLength})
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("unit-%d", i)
	}
	flap := func(round int) {
		states := make(map[string]bool)
		for _, key := range names {
			states[key] = round%2 == 0
		}
		s.set(c, r, states)
	}
	flap(0)
	// Half never read, half read their first answer and then never.
	var all []*presencereader.Subscription
	for i := 0; i < subs; i++ {
		sub := v.SubscribeWith(presencereader.SubscribeConfig{})
		if i%2 == 1 {
			nextBatch(c, sub)
		}
		all = append(all, sub)
	}
	defer func() {
		for _, sub := range all {
			sub.Close()
		}
	}()
	flap(1)
	heapAfterFirst := heapInUse()
	for round := 2; round < rounds; round++ {
		flap(round)
	}
	growth := int64(heapInUse()) - int64(heapAfterFirst)
	report := v.Report()
	c.Logf("heap growth over %d rounds of %d changes with %d idle subscribers: %d bytes; log %v entries, %v bytes",
		rounds-2, keys, subs, growth, report["log-entries"], report["log-bytes"])
	c.Assert(report["log-entries"], gc.Equals, logLength)
	c.Assert(report["log-bytes"].(int) <= 2*logLength*48, gc.Equals, true, gc.Commentf("%v", report["log-bytes"]))
	// One pending change per key and subscriber would be 100,000
	// changes; the log holds 500 whoever reads.
	c.Assert(growth < 1<<20, gc.Equals, true, gc.Commentf("heap grew by %d bytes", growth))
	// A subscriber the log's end passed gets a reset when it reads.
	b := nextBatch(c, all[1])
	c.Assert(b.Reset, gc.Equals, true)
	c.Assert(b.Events, gc.HasLen, keys)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func (s *resumeSuite) TestLoadsReportTheLogsSize(c *gc.C) {
	loads := make(chan presencereader.LoadStats, 10)
	r, _ := s.newReader(c, presencereader.Config{OnLoad: func(l presencereader.LoadStats) { loads <- l }})
	c.Assert(r.Refresh(), gc.IsNil)
	s.set(c, r, map[string]bool{"a": true, "b": true})
	var last presencereader.LoadStats
	for len(loads) > 0 {
		last = <-loads
	}
	c.Assert(last.LogEntries, gc.Equals, 2)
	c.Assert(last.LogBytes > 0, gc.Equals, true)
	c.Assert(r.Report()["log-entries"], gc.Equals, 2)
}

func (s *resumeSuite) TestConcurrentReadersSeeEveryChangeInOrderOrAReset(c *gc.C) {
	const keys, rounds, readers = 8, 30, 8
	r, v := s.newReader(c, presencereader.Config{LogLength: 3 * keys})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each reader publishes what it knows after every answer.
	type known struct {
		at       presencereader.Position
		state    map[string]bool
		keys     []string
		coalesce bool
		resets   int
		err      error
	}
	var mu sync.Mutex
	progress := make([]known, readers)
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		var config presencereader.SubscribeConfig
		if i%2 == 1 {
			config.Keys = []string{"k1", "k2"}
		}
		config.Coalesce = i%4 >= 2
		slow := i >= readers/2
		sub := v.SubscribeWith(config)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			state := make(map[string]bool)
			var at presencereader.Position
			resets := 0
			fail := func(err error) {
				mu.Lock()
				progress[i].err = err
				mu.Unlock()
			}
			for {
				b, err := sub.NextBatch(ctx)
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						fail(err)
					}
					return
				}
				if b.Reset {
					resets++
				}
				if b.Snapshot {
					clear(state)
				} else if b.End.View != at.View {
					fail(errors.Errorf("changes up to %v after %v", b.End, at))
					return
				}
				for _, e := range b.Events {
					switch {
					case b.Snapshot:
					case e.Position.Seq <= at.Seq:
						fail(errors.Errorf("change at %v after %v", e.Position, at))
						return
					case !config.Coalesce && config.Keys == nil && e.Position.Seq != at.Seq+1:
						fail(errors.Errorf("gap: change at %v after %v", e.Position, at))
						return
					}
					if !b.Snapshot {
						at = e.Position
					}
					state[e.Key] = e.Alive
				}
				at = b.End
				mu.Lock()
				progress[i] = known{at: at, state: maps.Clone(state), keys: config.Keys, coalesce: config.Coalesce, resets: resets}
				mu.Unlock()
				if slow {
					// Long enough for a few loads: the log's end
					// passes it now and then.
					time.Sleep(15 * time.Millisecond)
				}
			}
		}()
	}
	want := make(map[string]bool)
	for round := 0; round < rounds; round++ {
		for k := 0; k < keys; k++ {
			want[fmt.Sprintf("k%d", k)] = (round+k)%3 != 0
		}
		if round >= rounds-2 {
			// Every key changes in the last load, so that every
			// reader's last answer ends there.
			for k := 0; k < keys; k++ {
				want[fmt.Sprintf("k%d", k)] = round == rounds-1
			}
		}
		s.set(c, r, maps.Clone(want))
	}
	expected := func(p known) map[string]bool {
		if p.keys == nil {
			return want
		}
		return map[string]bool{"k1": want["k1"], "k2": want["k2"]}
	}
	// A reader is done once it has the final states, and, unless it
	// coalesces (its last answer may hold nothing of a key that changed
	// back), the final position.
	final := v.Position()
	c.Assert(agenttest.Retry(agenttest.LongWait, func() error {
		mu.Lock()
		defer mu.Unlock()
		for i, p := range progress {
			c.Assert(p.err, gc.IsNil, gc.Commentf("reader %d", i))
			if !maps.Equal(p.state, expected(p)) || (!p.coalesce && p.at != final) {
				return errors.Errorf("reader %d not done: %+v", i, progress)
			}
		}
		return nil
	}), gc.IsNil)
	cancel()
	wg.Wait()
	for i, p := range progress {
		c.Logf("reader %d: %d resets", i, p.resets)
		c.Assert(p.err, gc.IsNil, gc.Commentf("reader %d", i))
		c.Assert(p.state, gc.DeepEquals, expected(p), gc.Commentf("reader %d", i))
	}
}

func (s *resumeSuite) TestALogOutlivesItsViewsByLogAge(c *gc.C) {
	r, v := s.newReader(c, presencereader.Config{LogAge: 10 * time.Second})
	open := func() (*presencereader.View, func()) {
		dying := make(chan struct{})
		view, err := r.NewView(modelB, dying, func() error { return presencereader.ErrStopped })
		c.Assert(err, gc.IsNil)
		return view, func() {
			close(dying)
			view.Close()
		}
	}
	first, closeFirst := open()
	p := first.Position()
	closeFirst()
	// A watcher of modelB restarts: the changes meanwhile are logged,
	// and its subscribers resume where they were.
	s.setIn(c, r, modelB, map[string]bool{"a": true})
	again, closeAgain := open()
	c.Assert(again.Position(), gc.Equals, presencereader.Position{View: p.View, Seq: 1})
	sub := again.SubscribeWith(presencereader.SubscribeConfig{After: p})
	c.Assert(nextBatch(c, sub).Events, gc.DeepEquals, []presencereader.Event{ev(p.View, 1, "a", true)})
	sub.Close()
	closeAgain()
	// A log that nobody viewed for LogAge goes at a load.
	s.clock.Advance(11 * time.Second)
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(r.Report()["log-entries"], gc.Equals, 0)
	last, closeLast := open()
	defer closeLast()
	c.Assert(last.Position().View, gc.Not(gc.Equals), p.View)
	sub = last.SubscribeWith(presencereader.SubscribeConfig{After: p})
	defer sub.Close()
	c.Assert(nextBatch(c, sub).Reset, gc.Equals, true)
	// The other model's log, viewed all along, stays.
	c.Assert(v.Position().View, gc.Not(gc.Equals), "")
}

func (s *resumeSuite) TestOneLoadWakesEveryWaitingSubscriber(c *gc.C) {
	const subs = 200
	r, v := s.newReader(c, presencereader.Config{})
	got := make(chan presencereader.Batch, subs)
	var wg sync.WaitGroup
	for i := 0; i < subs; i++ {
		var config presencereader.SubscribeConfig
		if i%2 == 1 {
			config.Keys = []string{"a", "b"}
		}
		config.Coalesce = i%4 >= 2
		sub := v.SubscribeWith(config)
		defer sub.Close()
		c.Assert(nextBatch(c, sub).Snapshot, gc.Equals, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
			defer cancel()
			b, err := sub.NextBatch(ctx)
			if err == nil {
				got <- b
			}
		}()
	}
	s.set(c, r, map[string]bool{"a": true})
	wg.Wait()
	close(got)
	n := 0
	for b := range got {
		c.Assert(b.Events, gc.DeepEquals, []presencereader.Event{ev(b.End.View, 1, "a", true)})
		n++
	}
	c.Assert(n, gc.Equals, subs)
}
