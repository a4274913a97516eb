package consumer_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"example.com/agent/consumer"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/agenttest/fakes"
)

func TestPackage(t *testing.T) { gc.TestingT(t) }

type fakeSuite struct{}

var _ = gc.Suite(&fakeSuite{})

func (s *fakeSuite) TestLeadsOnlyWhileAlive(c *gc.C) {
	w := fakes.NewWatcher()
	defer w.Stop()
	m := fakes.NewManager(agenttest.NewClock())
	led, err := consumer.LeadIfAlive(w, m, "machine-0", "mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(led, gc.Equals, false)
	w.Set("machine-0", true)
	led, err = consumer.LeadIfAlive(w, m, "machine-0", "mysql", "mysql/0")
	c.Assert(err, gc.IsNil)
	c.Assert(led, gc.Equals, true)
	c.Assert(m.Holder("mysql"), gc.Equals, "mysql/0")
}

type serverSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&serverSuite{})

func (s *serverSuite) TestTheEmbeddedServerStarts(c *gc.C) {
	_, err := s.DB.Collection("c").InsertOne(context.Background(), bson.D{{Key: "_id", Value: 1}})
	c.Assert(err, gc.IsNil)
}
