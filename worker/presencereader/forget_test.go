package presencereader_test

import (
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
)

// forgetSuite checks that the reader holds what writers name now, not
// everything it ever met. Its readers tail the notices, as by default:
// the tests settle them before they move the clock (see
// agenttest.Settle), or a load a notice woke would span the move, a
// stall to the reader that keeps it from forgetting.
type forgetSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&forgetSuite{})

var goneModel = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")

const forgetPeriod = time.Minute

// loadStats keeps the latest LoadStats a reader reported.
type loadStats struct {
	mu   sync.Mutex
	last presencereader.LoadStats
}

func (l *loadStats) onLoad(st presencereader.LoadStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = st
}

func (l *loadStats) get() presencereader.LoadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// newBatcher starts a batcher on clk that flushes only when synced.
func (s *forgetSuite) newBatcher(c *gc.C, clk *testclock.Clock) *pingbatcher.PingBatcher {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.DB.Collection("presence"), Clock: clk, Period: forgetPeriod, FlushInterval: 1000 * time.Hour})
	c.Assert(err, gc.IsNil)
	return b
}

// pingAll registers keys of model n with b if ids is empty, and pings
// them.
func pingAll(c *gc.C, b *pingbatcher.PingBatcher, clk *testclock.Clock, model names.ModelTag, ids []pinger.Identity, n int) []pinger.Identity {
	for i := len(ids); i < n; i++ {
		id, err := b.Register(nil, model, fmt.Sprintf("machine-%d", i))
		c.Assert(err, gc.IsNil)
		ids = append(ids, id)
	}
	for _, id := range ids {
		c.Assert(b.Ping(id, schema.Slot(clk.Now(), forgetPeriod)), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	return ids
}

func (s *forgetSuite) TestKeysAndModelsWhoseWritersAreGoneAreForgotten(c *gc.C) {
	clk := agenttest.NewClock()
	var stats loadStats
	r, err := presencereader.New(presencereader.Config{
		Base: s.DB.Collection("presence"), Clock: clk, Period: forgetPeriod,
		SyncInterval: 1000 * time.Hour, OnLoad: stats.onLoad,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	gone, stays := s.newBatcher(c, clk), s.newBatcher(c, clk)
	defer workertest.CleanKill(agenttest.C(c), stays)
	pingAll(c, gone, clk, goneModel, nil, 1000)
	kept := pingAll(c, stays, clk, stressModel, nil, 1)
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(stats.get().Keys, gc.Equals, 1001)
	c.Assert(stats.get().Models, gc.Equals, 2)

	// The writer of 1,000 keys goes silently; an hour later the reader
	// holds the one key still named, and its model.
	workertest.CleanKill(agenttest.C(c), gone)
	for at := time.Duration(0); at < time.Hour; at += forgetPeriod / 2 {
		agenttest.Settle(c, s.DB.Collection("presence"), []agenttest.Batcher{stays}, []agenttest.Reader{r})
		clk.Advance(forgetPeriod / 2)
		pingAll(c, stays, clk, stressModel, kept, 1)
		c.Assert(r.Refresh(), gc.IsNil)
	}
	c.Check(stats.get().Models, gc.Equals, 1)
	c.Assert(stats.get().Keys, gc.Equals, 1, gc.Commentf("an hour after its writer went"))
	c.Assert(stats.get().Alive, gc.Equals, 1)
}

func (s *forgetSuite) TestAKeyReleasedByALiveWriterIsForgottenAfterLogAgeAndReadAgainWhenItComesBack(c *gc.C) {
	clk := agenttest.NewClock()
	var stats loadStats
	r, err := presencereader.New(presencereader.Config{
		Base: s.DB.Collection("presence"), Clock: clk, Period: forgetPeriod,
		SyncInterval: 1000 * time.Hour, LogAge: 10 * time.Minute, OnLoad: stats.onLoad,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	b := s.newBatcher(c, clk)
	defer workertest.CleanKill(agenttest.C(c), b)
	dying := make(chan struct{})
	defer close(dying)
	v, err := r.NewView(stressModel, dying, func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	defer v.Close()
	ids := pingAll(c, b, clk, stressModel, nil, 3)
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(stats.get().Keys, gc.Equals, 3)
	// machine-1 and machine-2 stop; the writer goes on for machine-0.
	b.Release(ids[1])
	b.Release(ids[2])
	step := func() {
		agenttest.Settle(c, s.DB.Collection("presence"), []agenttest.Batcher{b}, []agenttest.Reader{r})
		clk.Advance(forgetPeriod / 2)
		pingAll(c, b, clk, stressModel, ids[:1], 1)
		c.Assert(r.Refresh(), gc.IsNil)
	}
	for at := time.Duration(0); at < 15*time.Minute; at += forgetPeriod / 2 {
		step()
	}
	c.Assert(stats.get().Keys, gc.Equals, 1)
	// machine-1 comes back on the same index: it reads alive again.
	id, err := b.Register(nil, stressModel, "machine-1")
	c.Assert(err, gc.IsNil)
	c.Assert(id, gc.Equals, ids[1])
	ids[1] = id
	c.Assert(b.Ping(id, schema.Slot(clk.Now(), forgetPeriod)), gc.IsNil)
	step()
	step()
	alive, err := v.Alive("machine-1")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	c.Assert(stats.get().Keys >= 2, gc.Equals, true)
}
