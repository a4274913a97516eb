package agenttest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/internal/wireproxy"
)

func TestPackage(t *testing.T) {
	gc.TestingT(t)
}

type agenttestSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&agenttestSuite{})

func (s *agenttestSuite) TestEveryTestGetsAFreshDatabase(c *gc.C) {
	n, err := s.DB.Collection("anything").CountDocuments(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(0))
	_, err = s.DB.Collection("anything").InsertOne(context.Background(), bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.IsNil)
}

func (s *agenttestSuite) TestTearDownLeavesNoWriterThatCanCreateTheDatabaseAgain(c *gc.C) {
	// Writers that outlive a test's end (a worker killed but not yet
	// returned) must not bring the dropped database back: on the
	// embedded server that is how a drop crashes it.
	name := s.DB.Name()
	colls := []*mongo.Collection{s.DB.Collection("w"), s.NewDB(c).Collection("w")}
	stopped := make(chan struct{}, len(colls))
	for _, coll := range colls {
		go func() {
			defer func() { stopped <- struct{}{} }()
			for i := 0; ; i++ {
				if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "i", Value: i}}); errors.Is(err, mongo.ErrClientDisconnected) {
					return
				}
			}
		}()
	}
	s.TearDownTest(c)
	for range colls {
		<-stopped
	}
	client, err := s.Server.NewClient()
	c.Assert(err, gc.IsNil)
	defer func() { _ = client.Disconnect(context.Background()) }()
	names, err := client.ListDatabaseNames(context.Background(), bson.D{{Key: "name", Value: name}})
	c.Assert(err, gc.IsNil)
	c.Assert(names, gc.HasLen, 0)
	s.SetUpTest(c)
}

func (s *agenttestSuite) TestServerRestartsOnItsDataAndAddress(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot stop an external MongoDB")
	}
	ctx := context.Background()
	_, err := s.DB.Collection("kept").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}})
	c.Assert(err, gc.IsNil)
	uri := s.Server.URI()
	c.Assert(s.Server.Stop(), gc.IsNil)
	c.Assert(s.Server.Start(), gc.IsNil)
	c.Assert(s.Server.URI(), gc.Equals, uri)
	// The client made before the outage reconnects by itself.
	c.Assert(countOnceBack(c, s.DB.Collection("kept")), gc.Equals, int64(1))
}

// countOnceBack counts the documents of coll, retrying while its client
// has not yet found the restarted server.
func countOnceBack(c *gc.C, coll *mongo.Collection) int64 {
	var n int64
	c.Assert(agenttest.Retry(agenttest.LongWait, func() (err error) {
		n, err = coll.CountDocuments(context.Background(), bson.D{})
		return err
	}), gc.IsNil)
	return n
}

func (s *agenttestSuite) TestCommandCounterCountsWrites(c *gc.C) {
	var counter agenttest.CommandCounter
	db := s.NewClient(c, counter.Options()).Database(s.DB.Name())
	_, err := db.Collection("c").InsertOne(context.Background(), bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Writes(), gc.Equals, 1)
	c.Assert(counter.CountOn("insert", "c"), gc.Equals, 1)
	counter.Reset()
	c.Assert(counter.Writes(), gc.Equals, 0)
}

func (s *agenttestSuite) TestAdapterLetsWorkertestTakeACheckC(c *gc.C) {
	w := workertest.NewErrorWorker(nil)
	workertest.CleanKill(agenttest.C(c), w)
	deadline, ok := agenttest.C(c).Context().Deadline()
	c.Assert(ok, gc.Equals, true)
	c.Assert(time.Until(deadline) > 0, gc.Equals, true)
}

func (s *agenttestSuite) TestStubGetterMissingGivesErrMissing(c *gc.C) {
	getter := agenttest.StubGetterMissing(map[string]any{"a": 1, "b": 2}, "b")
	var a, b int
	c.Assert(getter.Get("a", &a), gc.IsNil)
	c.Assert(a, gc.Equals, 1)
	c.Assert(errors.Is(getter.Get("b", &b), dependency.ErrMissing), gc.Equals, true)
}

func (s *agenttestSuite) TestWaitAdvanceMovesTheClockOnceTimersWait(c *gc.C) {
	clk := agenttest.NewClock()
	timer := clk.NewTimer(time.Minute)
	agenttest.WaitAdvance(c, clk, time.Minute, 1)
	select {
	case <-timer.Chan():
	case <-time.After(agenttest.LongWait):
		c.Fatalf("timer did not fire")
	}
	c.Assert(clk.Now().Equal(agenttest.Epoch.Add(time.Minute)), gc.Equals, true)
}

func (s *agenttestSuite) TestLoggerRecordsLevels(c *gc.C) {
	var l agenttest.Logger
	l.Errorf("boom %d", 1)
	l.Debugf("quiet")
	c.Assert(l.Entries(), gc.DeepEquals, []string{"ERROR boom 1", "DEBUG quiet"})
}

func (s *agenttestSuite) TestPausedServerHangsCallsUntilResumed(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	coll := s.DB.Collection("paused")
	c.Assert(s.Server.Pause(), gc.IsNil)
	resumed := false
	defer func() {
		if !resumed {
			_ = s.Server.Resume()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.NotNil)
	c.Assert(s.Server.Resume(), gc.IsNil)
	resumed = true
	c.Assert(agenttest.Retry(agenttest.LongWait, func() error {
		_, err := coll.InsertOne(context.Background(), bson.D{{Key: "_id", Value: 2}})
		return err
	}), gc.IsNil)
}

func (s *agenttestSuite) TestKilledServerRestartsOnItsData(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot kill an external MongoDB")
	}
	ctx := context.Background()
	_, err := s.DB.Collection("crash").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}})
	c.Assert(err, gc.IsNil)
	c.Assert(s.Server.Kill(), gc.IsNil)
	c.Assert(s.Server.Start(), gc.IsNil)
	c.Assert(countOnceBack(c, s.DB.Collection("crash")), gc.Equals, int64(1))
}

// proxied returns a proxy in front of the suite's server, a collection of
// the suite's database reached through it on a client of its own with
// extra options (disconnected at teardown), and a function that closes
// the proxy.
func (s *agenttestSuite) proxied(c *gc.C, name string, extra ...*options.ClientOptions) (*wireproxy.Proxy, *mongo.Collection, func()) {
	p, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	client := s.NewClient(c, append([]*options.ClientOptions{options.Client().ApplyURI(uri)}, extra...)...)
	return p, client.Database(s.DB.Name()).Collection(name), func() { _ = p.Close() }
}

func (s *agenttestSuite) TestProxyCountsCommandsAtTheServerAndDelaysReplies(c *gc.C) {
	p, coll, closeProxy := s.proxied(c, "proxied")
	defer closeProxy()
	ctx := context.Background()
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.IsNil)
	p.Reset()
	for i := 0; i < 3; i++ {
		c.Assert(coll.FindOne(ctx, bson.D{}).Err(), gc.IsNil)
	}
	c.Assert(p.Counts()["find"], gc.Equals, 3)
	c.Assert(p.Counts()["find proxied"], gc.Equals, 3)

	p.SetDelay(300 * time.Millisecond)
	started := time.Now()
	c.Assert(coll.FindOne(ctx, bson.D{}).Err(), gc.IsNil)
	c.Assert(time.Since(started) >= 300*time.Millisecond, gc.Equals, true)
}

func (s *agenttestSuite) TestProxyHoldsRequestsUntilLifted(c *gc.C) {
	p, coll, closeProxy := s.proxied(c, "held")
	defer closeProxy()
	ctx := context.Background()
	c.Assert(coll.FindOne(ctx, bson.D{}).Err(), gc.Equals, mongo.ErrNoDocuments)
	p.SetHold(time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		done <- err
	}()
	// The insert has not reached the server...
	time.Sleep(300 * time.Millisecond)
	n, err := s.DB.Collection("held").CountDocuments(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(0))
	// ...and goes through as soon as the hold is lifted.
	p.SetHold(0)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("held insert not released")
	}
}

func (s *agenttestSuite) TestProxyLosesRepliesAfterTheServerAppliedTheWrite(c *gc.C) {
	p, coll, closeProxy := s.proxied(c, "lost", options.Client().SetRetryWrites(false))
	defer closeProxy()
	ctx := context.Background()
	p.SetFaults(wireproxy.Faults{Drop: 1})
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.NotNil)
	n, err := s.DB.Collection("lost").CountDocuments(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(1))
}

func (s *agenttestSuite) TestNewestNoticeIsTheLastInsertedNotTheGreatestID(c *gc.C) {
	base := s.DB.Collection("presence")
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	c.Assert(agenttest.NewestNotice(c, base), gc.Equals, "")
	c.Assert(schema.EnsureNotices(ctx, base), gc.IsNil)
	// Two batchers generate their notices' _ids apart: the one with the
	// greater _id may reach the server first.
	earlier, later := bson.NewObjectID(), bson.NewObjectID()
	for _, id := range []bson.ObjectID{later, earlier} {
		_, err := schema.Notices(base).InsertOne(ctx, bson.D{{Key: "_id", Value: id}})
		c.Assert(err, gc.IsNil)
	}
	c.Assert(agenttest.NewestNotice(c, base), gc.Equals, earlier.Hex())
}
