package presencereader_test

import (
	"context"
	"time"

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

// ownSuite runs a controller's batcher and reader on one test clock,
// wired as ControllerManifolds wires them (the batcher's flushes wake the
// reader, which skips its own writer's notices), and checks what the
// reader sees of its own writer without those notices: a tailable cursor
// may bring them late (the embedded server's replays its whole backlog
// now and then, measured a second and more behind).
type ownSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&ownSuite{})

func (s *ownSuite) TestAPingerStoppedSilentlyIsSeenDeadByItsOwnControllerWithoutItsNotices(c *gc.C) {
	const (
		period = schema.DefaultPeriod
		flush  = schema.DefaultFlushInterval
		sync   = schema.DefaultSyncInterval
	)
	clk := agenttest.NewClock()
	base := s.DB.Collection("presence")
	// The writer's first notice goes in (the reader's cursor opens on
	// it), every later one is refused: none of them reaches the reader
	// in time.
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	c.Assert(schema.EnsureNotices(ctx, base), gc.IsNil)
	_, err := schema.Notices(base).Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "writer", Value: 1}}, Options: options.Index().SetUnique(true),
	})
	c.Assert(err, gc.IsNil)

	wake := make(chan struct{}, 1)
	self := &pingbatcher.Self{}
	// The test flushes every flush interval itself (Sync), so that no
	// flush comes while it looks.
	b, err := pingbatcher.New(pingbatcher.Config{
		Base: base, Clock: clk, Period: period, FlushInterval: 24 * time.Hour,
		OnFlush: pingbatcher.WakeOnPrompt(wake, self.OnFlush(nil)),
	})
	c.Assert(err, gc.IsNil)
	// Each kill's deadline starts when it runs, not when deferred: a
	// failed wait must not leave it none.
	defer func() { workertest.CleanKill(agenttest.C(c), b) }()
	ids := map[string]pinger.Identity{}
	for _, key := range []string{"stay", "stop"} {
		ids[key], err = b.Register(base, stressModel, key)
		c.Assert(err, gc.IsNil)
	}
	live := map[string]bool{"stay": true, "stop": true}
	ping := func() {
		for key := range live {
			c.Assert(b.Ping(ids[key], schema.Slot(clk.Now(), period)), gc.IsNil)
		}
	}
	ping()
	c.Assert(b.Sync(), gc.IsNil)

	r, err := presencereader.New(presencereader.Config{
		Base: s.NewClient(c).Database(s.DB.Name()).Collection("presence"), Clock: clk,
		Period: period, SyncInterval: sync, Wake: wake, Self: self.Writer,
	})
	c.Assert(err, gc.IsNil)
	defer func() { workertest.CleanKill(agenttest.C(c), r) }()
	view, closeView := openView(c, r)
	defer closeView()
	agenttest.WaitFor(c, agenttest.LongWait, "the reader tailing the notices", func() bool {
		return r.Report()["push"] == "notices"
	})
	alive := func(key string) bool {
		ok, err := view.Alive(key)
		c.Assert(err, gc.IsNil)
		return ok
	}
	step := func() {
		clk.Advance(flush)
		ping()
		agenttest.Settle(c, base, []agenttest.Batcher{b}, []agenttest.Reader{r})
	}

	// Two slots in, both keys steady; the clock is on a slot's start,
	// and this slot's first flush has just carried "stop".
	for i := time.Duration(0); i < period/flush; i++ {
		step()
	}
	c.Assert(alive("stop"), gc.Equals, true)
	stopped := clk.Now()
	delete(live, "stop")
	b.Release(ids["stop"])
	// Its writer's documents show it dead once the writer has moved on
	// twice: the first flush of the slot a Period on.
	for clk.Now().Before(stopped.Add(period - flush)) {
		step()
	}
	clk.Advance(flush)
	ping()
	// The reader last read just before its writer moved on, so its own
	// next read is a quarter of a slot away, later than the bound.
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(alive("stop"), gc.Equals, true)
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(clk.Now().Sub(stopped) <= period+flush+sync, gc.Equals, true)
	agenttest.WaitFor(c, agenttest.LongWait, "stop read dead by its own controller's reader", func() bool {
		return !alive("stop")
	})
	c.Assert(alive("stay"), gc.Equals, true)
}
