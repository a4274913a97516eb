package pingbatcher_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
)

// notices returns the notices appended so far, oldest first.
func (s *workerSuite) notices(c *gc.C) []schema.NoticeDoc {
	cur, err := schema.Notices(s.base).Find(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	var out []schema.NoticeDoc
	c.Assert(cur.All(context.Background(), &out), gc.IsNil)
	return out
}

// proxiedBatcher returns a wire proxy in front of the server, the base
// collection through it, and a batcher on that base that flushes only
// when asked; the caller must close the proxy and kill the batcher.
func (s *workerSuite) proxiedBatcher(c *gc.C) (*agenttest.Proxy, *mongo.Collection, *pingbatcher.PingBatcher) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	base := s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	return proxy, base, s.newBatcher(c, base, never)
}

func (s *workerSuite) TestAFlushAppendsANoticeOnlyForAPromptChangeOrANewSlot(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")

	// A key coming up in the writer's first slot.
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	writer := s.pingDocs(c, s.base)[0].Writer
	up := schema.NoticeChange{Model: modelA.Id(), Key: "a", Up: true}
	c.Assert(s.notices(c), gc.DeepEquals, []schema.NoticeDoc{{Writer: writer, Slot: 1, Prompt: true, Changes: []schema.NoticeChange{up}}})

	// A ping in the same slot is no news.
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.notices(c), gc.HasLen, 1)

	// A new slot is.
	c.Assert(b.Ping(id, 2), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.notices(c), gc.HasLen, 2)
	c.Assert(s.notices(c)[1], gc.DeepEquals, schema.NoticeDoc{Writer: writer, Slot: 2})

	// A Disconnect is, once: the flush that carries it says so.
	c.Assert(b.Disconnect(id, 2), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.notices(c), gc.HasLen, 3)
	down := schema.NoticeChange{Model: modelA.Id(), Key: "a"}
	c.Assert(s.notices(c)[2], gc.DeepEquals, schema.NoticeDoc{Writer: writer, Slot: 2, Prompt: true, Changes: []schema.NoticeChange{down}})
}

func (s *workerSuite) TestANoticeCarriesItsFlushsPromptChangesInTheOrderTheyWereMade(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	a := register(c, b, s.base, modelA, "a")
	other := register(c, b, s.base, modelB, "b")
	c.Assert(b.Ping(a, 1), gc.IsNil)
	c.Assert(b.Ping(other, 1), gc.IsNil)
	c.Assert(b.Disconnect(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	notices := s.notices(c)
	c.Assert(notices, gc.HasLen, 1)
	c.Assert(notices[0].Changes, gc.DeepEquals, schema.NoticeChanges{
		{Model: modelA.Id(), Key: "a", Up: true},
		{Model: modelB.Id(), Key: "b", Up: true},
		{Model: modelA.Id(), Key: "a"},
	})
	c.Assert(notices[0].ValidateChanges(), gc.IsNil)
}

func (s *workerSuite) TestANoticeCarriesNoMoreChangesThanItsBound(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	long := strings.Repeat("k", 100)
	for i := 0; i < schema.NoticeMaxChanges+8; i++ {
		c.Assert(b.Ping(register(c, b, s.base, modelA, fmt.Sprint(i)), 1), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.notices(c)[0].Changes, gc.HasLen, schema.NoticeMaxChanges)

	// Long keys meet the bound in bytes first.
	for i := 0; i < 8; i++ {
		c.Assert(b.Ping(register(c, b, s.base, modelA, fmt.Sprint(long, i)), 1), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	notices := s.notices(c)
	last := notices[len(notices)-1]
	c.Assert(last.Changes, gc.HasLen, schema.NoticeMaxChangeBytes/(len(long)+1+len(modelA.Id())))
	c.Assert(last.ValidateChanges(), gc.IsNil)
}

func (s *workerSuite) TestTheNoticesCollectionIsCappedAndMadeAgainWhenDropped(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(schema.Notices(s.base).Drop(context.Background()), gc.IsNil)

	// The next notice fails (the collection went) and is appended by
	// the flush after, into a capped collection made anew.
	c.Assert(b.Ping(id, 2), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	agenttest.WaitFor(c, agenttest.LongWait, "the notice of slot 2", func() bool {
		c.Assert(b.Sync(), gc.IsNil)
		n := s.notices(c)
		return len(n) > 0 && n[len(n)-1].Slot == 2
	})
	specs, err := s.base.Database().ListCollectionSpecifications(context.Background(), bson.D{{Key: "name", Value: schema.Notices(s.base).Name()}})
	c.Assert(err, gc.IsNil)
	c.Assert(specs, gc.HasLen, 1)
	c.Assert(specs[0].Options.Lookup("capped").Boolean(), gc.Equals, true)
}

func (s *workerSuite) TestTheNoticesStayBoundedWhereTheServerDoesNotCapThem(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")
	const flushes = 5 * schema.NoticesMaxDocuments
	for slot := int64(1); slot <= flushes; slot++ {
		c.Assert(b.Ping(id, slot), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
	}
	notices := s.notices(c)
	c.Logf("%d notices kept of %d appended; report %v", len(notices), flushes, b.Report())
	c.Assert(len(notices) >= schema.NoticesKept, gc.Equals, true)
	c.Assert(len(notices) < 2*schema.NoticesMaxDocuments, gc.Equals, true, gc.Commentf("%d notices", len(notices)))
	// The newest stay.
	c.Assert(notices[len(notices)-1].Slot, gc.Equals, int64(flushes))
	c.Assert(b.Report()["notices-trimmed"].(int64) > 0, gc.Equals, true)
	if !s.Server.External() {
		// The control: the embedded server itself keeps every notice
		// appended to the capped collection.
		docs := make([]any, flushes)
		for i := range docs {
			docs[i] = schema.NoticeDoc{Writer: "someone-else", Slot: 1}
		}
		_, err := schema.Notices(s.base).InsertMany(context.Background(), docs)
		c.Assert(err, gc.IsNil)
		c.Assert(len(s.notices(c)), gc.Equals, len(notices)+flushes)
	}
}

func (s *workerSuite) TestTheChangesOfAFailedFlushGoWithTheNextNotice(c *gc.C) {
	proxy, base, b := s.proxiedBatcher(c)
	defer proxy.Close()
	defer workertest.CleanKill(agenttest.C(c), b)
	a := register(c, b, base, modelA, "a")
	other := register(c, b, base, modelA, "b")

	// The flush that carries a's coming up fails: no notice.
	proxy.SetFaults(agenttest.Faults{Drop: 1, Collection: schema.Pings(base).Name(), Seed: 1})
	c.Assert(b.Ping(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.NotNil)
	c.Assert(s.notices(c), gc.HasLen, 0)

	// The next flush writes a's ping again, and its notice says so,
	// before b's.
	proxy.SetFaults(agenttest.Faults{})
	c.Assert(b.Ping(other, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	notices := s.notices(c)
	c.Assert(notices, gc.HasLen, 1)
	c.Assert(notices[0].Changes, gc.DeepEquals, schema.NoticeChanges{
		{Model: modelA.Id(), Key: "a", Up: true},
		{Model: modelA.Id(), Key: "b", Up: true},
	})
}

func (s *workerSuite) TestADisconnectOfAKeyAnotherIndexStillHoldsIsNoChange(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	// The agent reconnects through this controller before its old
	// connection goes: two pingers of one key.
	old := register(c, b, s.base, modelA, "a")
	renewed := register(c, b, s.base, modelA, "a")
	c.Assert(old.Index, gc.Not(gc.Equals), renewed.Index)
	c.Assert(b.Ping(old, 1), gc.IsNil)
	c.Assert(b.Ping(renewed, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	c.Assert(b.Disconnect(old, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	notices := s.notices(c)
	c.Assert(notices[len(notices)-1].Changes, gc.HasLen, 0)

	// The control: the last one's Disconnect is the key's.
	b.Release(old)
	c.Assert(b.Disconnect(renewed, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	notices = s.notices(c)
	c.Assert(notices[len(notices)-1].Changes, gc.DeepEquals, schema.NoticeChanges{{Model: modelA.Id(), Key: "a"}})
}

// pingSlotWithin waits up to timeout for a ping document of slot in base,
// moving the batcher's clock on meanwhile, so that a flush a kick asked
// for (at most one a kick gap) comes.
func (s *workerSuite) pingSlotWithin(c *gc.C, base *mongo.Collection, slot int64, timeout time.Duration) {
	agenttest.WaitFor(c, timeout, fmt.Sprintf("the ping document of slot %d", slot), func() bool {
		s.clock.Advance(100 * time.Millisecond)
		for _, doc := range s.pingDocs(c, base) {
			if doc.Slot == slot {
				return true
			}
		}
		return false
	})
}

func (s *workerSuite) TestANoticeWhoseRepliesAreSlowDelaysNoFlushAfterIt(c *gc.C) {
	proxy, base, b := s.proxiedBatcher(c)
	defer proxy.Close()
	defer workertest.CleanKill(agenttest.C(c), b)
	a := register(c, b, base, modelA, "a")
	c.Assert(b.Ping(a, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)

	// Every command on the notices collection now takes slow: the
	// notice of the flush that writes slot 2 is held that long (twice:
	// the collection's creation, then the insert).
	const slow = 3 * time.Second
	proxy.SetFaults(agenttest.Faults{Delay: 1, MinDelay: slow, MaxDelay: slow, Collection: schema.Notices(base).Name()})
	c.Assert(b.Ping(register(c, b, base, modelA, "b"), 2), gc.IsNil)
	s.pingSlotWithin(c, s.base, 2, slow/2)

	// The flushes after it do not wait for it: a key coming up in
	// slot 3 is written meanwhile.
	c.Assert(b.Ping(register(c, b, base, modelA, "c"), 3), gc.IsNil)
	s.pingSlotWithin(c, s.base, 3, slow/2)

	// And both notices come, in order, once the server answers.
	proxy.SetFaults(agenttest.Faults{})
	agenttest.WaitFor(c, agenttest.LongWait, "the notices of slots 2 and 3", func() bool {
		var slots []int64
		for _, n := range s.notices(c) {
			slots = append(slots, n.Slot)
		}
		return fmt.Sprint(slots) == "[1 2 3]"
	})
}
