package leaseexpiry_test

import (
	"context"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// guardSuite writes a resource through leaders' tokens and checks that a
// deposed leader's late write never lands over a newer leader's.
type guardSuite struct {
	fixture
}

var _ = gc.Suite(&guardSuite{})

// resource is the document the leaders of "app" write.
var resource = bson.D{{Key: "_id", Value: "config"}}

// lead claims app for unit on m and returns its token.
func lead(c *gc.C, m leaseexpiry.Manager, unit string) leaseexpiry.Token {
	c.Assert(m.ClaimLeadership("app", unit, time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("app", unit)
	c.Assert(err, gc.IsNil)
	return token
}

// writer returns the unit named by the resource's "writer" field.
func writer(c *gc.C, coll *mongo.Collection) string {
	var doc struct {
		Writer string `bson:"writer"`
	}
	c.Assert(coll.FindOne(context.Background(), resource).Decode(&doc), gc.IsNil)
	return doc.Writer
}

func set(unit string) bson.D {
	return bson.D{{Key: "$set", Value: bson.D{{Key: "writer", Value: unit}}}}
}

// handOver moves app's leadership from the holder of old to unit on m.
func handOver(c *gc.C, from, to leaseexpiry.Manager, old, unit string) leaseexpiry.Token {
	c.Assert(from.ReleaseLeadership("app", old), gc.IsNil)
	return lead(c, to, unit)
}

func (s *guardSuite) TestLeadersWriteAppliesAndStoresItsFence(c *gc.C) {
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	token := lead(c, m, "app/0")

	res, err := leaseexpiry.UpdateGuarded(context.Background(), coll, token, resource, set("app/0"), true)
	c.Assert(err, gc.IsNil)
	c.Check(res.UpsertedCount, gc.Equals, int64(1))
	res, err = leaseexpiry.UpdateGuarded(context.Background(), coll, token, resource, set("app/0"), false)
	c.Assert(err, gc.IsNil)
	c.Check(res.MatchedCount, gc.Equals, int64(1))

	var doc bson.Raw
	c.Assert(coll.FindOne(context.Background(), resource).Decode(&doc), gc.IsNil)
	g := token.Guard()
	c.Check(g.Field, gc.Equals, leaseexpiry.FencesField+"."+model.Id()+":app")
	stored, err := doc.LookupErr(leaseexpiry.FencesField, model.Id()+":app")
	c.Assert(err, gc.IsNil)
	c.Check(stored.AsInt64(), gc.Equals, token.Fence())
}

func (s *guardSuite) TestDeposedLeadersWriteAfterANewerLeadersIsFenced(c *gc.C) {
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	old := lead(c, m, "app/0")
	_, err := leaseexpiry.UpdateGuarded(context.Background(), coll, old, resource, set("app/0"), true)
	c.Assert(err, gc.IsNil)
	current := handOver(c, m, m, "app/0", "app/1")
	c.Assert(current.Fence() > old.Fence(), gc.Equals, true)
	_, err = leaseexpiry.UpdateGuarded(context.Background(), coll, current, resource, set("app/1"), false)
	c.Assert(err, gc.IsNil)

	for _, upsert := range []bool{false, true} {
		_, err = leaseexpiry.UpdateGuarded(context.Background(), coll, old, resource, set("app/0"), upsert)
		c.Check(errors.Is(err, leaseexpiry.ErrFenced), gc.Equals, true, gc.Commentf("upsert %v: %v", upsert, err))
	}
	c.Check(writer(c, coll), gc.Equals, "app/1")
}

func (s *guardSuite) TestDeposedLeaderStillWritesADocumentNoNewerLeaderWrote(c *gc.C) {
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	old := lead(c, m, "app/0")
	handOver(c, m, m, "app/0", "app/1")

	// Fencing orders writes to a document; it does not exclude them.
	_, err := leaseexpiry.UpdateGuarded(context.Background(), coll, old, resource, set("app/0"), true)
	c.Assert(err, gc.IsNil)
	c.Check(writer(c, coll), gc.Equals, "app/0")
}

func (s *guardSuite) TestWriteThatMatchesNoDocumentChangesNothing(c *gc.C) {
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	res, err := leaseexpiry.UpdateGuarded(context.Background(), coll, lead(c, m, "app/0"), resource, set("app/0"), false)
	c.Assert(err, gc.IsNil)
	c.Check(res.MatchedCount, gc.Equals, int64(0))
	n, err := coll.CountDocuments(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	c.Check(n, gc.Equals, int64(0))
}

func (s *guardSuite) TestStoredFenceThatIsNotANumberFencesEveryWrite(c *gc.C) {
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	token := lead(c, m, "app/0")
	_, err := coll.InsertOne(context.Background(), bson.D{
		{Key: "_id", Value: "config"},
		{Key: leaseexpiry.FencesField, Value: bson.D{{Key: model.Id() + ":app", Value: "junk"}}},
	})
	c.Assert(err, gc.IsNil)
	_, err = leaseexpiry.UpdateGuarded(context.Background(), coll, token, resource, set("app/0"), true)
	c.Check(errors.Is(err, leaseexpiry.ErrFenced), gc.Equals, true, gc.Commentf("%v", err))
	c.Check(err, gc.ErrorMatches, ".*not a number.*")
}

func (s *guardSuite) TestBadGuardedWritesAreNotValid(c *gc.C) {
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	token := lead(c, m, "app/0")
	for i, t := range []struct {
		filter, update any
		upsert         bool
	}{
		{resource, bson.D{{Key: "writer", Value: "replacement"}}, false},
		{resource, bson.D{{Key: "$set", Value: bson.D{{Key: leaseexpiry.FencesField, Value: 0}}}}, false},
		{resource, bson.D{{Key: "$unset", Value: bson.D{{Key: token.Guard().Field, Value: ""}}}}, false},
		{resource, bson.D{}, false},
		{resource, nil, false},
		{bson.D{{Key: "writer", Value: "x"}}, set("app/0"), true},
	} {
		_, err := leaseexpiry.UpdateGuarded(context.Background(), coll, token, t.filter, t.update, t.upsert)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("case %d: %v", i, err))
	}
	_, err := leaseexpiry.UpdateGuarded(context.Background(), coll, nil, resource, set("app/0"), false)
	c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	n, err := coll.CountDocuments(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	c.Check(n, gc.Equals, int64(0))
}

func (s *guardSuite) TestNewGuardValidatesItsParts(c *gc.C) {
	g, err := leaseexpiry.NewGuard(model.Id(), "app", 3)
	c.Assert(err, gc.IsNil)
	c.Check(g, gc.Equals, leaseexpiry.Guard{Field: leaseexpiry.FencesField + "." + model.Id() + ":app", Fence: 3})
	c.Check(g.Validate(), gc.IsNil)
	for _, bad := range []struct {
		model, app string
		fence      int64
	}{{"", "app", 1}, {"a.b", "app", 1}, {model.Id(), "App!", 1}, {model.Id(), "app", -1}} {
		_, err := leaseexpiry.NewGuard(bad.model, bad.app, bad.fence)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%+v", bad))
	}
	c.Check(errors.Is(leaseexpiry.Guard{}.Validate(), errors.NotValid), gc.Equals, true)
}

// TestStalledDeposedLeadersWritesNeverLand runs on the wall clock with two
// managers on separate clients. Each round, the leader on the first
// manager checks its token and sends its write through a proxy that holds
// it; meanwhile leadership moves to a unit on the second manager, which
// writes; then the held write goes through. Every late guarded write must
// be refused and every current leader's write applied; the same late write
// made without the guard lands, which shows the stall really put it after
// the newer leader's.
func (s *guardSuite) TestStalledDeposedLeadersWritesNeverLand(c *gc.C) {
	const rounds = 6
	newManager := func() leaseexpiry.ManagerWorker {
		client, err := lease.NewClient(lease.ClientConfig{Collection: s.NewDB(c).Collection("leases"), Clock: clock.WallClock, ClockSkew: 50 * time.Millisecond})
		c.Assert(err, gc.IsNil)
		m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Client: client, Clock: clock.WallClock, Model: model, MaxSleep: 100 * time.Millisecond})
		c.Assert(err, gc.IsNil)
		s.cleanup = append(s.cleanup, func() { workertest.CleanKill(agenttest.C(c), m) })
		return m
	}
	first, second := newManager(), newManager()
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	stalled := s.NewClient(c, options.Client().ApplyURI(uri).SetRetryWrites(false)).Database(s.DB.Name()).Collection("resources")
	direct := s.DB.Collection("resources")
	unguarded := s.DB.Collection("unguarded")

	var tried, refused, landed, applied, controlLanded int
	for r := 0; r < rounds; r++ {
		old := lead(c, first, "app/0")
		c.Assert(old.Check(), gc.IsNil)
		proxy.Reset()
		proxy.SetHold(time.Minute)
		late := make(chan error, 1)
		controlDone := make(chan error, 1)
		go func() {
			_, err := leaseexpiry.UpdateGuarded(context.Background(), stalled, old, resource, set("app/0"), true)
			late <- err
			_, err = stalled.Database().Collection("unguarded").UpdateOne(context.Background(), resource, set("app/0"), options.UpdateOne().SetUpsert(true))
			controlDone <- err
		}()
		agenttest.WaitFor(c, 5*time.Second, "the held write to reach the proxy", func() bool { return proxy.Counts()["update resources"] > 0 })

		current := handOver(c, first, second, "app/0", "app/1")
		c.Assert(current.Fence() > old.Fence(), gc.Equals, true)
		_, err := leaseexpiry.UpdateGuarded(context.Background(), direct, current, resource, set("app/1"), true)
		c.Assert(err, gc.IsNil)
		applied++
		_, err = unguarded.UpdateOne(context.Background(), resource, set("app/1"), options.UpdateOne().SetUpsert(true))
		c.Assert(err, gc.IsNil)

		tried++
		proxy.SetHold(0)
		if err := <-late; errors.Is(err, leaseexpiry.ErrFenced) {
			refused++
		} else {
			c.Errorf("round %d: late write: %v", r, err)
		}
		if writer(c, direct) == "app/0" {
			landed++
		}
		c.Assert(<-controlDone, gc.IsNil)
		if writer(c, unguarded) == "app/0" {
			controlLanded++
		}
		c.Assert(second.ReleaseLeadership("app", "app/1"), gc.IsNil)
	}
	c.Logf("late writes tried %d, refused %d, landed %d; current leaders' writes applied %d; unguarded late writes landed %d",
		tried, refused, landed, applied, controlLanded)
	c.Check(refused, gc.Equals, rounds)
	c.Check(landed, gc.Equals, 0)
	c.Check(applied, gc.Equals, rounds)
	c.Check(controlLanded, gc.Equals, rounds)
}

// replicaSet reports whether the suite's server is a replica set member,
// which has transactions.
func (s *guardSuite) replicaSet(c *gc.C) bool {
	var hello struct {
		SetName string `bson:"setName"`
	}
	c.Assert(s.DB.RunCommand(context.Background(), bson.D{{Key: "hello", Value: 1}}).Decode(&hello), gc.IsNil)
	return hello.SetName != ""
}

func (s *guardSuite) TestGuardedWriteInATransactionFailsWithoutWritingWhereThereAreNone(c *gc.C) {
	if s.replicaSet(c) {
		c.Skip("the server has transactions; TestGuardedWriteInATransactionChecksTheLeaseInTheSession runs instead")
	}
	m := s.newManager(c, nil)
	coll := s.DB.Collection("resources")
	_, err := leaseexpiry.UpdateGuardedInTransaction(context.Background(), coll, lead(c, m, "app/0"), resource, set("app/0"), true)
	c.Assert(err, gc.NotNil)
	n, err := coll.CountDocuments(context.Background(), bson.D{})
	c.Assert(err, gc.IsNil)
	c.Check(n, gc.Equals, int64(0))
}

// TestGuardedWriteInATransactionChecksTheLeaseInTheSession needs a replica
// set: PRESENCE_TEST_MONGO_URI pointing at one.
func (s *guardSuite) TestGuardedWriteInATransactionChecksTheLeaseInTheSession(c *gc.C) {
	if !s.replicaSet(c) {
		c.Skip("needs a replica set (PRESENCE_TEST_MONGO_URI); the embedded server has no transactions")
	}
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: s.clock, ClockSkew: skew})
	c.Assert(err, gc.IsNil)
	m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Client: client, Clock: s.clock, Model: model, MaxSleep: time.Minute})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), m)
	coll := s.DB.Collection("resources")
	old := lead(c, m, "app/0")
	_, err = leaseexpiry.UpdateGuardedInTransaction(context.Background(), coll, old, resource, set("app/0"), true)
	c.Assert(err, gc.IsNil)
	c.Assert(m.ReleaseLeadership("app", "app/0"), gc.IsNil)

	// No newer leader wrote, so the guard alone would let this through;
	// the check in the session refuses it.
	_, err = leaseexpiry.UpdateGuardedInTransaction(context.Background(), coll, old, resource, set("app/0 again"), false)
	c.Check(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true, gc.Commentf("%v", err))
	c.Check(writer(c, coll), gc.Equals, "app/0")
	current := lead(c, m, "app/1")
	_, err = leaseexpiry.UpdateGuardedInTransaction(context.Background(), coll, current, resource, set("app/1"), false)
	c.Assert(err, gc.IsNil)
	c.Check(writer(c, coll), gc.Equals, "app/1")
}
