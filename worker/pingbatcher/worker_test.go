package pingbatcher_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
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
)

const never = 24 * time.Hour

var (
	modelA = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")
	modelB = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")
)

type workerSuite struct {
	agenttest.MongoSuite
	clock *testclock.Clock
	base  *mongo.Collection
}

var _ = gc.Suite(&workerSuite{})

func (s *workerSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.base = s.DB.Collection("presence")
}

func (s *workerSuite) newBatcher(c *gc.C, base *mongo.Collection, flush time.Duration) *pingbatcher.PingBatcher {
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: flush, Clock: s.clock})
	c.Assert(err, gc.IsNil)
	return b
}

func (s *workerSuite) pingDocs(c *gc.C, base *mongo.Collection) []schema.PingDoc {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	cur, err := schema.Pings(base).Find(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	var docs []schema.PingDoc
	c.Assert(cur.All(ctx, &docs), gc.IsNil)
	return docs
}

func (s *workerSuite) beingsDocs(c *gc.C, base *mongo.Collection) []schema.BeingsDoc {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	cur, err := schema.Beings(base).Find(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	var docs []schema.BeingsDoc
	c.Assert(cur.All(ctx, &docs), gc.IsNil)
	return docs
}

func register(c *gc.C, b *pingbatcher.PingBatcher, base *mongo.Collection, model names.ModelTag, key string) pinger.Identity {
	id, err := b.Register(base, model, key)
	c.Assert(err, gc.IsNil)
	return id
}

func bitsOf(doc schema.PingDoc) []int {
	return indexesIn(doc.Alive)
}

// deadBitsOf returns the indexes doc marks dead.
func deadBitsOf(doc schema.PingDoc) []int {
	return indexesIn(doc.Dead)
}

// indexesIn returns the indexes set in an encoded bitmap.
func indexesIn(encoded []byte) []int {
	var out []int
	schema.ForEachBit(schema.DecodeBits(nil, encoded), func(i int) { out = append(out, i) })
	return out
}

func (s *workerSuite) TestPingsOfOneSlotAreOredIntoOneDocument(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	var ids []pinger.Identity
	for i := 0; i < 130; i++ {
		ids = append(ids, register(c, b, s.base, modelA, fmt.Sprint(i)))
	}
	for _, id := range ids {
		c.Assert(b.Ping(id, 7), gc.IsNil)
		c.Assert(b.Ping(id, 7), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	docs := s.pingDocs(c, s.base)
	c.Assert(docs, gc.HasLen, 1)
	c.Assert(docs[0].Slot, gc.Equals, int64(7))
	c.Assert(docs[0].Writer, gc.Equals, ids[0].Writer)
	c.Assert(bitsOf(docs[0]), gc.HasLen, 130)
}

func (s *workerSuite) TestEverySlotGetsOneDocumentForAllModels(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	ida := register(c, b, s.base, modelA, "a")
	idb := register(c, b, s.base, modelB, "b")
	for slot := int64(1); slot <= 3; slot++ {
		c.Assert(b.Ping(ida, slot), gc.IsNil)
		c.Assert(b.Ping(idb, slot), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	docs := s.pingDocs(c, s.base)
	c.Assert(docs, gc.HasLen, 3)
	for _, doc := range docs {
		c.Check(bitsOf(doc), gc.DeepEquals, []int{0, 1})
		c.Check(doc.Period, gc.Equals, int64(schema.DefaultPeriod))
	}
	beings := s.beingsDocs(c, s.base)
	c.Assert(beings, gc.HasLen, 1)
	c.Assert(beings[0].Entries, gc.DeepEquals, schema.NewEntries([]string{modelA.Id(), modelB.Id()}, []string{"a", "b"}))
}

func (s *workerSuite) TestPingDocumentsAreStampedWithThePeriod(c *gc.C) {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, Clock: s.clock, FlushInterval: never, Period: 3 * time.Second})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	c.Assert(b.Ping(register(c, b, s.base, modelA, "a"), 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.pingDocs(c, s.base)[0].Period, gc.Equals, int64(3*time.Second))
}

func (s *workerSuite) TestOneWriteCommandPerFlushWhateverTheModelsAndPingers(c *gc.C) {
	var counter agenttest.CommandCounter
	base := s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("presence")
	b := s.newBatcher(c, base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	var ids []pinger.Identity
	for i := 0; i < 10000; i++ {
		model := names.NewModelTag(fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i%1000))
		ids = append(ids, register(c, b, base, model, fmt.Sprint(i)))
	}
	for _, id := range ids {
		c.Assert(b.Ping(id, 1), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)

	// Steady state: every pinger pings again in the next slot.
	counter.Reset()
	for _, id := range ids {
		c.Assert(b.Ping(id, 2), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	// One update of the ping documents, and the notice of the new slot.
	c.Assert(counter.Writes(), gc.Equals, 2)
	c.Assert(counter.CountOn("insert", "presence.notices"), gc.Equals, 1)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 2)

	// A flush with nothing new writes nothing.
	counter.Reset()
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(counter.Writes(), gc.Equals, 0)
}

func (s *workerSuite) TestWritesAreIdempotent(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	before := s.pingDocs(c, s.base)

	// A second batcher's view of the same document would differ; a
	// retry of the same write must not.
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.pingDocs(c, s.base), gc.DeepEquals, before)
}

func (s *workerSuite) TestFailedFlushKeepsPingsForTheNext(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot stop an external MongoDB")
	}
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	c.Assert(s.Server.Stop(), gc.IsNil)
	c.Assert(b.Ping(id, 2), gc.IsNil)
	c.Assert(b.Sync(), gc.NotNil)
	c.Assert(b.Report()["failures"], gc.Equals, int64(1))
	c.Assert(s.Server.Start(), gc.IsNil)
	c.Assert(agenttest.Retry(agenttest.LongWait, b.Sync), gc.IsNil)
	docs := s.pingDocs(c, s.base)
	c.Assert(docs, gc.HasLen, 2)
}

func (s *workerSuite) TestFlushesOnItsOwnEveryJitteredInterval(c *gc.C) {
	b := s.newBatcher(c, s.base, time.Second)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	// A routine ping of the next slot waits for the interval.
	c.Assert(b.Ping(id, 2), gc.IsNil)
	agenttest.WaitTimers(c, s.clock, 1)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 1)
	agenttest.WaitAdvance(c, s.clock, 1200*time.Millisecond, 1)
	// The flush runs on the real database; wait for its timer to be set
	// again, which happens once it is done.
	agenttest.WaitTimers(c, s.clock, 1)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 2)
}

func (s *workerSuite) TestEverySlotGetsADocumentWhilePingersLive(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	c.Assert(b.Ping(register(c, b, s.base, modelA, "a"), slot), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	// Half a Period later nobody pinged yet, but the writer moves to
	// the new slot, so that readers can tell a key that stopped; the
	// pinger still holds its index, so its key is carried.
	s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
	c.Assert(b.Sync(), gc.IsNil)
	newest := s.newestPingDoc(c)
	c.Assert(newest.Slot, gc.Equals, slot+1)
	c.Assert(bitsOf(newest), gc.DeepEquals, []int{0})
}

func (s *workerSuite) newestPingDoc(c *gc.C) schema.PingDoc {
	var newest schema.PingDoc
	for _, doc := range s.pingDocs(c, s.base) {
		if doc.Slot > newest.Slot {
			newest = doc
		}
	}
	return newest
}

func (s *workerSuite) TestALatePingerIsCarriedButAReleasedOrDisconnectedOneIsNot(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	late := register(c, b, s.base, modelA, "late")
	released := register(c, b, s.base, modelA, "released")
	disconnected := register(c, b, s.base, modelA, "disconnected")
	for _, id := range []pinger.Identity{late, released, disconnected} {
		c.Assert(b.Ping(id, slot), gc.IsNil)
	}
	c.Assert(b.Disconnect(disconnected, slot), gc.IsNil)
	b.Release(released)
	c.Assert(b.Sync(), gc.IsNil)
	// The next slot begins and none of them pings in it: the late
	// pinger's goroutine is starved, the others are gone.
	s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
	c.Assert(b.Sync(), gc.IsNil)
	newest := s.newestPingDoc(c)
	c.Assert(newest.Slot, gc.Equals, slot+1)
	c.Assert(bitsOf(newest), gc.DeepEquals, []int{int(late.Index)})
}

func (s *workerSuite) TestTheWriterGoesOnForThreeSlotsAfterItsLastPinger(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, slot), gc.IsNil)
	b.Release(id)
	c.Assert(b.Sync(), gc.IsNil)
	// Readers judge a writer that falls silent by time, so it writes
	// while its last key's pings expire, and then stops.
	for i := 0; i < 5; i++ {
		s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
		c.Assert(b.Sync(), gc.IsNil)
	}
	var newest int64
	for _, doc := range s.pingDocs(c, s.base) {
		newest = max(newest, doc.Slot)
	}
	c.Assert(newest, gc.Equals, slot+3)
}

func (s *workerSuite) TestAWriterWithEveryIndexReleasedIsNotRetiredBeforeItsIdleSlots(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	ids := make([]pinger.Identity, 2*schema.ChunkSize*2)
	for i := range ids {
		ids[i] = register(c, b, s.base, modelA, fmt.Sprint(i))
		c.Assert(b.Ping(ids[i], slot), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	for _, id := range ids {
		b.Release(id)
	}
	for i := 0; i < 3; i++ {
		s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
		c.Assert(b.Sync(), gc.IsNil)
	}
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(0))
	var newest int64
	for _, doc := range s.pingDocs(c, s.base) {
		newest = max(newest, doc.Slot)
	}
	c.Assert(newest, gc.Equals, slot+3)
}

func (s *workerSuite) TestAKeyComingUpIsWrittenAtOnce(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	c.Assert(b.Ping(register(c, b, s.base, modelA, "a"), 1), gc.IsNil)
	// No Sync, no clock advance: the first ping of a key asks for a
	// flush of its own.
	agenttest.WaitFor(c, agenttest.LongWait, "the key's ping document", func() bool { return len(s.pingDocs(c, s.base)) == 1 })
}

// newWakingBatcher returns a batcher that flushes only when asked, wired
// as ControllerManifolds wires it to wake a reader, with the channel it
// wakes and one that receives every flush's figures.
func (s *workerSuite) newWakingBatcher(c *gc.C) (*pingbatcher.PingBatcher, chan struct{}, chan pingbatcher.FlushStats) {
	wake := make(chan struct{}, 1)
	flushes := make(chan pingbatcher.FlushStats, 10)
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: never, Clock: s.clock,
		OnFlush: pingbatcher.WakeOnPrompt(wake, func(stats pingbatcher.FlushStats) { flushes <- stats })})
	c.Assert(err, gc.IsNil)
	return b, wake, flushes
}

func (s *workerSuite) TestAFlushThatCarriesADisconnectOrAKeyComingUpIsPromptAndWakes(c *gc.C) {
	b, wake, flushes := s.newWakingBatcher(c)
	defer workertest.CleanKill(agenttest.C(c), b)
	woken := func() bool {
		select {
		case <-wake:
			return true
		default:
			return false
		}
	}

	anyPrompt := func() bool {
		prompt := false
		for len(flushes) > 0 {
			stats := <-flushes
			prompt = prompt || stats.Prompt
		}
		return prompt
	}

	a := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(anyPrompt(), gc.Equals, true)
	c.Assert(woken(), gc.Equals, true)

	// A key that pings on is no news.
	c.Assert(b.Ping(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert((<-flushes).Prompt, gc.Equals, false)
	c.Assert(woken(), gc.Equals, false)

	c.Assert(b.Disconnect(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(anyPrompt(), gc.Equals, true)
	c.Assert(woken(), gc.Equals, true)
}

func (s *workerSuite) TestAFlushThatMovesTheWriterOnToANewSlotWakes(c *gc.C) {
	b, wake, flushes := s.newWakingBatcher(c)
	defer workertest.CleanKill(agenttest.C(c), b)
	// The flushes done since the last look: a key coming up asks for
	// one of its own besides the Sync's.
	done := func() (moved, prompt bool) {
		for len(flushes) > 0 {
			stats := <-flushes
			moved, prompt = moved || stats.Moved, prompt || stats.Prompt
		}
		return moved, prompt
	}
	woken := func() bool {
		select {
		case <-wake:
			return true
		default:
			return false
		}
	}
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	c.Assert(b.Ping(register(c, b, s.base, modelA, "a"), slot), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	moved, _ := done()
	c.Assert(moved, gc.Equals, true)
	c.Assert(woken(), gc.Equals, true)
	// Within the slot a flush moves nothing on, and wakes nobody.
	c.Assert(b.Sync(), gc.IsNil)
	moved, _ = done()
	c.Assert(moved, gc.Equals, false)
	c.Assert(woken(), gc.Equals, false)
	// The first flush of the next slot moves the writer on, which is
	// what a reader judges a silent death by: it wakes, though it
	// carries no prompt change.
	s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
	c.Assert(b.Sync(), gc.IsNil)
	moved, prompt := done()
	c.Assert(moved, gc.Equals, true)
	c.Assert(prompt, gc.Equals, false)
	c.Assert(woken(), gc.Equals, true)
	c.Assert(b.Sync(), gc.IsNil)
	moved, _ = done()
	c.Assert(moved, gc.Equals, false)
	c.Assert(woken(), gc.Equals, false)
}

func (s *workerSuite) TestADisconnectIsWrittenWithinTheKickGap(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Disconnect(id, 1), gc.IsNil)
	// Right after a flush, the next comes a kick gap (20 ms) later, not
	// after the flush interval.
	agenttest.WaitAdvance(c, s.clock, 20*time.Millisecond, 1)
	agenttest.WaitFor(c, agenttest.LongWait, "the death written", func() bool {
		docs := s.pingDocs(c, s.base)
		return len(docs) == 1 && len(docs[0].Dead) > 0
	})
}

func (s *workerSuite) TestConcurrentSyncsShareFlushes(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id, err := b.Register(s.base, modelA, fmt.Sprint(i))
			c.Check(err, gc.IsNil)
			c.Check(b.Ping(id, 1), gc.IsNil)
			c.Check(b.Sync(), gc.IsNil)
		}(i)
	}
	wg.Wait()
	docs := s.pingDocs(c, s.base)
	c.Assert(docs, gc.HasLen, 1)
	c.Assert(bitsOf(docs[0]), gc.HasLen, 20)
	c.Assert(b.Report()["flushes"].(int64) <= 20, gc.Equals, true)
}

func (s *workerSuite) TestIndexIsReusedOnlyByTheSameKey(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	a1 := register(c, b, s.base, modelA, "a")
	b.Release(a1)
	other := register(c, b, s.base, modelA, "b")
	c.Assert(other.Index, gc.Not(gc.Equals), a1.Index)
	a2 := register(c, b, s.base, modelA, "a")
	c.Assert(a2, gc.Equals, a1)

	// Two live pingers of one key never share an index.
	a3 := register(c, b, s.base, modelA, "a")
	c.Assert(a3.Index, gc.Not(gc.Equals), a2.Index)
}

func (s *workerSuite) TestIdentityOfAnotherModelIsUnknown(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	id.Model = modelB.Id()
	c.Assert(b.Ping(id, 1), gc.Equals, pinger.ErrUnknownIdentity)
}

func (s *workerSuite) TestReleasedIdentityIsUnknown(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	b.Release(id)
	c.Assert(b.Ping(id, 1), gc.Equals, pinger.ErrUnknownIdentity)
	c.Assert(b.Disconnect(id, 1), gc.Equals, pinger.ErrUnknownIdentity)
	c.Assert(b.Ping(pinger.Identity{Model: modelA.Id(), Writer: "other", Index: 0}, 1), gc.Equals, pinger.ErrUnknownIdentity)
}

func (s *workerSuite) TestBatcherSilentForFourSlotsGetsANewWriter(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 10), gc.IsNil)
	c.Assert(b.Ping(id, 14), gc.IsNil)
	c.Assert(b.Ping(id, 19), gc.Equals, pinger.ErrUnknownIdentity)
	again := register(c, b, s.base, modelA, "a")
	c.Assert(again.Writer, gc.Not(gc.Equals), id.Writer)
	c.Assert(b.Ping(again, 19), gc.IsNil)
}

func (s *workerSuite) TestBadInputIsNotValidAndWritesNothing(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	for i, t := range []struct {
		base  *mongo.Collection
		model names.ModelTag
		key   string
		err   string
	}{
		{s.base, names.NewModelTag("not-a-uuid"), "a", `model tag "model-not-a-uuid" not valid`},
		{s.base, modelA, "", "empty key not valid"},
		{s.base, modelA, "\xff", `key "\\xff" \(not UTF-8\) not valid`},
		{s.DB.Collection("elsewhere"), modelA, "a", `base collection ".*elsewhere" \(this batcher writes ".*presence"\) not valid`},
	} {
		c.Logf("case %d", i)
		_, err := b.Register(t.base, t.model, t.key)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 0)
	c.Assert(s.beingsDocs(c, s.base), gc.HasLen, 0)
}

func (s *workerSuite) TestANilBaseIsTheBatchersOwn(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id, err := b.Register(nil, modelA, "a")
	c.Assert(err, gc.IsNil)
	c.Assert(b.Ping(id, 1), gc.IsNil)
}

func (s *workerSuite) TestStoppedBatcherRefusesPings(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Stop(), gc.IsNil)
	c.Assert(b.Ping(id, 1), gc.Equals, pingbatcher.ErrStopped)
	c.Assert(b.Sync(), gc.Equals, pingbatcher.ErrStopped)
	_, err := b.Register(s.base, modelA, "b")
	c.Assert(err, gc.Equals, pingbatcher.ErrStopped)
}

func (s *workerSuite) TestDeadBatcherFailsWithItsError(c *gc.C) {
	b := pingbatcher.NewDeadPingBatcher(errors.New("no database"))
	c.Assert(b.Wait(), gc.ErrorMatches, "no database")
	c.Assert(b.Sync(), gc.ErrorMatches, "no database")
	c.Assert(b.Ping(pinger.Identity{}, 1), gc.ErrorMatches, "no database")
}

func (s *workerSuite) TestConfigValidation(c *gc.C) {
	for i, t := range []struct {
		mutate func(*pingbatcher.Config)
		err    string
	}{
		{func(cfg *pingbatcher.Config) { cfg.Base = nil }, "nil Base not valid"},
		{func(cfg *pingbatcher.Config) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *pingbatcher.Config) { cfg.FlushInterval = -1 }, "negative FlushInterval not valid"},
		{func(cfg *pingbatcher.Config) { cfg.Period = -1 }, "negative Period not valid"},
	} {
		c.Logf("case %d", i)
		cfg := pingbatcher.Config{Base: s.base, Clock: s.clock}
		t.mutate(&cfg)
		b, err := pingbatcher.New(cfg)
		c.Check(b, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}

func (s *workerSuite) TestNewKeysTravelInPingDocumentsUntilThereAreFreshLimitOfThem(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	a := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	// A new writer writes its beings at once: its first one proves its
	// id unique.
	beings := s.beingsDocs(c, s.base)
	c.Assert(beings, gc.HasLen, 1)
	c.Assert(beings[0].Entries.Keys, gc.DeepEquals, []string{"a"})

	// A key registered later rides in the ping documents, in this slot
	// and the next: a beings document is big, and its every write is
	// costly on the embedded server.
	k := register(c, b, s.base, modelB, "b")
	c.Assert(b.Ping(k, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Ping(a, 2), gc.IsNil)
	c.Assert(b.Ping(k, 2), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.DeepEquals, []string{"a"})
	for _, doc := range s.pingDocs(c, s.base) {
		c.Assert(doc.FreshFrom, gc.Equals, 1)
		c.Assert(doc.Fresh, gc.DeepEquals, schema.NewEntries([]string{modelB.Id()}, []string{"b"}))
	}

	// The FreshLimit-th new key has them written to the beings; the
	// pings of that flush, which go first, still carry them, and later
	// ones do not.
	keys := []string{"a", "b"}
	for i := 1; i < schema.FreshLimit; i++ {
		keys = append(keys, fmt.Sprint(i))
		register(c, b, s.base, modelB, keys[len(keys)-1])
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.DeepEquals, keys)
	c.Assert(pingDocOf(c, s.pingDocs(c, s.base), 2).FreshFrom, gc.Equals, 1)
	l := register(c, b, s.base, modelB, "last")
	c.Assert(b.Ping(l, 2), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	doc := pingDocOf(c, s.pingDocs(c, s.base), 2)
	c.Assert(doc.FreshFrom, gc.Equals, len(keys))
	c.Assert(doc.Fresh, gc.DeepEquals, schema.NewEntries([]string{modelB.Id()}, []string{"last"}))
}

// pingDocOf returns the ping document of slot among docs.
func pingDocOf(c *gc.C, docs []schema.PingDoc, slot int64) schema.PingDoc {
	for _, doc := range docs {
		if doc.Slot == slot {
			return doc
		}
	}
	c.Fatalf("no ping document for slot %d", slot)
	return schema.PingDoc{}
}

func (s *workerSuite) TestManyNewKeysAreWrittenToBeingsWithoutWaitingForASlot(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	first := register(c, b, s.base, modelA, "first")
	c.Assert(b.Ping(first, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	for i := 0; i < schema.FreshLimit; i++ {
		id := register(c, b, s.base, modelA, fmt.Sprint(i))
		c.Assert(b.Ping(id, 1), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.HasLen, schema.FreshLimit+1)
	// The next new key's ping carries only itself.
	last := register(c, b, s.base, modelA, "last")
	c.Assert(b.Ping(last, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	doc := pingDocOf(c, s.pingDocs(c, s.base), 1)
	c.Assert(doc.FreshFrom, gc.Equals, schema.FreshLimit+1)
	c.Assert(doc.Fresh.Len(), gc.Equals, 1)
}

func (s *workerSuite) TestWriterThatReleasedMostIndexesIsRetired(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	var ids []pinger.Identity
	for i := 0; i < 4*schema.ChunkSize; i++ {
		ids = append(ids, register(c, b, s.base, modelA, fmt.Sprint(i)))
	}
	for _, id := range ids {
		c.Assert(b.Ping(id, 1), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	for _, id := range ids[:len(ids)/2] {
		b.Release(id)
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(0))
	b.Release(ids[len(ids)/2])
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(1))

	// The live pingers register again, with the new writer.
	last := ids[len(ids)-1]
	c.Assert(b.Ping(last, 1), gc.Equals, pinger.ErrUnknownIdentity)
	again := register(c, b, s.base, modelA, fmt.Sprint(len(ids)-1))
	c.Assert(again.Writer, gc.Not(gc.Equals), last.Writer)
	c.Assert(again.Index, gc.Equals, uint32(0))
}

func (s *workerSuite) TestStalledFlushFailsAndWritesBeingsAgain(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, Clock: s.clock, FlushInterval: never, Period: 400 * time.Millisecond})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	// The pruner, which finds none of this writer's pings in its window
	// after the stall below, removes its beings (here before the stall,
	// while the server still answers).
	_, err = schema.Beings(s.base).DeleteMany(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)

	// The server stalls for longer than the pruner's window: every
	// flush meanwhile fails at its deadline.
	c.Assert(s.Server.Pause(), gc.IsNil)
	for slot := int64(2); slot < 2+schema.KeepSlots; slot++ {
		c.Assert(b.Ping(id, slot), gc.IsNil)
		err = b.Sync()
		if err == nil {
			break
		}
	}
	c.Assert(s.Server.Resume(), gc.IsNil)
	c.Assert(err, gc.NotNil)
	c.Assert(b.Report()["failures"], gc.Equals, int64(schema.KeepSlots))

	c.Assert(agenttest.Retry(agenttest.LongWait, b.Sync), gc.IsNil)
	beings := s.beingsDocs(c, s.base)
	c.Assert(beings, gc.HasLen, 1)
	c.Assert(beings[0].Entries.Keys, gc.DeepEquals, []string{"a"})
}

func (s *workerSuite) TestASlowFlushIsCountedAndLoggedOnce(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	base := s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	logger := &agenttest.Logger{}
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: 50 * time.Millisecond, Clock: clock.WallClock, Logger: logger})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, base, modelA, "a")
	slot := schema.Slot(time.Now(), schema.DefaultPeriod)
	c.Assert(b.Ping(id, slot), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	proxy.SetDelay(200 * time.Millisecond)
	for i := 1; i <= 2; i++ {
		// A key coming up each time: a flush with something to write.
		id := register(c, b, base, modelA, fmt.Sprintf("k%d", i))
		c.Assert(b.Ping(id, schema.Slot(time.Now(), schema.DefaultPeriod)), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
	}
	c.Assert(b.Report()["slow-flushes"].(int64) >= 2, gc.Equals, true)
	behind := 0
	for _, line := range logger.Entries() {
		if strings.Contains(line, "falling behind") {
			behind++
		}
	}
	c.Assert(behind, gc.Equals, 1)
}

// writtenKey starts a batcher on base with key a pinged in the current
// slot and written. The caller kills the batcher.
func (s *workerSuite) writtenKey(c *gc.C, base *mongo.Collection) (*pingbatcher.PingBatcher, pinger.Identity, int64) {
	b := s.newBatcher(c, base, never)
	id := register(c, b, base, modelA, "a")
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	c.Assert(b.Ping(id, slot), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	return b, id, slot
}

func (s *workerSuite) TestAWriterWhoseBeingsCannotBeRewrittenStillWritesItsPings(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	base := s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	b, id, slot := s.writtenKey(c, base)
	defer workertest.CleanKill(agenttest.C(c), b)

	// Flushes fail for longer than the pruner's window: the next
	// rewrites every beings document, in case the pruner removed them
	// meanwhile.
	proxy.SetFaults(agenttest.Faults{Drop: 1, Seed: 1})
	for i := int64(1); i <= schema.KeepSlots; i++ {
		s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
		c.Assert(b.Ping(id, slot+i), gc.IsNil)
		c.Assert(b.Sync(), gc.NotNil)
	}

	// Now only the beings writes fail, as on a server that fails big
	// writes: the writer's pings still go, so it stays on time.
	proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(base).Name(), Seed: 1})
	last := slot + schema.KeepSlots + 1
	s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
	c.Assert(b.Ping(id, last), gc.IsNil)
	c.Assert(b.Sync(), gc.ErrorMatches, `cannot write 1 beings documents: .*`)
	newest := s.newestPingDoc(c)
	c.Assert(newest.Slot, gc.Equals, last)
	c.Assert(bitsOf(newest), gc.DeepEquals, []int{int(id.Index)})

	// Once beings writes work again, the next flush rewrites them.
	proxy.SetFaults(agenttest.Faults{})
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base), gc.HasLen, 1)
}

// newKeyFixture is a batcher behind a wire proxy whose key a was written
// in slot, with the clock moved on to slot+1, where schema.FreshLimit new
// keys are registered (enough for their beings to be written), the first
// of them k, and k and a are pinged but not yet flushed.
type newKeyFixture struct {
	proxy *agenttest.Proxy
	base  *mongo.Collection
	b     *pingbatcher.PingBatcher
	a, k  pinger.Identity
	slot  int64
	// keys are the keys of every index, a's and the new ones.
	keys []string
}

// newKeyInNextSlot sets up a newKeyFixture whose batcher writes slots of
// period (zero: the default). The caller kills the batcher and closes
// the proxy.
func (s *workerSuite) newKeyInNextSlot(c *gc.C, period time.Duration) newKeyFixture {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	f := newKeyFixture{proxy: proxy, keys: []string{"a"}}
	f.base = s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	f.b, err = pingbatcher.New(pingbatcher.Config{Base: f.base, FlushInterval: never, Clock: s.clock, Period: period})
	c.Assert(err, gc.IsNil)
	if period == 0 {
		period = schema.DefaultPeriod
	}
	f.a = register(c, f.b, f.base, modelA, "a")
	f.slot = schema.Slot(s.clock.Now(), period)
	c.Assert(f.b.Ping(f.a, f.slot), gc.IsNil)
	c.Assert(f.b.Sync(), gc.IsNil)
	s.clock.Advance(schema.SlotLength(period))
	f.k = register(c, f.b, f.base, modelB, "b")
	f.keys = append(f.keys, "b")
	for i := 1; i < schema.FreshLimit; i++ {
		key := fmt.Sprintf("b%d", i)
		register(c, f.b, f.base, modelB, key)
		f.keys = append(f.keys, key)
	}
	c.Assert(f.b.Ping(f.a, f.slot+1), gc.IsNil)
	c.Assert(f.b.Ping(f.k, f.slot+1), gc.IsNil)
	return f
}

// fresh returns the entries of the fixture's new keys.
func (f newKeyFixture) fresh() schema.Entries {
	models := make([]string, len(f.keys)-1)
	for i := range models {
		models[i] = modelB.Id()
	}
	return schema.NewEntries(models, f.keys[1:])
}

// close kills the batcher and closes the proxy.
func (f newKeyFixture) close(c *gc.C) {
	workertest.CleanKill(agenttest.C(c), f.b)
	f.proxy.Close()
}

func (s *workerSuite) TestANewKeysPingIsNotHeldUpByItsBeingsWrite(c *gc.C) {
	// In the next slot a new key's beings are written, a whole chunk
	// that is slow on a big writer, here one that fails outright: the
	// pings go first and name the key themselves.
	f := s.newKeyInNextSlot(c, 0)
	defer f.close(c)
	proxy, base, b, a, k, slot := f.proxy, f.base, f.b, f.a, f.k, f.slot
	proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(base).Name(), Seed: 1})
	c.Assert(b.Sync(), gc.ErrorMatches, `cannot write 1 beings documents: .*`)
	newest := s.newestPingDoc(c)
	c.Assert(newest.Slot, gc.Equals, slot+1)
	c.Assert(bitsOf(newest), gc.DeepEquals, []int{int(a.Index), int(k.Index)})
	c.Assert(newest.FreshFrom, gc.Equals, int(k.Index))
	c.Assert(newest.Fresh, gc.DeepEquals, f.fresh())

	// The beings are written at the next flush that can.
	proxy.SetFaults(agenttest.Faults{})
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.DeepEquals, f.keys)
}

func (s *workerSuite) TestADisconnectIsWrittenWhileASlowBeingsWriteRuns(c *gc.C) {
	// In the next slot a new key's beings are written, slowly: every
	// beings command waits 3 s on its way to the server.
	f := s.newKeyInNextSlot(c, 0)
	defer f.close(c)
	proxy, base, b, a, k, slot := f.proxy, f.base, f.b, f.a, f.k, f.slot
	proxy.SetFaults(agenttest.Faults{Delay: 1, MinDelay: 3 * time.Second, MaxDelay: 3 * time.Second, Collection: schema.Beings(base).Name(), Seed: 1})
	synced := make(chan error, 1)
	go func() { synced <- b.Sync() }()
	waitForPingDoc(c, s, slot+1, func(doc schema.PingDoc) bool { return slices.Contains(bitsOf(doc), int(k.Index)) })

	// A Disconnect meanwhile (past the least gap between two flushes)
	// is written at once, not after the beings.
	s.clock.Advance(100 * time.Millisecond)
	c.Assert(b.Disconnect(a, slot+1), gc.IsNil)
	waitForPingDoc(c, s, slot+1, func(doc schema.PingDoc) bool { return slices.Contains(deadBitsOf(doc), int(a.Index)) })
	select {
	case err := <-synced:
		c.Fatalf("the Sync returned (%v) before the beings were written", err)
	default:
	}
	c.Assert(<-synced, gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.DeepEquals, f.keys)
}

func (s *workerSuite) TestABeingsWriteThatTimedOutBesideTheFlushesLengthensTheNextDeadline(c *gc.C) {
	// A new key's beings write, beside the flushes, takes 1.1 s, longer
	// than the 1 s deadline (half a Period): it fails, and the rewrite
	// that follows gets a longer deadline, as after a flush that timed
	// out.
	f := s.newKeyInNextSlot(c, 2*time.Second)
	defer f.close(c)
	proxy, base, b := f.proxy, f.base, f.b
	proxy.SetFaults(agenttest.Faults{Delay: 1, MinDelay: 1100 * time.Millisecond, MaxDelay: 1100 * time.Millisecond, Collection: schema.Beings(base).Name(), Seed: 1})
	c.Assert(b.Sync(), gc.NotNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.DeepEquals, f.keys)
}

// waitForPingDoc waits on the wall clock until the ping document of slot
// satisfies f.
func waitForPingDoc(c *gc.C, s *workerSuite, slot int64, f func(schema.PingDoc) bool) {
	agenttest.WaitFor(c, 2*time.Second, fmt.Sprintf("the ping document of slot %d changed as awaited", slot), func() bool {
		return slices.ContainsFunc(s.pingDocs(c, s.base), func(doc schema.PingDoc) bool {
			return doc.Slot == slot && f(doc)
		})
	})
}

func (s *workerSuite) TestAFlushThatTimedOutGetsALongerDeadlineNextTime(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	base := s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: never, Clock: s.clock, Period: 2 * time.Second})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, base, modelA, "a")
	c.Assert(b.Ping(id, schema.Slot(s.clock.Now(), 2*time.Second)), gc.IsNil)
	// Every reply takes 1.1 s, longer than the first flush's 1 s
	// deadline (half a Period): it fails, where a fixed deadline would
	// fail for ever. Each failure doubles the deadline, up to two
	// Periods (4 s), enough for a new connection's handshake and a
	// command.
	proxy.SetDelay(1100 * time.Millisecond)
	err = b.Sync()
	c.Assert(err, gc.NotNil)
	c.Assert(mongo.IsTimeout(err), gc.Equals, true, gc.Commentf("%v", err))
	for attempt := 1; ; attempt++ {
		err := b.Sync()
		if err == nil {
			break
		}
		c.Assert(attempt < 3, gc.Equals, true, gc.Commentf("still failing: %v", err))
	}
	proxy.SetDelay(0)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 1)
}

func (s *workerSuite) TestADisconnectInTheSlotBeforeTheWriterMovedOnIsNotLost(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, slot), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	// The writer moves on and carries the index alive into the next
	// slot; the pinger's Disconnect still names the slot before, which
	// it read just before the boundary.
	s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Disconnect(id, slot), gc.IsNil)
	b.Release(id)
	c.Assert(b.Sync(), gc.IsNil)
	newest := s.newestPingDoc(c)
	c.Assert(newest.Slot, gc.Equals, slot+1)
	var dead []int
	schema.ForEachBit(schema.DecodeBits(nil, newest.Dead), func(i int) { dead = append(dead, i) })
	c.Assert(dead, gc.DeepEquals, []int{int(id.Index)})
}

// failForSlots makes the flushes of the n slots after the fixture's fail
// as on a database that stopped answering (the server applies each
// write, but its reply is lost), with key a pinging; then it moves to the
// next slot, pings a there, and returns that slot, whose document only a
// later flush writes.
func (s *workerSuite) failForSlots(c *gc.C, f newKeyFixture, n int) int64 {
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Seed: 1})
	slot := f.slot + 1
	for i := 0; i < n; i++ {
		s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
		slot++
		c.Assert(f.b.Ping(f.a, slot), gc.IsNil)
		c.Assert(f.b.Sync(), gc.NotNil)
	}
	s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
	slot++
	c.Assert(f.b.Ping(f.a, slot), gc.IsNil)
	return slot
}

// slowBeings makes every beings command wait d on its way to the server,
// starts a Sync, and returns once the Sync's flush has written the
// pings of slot and of every slot the failure before it left unwritten
// (those go in a later command of the same flush), so that a fault the
// caller injects next cannot fail that flush.
func (s *workerSuite) slowBeings(c *gc.C, f newKeyFixture, d time.Duration, slot int64) <-chan error {
	f.proxy.SetFaults(agenttest.Faults{Delay: 1, MinDelay: d, MaxDelay: d, Collection: schema.Beings(f.base).Name(), Seed: 1})
	synced := make(chan error, 1)
	go func() { synced <- f.b.Sync() }()
	hasA := func(doc schema.PingDoc) bool { return slices.Contains(bitsOf(doc), int(f.a.Index)) }
	waitForPingDoc(c, s, slot, hasA)
	for unwritten := f.slot + 2; unwritten < slot; unwritten++ {
		waitForPingDoc(c, s, unwritten, hasA)
	}
	return synced
}

// slowRewrite sets up a newKeyFixture whose flushes then fail for longer
// than the pruner's window, and starts the flush that rewrites its beings,
// each beings command taking d. It returns once that flush's pings are
// written, with the slot they were written in and the flush's Sync.
func (s *workerSuite) slowRewrite(c *gc.C, d time.Duration) (newKeyFixture, int64, <-chan error) {
	f, slot := s.longFailure(c)
	return f, slot, s.slowBeings(c, f, d, slot)
}

// longFailure sets up a newKeyFixture whose flushes then fail for longer
// than the pruner's window (see failForSlots), and returns it with the
// slot it is in. The caller closes it.
func (s *workerSuite) longFailure(c *gc.C) (newKeyFixture, int64) {
	f := s.newKeyInNextSlot(c, 0)
	c.Assert(f.b.Sync(), gc.IsNil)
	return f, s.failForSlots(c, f, schema.KeepSlots+1)
}

// pruneBeings deletes every beings document, as a prune that judged
// their writer gone would.
func (s *workerSuite) pruneBeings(c *gc.C) {
	_, err := schema.Beings(s.base).DeleteMany(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
}

func (s *workerSuite) TestAfterALongFailureThePingsGoBeforeTheRewriteOfEveryBeingsDocument(c *gc.C) {
	// The database fails every flush for longer than the pruner's
	// window, and then writes beings slowly (3 s a command): the
	// writer's pings must not wait for the rewrite of its beings.
	f, _, synced := s.slowRewrite(c, 3*time.Second)
	defer f.close(c)
	c.Assert(<-synced, gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base)[0].Entries.Keys, gc.DeepEquals, f.keys)

	// The rewrite is done: the next flush writes no beings, so a
	// database that fails every beings write does not fail it.
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(f.base).Name(), Seed: 1})
	c.Assert(f.b.Sync(), gc.IsNil)
}

func (s *workerSuite) TestAFailureDuringTheRewriteOfTheBeingsMakesTheNextFlushRewriteThemAgain(c *gc.C) {
	// The pruner may remove beings while flushes fail for longer than
	// its window, so a rewrite that began before those failures does
	// not count.
	f, slot, synced := s.slowRewrite(c, 2*time.Second)
	defer f.close(c)

	// While the rewrite runs, the flushes of the pings fail, for
	// longer than the pruner's window again.
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Pings(f.base).Name(), Seed: 1})
	for i := int64(1); i <= schema.KeepSlots; i++ {
		s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
		c.Assert(f.b.Ping(f.a, slot+i), gc.IsNil)
		c.Assert(f.b.Sync(), gc.NotNil)
	}
	c.Assert(<-synced, gc.IsNil)

	// So the next flush writes every beings document again.
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(f.base).Name(), Seed: 1})
	c.Assert(f.b.Sync(), gc.ErrorMatches, `cannot write 1 beings documents: .*`)
}

func (s *workerSuite) TestAfterALongFailureAFlushWritesTheSlotsReadersReadFirst(c *gc.C) {
	// Ten slots of failed flushes leave ten slot documents unwritten. A
	// reader judges the writer by its latest two (one more for clock
	// skew): the flush after the failure writes those four in a call of
	// their own, which puts the writer on time, and then the six older
	// ones.
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	var mu sync.Mutex
	var calls []int
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName != "update" {
			return
		}
		if coll, ok := e.Command.Lookup("update").StringValueOK(); !ok || coll != "presence.pings" {
			return
		}
		docs, _ := e.Command.Lookup("updates").Array().Values()
		mu.Lock()
		calls = append(calls, len(docs))
		mu.Unlock()
	}}
	base := s.NewClient(c, options.Client().ApplyURI(uri).SetMonitor(monitor)).Database(s.DB.Name()).Collection("presence")
	b, id, slot := s.writtenKey(c, base)
	defer workertest.CleanKill(agenttest.C(c), b)
	proxy.SetFaults(agenttest.Faults{Drop: 1, Seed: 1})
	for i := int64(1); i <= 10; i++ {
		s.clock.Advance(schema.SlotLength(schema.DefaultPeriod))
		c.Assert(b.Ping(id, slot+i), gc.IsNil)
		c.Assert(b.Sync(), gc.NotNil)
	}
	proxy.SetFaults(agenttest.Faults{})
	mu.Lock()
	calls = nil
	mu.Unlock()
	c.Assert(b.Sync(), gc.IsNil)
	mu.Lock()
	defer mu.Unlock()
	c.Assert(calls, gc.DeepEquals, []int{schema.ReadSlots + 1, 10 - schema.ReadSlots - 1})
}

func (s *workerSuite) TestAFailureShorterThanThePrunersWindowRewritesNoBeings(c *gc.C) {
	// The pruner removes a writer's beings only once none of its pings
	// is left in its window: after a short failure they are all there,
	// and rewriting them (ten 60 KB documents at 10,000 keys) would only
	// load a database that is struggling already.
	f := s.newKeyInNextSlot(c, 0)
	defer f.close(c)
	c.Assert(f.b.Sync(), gc.IsNil)
	s.failForSlots(c, f, 2)
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(f.base).Name(), Seed: 1})
	c.Assert(f.b.Sync(), gc.IsNil)
}

func (s *workerSuite) TestBeingsAPruneRemovedWhileTheyWereWrittenAgainAreWrittenAgain(c *gc.C) {
	// After a failure longer than the pruner's window, a prune that read
	// the writer as gone before its pings came back deletes what the
	// rewrite of its beings wrote. Once such a prune must have ended,
	// the batcher reads its first beings document back, and writes them
	// all again when it is gone.
	f, slot := s.longFailure(c)
	defer f.close(c)
	f.proxy.SetFaults(agenttest.Faults{})
	c.Assert(f.b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base), gc.HasLen, 1)
	s.pruneBeings(c)

	// A flush before then does not look.
	c.Assert(f.b.Ping(f.a, slot), gc.IsNil)
	c.Assert(f.b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base), gc.HasLen, 0)

	s.clock.Advance(schema.PruneTimeout(schema.DefaultPeriod))
	c.Assert(f.b.Ping(f.a, slot+1), gc.IsNil)
	c.Assert(f.b.Sync(), gc.IsNil)
	docs := s.beingsDocs(c, s.base)
	c.Assert(docs, gc.HasLen, 1)
	c.Assert(docs[0].Entries.Keys, gc.DeepEquals, f.keys)

	// Read back again and found, they are not written a third time: a
	// flush whose beings writes would all fail succeeds.
	s.clock.Advance(schema.PruneTimeout(schema.DefaultPeriod))
	c.Assert(f.b.Ping(f.a, slot+2), gc.IsNil)
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(f.base).Name(), Seed: 1})
	c.Assert(f.b.Sync(), gc.IsNil)
}

func (s *workerSuite) TestARewriteThatFailsAfterItsPingsIsDoneAgainAndReadBack(c *gc.C) {
	// After a long failure the pings go first and put the writer on
	// time; the rewrite of its beings that follows fails (the server
	// applied it, the reply was lost), and a prune that read the writer
	// as gone deletes what it wrote. The rewrite must still happen.
	f, slot := s.longFailure(c)
	defer f.close(c)
	f.proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Beings(f.base).Name(), Seed: 1})
	c.Assert(f.b.Sync(), gc.ErrorMatches, `cannot write 1 beings documents: .*`)
	s.pruneBeings(c)
	f.proxy.SetFaults(agenttest.Faults{})

	c.Assert(f.b.Ping(f.a, slot+1), gc.IsNil)
	c.Assert(f.b.Sync(), gc.IsNil)
	docs := s.beingsDocs(c, s.base)
	c.Assert(docs, gc.HasLen, 1)
	c.Assert(docs[0].Entries.Keys, gc.DeepEquals, f.keys)

	// That rewrite too is read back once a prune may have ended.
	s.pruneBeings(c)
	s.clock.Advance(schema.PruneTimeout(schema.DefaultPeriod))
	c.Assert(f.b.Ping(f.a, slot+2), gc.IsNil)
	c.Assert(f.b.Sync(), gc.IsNil)
	c.Assert(s.beingsDocs(c, s.base), gc.HasLen, 1)
}

func (s *workerSuite) TestAPingReadBeforeTheClockSteppedBackKeepsItsWriterAndLandsInThePresent(c *gc.C) {
	// A pinger reads its clock, the clock steps back an hour, and the
	// ping arrives after the batcher saw the step: shifted as the clock
	// was, it would land an hour past the present and retire the writer.
	clk, err := agenttest.NewSkewClock(s.clock, 0, 0)
	c.Assert(err, gc.IsNil)
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: never, Clock: clk})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	read := schema.Slot(clk.Now(), schema.DefaultPeriod)
	c.Assert(b.Ping(id, read), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	before := s.pingDocs(c, s.base)
	c.Assert(before, gc.HasLen, 1)

	clk.Step(-time.Hour)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Ping(id, read), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	var newest schema.PingDoc
	for _, doc := range s.pingDocs(c, s.base) {
		c.Assert(doc.Writer, gc.Equals, id.Writer)
		if doc.Slot > newest.Slot {
			newest = doc
		}
	}
	c.Assert(newest.Slot-before[0].Slot, gc.Equals, int64(1), gc.Commentf("the writer moves on one slot for the step, no more"))
	c.Assert(bitsOf(newest), gc.DeepEquals, []int{int(id.Index)})
}
