package pingbatcher_test

import (
	"context"
	"time"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// pingAB registers key a of model A and key b of model B with b, and
// pings both in slot 1.
func pingAB(c *gc.C, b *pingbatcher.PingBatcher, base *mongo.Collection) (pinger.Identity, pinger.Identity) {
	ida := register(c, b, base, modelA, "a")
	idb := register(c, b, base, modelB, "b")
	c.Assert(b.Ping(ida, 1), gc.IsNil)
	c.Assert(b.Ping(idb, 1), gc.IsNil)
	return ida, idb
}

func (s *workerSuite) TestAWriterThatNamesARemovedModelItNoLongerServesIsRetired(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	ida, idb := pingAB(c, b, s.base)
	c.Assert(b.Sync(), gc.IsNil)
	b.Release(ida)

	// Model A is no longer served but not removed: the writer stays.
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(0))

	// Removed: the next check, a minute of slots later, retires it.
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	c.Assert(schema.MarkRemoved(ctx, s.base, modelA.Id(), s.clock.Now()), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(0))
	s.clock.Advance(6 * schema.DefaultPeriod)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(1))

	// B's pinger registers again with a writer that names only B.
	c.Assert(b.Ping(idb, 7), gc.Equals, pinger.ErrUnknownIdentity)
	again := register(c, b, s.base, modelB, "b")
	c.Assert(again.Writer, gc.Not(gc.Equals), idb.Writer)
	c.Assert(b.Ping(again, 7), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	for _, doc := range s.beingsDocs(c, s.base) {
		if doc.Writer == again.Writer {
			c.Check(doc.Entries, gc.DeepEquals, schema.NewEntries([]string{modelB.Id()}, []string{"b"}))
		}
	}
}

func (s *workerSuite) TestAWriterStillServingARemovedModelIsNotRetired(c *gc.C) {
	b := s.newBatcher(c, s.base, never)
	defer workertest.CleanKill(agenttest.C(c), b)
	ida, _ := pingAB(c, b, s.base)
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	c.Assert(schema.MarkRemoved(ctx, s.base, modelA.Id(), s.clock.Now()), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	s.clock.Advance(6 * schema.DefaultPeriod)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(0))

	// Once its last pinger goes, it is.
	b.Release(ida)
	s.clock.Advance(6*schema.DefaultPeriod + time.Second)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(b.Report()["writers-retired"], gc.Equals, int64(1))
}

func (s *workerSuite) TestASlowReadOfTheRemovalMarkersDelaysNoPing(c *gc.C) {
	proxy, base, b := s.proxiedBatcher(c)
	defer proxy.Close()
	defer workertest.CleanKill(agenttest.C(c), b)
	ida, _ := pingAB(c, b, base)
	c.Assert(b.Sync(), gc.IsNil)
	// Model A is no longer served: the next flush reads the markers,
	// which now take slow to come.
	b.Release(ida)
	const slow = 3 * time.Second
	proxy.SetFaults(agenttest.Faults{Delay: 1, MinDelay: slow, MaxDelay: slow, Collection: schema.Removed(base).Name()})

	// A key coming up in slot 2 is written meanwhile.
	c.Assert(b.Ping(register(c, b, base, modelB, "c"), 2), gc.IsNil)
	s.pingSlotWithin(c, s.base, 2, slow/2)
}
