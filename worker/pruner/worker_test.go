package pruner_test

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
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pruner"
)

const (
	period = 30 * time.Second
	// interval is the pruners' Interval: two Periods, so that a writer
	// that stopped is gone at the second prune that finds it has not
	// moved on.
	interval = 2 * period
)

var (
	modelA = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")
	modelB = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")
)

type prunerSuite struct {
	agenttest.MongoSuite
	clock   *testclock.Clock
	base    *mongo.Collection
	writers []*testWriter
	pruners []*pruner.Pruner
}

var _ = gc.Suite(&prunerSuite{})

func (s *prunerSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.base = s.DB.Collection("presence")
	s.writers, s.pruners = nil, nil
}

func (s *prunerSuite) TearDownTest(c *gc.C) {
	for _, p := range s.pruners {
		workertest.CleanKill(agenttest.C(c), p)
	}
	for _, w := range s.writers {
		w.stop(c)
	}
	s.MongoSuite.TearDownTest(c)
}

// testWriter is a batcher that holds keys, and writes while it is live.
type testWriter struct {
	b    *pingbatcher.PingBatcher
	id   string
	live bool
}

// newWriter starts a batcher of its own with n keys of model, pinged once
// and written, and live.
func (s *prunerSuite) newWriter(c *gc.C, model names.ModelTag, n int) *testWriter {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: 24 * time.Hour, Period: period, Clock: s.clock})
	c.Assert(err, gc.IsNil)
	w := &testWriter{b: b, live: true}
	s.writers = append(s.writers, w)
	slot := schema.Slot(s.clock.Now(), period)
	for i := 0; i < n; i++ {
		id, err := b.Register(s.base, model, fmt.Sprintf("k%d", i))
		c.Assert(err, gc.IsNil)
		c.Assert(b.Ping(id, slot), gc.IsNil)
		w.id = id.Writer
	}
	c.Assert(b.Sync(), gc.IsNil)
	return w
}

// stop stops the writer's batcher: it writes no more, as a controller
// that died.
func (w *testWriter) stop(c *gc.C) {
	if w.b != nil {
		workertest.CleanKill(agenttest.C(c), w.b)
		w.b, w.live = nil, false
	}
}

// pass moves the clock on by d, a slot at a time, and has every live
// writer write each slot (its keys' bits are carried from slot to slot).
func (s *prunerSuite) pass(c *gc.C, d time.Duration) {
	for step := schema.SlotLength(period); d > 0; d -= step {
		s.clock.Advance(min(step, d))
		for _, w := range s.writers {
			if w.live {
				c.Assert(w.b.Sync(), gc.IsNil)
			}
		}
	}
}

// count returns how many documents of coll writer owns, or how many coll
// holds for no writer.
func (s *prunerSuite) count(c *gc.C, coll *mongo.Collection, writer string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	filter := bson.D{{Key: schema.FieldWriter, Value: writer}}
	if writer == "" {
		filter = bson.D{}
	}
	n, err := coll.CountDocuments(ctx, filter)
	c.Assert(err, gc.IsNil)
	return n
}

// newPruner returns a pruner on base whose own timer never fires: the
// tests prune by hand, an Interval apart (see prune).
func (s *prunerSuite) newPruner(c *gc.C, base *mongo.Collection, logger pruner.Logger) *pruner.Pruner {
	p, err := pruner.New(pruner.Config{
		Base: base, Clock: manualTimers{Clock: s.clock, idle: agenttest.NewClock()},
		Period: period, Interval: interval, Logger: logger,
	})
	c.Assert(err, gc.IsNil)
	s.pruners = append(s.pruners, p)
	return p
}

// prune lets an Interval pass, as the pruner's timer would, and prunes.
func (s *prunerSuite) prune(c *gc.C, p *pruner.Pruner) pruner.Stats {
	s.pass(c, interval)
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	return stats
}

func (s *prunerSuite) TestAPruneKeepsEachLiveWritersWindowBelowItsLatest(c *gc.C) {
	w := s.newWriter(c, modelA, 1)
	p := s.newPruner(c, s.base, nil)
	s.pass(c, 10*period)
	c.Assert(s.count(c, schema.Pings(s.base), w.id), gc.Equals, int64(21))

	// The first sight of a writer deletes nothing: a lone document
	// might have been taken for its latest.
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats, gc.Equals, pruner.Stats{})
	// Once it has moved on, its documents below its latest less the
	// window go, and none of its beings.
	stats = s.prune(c, p)
	c.Assert(stats, gc.Equals, pruner.Stats{Pings: 25 - schema.KeepSlots - 1})
	c.Assert(s.count(c, schema.Pings(s.base), w.id), gc.Equals, int64(schema.KeepSlots+1))
	c.Assert(s.count(c, schema.Beings(s.base), w.id), gc.Equals, int64(1))
}

func (s *prunerSuite) TestAWriterIsGoneOnlyOnceItHasNotMovedOnAcrossTwoPrunesAndThreePeriods(c *gc.C) {
	first := s.newWriter(c, modelA, 1)
	second := s.newWriter(c, modelA, 1)
	live := s.newWriter(c, modelA, 1)
	// Its Interval lets one gap between prunes last longer than three
	// Periods (a longer gap than its pace is a trouble of its own).
	p, err := pruner.New(pruner.Config{
		Base: s.base, Clock: manualTimers{Clock: s.clock, idle: agenttest.NewClock()}, Period: period, Interval: 4 * period,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), p)
	prune := func(d time.Duration) pruner.Stats {
		s.pass(c, d)
		stats, err := p.Prune(context.Background())
		c.Assert(err, gc.IsNil)
		return stats
	}
	prune(period)
	first.live = false
	// More than three Periods, but one prune: first stays.
	c.Assert(prune(3*period+period/2).Beings, gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), first.id), gc.Equals, int64(1))
	second.live = false
	// A second prune: first goes.
	c.Assert(prune(period).Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), first.id), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Pings(s.base), first.id), gc.Equals, int64(0))
	// Two prunes, but two Periods: second stays; at three it goes.
	c.Assert(prune(period).Beings, gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), second.id), gc.Equals, int64(1))
	c.Assert(prune(period).Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), second.id), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Pings(s.base), second.id), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), live.id), gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Pings(s.base), live.id), gc.Equals, int64(schema.KeepSlots+1))
}

func (s *prunerSuite) TestOnePrunePrunesEveryModelInThreeCommands(c *gc.C) {
	var counter agenttest.CommandCounter
	base := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence")
	var gone []*testWriter
	for i := 0; i < 20; i++ {
		gone = append(gone, s.newWriter(c, names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i)), 1))
	}
	live := s.newWriter(c, modelB, 1)
	p := s.newPruner(c, base, nil)
	s.prune(c, p)
	for _, w := range gone {
		w.stop(c)
	}
	s.prune(c, p)
	s.pass(c, interval)
	before := s.count(c, schema.Pings(s.base), "")
	counter.Reset()
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Total(), gc.Equals, 3)
	c.Assert(stats, gc.Equals, pruner.Stats{Pings: before - s.count(c, schema.Pings(s.base), ""), Beings: 20})
	for _, w := range gone {
		c.Check(s.count(c, schema.Beings(s.base), w.id), gc.Equals, int64(0))
		c.Check(s.count(c, schema.Pings(s.base), w.id), gc.Equals, int64(0))
	}
	c.Assert(s.count(c, schema.Pings(s.base), live.id), gc.Equals, int64(schema.KeepSlots+1))
	c.Assert(s.count(c, schema.Beings(s.base), live.id), gc.Equals, int64(1))
}

func (s *prunerSuite) TestAPruneDeletesBeingsOnlyWhenAWriterHasGone(c *gc.C) {
	var counter agenttest.CommandCounter
	base := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence")
	leaving := s.newWriter(c, modelA, 1)
	staying := s.newWriter(c, modelB, 1)
	p := s.newPruner(c, base, nil)
	prune := func() pruner.Stats {
		s.pass(c, interval)
		counter.Reset()
		stats, err := p.Prune(context.Background())
		c.Assert(err, gc.IsNil)
		return stats
	}

	// With every writer live, a prune reads the pings and deletes the
	// old ones, and sends the beings nothing.
	prune()
	c.Assert(counter.Total(), gc.Equals, 1)
	prune()
	c.Assert(counter.CountOn("delete", schema.Beings(s.base).Name()), gc.Equals, 0)
	c.Assert(counter.Total(), gc.Equals, 2)
	// One whose writer has gone deletes its beings.
	leaving.stop(c)
	prune()
	c.Assert(counter.CountOn("delete", schema.Beings(s.base).Name()), gc.Equals, 0)
	stats := prune()
	c.Assert(counter.CountOn("delete", schema.Beings(s.base).Name()), gc.Equals, 1)
	c.Assert(counter.Total(), gc.Equals, 3)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), leaving.id), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), staying.id), gc.Equals, int64(1))
}

func (s *prunerSuite) TestTheBeingsOfAGoneWriterOfAFewChunksGoByID(c *gc.C) {
	// On the embedded server a delete by any other filter decodes every
	// beings document, which at 100,000 keys takes seconds and holds up
	// every other write meanwhile.
	gone, statements := s.pruneGoneWriter(c, 3)
	var ids []string
	for _, st := range statements {
		filter := st.Document().Lookup("q").Document()
		elems, err := filter.Elements()
		c.Assert(err, gc.IsNil)
		c.Assert(elems, gc.HasLen, 1, gc.Commentf("filter %v", filter))
		ids = append(ids, elems[0].Value().StringValue())
	}
	// From the last chunk down: see the batcher's read-back.
	c.Assert(ids, gc.DeepEquals, []string{schema.BeingsID(gone, 2), schema.BeingsID(gone, 1), schema.BeingsID(gone, 0)})
}

func (s *prunerSuite) TestTheBeingsOfAGoneWriterOfManyChunksGoInOneDelete(c *gc.C) {
	// Each delete by _id scans the beings on the embedded server: one
	// filtered delete costs less than nine of them.
	_, statements := s.pruneGoneWriter(c, 9)
	c.Assert(statements, gc.HasLen, 1)
}

// pruneGoneWriter has a writer with beings documents of chunks chunks
// gone and another live, prunes through a client that records the
// deletes sent to the beings, checks that the gone writer's documents,
// and only those, went in one command, and returns the gone writer's id
// and that command's statements.
func (s *prunerSuite) pruneGoneWriter(c *gc.C, chunks int) (string, []bson.RawValue) {
	deletes := s.beingsDeletes()
	base := s.NewClient(c, options.Client().SetMonitor(deletes.monitor)).Database(s.DB.Name()).Collection("presence")
	// Keys past the last chunk's first go in the ping documents only
	// (fresh) until a writer has FreshLimit of them, or twice that while
	// a beings write runs: with more than twice FreshLimit in the last
	// chunk, whatever the flushes' timing, it has a beings document.
	gone := s.newWriter(c, modelA, (chunks-1)*schema.ChunkSize+2*schema.FreshLimit+1)
	live := s.newWriter(c, modelB, 1)
	c.Assert(s.count(c, schema.Beings(s.base), gone.id), gc.Equals, int64(chunks))
	p := s.newPruner(c, base, nil)
	s.prune(c, p)
	gone.stop(c)
	s.prune(c, p)
	c.Assert(deletes.commands, gc.HasLen, 0)

	stats := s.prune(c, p)
	c.Assert(stats.Beings, gc.Equals, int64(chunks))
	c.Assert(s.count(c, schema.Beings(s.base), gone.id), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), live.id), gc.Equals, int64(1))
	c.Assert(deletes.commands, gc.HasLen, 1)
	statements, err := deletes.commands[0].Lookup("deletes").Array().Values()
	c.Assert(err, gc.IsNil)
	return gone.id, statements
}

// deleteCommands records the delete commands sent to the beings.
type deleteCommands struct {
	monitor  *event.CommandMonitor
	commands []bson.Raw
}

// beingsDeletes returns a recorder of the delete commands on the beings
// sent by a client with its monitor.
func (s *prunerSuite) beingsDeletes() *deleteCommands {
	d := &deleteCommands{}
	beings := schema.Beings(s.base).Name()
	d.monitor = &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "delete" && e.Command.Lookup("delete").StringValue() == beings {
			d.commands = append(d.commands, e.Command)
		}
	}}
	return d
}

func (s *prunerSuite) TestAPruneThatFindsNoWriterLiveDeletesNothing(c *gc.C) {
	// The database stalls for longer than the window: no writer moves
	// on meanwhile, which says nothing about any of them.
	leaving := s.newWriter(c, modelA, 1)
	staying := s.newWriter(c, modelB, 1)
	p := s.newPruner(c, s.base, nil)
	s.prune(c, p)
	leaving.live, staying.live = false, false
	for i := 0; i < 3; i++ {
		c.Assert(s.prune(c, p), gc.Equals, pruner.Stats{}, gc.Commentf("prune %d", i))
	}
	c.Assert(s.count(c, schema.Beings(s.base), leaving.id), gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), staying.id), gc.Equals, int64(1))

	// A controller writes again (with a writer id of its own, after so
	// long); the writers silent since the last prune that found writers
	// live lose their documents.
	back := s.newWriter(c, modelB, 1)
	stats := s.prune(c, p)
	c.Assert(stats.Beings, gc.Equals, int64(2))
	for _, w := range []*testWriter{leaving, staying} {
		c.Assert(s.count(c, schema.Beings(s.base), w.id), gc.Equals, int64(0))
		c.Assert(s.count(c, schema.Pings(s.base), w.id), gc.Equals, int64(0))
	}
	c.Assert(s.count(c, schema.Beings(s.base), back.id), gc.Equals, int64(1))
}

func (s *prunerSuite) TestAGapBetweenPrunesHoldsNobodysSilenceAgainstThem(c *gc.C) {
	// The pruner's clock jumps an hour forward between two prunes (or
	// its process was paused): a writer that has not written since its
	// last look is not gone for that.
	w := s.newWriter(c, modelA, 1)
	clk, err := agenttest.NewSkewClock(s.clock, 0, 0)
	c.Assert(err, gc.IsNil)
	p, err := pruner.New(pruner.Config{
		Base: s.base, Clock: manualTimers{Clock: clk, idle: agenttest.NewClock()}, Period: period, Interval: interval,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), p)
	s.prune(c, p)
	s.prune(c, p)
	w.live = false
	clk.Step(time.Hour)
	for i := 0; i < 3; i++ {
		stats, err := p.Prune(context.Background())
		c.Assert(err, gc.IsNil)
		c.Assert(stats.Beings, gc.Equals, int64(0), gc.Commentf("prune %d", i))
	}
	c.Assert(s.count(c, schema.Beings(s.base), w.id), gc.Equals, int64(1))
	// Its silence counts from the end of the gap: two prunes and three
	// Periods on, the same writer is gone (another keeps the pruner
	// from suspecting the database).
	s.newWriter(c, modelB, 1)
	s.prune(c, p)
	stats := s.prune(c, p)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), w.id), gc.Equals, int64(0))
}

func (s *prunerSuite) TestBeingsNoPingDocumentNamesGoAfterACensus(c *gc.C) {
	// A writer that registered and died before its first ping leaves
	// beings that no ping document names: only a census finds them. The
	// first comes a few prunes after the start, not at it, so that a
	// controller's start does not pay for it, and what it finds goes
	// once it has stayed without ping documents for two prunes and
	// three Periods, up to the slot the census saw.
	s.newWriter(c, modelB, 1)
	orphan := func(writer string, slot int64) {
		_, err := schema.Beings(s.base).InsertOne(context.Background(), bson.D{
			{Key: schema.FieldID, Value: schema.BeingsID(writer, 0)},
			{Key: schema.FieldWriter, Value: writer},
			{Key: schema.FieldChunk, Value: 0},
			{Key: schema.FieldSlot, Value: slot},
		})
		c.Assert(err, gc.IsNil)
	}
	orphan("orphan", 7)
	var counter agenttest.CommandCounter
	base := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence")
	p := s.newPruner(c, base, nil)
	for i := 1; i < pruner.SweepFirst; i++ {
		s.prune(c, p)
		c.Assert(s.count(c, schema.Beings(s.base), "orphan"), gc.Equals, int64(1), gc.Commentf("prune %d", i))
	}
	counter.Reset()
	s.prune(c, p)
	c.Assert(counter.CountOn("find", schema.Beings(s.base).Name()), gc.Equals, 1)
	c.Assert(counter.Total(), gc.Equals, 3)
	// After the census, one comes back and writes its beings again, and
	// another registers.
	orphan("late", 9)
	_, err := schema.Beings(s.base).UpdateOne(context.Background(), bson.D{{Key: schema.FieldID, Value: schema.BeingsID("orphan", 0)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: schema.FieldSlot, Value: 8}}}})
	c.Assert(err, gc.IsNil)
	orphan("orphan-too", 7)
	_, err = schema.Beings(s.base).DeleteOne(context.Background(), bson.D{{Key: schema.FieldID, Value: schema.BeingsID("orphan", 0)}})
	c.Assert(err, gc.IsNil)
	orphan("orphan", 8)
	s.prune(c, p)
	c.Assert(s.count(c, schema.Beings(s.base), "orphan"), gc.Equals, int64(1))
	stats := s.prune(c, p)
	c.Assert(stats.Beings, gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), "orphan"), gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), "late"), gc.Equals, int64(1))
}

func (s *prunerSuite) TestAPingDocumentThatCannotBeReadWholeIsLoggedOnceAndStillNamesALiveWriter(c *gc.C) {
	// A corrupt document, or a newer writer's, still names its writer
	// and slot: its beings stay.
	live := s.newWriter(c, modelA, 1)
	s.newWriter(c, modelB, 1)
	var logger agenttest.Logger
	p := s.newPruner(c, s.base, &logger)
	s.prune(c, p)
	_, err := schema.Pings(s.base).InsertOne(context.Background(), bson.D{
		{Key: schema.FieldID, Value: "bad"},
		{Key: schema.FieldSlot, Value: 1},
		{Key: schema.FieldWriter, Value: "w"},
		{Key: schema.FieldFrom, Value: schema.MaxIndex + 1},
	})
	c.Assert(err, gc.IsNil)
	live.live = false
	for i := 0; i < 3; i++ {
		s.pass(c, interval)
		// Each of its documents is corrupted as soon as it is written.
		_, err = schema.Pings(s.base).UpdateMany(context.Background(), bson.D{{Key: schema.FieldWriter, Value: live.id}},
			bson.D{{Key: "$set", Value: bson.D{{Key: schema.FieldFresh, Value: bson.Binary{Data: []byte{2, 0, 0}}}}}})
		c.Assert(err, gc.IsNil)
		_, err = p.Prune(context.Background())
		c.Assert(err, gc.IsNil)
		c.Assert(live.b.Sync(), gc.IsNil)
		s.clock.Advance(schema.SlotLength(period))
		c.Assert(live.b.Sync(), gc.IsNil)
	}
	c.Assert(s.count(c, schema.Beings(s.base), live.id), gc.Equals, int64(1))
	logged := strings.Join(logger.Entries(), "\n")
	c.Assert(logged, gc.Matches, `(?s).*skipped ping document.*entries format 2.*`)
	c.Assert(strings.Count(logged, `skipped ping document "bad"`), gc.Equals, 1)
	// Bad as it is, it goes with its writer.
	c.Assert(s.count(c, schema.Pings(s.base), "w"), gc.Equals, int64(0))
}

func (s *prunerSuite) TestPrunesEveryInterval(c *gc.C) {
	w := s.newWriter(c, modelA, 1)
	s.newWriter(c, modelB, 1)
	p, err := pruner.New(pruner.Config{Base: s.base, Clock: s.clock, Period: period, Interval: interval})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), p)
	w.stop(c)
	for i := 0; i < 4; i++ {
		// The other writer writes meanwhile, which keeps the pruner from
		// suspecting the database. The prune runs on the real database;
		// its timer is set again once it is done (the writer's flush
		// timer waits too).
		c.Assert(s.writers[1].b.Sync(), gc.IsNil)
		agenttest.WaitAdvance(c, s.clock, interval, 2)
		agenttest.WaitTimers(c, s.clock, 2)
	}
	c.Assert(s.count(c, schema.Pings(s.base), w.id), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), w.id), gc.Equals, int64(0))
}

func (s *prunerSuite) TestStopIsPromptWithTheServerHung(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	s.newWriter(c, modelA, 1)
	p, err := pruner.New(pruner.Config{Base: s.base, Clock: s.clock, Period: period, Interval: interval})
	c.Assert(err, gc.IsNil)
	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Assert(s.Server.Resume(), gc.IsNil) }()
	agenttest.WaitAdvance(c, s.clock, interval, 2)
	started := time.Now()
	p.Kill()
	c.Assert(p.Wait(), gc.IsNil)
	c.Assert(time.Since(started) < 5*time.Second, gc.Equals, true)
}

func (s *prunerSuite) TestConfigValidation(c *gc.C) {
	for i, t := range []struct {
		mutate func(*pruner.Config)
		err    string
	}{
		{func(cfg *pruner.Config) { cfg.Base = nil }, "nil Base not valid"},
		{func(cfg *pruner.Config) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *pruner.Config) { cfg.Interval = -1 }, "negative Interval not valid"},
		{func(cfg *pruner.Config) { cfg.Period = -1 }, "negative Period not valid"},
	} {
		c.Logf("case %d", i)
		cfg := pruner.Config{Base: s.base, Clock: s.clock}
		t.mutate(&cfg)
		p, err := pruner.New(cfg)
		c.Check(p, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
