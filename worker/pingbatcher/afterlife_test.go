package pingbatcher_test

import (
	"context"
	"fmt"
	"time"

	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
)

// retirement is a batcher serving model B's keys, and a reader of model
// B on another client, around a retirement of the batcher's writer:
//   - "old" Disconnects with the retired writer's identity;
//   - "moved" registers again with the new writer, then Disconnects;
//   - "both" has two pingers: one registers again and Disconnects, the
//     other still holds the retired writer's identity (the key is alive
//     through it);
//   - "stay" keeps the retired writer's identity and does nothing.
type retirement struct {
	// clock is the batcher's and its pingers'.
	clock *agenttest.SkewClock
	b     *pingbatcher.PingBatcher
	r     *presencereader.Reader
	view  *presencereader.View
	ids   map[string]pinger.Identity
	both  pinger.Identity
}

// newRetirement starts the batcher, on a clock of its own, and the
// reader, and has every key of model B pinged, written and read alive.
// Its caller retires the writer.
func (s *workerSuite) newRetirement(c *gc.C) *retirement {
	clk, err := agenttest.NewSkewClock(s.clock, 0, 0)
	c.Assert(err, gc.IsNil)
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, FlushInterval: never, Clock: clk})
	c.Assert(err, gc.IsNil)
	t := &retirement{clock: clk, b: b, ids: map[string]pinger.Identity{}}
	t.r, err = presencereader.New(presencereader.Config{Base: s.NewDB(c).Collection("presence"), Clock: s.clock})
	c.Assert(err, gc.IsNil)
	t.view, err = t.r.NewView(modelB, make(chan struct{}), func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	slot := t.slot()
	for _, key := range []string{"old", "moved", "both", "stay"} {
		t.ids[key] = register(c, t.b, s.base, modelB, key)
		c.Assert(t.b.Ping(t.ids[key], slot), gc.IsNil)
	}
	t.both = register(c, t.b, s.base, modelB, "both")
	c.Assert(t.b.Ping(t.both, slot), gc.IsNil)
	return t
}

// slot is the slot the batcher's clock is in.
func (t *retirement) slot() int64 {
	return schema.Slot(t.clock.Now(), schema.DefaultPeriod)
}

func (t *retirement) kill(c *gc.C) {
	t.view.Close()
	workertest.CleanKill(agenttest.C(c), t.r)
	workertest.CleanKill(agenttest.C(c), t.b)
}

// alive returns which of model B's keys the reader reads alive after a
// load.
func (t *retirement) alive(c *gc.C) map[string]bool {
	c.Assert(t.r.Refresh(), gc.IsNil)
	out := map[string]bool{}
	for _, key := range []string{"old", "moved", "both", "stay"} {
		alive, err := t.view.Alive(key)
		c.Assert(err, gc.IsNil)
		out[key] = alive
	}
	return out
}

// disconnect runs the Disconnects after the retirement, as the pingers
// would, in the slot the clock is in, and writes them.
func (s *workerSuite) disconnect(c *gc.C, t *retirement) {
	slot := t.slot()
	c.Assert(t.b.Ping(t.ids["moved"], slot), gc.Equals, pinger.ErrUnknownIdentity)
	c.Assert(t.b.Ping(t.ids["both"], slot), gc.Equals, pinger.ErrUnknownIdentity)
	for _, key := range []string{"moved", "both"} {
		again := register(c, t.b, s.base, modelB, key)
		c.Assert(again.Writer, gc.Not(gc.Equals), t.ids[key].Writer)
		c.Assert(t.b.Ping(again, slot), gc.IsNil)
		c.Assert(t.b.Disconnect(again, slot), gc.IsNil)
	}
	// The pinger of a retired identity calls Disconnect without
	// pinging first; it is told nothing is left to mark, or succeeds.
	err := t.b.Disconnect(t.ids["old"], slot)
	c.Assert(err == nil || err == pinger.ErrUnknownIdentity, gc.Equals, true, gc.Commentf("%v", err))
	c.Assert(t.b.Sync(), gc.IsNil)
}

// checkDisconnectsSeen asserts that, one flush and one load after the
// Disconnects, the keys disconnected read dead and the others alive.
func (s *workerSuite) checkDisconnectsSeen(c *gc.C, t *retirement) {
	s.disconnect(c, t)
	c.Assert(t.alive(c), gc.DeepEquals, map[string]bool{"old": false, "moved": false, "both": true, "stay": true})
}

func (s *workerSuite) TestADisconnectAfterARetirementForARemovedModelIsSeenWithinAFlushAndASync(c *gc.C) {
	t := s.newRetirement(c)
	defer t.kill(c)
	ida := register(c, t.b, s.base, modelA, "a")
	c.Assert(t.b.Ping(ida, t.slot()), gc.IsNil)
	c.Assert(t.b.Sync(), gc.IsNil)
	c.Assert(t.alive(c), gc.DeepEquals, map[string]bool{"old": true, "moved": true, "both": true, "stay": true})

	// Model A is removed: the next flush retires the writer, which
	// names it.
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	c.Assert(schema.MarkRemoved(ctx, s.base, modelA.Id(), s.clock.Now()), gc.IsNil)
	t.b.Release(ida)
	c.Assert(t.b.Sync(), gc.IsNil)
	c.Assert(t.b.Report()["writers-retired"], gc.Equals, int64(1))
	s.checkDisconnectsSeen(c, t)
}

func (s *workerSuite) TestADisconnectAfterARetirementForReleasedIndexesIsSeenWithinAFlushAndASync(c *gc.C) {
	t := s.newRetirement(c)
	defer t.kill(c)
	slot := t.slot()
	model := names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000c")
	var gone []pinger.Identity
	for i := 0; i < 4*schema.ChunkSize; i++ {
		id := register(c, t.b, s.base, model, fmt.Sprint(i))
		c.Assert(t.b.Ping(id, slot), gc.IsNil)
		gone = append(gone, id)
	}
	c.Assert(t.b.Sync(), gc.IsNil)
	c.Assert(t.alive(c), gc.DeepEquals, map[string]bool{"old": true, "moved": true, "both": true, "stay": true})

	// Most of its indexes released, the writer is retired.
	for _, id := range gone {
		t.b.Release(id)
	}
	c.Assert(t.b.Sync(), gc.IsNil)
	c.Assert(t.b.Report()["writers-retired"], gc.Equals, int64(1))
	s.checkDisconnectsSeen(c, t)
}

func (s *workerSuite) TestADisconnectAfterTheWritersClockSteppedForwardIsSeenWithinAFlushAndASync(c *gc.C) {
	t := s.newRetirement(c)
	defer t.kill(c)
	c.Assert(t.b.Sync(), gc.IsNil)
	c.Assert(t.alive(c), gc.DeepEquals, map[string]bool{"old": true, "moved": true, "both": true, "stay": true})

	// A ping after the step retires the writer; readers, on their own
	// clocks, still see it on time.
	t.clock.Step(time.Hour)
	s.checkDisconnectsSeen(c, t)
	c.Assert(t.b.Report()["writers-retired"], gc.Equals, int64(1))
}

func (s *workerSuite) TestADisconnectThatFindsTheWritersClockSteppedForwardIsSeenWithinAFlushAndASync(c *gc.C) {
	t := s.newRetirement(c)
	defer t.kill(c)
	c.Assert(t.b.Sync(), gc.IsNil)
	c.Assert(t.alive(c), gc.DeepEquals, map[string]bool{"old": true, "moved": true, "both": true, "stay": true})

	// The first call after the step is a Disconnect: it retires the
	// writer, and records the death.
	t.clock.Step(time.Hour)
	c.Assert(t.b.Disconnect(t.ids["old"], t.slot()), gc.IsNil)
	c.Assert(t.b.Report()["writers-retired"], gc.Equals, int64(1))
	s.checkDisconnectsSeen(c, t)
}

func (s *workerSuite) TestARetiredWriterNeverBringsBackADocumentThePrunerRemoved(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	slot := schema.Slot(s.clock.Now(), schema.DefaultPeriod)
	id := register(c, b, s.base, modelA, "a")
	c.Assert(b.Ping(id, slot), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 1)

	// The process pauses for longer than the pruner's window, which
	// removes the writer's documents meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	_, err := schema.Pings(s.base).DeleteMany(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	s.clock.Advance(4 * schema.DefaultPeriod)

	// The Disconnect retires the writer and is recorded in its
	// afterlife, whose write (the only one: the new writer has no
	// pings yet) finds no document to update.
	written := b.Report()["docs-written"].(int64)
	c.Assert(b.Disconnect(id, schema.Slot(s.clock.Now(), schema.DefaultPeriod)), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["docs-written"], gc.Equals, written+1)
	c.Assert(s.pingDocs(c, s.base), gc.HasLen, 0)
}
