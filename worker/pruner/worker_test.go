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
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/pruner"
)

const period = 30 * time.Second

var (
	modelA = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")
	modelB = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")
)

type prunerSuite struct {
	agenttest.MongoSuite
	clock *testclock.Clock
	base  *mongo.Collection
	now   int64
}

var _ = gc.Suite(&prunerSuite{})

func (s *prunerSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.base = s.DB.Collection("presence")
	s.now = schema.Slot(s.clock.Now(), period)
}

// write has a batcher of its own ping key in model for every slot from
// first to last, and returns its writer id.
func (s *prunerSuite) write(c *gc.C, model names.ModelTag, key string, first, last int64) string {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: time.Hour, Period: period, Clock: s.clock})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	id, err := b.Register(s.base, model, key)
	c.Assert(err, gc.IsNil)
	for slot := first; slot <= last; slot++ {
		c.Assert(b.Ping(id, slot), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
	}
	return id.Writer
}

// count returns how many documents of coll writer owns.
func (s *prunerSuite) count(c *gc.C, coll *mongo.Collection, writer string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	n, err := coll.CountDocuments(ctx, bson.D{{Key: schema.FieldWriter, Value: writer}})
	c.Assert(err, gc.IsNil)
	return n
}

func (s *prunerSuite) newPruner(c *gc.C, base *mongo.Collection) *pruner.Pruner {
	p, err := pruner.New(pruner.Config{Base: base, Clock: s.clock, Period: period, Interval: time.Minute})
	c.Assert(err, gc.IsNil)
	return p
}

func (s *prunerSuite) TestPruneKeepsOnlyTheWindow(c *gc.C) {
	writer := s.write(c, modelA, "a", s.now-20, s.now)
	c.Assert(s.count(c, schema.Pings(s.base), writer), gc.Equals, int64(21))
	p := s.newPruner(c, s.base)
	defer workertest.CleanKill(agenttest.C(c), p)

	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats, gc.Equals, pruner.Stats{Pings: 21 - schema.KeepSlots - 1})
	c.Assert(s.count(c, schema.Pings(s.base), writer), gc.Equals, int64(schema.KeepSlots+1))
	c.Assert(s.count(c, schema.Beings(s.base), writer), gc.Equals, int64(1))
}

func (s *prunerSuite) TestPruneRemovesBeingsOfRetiredWritersOnly(c *gc.C) {
	s.write(c, modelA, "gone", s.now-20, s.now-10)
	live := s.write(c, modelA, "live", s.now-1, s.now)
	p := s.newPruner(c, s.base)
	defer workertest.CleanKill(agenttest.C(c), p)

	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	ctx := context.Background()
	cur, err := schema.Beings(s.base).Find(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	var docs []schema.BeingsDoc
	c.Assert(cur.All(ctx, &docs), gc.IsNil)
	c.Assert(docs, gc.HasLen, 1)
	c.Assert(docs[0].Writer, gc.Equals, live)
}

func (s *prunerSuite) TestOnePrunePrunesEveryModelInThreeCommands(c *gc.C) {
	var counter agenttest.CommandCounter
	base := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence")
	var gone []string
	for i := 0; i < 20; i++ {
		model := names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i))
		gone = append(gone, s.write(c, model, "old", s.now-20, s.now-15))
	}
	live := s.write(c, modelB, "b", s.now-1, s.now)
	p := s.newPruner(c, base)
	defer workertest.CleanKill(agenttest.C(c), p)

	counter.Reset()
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Total(), gc.Equals, 3)
	c.Assert(stats, gc.Equals, pruner.Stats{Pings: 20 * 6, Beings: 20})
	for _, writer := range gone {
		c.Check(s.count(c, schema.Beings(s.base), writer), gc.Equals, int64(0))
	}
	c.Assert(s.count(c, schema.Pings(s.base), live), gc.Equals, int64(2))
	c.Assert(s.count(c, schema.Beings(s.base), live), gc.Equals, int64(1))
}

func (s *prunerSuite) TestAPruneDeletesBeingsOnlyWhenAWriterHasGone(c *gc.C) {
	var counter agenttest.CommandCounter
	base := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence")
	leaving := s.write(c, modelA, "a", s.now-1, s.now)
	staying := s.write(c, modelB, "b", s.now-1, s.now+schema.KeepSlots+2)
	// Its own prunes would race with the test's when the clock moves
	// on by more than an Interval below.
	p, err := pruner.New(pruner.Config{Base: base, Clock: s.clock, Period: period, Interval: 24 * time.Hour})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), p)
	prune := func() pruner.Stats {
		counter.Reset()
		stats, err := p.Prune(context.Background())
		c.Assert(err, gc.IsNil)
		return stats
	}

	// With every writer live, a prune reads the pings and deletes the
	// old ones, and sends the beings nothing.
	prune()
	c.Assert(counter.CountOn("delete", schema.Beings(s.base).Name()), gc.Equals, 0)
	c.Assert(counter.Total(), gc.Equals, 2)
	// One whose writer has gone since deletes its beings.
	s.clock.Advance(time.Duration(schema.KeepSlots+2) * schema.SlotLength(period))
	stats := prune()
	c.Assert(counter.CountOn("delete", schema.Beings(s.base).Name()), gc.Equals, 1)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), leaving), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), staying), gc.Equals, int64(1))
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
	gone := s.writeMany(c, (chunks-1)*schema.ChunkSize+1, s.now-20, s.now-15)
	live := s.write(c, modelB, "b", s.now-1, s.now)
	c.Assert(s.count(c, schema.Beings(s.base), gone), gc.Equals, int64(chunks))
	p := s.newPruner(c, base)
	defer workertest.CleanKill(agenttest.C(c), p)

	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats.Beings, gc.Equals, int64(chunks))
	c.Assert(s.count(c, schema.Beings(s.base), gone), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), live), gc.Equals, int64(1))
	c.Assert(deletes.commands, gc.HasLen, 1)
	statements, err := deletes.commands[0].Lookup("deletes").Array().Values()
	c.Assert(err, gc.IsNil)
	return gone, statements
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

// writeMany has a batcher of its own ping n keys of modelA in every slot
// from first to last, and returns its writer id.
func (s *prunerSuite) writeMany(c *gc.C, n int, first, last int64) string {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: time.Hour, Period: period, Clock: s.clock})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	ids := make([]pinger.Identity, n)
	for i := range ids {
		ids[i], err = b.Register(s.base, modelA, fmt.Sprintf("k%d", i))
		c.Assert(err, gc.IsNil)
	}
	for slot := first; slot <= last; slot++ {
		for _, id := range ids {
			c.Assert(b.Ping(id, slot), gc.IsNil)
		}
		c.Assert(b.Sync(), gc.IsNil)
	}
	return ids[0].Writer
}

func (s *prunerSuite) TestAPruneThatFindsNoWriterLiveKeepsEveryBeingsDocument(c *gc.C) {
	// The database stalls for longer than the window: when it is back,
	// no writer has a ping document in the window yet, which says
	// nothing about any of them.
	leaving := s.write(c, modelA, "a", s.now-1, s.now)
	staying := s.write(c, modelB, "b", s.now-1, s.now)
	p, err := pruner.New(pruner.Config{Base: s.base, Clock: s.clock, Period: period, Interval: 24 * time.Hour})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), p)
	_, err = p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	s.clock.Advance(time.Duration(schema.KeepSlots+2) * schema.SlotLength(period))
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats.Pings, gc.Equals, int64(4))
	c.Assert(stats.Beings, gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), leaving), gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), staying), gc.Equals, int64(1))

	// One writer writes again; the other, gone since the last prune
	// that found writers live, loses its beings.
	slot := schema.Slot(s.clock.Now(), period)
	_, err = schema.Pings(s.base).InsertOne(context.Background(), bson.D{
		{Key: schema.FieldID, Value: schema.PingID(slot, staying)},
		{Key: schema.FieldSlot, Value: slot},
		{Key: schema.FieldWriter, Value: staying},
	})
	c.Assert(err, gc.IsNil)
	stats, err = p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), leaving), gc.Equals, int64(0))
	c.Assert(s.count(c, schema.Beings(s.base), staying), gc.Equals, int64(1))
}

func (s *prunerSuite) TestBeingsOfAWriterThatCameAndWentBetweenTwoPrunesGoAtTheNext(c *gc.C) {
	s.write(c, modelB, "b", s.now-1, s.now)
	p := s.newPruner(c, s.base)
	defer workertest.CleanKill(agenttest.C(c), p)
	_, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	brief := s.write(c, modelA, "a", s.now-20, s.now-15)
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), brief), gc.Equals, int64(0))
}

func (s *prunerSuite) TestBeingsNoPingDocumentNamesGoAtTheFirstSweep(c *gc.C) {
	// A writer that registered and died before its first ping leaves
	// beings that no ping document names: only a sweep finds them. The
	// first comes a few prunes after the start, not at it, so that a
	// controller's start does not pay for it.
	s.write(c, modelB, "b", s.now-1, s.now)
	_, err := schema.Beings(s.base).InsertOne(context.Background(), bson.D{
		{Key: schema.FieldID, Value: schema.BeingsID("orphan", 0)},
		{Key: schema.FieldWriter, Value: "orphan"},
		{Key: schema.FieldChunk, Value: 0},
		{Key: schema.FieldSlot, Value: s.now - 20},
	})
	c.Assert(err, gc.IsNil)
	p := s.newPruner(c, s.base)
	defer workertest.CleanKill(agenttest.C(c), p)
	for i := 1; i < pruner.SweepFirst; i++ {
		_, err := p.Prune(context.Background())
		c.Assert(err, gc.IsNil)
		c.Assert(s.count(c, schema.Beings(s.base), "orphan"), gc.Equals, int64(1), gc.Commentf("prune %d", i))
	}
	stats, err := p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(stats.Beings, gc.Equals, int64(1))
	c.Assert(s.count(c, schema.Beings(s.base), "orphan"), gc.Equals, int64(0))
}

func (s *prunerSuite) TestAPingDocumentThatCannotBeReadWholeIsLoggedAndStillNamesALiveWriter(c *gc.C) {
	// A corrupt document, or a newer writer's, still names its writer
	// and slot: its beings stay.
	live := s.write(c, modelA, "a", s.now-1, s.now)
	s.write(c, modelB, "b", s.now-1, s.now)
	var logger agenttest.Logger
	p, err := pruner.New(pruner.Config{Base: s.base, Clock: s.clock, Period: period, Interval: time.Hour, Logger: &logger})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), p)
	_, err = p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	_, err = schema.Pings(s.base).UpdateMany(context.Background(), bson.D{{Key: schema.FieldWriter, Value: live}},
		bson.D{{Key: "$set", Value: bson.D{{Key: schema.FieldFresh, Value: bson.Binary{Data: []byte{2, 0, 0}}}}}})
	c.Assert(err, gc.IsNil)
	_, err = schema.Pings(s.base).InsertOne(context.Background(), bson.D{
		{Key: schema.FieldID, Value: "bad"},
		{Key: schema.FieldSlot, Value: s.now},
		{Key: schema.FieldWriter, Value: "w"},
		{Key: schema.FieldFrom, Value: schema.MaxIndex + 1},
	})
	c.Assert(err, gc.IsNil)

	_, err = p.Prune(context.Background())
	c.Assert(err, gc.IsNil)
	c.Assert(s.count(c, schema.Beings(s.base), live), gc.Equals, int64(1))
	logged := strings.Join(logger.Entries(), "\n")
	c.Assert(logged, gc.Matches, `(?s).*skipped ping document.*entries format 2.*`)
	c.Assert(logged, gc.Matches, `(?s).*skipped ping document "bad".*`)
}

func (s *prunerSuite) TestPrunesEveryInterval(c *gc.C) {
	writer := s.write(c, modelA, "a", s.now-20, s.now-10)
	p := s.newPruner(c, s.base)
	defer workertest.CleanKill(agenttest.C(c), p)
	agenttest.WaitAdvance(c, s.clock, time.Minute, 1)
	// The prune runs on the real database; its timer is set again once
	// it is done.
	agenttest.WaitTimers(c, s.clock, 1)
	c.Assert(s.count(c, schema.Pings(s.base), writer), gc.Equals, int64(0))
}

func (s *prunerSuite) TestStopIsPromptWithTheServerHung(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	s.write(c, modelA, "a", s.now-20, s.now-10)
	p := s.newPruner(c, s.base)
	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Assert(s.Server.Resume(), gc.IsNil) }()
	agenttest.WaitAdvance(c, s.clock, time.Minute, 1)
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
