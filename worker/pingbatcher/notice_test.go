package pingbatcher_test

import (
	"context"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
)

// notices returns the notices appended so far, oldest first.
func (s *workerSuite) notices(c *gc.C) []schema.NoticeDoc {
	cur, err := schema.Notices(s.base).Find(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	var out []schema.NoticeDoc
	c.Assert(cur.All(context.Background(), &out), gc.IsNil)
	return out
}

func (s *workerSuite) TestAFlushAppendsANoticeOnlyForAPromptChangeOrANewSlot(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	id := register(c, b, s.base, modelA, "a")

	// A key coming up in the writer's first slot.
	c.Assert(b.Ping(id, 1), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	writer := s.pingDocs(c, s.base)[0].Writer
	c.Assert(s.notices(c), gc.DeepEquals, []schema.NoticeDoc{{Writer: writer, Slot: 1, Prompt: true}})

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
	c.Assert(s.notices(c)[2], gc.DeepEquals, schema.NoticeDoc{Writer: writer, Slot: 2, Prompt: true})
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
