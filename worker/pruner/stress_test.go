package pruner_test

import (
	"context"
	"fmt"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/agenttest/deaths"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// wallClockSuite runs two controllers on the wall clock, each with a
// batcher, a reader, a watcher, a pruner and pingers on a client of its
// own; the second's clock runs four Periods ahead (a pruner there judged
// the other's writer gone before issue 23) and is stepped back an hour
// during the run. No key may be reported dead but the one the test kills.
type wallClockSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&wallClockSuite{})

const (
	wallPeriod = time.Second
	wallFlush  = 100 * time.Millisecond
	wallSync   = 100 * time.Millisecond
	wallKeys   = 20
)

// wallController is one controller of the run.
type wallController struct {
	workers []worker.Worker
	watcher *watcher.Watcher
	pingers []*pinger.Pinger
	deaths  *deaths.Recorder
	stop    context.CancelFunc
}

// start starts a controller on clk whose pingers keep keys named name-0
// to name-(wallKeys-1) alive.
func (s *wallClockSuite) start(c *gc.C, clk clock.Clock, name string) *wallController {
	base := func() *mongo.Collection { return s.NewDB(c).Collection("presence") }
	ctl := &wallController{}
	b, err := pingbatcher.New(pingbatcher.Config{Base: base(), Clock: clk, Period: wallPeriod, FlushInterval: wallFlush})
	c.Assert(err, gc.IsNil)
	r, w := s.reader(c, clk)
	pr, err := pruner.New(pruner.Config{Base: base(), Clock: clk, Period: wallPeriod, Interval: 2 * wallPeriod})
	c.Assert(err, gc.IsNil)
	ctl.workers = []worker.Worker{pr, w, r, b}
	ctl.watcher = w
	pingerBase := base()
	for i := 0; i < wallKeys; i++ {
		p, err := pinger.New(pinger.Config{
			Base: pingerBase, Model: clocksModel, Key: fmt.Sprintf("%s-%d", name, i), Clock: clk,
			Period: wallPeriod, Recorder: func() pinger.PingRecorder { return b },
		})
		c.Assert(err, gc.IsNil)
		c.Assert(p.Start(), gc.IsNil)
		ctl.pingers = append(ctl.pingers, p)
	}
	return ctl
}

// reader starts a reader and a watcher of the run's model on clk.
func (s *wallClockSuite) reader(c *gc.C, clk clock.Clock) (*presencereader.Reader, *watcher.Watcher) {
	r, err := presencereader.New(presencereader.Config{
		Base: s.NewDB(c).Collection("presence"), Clock: clk, Period: wallPeriod, SyncInterval: wallSync,
	})
	c.Assert(err, gc.IsNil)
	w, err := watcher.New(watcher.Config{Reader: r, Model: clocksModel})
	c.Assert(err, gc.IsNil)
	return r, w
}

// follow counts the deaths the controller's watcher reports from now on.
func (ctl *wallController) follow(c *gc.C) {
	d, err := deaths.Follow(ctl.watcher.Subscribe())
	c.Assert(err, gc.IsNil)
	ctl.deaths = d
	ctl.stop = d.Stop
}

func (ctl *wallController) kill(c *gc.C) {
	if ctl.stop != nil {
		ctl.stop()
	}
	for _, p := range ctl.pingers {
		p.Kill()
	}
	for _, p := range ctl.pingers {
		_ = p.Wait()
	}
	for _, w := range ctl.workers {
		workertest.CleanKill(agenttest.C(c), w)
	}
}

// allAlive returns an error unless w reads every key of both controllers
// alive.
func allAlive(w *watcher.Watcher) error {
	for _, name := range []string{"a", "b"} {
		for i := 0; i < wallKeys; i++ {
			key := fmt.Sprintf("%s-%d", name, i)
			alive, err := w.Alive(key)
			if err != nil {
				return errors.Trace(err)
			}
			if !alive {
				return errors.Errorf("%s not alive", key)
			}
		}
	}
	return nil
}

func (s *wallClockSuite) TestAControllerClockAheadAndSteppedBackCostsNoKeyOnTheWallClock(c *gc.C) {
	skewed, err := agenttest.NewSkewClock(clock.WallClock, 4*wallPeriod, 0)
	c.Assert(err, gc.IsNil)
	ctls := []*wallController{s.start(c, clock.WallClock, "a"), s.start(c, skewed, "b")}
	defer func() {
		for _, ctl := range ctls {
			ctl.kill(c)
		}
	}()
	for _, ctl := range ctls {
		c.Assert(agenttest.Retry(agenttest.LongWait, func() error { return allAlive(ctl.watcher) }), gc.IsNil)
		ctl.follow(c)
	}

	// Several prunes on both controllers, then a step of the skewed
	// clock an hour back, and several more.
	time.Sleep(6 * wallPeriod)
	skewed.Step(-time.Hour)
	time.Sleep(8 * wallPeriod)

	// A reader that starts now learns every key from the beings the
	// pruners left.
	r, w := s.reader(c, clock.WallClock)
	defer workertest.CleanKill(agenttest.C(c), r)
	defer workertest.CleanKill(agenttest.C(c), w)
	c.Assert(agenttest.Retry(4*wallPeriod, func() error { return allAlive(w) }), gc.IsNil)
	for i, ctl := range ctls {
		c.Assert(ctl.deaths.Keys(), gc.HasLen, 0, gc.Commentf("controller %d", i))
	}

	// The positive control: a key of the skewed controller stops
	// pinging, and both controllers see it dead, and no other.
	killed := time.Now()
	c.Assert(ctls[1].pingers[0].Stop(), gc.IsNil)
	for i, ctl := range ctls {
		agenttest.WaitFor(c, agenttest.LongWait, "b-0's death reported", func() bool {
			return len(ctl.deaths.Keys()) > 0
		})
		c.Logf("controller %d saw b-0 dead %v after its pinger stopped (Period + flush + sync: %v)", i, time.Since(killed),
			wallPeriod+wallFlush+wallSync)
		c.Assert(ctl.deaths.Keys(), gc.DeepEquals, []string{"b-0"})
	}
}
