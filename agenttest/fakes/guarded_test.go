package fakes_test

import (
	"context"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/agenttest/fakes"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// guardedSuite checks that GuardedDocs and the fake Manager's tokens make
// guarded writes as leaseexpiry.UpdateGuarded does on MongoDB.
type guardedSuite struct{}

var _ = gc.Suite(&guardedSuite{})

var doc = bson.D{{Key: "_id", Value: "config"}}

func setWriter(unit string) bson.D {
	return bson.D{{Key: "$set", Value: bson.D{{Key: "writer", Value: unit}}}, {Key: "$inc", Value: bson.D{{Key: "writes", Value: 1}}}}
}

// leader claims mysql for unit and returns its token.
func leader(c *gc.C, m *fakes.Manager, unit string) leaseexpiry.Token {
	c.Assert(m.ClaimLeadership("mysql", unit, time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("mysql", unit)
	c.Assert(err, gc.IsNil)
	return token
}

func (s *guardedSuite) TestDeposedLeadersWriteAfterANewerLeadersIsFenced(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	docs := fakes.NewGuardedDocs()
	var updater leaseexpiry.GuardedUpdater = docs
	old := leader(c, m, "mysql/0")
	res, err := updater.UpdateGuarded(context.Background(), old, doc, setWriter("mysql/0"), true)
	c.Assert(err, gc.IsNil)
	c.Check(res.UpsertedCount, gc.Equals, int64(1))
	c.Assert(m.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	current := leader(c, m, "mysql/1")
	res, err = updater.UpdateGuarded(context.Background(), current, doc, setWriter("mysql/1"), false)
	c.Assert(err, gc.IsNil)
	c.Check(res.MatchedCount, gc.Equals, int64(1))

	_, err = updater.UpdateGuarded(context.Background(), old, doc, setWriter("mysql/0"), true)
	c.Check(errors.Is(err, leaseexpiry.ErrFenced), gc.Equals, true, gc.Commentf("%v", err))
	got, ok := docs.Get("config")
	c.Assert(ok, gc.Equals, true)
	c.Check(got["writer"], gc.Equals, "mysql/1")
	c.Check(got["writes"], gc.Equals, int64(2))
	c.Check(got[leaseexpiry.FencesField], gc.DeepEquals, bson.M{fakes.ModelUUID + ":mysql": current.Fence()})
}

func (s *guardedSuite) TestWriteThatMatchesNoDocumentChangesNothing(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	docs := fakes.NewGuardedDocs()
	res, err := docs.UpdateGuarded(context.Background(), leader(c, m, "mysql/0"), doc, setWriter("mysql/0"), false)
	c.Assert(err, gc.IsNil)
	c.Check(res.MatchedCount, gc.Equals, int64(0))
	_, ok := docs.Get("config")
	c.Check(ok, gc.Equals, false)
}

func (s *guardedSuite) TestTokensGuardNamesTheFakeModelsLease(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	token := leader(c, m, "mysql/0")
	want, err := leaseexpiry.NewGuard(fakes.ModelUUID, "mysql", token.Fence())
	c.Assert(err, gc.IsNil)
	c.Check(token.Guard(), gc.Equals, want)
}

func (s *guardedSuite) TestWritesTheFakeCannotMakeAreNotValid(c *gc.C) {
	m := fakes.NewManager(agenttest.NewClock())
	docs := fakes.NewGuardedDocs()
	token := leader(c, m, "mysql/0")
	for i, t := range []struct{ filter, update any }{
		{bson.D{{Key: "writer", Value: "x"}}, setWriter("mysql/0")},
		{doc, bson.D{{Key: "writer", Value: "replacement"}}},
		{doc, bson.D{{Key: "$push", Value: bson.D{{Key: "log", Value: 1}}}}},
		{doc, bson.D{{Key: "$set", Value: bson.D{{Key: "a.b", Value: 1}}}}},
	} {
		_, err := docs.UpdateGuarded(context.Background(), token, t.filter, t.update, true)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("case %d: %v", i, err))
	}
	_, ok := docs.Get("config")
	c.Check(ok, gc.Equals, false)
}
