package presencereader_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/agenttest/deaths"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// stressSuite breaks the database under a running batcher and reader on
// the wall clock, with short settings, and checks that no live key is
// ever reported dead, and that a key killed once the database is back is.
type stressSuite struct {
	agenttest.MongoSuite
	logger *agenttest.Logger
}

func (s *stressSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.logger = &agenttest.Logger{}
}

// checkOnlyTheDeliberateDeath checks that the run's subscription saw no
// death, then kills the run's first agent with kill (its pinger's
// Disconnect, or Stop for a silent death) and requires the same
// subscription to report that death and no other: a subscription that
// stopped reporting would otherwise pass for one that saw no deaths. It
// logs the workers' lines when the check fails.
func (s *stressSuite) checkOnlyTheDeliberateDeath(c *gc.C, run *stressRun, kill func(*pinger.Pinger) error) {
	defer func() {
		if c.Failed() {
			for _, line := range s.logger.Entries() {
				c.Log(line)
			}
		}
	}()
	c.Assert(run.deaths.Keys(), gc.HasLen, 0)
	killed := time.Now()
	c.Assert(kill(run.pingers[0]), gc.IsNil)
	agenttest.WaitFor(c, agenttest.LongWait, "machine-0's death reported", func() bool {
		return len(run.deaths.Keys()) > 0
	})
	c.Logf("machine-0's death reported %v after it was killed", time.Since(killed))
	c.Assert(run.deaths.Keys(), gc.DeepEquals, []string{"machine-0"})
}

var _ = gc.Suite(&stressSuite{})

const (
	stressPeriod = time.Second
	stressKeys   = 50
)

var stressModel = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")

// stressRun is what live started: the pingers of its keys, machine-0
// first, and the deaths a subscription reported since every key was
// alive.
type stressRun struct {
	pingers []*pinger.Pinger
	deaths  *deaths.Recorder
}

// live starts a batcher, a reader, a watcher, a pruner and stressKeys pingers, each
// on the database at uri through a client of its own, waits until every
// key is alive, and returns the run, counting deaths from then on, and
// the function that stops it.
func (s *stressSuite) live(c *gc.C, uri string) (*stressRun, func()) {
	return s.liveApart(c, uri, uri)
}

// liveApart is live with the batcher on the database at writerURI and the
// reader on the same database at readerURI.
func (s *stressSuite) liveApart(c *gc.C, writerURI, readerURI string) (*stressRun, func()) {
	base := func(uri string) *mongo.Collection {
		return s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	}
	writerBase := base(writerURI)
	b, err := pingbatcher.New(pingbatcher.Config{
		Base: writerBase, Clock: clock.WallClock, Period: stressPeriod, FlushInterval: 100 * time.Millisecond,
		Logger: s.logger,
	})
	c.Assert(err, gc.IsNil)
	r, err := presencereader.New(presencereader.Config{
		Base: base(readerURI), Clock: clock.WallClock, Period: stressPeriod, SyncInterval: 100 * time.Millisecond,
		Logger: s.logger,
	})
	c.Assert(err, gc.IsNil)
	w, err := watcher.New(watcher.Config{Reader: r, Model: stressModel})
	c.Assert(err, gc.IsNil)
	pr, err := pruner.New(pruner.Config{
		Base: base(readerURI), Clock: clock.WallClock, Period: stressPeriod, Interval: stressPeriod,
		Logger: s.logger,
	})
	c.Assert(err, gc.IsNil)
	var pingers []*pinger.Pinger
	for i := 0; i < stressKeys; i++ {
		p, err := pinger.New(pinger.Config{
			Base: writerBase, Model: stressModel, Key: fmt.Sprintf("machine-%d", i), Clock: clock.WallClock,
			Period: stressPeriod, Recorder: func() pinger.PingRecorder { return b },
		})
		c.Assert(err, gc.IsNil)
		c.Assert(p.Start(), gc.IsNil)
		pingers = append(pingers, p)
	}
	c.Assert(agenttest.Retry(agenttest.LongWait, func() error {
		if report := w.Report(); report["alive"] != stressKeys {
			return errors.Errorf("not every key alive: %v", report)
		}
		return nil
	}), gc.IsNil)
	d, err := deaths.Follow(w.Subscribe())
	c.Assert(err, gc.IsNil)
	return &stressRun{pingers: pingers, deaths: d}, func() {
		d.Stop()
		for _, p := range pingers {
			p.Kill()
		}
		for _, p := range pingers {
			_ = p.Wait()
		}
		workertest.CleanKill(agenttest.C(c), pr)
		workertest.CleanKill(agenttest.C(c), w)
		workertest.CleanKill(agenttest.C(c), r)
		workertest.CleanKill(agenttest.C(c), b)
	}
}

// settle waits three periods on the wall clock, for whatever false
// deaths a recovery would bring.
func settle() {
	time.Sleep(3 * stressPeriod)
}

func (s *stressSuite) TestNoFalseDeathWhenTheServerIsKilledAndRestarted(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot kill an external MongoDB")
	}
	run, stop := s.live(c, s.Server.URI())
	defer stop()
	c.Assert(s.Server.Kill(), gc.IsNil)
	time.Sleep(3 * stressPeriod)
	c.Assert(s.Server.Start(), gc.IsNil)
	settle()
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Stop)
}

func (s *stressSuite) TestNoFalseDeathWhenTheServerIsKilledThreeTimes(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot kill an external MongoDB")
	}
	run, stop := s.live(c, s.Server.URI())
	defer stop()
	for i := 0; i < 3; i++ {
		c.Assert(s.Server.Kill(), gc.IsNil)
		time.Sleep(stressPeriod / 2)
		c.Assert(s.Server.Start(), gc.IsNil)
		time.Sleep(stressPeriod / 2)
	}
	settle()
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Disconnect)
}

func (s *stressSuite) TestNoFalseDeathWhenTheServerHangs(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	run, stop := s.live(c, s.Server.URI())
	defer stop()
	c.Assert(s.Server.Pause(), gc.IsNil)
	time.Sleep(3 * stressPeriod)
	c.Assert(s.Server.Resume(), gc.IsNil)
	settle()
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Stop)
}

func (s *stressSuite) TestNoFalseDeathWhenEveryReplyIsLateForSeveralPeriods(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	run, stop := s.live(c, uri)
	defer stop()
	// Every call is acknowledged, late: flushes and loads outlast their
	// deadlines, then the database is fast again.
	proxy.SetDelay(3 * stressPeriod)
	time.Sleep(3 * stressPeriod)
	proxy.SetDelay(0)
	settle()
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Disconnect)
}

func (s *stressSuite) TestNoFalseDeathWhenFlushesStallForSevenPeriods(c *gc.C) {
	proxy, writerURI, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	run, stop := s.liveApart(c, writerURI, s.Server.URI())
	defer stop()
	// Every write of the batcher reaches the server seven Periods late,
	// long after the batcher gave up on it, while the reader reads as
	// usual and the pruner's window passes the writer's documents by.
	proxy.SetHold(7 * stressPeriod)
	time.Sleep(7 * stressPeriod)
	proxy.SetHold(0)
	settle()
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Stop)
}

func (s *stressSuite) TestHostileDocumentsAreSkippedAndTheRestIsRead(c *gc.C) {
	run, stop := s.live(c, s.Server.URI())
	defer stop()
	ctx := context.Background()
	pings := s.DB.Collection("presence.pings")
	beings := s.DB.Collection("presence.beings")
	slot := schema.Slot(time.Now(), stressPeriod)
	for _, doc := range []bson.D{
		{{Key: "_id", Value: "huge"}, {Key: "slot", Value: slot}, {Key: "writer", Value: "w1"}, {Key: "period", Value: int64(stressPeriod)},
			{Key: "freshFrom", Value: int32(2147483647)}, {Key: "fresh", Value: bson.D{{Key: "models", Value: bson.A{stressModel.Id()}}, {Key: "model", Value: bson.A{int32(0)}}, {Key: "keys", Value: bson.A{"x"}}}}},
		{{Key: "_id", Value: "negative"}, {Key: "slot", Value: slot}, {Key: "writer", Value: "w2"}, {Key: "period", Value: int64(stressPeriod)},
			{Key: "alive", Value: bson.Binary{Data: []byte{1}}}, {Key: "freshFrom", Value: int32(-5)}},
		{{Key: "_id", Value: "wrong type"}, {Key: "slot", Value: slot}, {Key: "writer", Value: "w3"}, {Key: "alive", Value: "not a bitmap"}},
		{{Key: "_id", Value: "other period"}, {Key: "slot", Value: slot}, {Key: "writer", Value: "w4"}, {Key: "period", Value: int64(time.Minute)},
			{Key: "alive", Value: bson.Binary{Data: []byte{1}}}},
		{{Key: "_id", Value: "bad reference"}, {Key: "slot", Value: slot}, {Key: "writer", Value: "w5"}, {Key: "period", Value: int64(stressPeriod)},
			{Key: "freshFrom", Value: int32(0)}, {Key: "fresh", Value: bson.D{{Key: "models", Value: bson.A{}}, {Key: "model", Value: bson.A{int32(3)}}, {Key: "keys", Value: bson.A{"y"}}}}},
	} {
		_, err := pings.InsertOne(ctx, doc)
		c.Assert(err, gc.IsNil)
	}
	// A writer whose ping document is fine but whose beings are not.
	_, err := pings.InsertOne(ctx, bson.D{{Key: "_id", Value: "fine"}, {Key: "slot", Value: slot}, {Key: "writer", Value: "w6"},
		{Key: "period", Value: int64(stressPeriod)}, {Key: "alive", Value: bson.Binary{Data: []byte{1}}}})
	c.Assert(err, gc.IsNil)
	_, err = beings.InsertOne(ctx, bson.D{{Key: "_id", Value: schema.BeingsID("w6", 0)}, {Key: "writer", Value: "w6"}, {Key: "chunk", Value: int32(2147483647)},
		{Key: "entries", Value: bson.D{{Key: "models", Value: bson.A{stressModel.Id()}}, {Key: "model", Value: bson.A{int32(0)}}, {Key: "keys", Value: bson.A{"z"}}}}})
	c.Assert(err, gc.IsNil)
	settle()
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Disconnect)
	// The bad documents cost one line (one per LogEvery at most), which
	// counts them, and nothing else changed: the real keys stay alive,
	// no made-up key appears.
	var skipped []string
	for _, line := range s.logger.Entries() {
		if strings.Contains(line, "skipping") {
			skipped = append(skipped, line)
		}
	}
	c.Assert(skipped, gc.HasLen, 1, gc.Commentf("%s", strings.Join(s.logger.Entries(), "\n")))
	c.Assert(skipped[0], gc.Matches, `.*skipping [1-6] documents? that do not read as their writers wrote them: .*`)
}

// skewedClock is the wall clock off by offset: another controller's.
type skewedClock struct {
	clock.Clock
	offset time.Duration
}

// Now is part of the clock.Clock interface.
func (s skewedClock) Now() time.Time {
	return s.Clock.Now().Add(s.offset)
}

func (s *stressSuite) TestClockSkewIsMeasuredAndReported(c *gc.C) {
	writer := skewedClock{Clock: clock.WallClock, offset: 600 * time.Millisecond}
	base := s.DB.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: writer, Period: stressPeriod, FlushInterval: 100 * time.Millisecond})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	skews := make(chan time.Duration, 100)
	r, err := presencereader.New(presencereader.Config{
		Base: base, Clock: clock.WallClock, Period: stressPeriod, SyncInterval: 100 * time.Millisecond, Logger: s.logger,
		OnLoad: func(l presencereader.LoadStats) {
			select {
			case skews <- l.MaxSkew:
			default:
			}
		},
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	id, err := b.Register(base, stressModel, "machine-0")
	c.Assert(err, gc.IsNil)
	var skew time.Duration
	agenttest.WaitFor(c, agenttest.LongWait, "the skew measured", func() bool {
		c.Assert(b.Ping(id, schema.Slot(writer.Now(), stressPeriod)), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(r.Refresh(), gc.IsNil)
		for {
			select {
			case skew = <-skews:
				// The warning comes once the writer has written twice.
				warned := strings.Contains(strings.Join(s.logger.Entries(), "\n"), "ahead of this reader's")
				if skew >= 550*time.Millisecond && warned {
					return true
				}
			default:
				return false
			}
		}
	})
	c.Assert(skew < 2*time.Second, gc.Equals, true, gc.Commentf("%v", skew))
	c.Assert(strings.Join(s.logger.Entries(), "\n"), gc.Matches, `(?s).*clock is at least .* ahead of this reader's.*`)
}

func (s *stressSuite) TestAWriterWhoseWritesAreSlowOnTheReadersClockShowsNoSkew(c *gc.C) {
	// One clock, and every write of the batcher's held up on its way to
	// the server: the stamps are that old when they land, which is no
	// skew (the code before issue 23 reported it as one).
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	slow := s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: slow, Clock: clock.WallClock, Period: stressPeriod, FlushInterval: 100 * time.Millisecond})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	var mu sync.Mutex
	var most time.Duration
	loads := 0
	r, err := presencereader.New(presencereader.Config{
		Base: s.DB.Collection("presence"), Clock: clock.WallClock, Period: stressPeriod, SyncInterval: 100 * time.Millisecond, Logger: s.logger,
		OnLoad: func(l presencereader.LoadStats) {
			mu.Lock()
			defer mu.Unlock()
			most = max(most, l.MaxSkew)
			loads++
		},
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	id, err := b.Register(slow, stressModel, "machine-0")
	c.Assert(err, gc.IsNil)
	c.Assert(b.Ping(id, schema.Slot(time.Now(), stressPeriod)), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	proxy.SetDelay(stressPeriod / 5)
	for i := 0; i < 3; i++ {
		c.Assert(b.Ping(id, schema.Slot(time.Now(), stressPeriod)), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
		c.Assert(r.Refresh(), gc.IsNil)
	}
	mu.Lock()
	defer mu.Unlock()
	c.Assert(loads > 0, gc.Equals, true)
	c.Assert(most, gc.Equals, time.Duration(0))
	c.Assert(strings.Join(s.logger.Entries(), "\n"), gc.Not(gc.Matches), `(?s).*clock is .*`)
}
