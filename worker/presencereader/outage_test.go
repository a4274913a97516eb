package presencereader_test

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

// outageSuite checks what a reader remembers across a long outage.
type outageSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&outageSuite{})

// openView opens a view of stressModel on r, and returns it with the
// function that closes it.
func openView(c *gc.C, r *presencereader.Reader) (*presencereader.View, func()) {
	dying := make(chan struct{})
	view, err := r.NewView(stressModel, dying, func() error { return nil })
	c.Assert(err, gc.IsNil)
	return view, func() {
		close(dying)
		view.Close()
	}
}

// newReader returns a reader on a client of its own whose reads fail
// fast while the server is away, loading only when the test says.
func (s *outageSuite) newReader(c *gc.C, clk clock.Clock, period time.Duration, extra ...*options.ClientOptions) *presencereader.Reader {
	opts := append([]*options.ClientOptions{options.Client().SetServerSelectionTimeout(100 * time.Millisecond)}, extra...)
	r, err := presencereader.New(presencereader.Config{
		Base: s.NewClient(c, opts...).Database(s.DB.Name()).Collection("presence"),
		// Loads come only when the test asks: a notice's load in
		// flight while the test clock moves would look like a stall.
		Clock: clk, Period: period, SyncInterval: time.Hour, NoPush: true,
	})
	c.Assert(err, gc.IsNil)
	return r
}

func (s *outageSuite) TestALongOutageDoesNotMakeTheReaderForgetItsWriters(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot stop an external MongoDB")
	}
	const period = 10 * time.Second
	clk := agenttest.NewClock()
	var counter agenttest.CommandCounter
	base := s.DB.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clk, Period: period, FlushInterval: time.Hour})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	r := s.newReader(c, clk, period, counter.Options())
	defer workertest.CleanKill(agenttest.C(c), r)
	id, err := b.Register(base, stressModel, "machine-0")
	c.Assert(err, gc.IsNil)
	ping := func() {
		c.Assert(b.Ping(id, schema.Slot(clk.Now(), period)), gc.IsNil)
	}
	ping()
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(r.Refresh(), gc.IsNil)

	// The server is away for longer than MaxStall (15 Periods) and for
	// more loads than a writer may be absent from; the agent keeps
	// pinging its batcher meanwhile.
	c.Assert(s.Server.Stop(), gc.IsNil)
	for i := 0; i < 30; i++ {
		c.Assert(r.Refresh(), gc.NotNil)
		clk.Advance(period / 2)
		ping()
	}
	c.Assert(s.Server.Start(), gc.IsNil)
	counter.Reset()
	// The first load back may come before the batcher has written:
	// its writer is absent from it.
	c.Assert(agenttest.Retry(agenttest.LongWait, r.Refresh), gc.IsNil)
	c.Assert(agenttest.Retry(agenttest.LongWait, b.Sync), gc.IsNil)
	c.Assert(r.Refresh(), gc.IsNil)
	view, closeView := openView(c, r)
	defer closeView()
	alive, err := view.Alive("machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	// It still knew the writer's keys: it did not read its beings again.
	c.Assert(counter.CountOn("find", "presence.beings"), gc.Equals, 0)
}

func (s *outageSuite) TestAWriterSlowToCatchUpAfterAnOutageLongerThanMaxStallKeepsItsKeys(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot stop an external MongoDB")
	}
	const period = 10 * time.Second
	clk := agenttest.NewClock()
	base := s.DB.Collection("presence")
	newBatcher := func() *pingbatcher.PingBatcher {
		b, err := pingbatcher.New(pingbatcher.Config{Base: s.NewDB(c).Collection("presence"), Clock: clk, Period: period, FlushInterval: time.Hour})
		c.Assert(err, gc.IsNil)
		return b
	}
	live, gone := newBatcher(), newBatcher()
	defer workertest.CleanKill(agenttest.C(c), live)
	r := s.newReader(c, clk, period)
	defer workertest.CleanKill(agenttest.C(c), r)
	liveID, err := live.Register(base, stressModel, "machine-0")
	c.Assert(err, gc.IsNil)
	goneID, err := gone.Register(base, stressModel, "machine-1")
	c.Assert(err, gc.IsNil)
	ping := func() {
		c.Assert(live.Ping(liveID, schema.Slot(clk.Now(), period)), gc.IsNil)
	}
	ping()
	c.Assert(gone.Ping(goneID, schema.Slot(clk.Now(), period)), gc.IsNil)
	c.Assert(live.Sync(), gc.IsNil)
	c.Assert(gone.Sync(), gc.IsNil)
	c.Assert(r.Refresh(), gc.IsNil)
	view, closeView := openView(c, r)
	defer closeView()
	alive := func(key string) bool {
		ok, err := view.Alive(key)
		c.Assert(err, gc.IsNil)
		return ok
	}

	// The server is away for longer than MaxStall (15 Periods), and one
	// controller dies meanwhile.
	c.Assert(s.Server.Stop(), gc.IsNil)
	workertest.CleanKill(agenttest.C(c), gone)
	for i := 0; i < 30; i++ {
		c.Assert(r.Refresh(), gc.NotNil)
		clk.Advance(period / 2)
		ping()
	}
	c.Assert(s.Server.Start(), gc.IsNil)
	c.Assert(agenttest.Retry(agenttest.LongWait, r.Refresh), gc.IsNil)

	// The live batcher takes four Periods to write again: no writer is
	// on time, and both keys hold, however long the outage was.
	for i := 0; i < 8; i++ {
		clk.Advance(period / 2)
		ping()
		c.Assert(r.Refresh(), gc.IsNil)
		c.Assert(alive("machine-0"), gc.Equals, true, gc.Commentf("after %d half Periods", i+1))
		c.Assert(alive("machine-1"), gc.Equals, true, gc.Commentf("after %d half Periods", i+1))
	}

	// Once it writes, the dead controller's key holds as through a
	// stall, for MaxStall after the database came back for the others,
	// and then goes: a controller that needs longer than the others to
	// write again is no dead one.
	c.Assert(agenttest.Retry(agenttest.LongWait, live.Sync), gc.IsNil)
	c.Assert(r.Refresh(), gc.IsNil)
	held := agenttest.AdvanceUntil(c, clk, period/2, func() bool {
		ping()
		c.Assert(live.Sync(), gc.IsNil)
		c.Assert(r.Refresh(), gc.IsNil)
		c.Assert(alive("machine-0"), gc.Equals, true)
		return !alive("machine-1")
	})
	c.Assert(held, gc.Equals, presencereader.DefaultMaxStallPeriods*period)
}
