package presence_test

import (
	"context"
	"fmt"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pinger"
)

// removeModelSuite checks RemoveModel on the agent suite's fixture: a
// batcher and a watcher of modelA that keep running.
type removeModelSuite struct {
	f agentSuite
}

var _ = gc.Suite(&removeModelSuite{})

func (s *removeModelSuite) SetUpSuite(c *gc.C)    { s.f.SetUpSuite(c) }
func (s *removeModelSuite) TearDownSuite(c *gc.C) { s.f.TearDownSuite(c) }
func (s *removeModelSuite) SetUpTest(c *gc.C)     { s.f.SetUpTest(c) }
func (s *removeModelSuite) TearDownTest(c *gc.C)  { s.f.TearDownTest(c) }

// leasesOf counts the lease terms of model.
func (s *removeModelSuite) leasesOf(c *gc.C, model names.ModelTag) int64 {
	n, err := s.f.DB.Collection("leases").CountDocuments(context.Background(), bson.D{{Key: "model", Value: model.Id()}})
	c.Assert(err, gc.IsNil)
	return n
}

func (s *removeModelSuite) TestRemoveModelDeletesEveryLeaseOfTheModelInBatchesAndNoOther(c *gc.C) {
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.f.DB.Collection("leases"), Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	const many = 3*lease.RemoveBatch + 5
	for i := range many {
		key := lease.Key{Namespace: leaseexpiry.Namespace, Model: modelB.Id(), Lease: fmt.Sprintf("app-%d", i)}
		_, err := client.Claim(context.Background(), key, lease.Request{Holder: "app/0", Duration: time.Minute})
		c.Assert(err, gc.IsNil)
	}
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: modelA.Id(), Lease: "mysql"}
	_, err = client.Claim(context.Background(), key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	c.Assert(s.leasesOf(c, modelB), gc.Equals, int64(many))

	for range 2 { // idempotent
		c.Assert(presence.RemoveModel(context.Background(), s.f.DB, modelB), gc.IsNil)
		c.Assert(s.leasesOf(c, modelB), gc.Equals, int64(0))
		c.Assert(s.leasesOf(c, modelA), gc.Equals, int64(1))
	}
	info, err := client.Leases(context.Background(), leaseexpiry.Namespace, modelA.Id())
	c.Assert(err, gc.IsNil)
	c.Assert(info[key].Holder, gc.Equals, "mysql/0")
}

func (s *removeModelSuite) TestRemoveModelMarksTheModelUntilNoDocumentNamesIt(c *gc.C) {
	ctx := context.Background()
	id, err := s.f.batcher.Register(s.f.base, modelB, "k")
	c.Assert(err, gc.IsNil)
	c.Assert(s.f.batcher.Ping(id, schema.Slot(s.f.clock.Now(), schema.DefaultPeriod)), gc.IsNil)
	c.Assert(s.f.batcher.Sync(), gc.IsNil)
	c.Assert(presence.RemovePresenceForModel(ctx, s.f.base, modelB), gc.IsNil)
	removed, err := schema.RemovedModels(ctx, s.f.base)
	c.Assert(err, gc.IsNil)
	c.Assert(removed, gc.DeepEquals, map[string]bool{modelB.Id(): true})
	// Once no document names it (its writer's documents pruned), the
	// next removal forgets its marker.
	for _, coll := range []string{"presence.pings", "presence.beings"} {
		_, err := s.f.DB.Collection(coll).DeleteMany(ctx, bson.D{})
		c.Assert(err, gc.IsNil)
	}
	c.Assert(presence.RemoveModel(ctx, s.f.DB, modelA), gc.IsNil)
	removed, err = schema.RemovedModels(ctx, s.f.base)
	c.Assert(err, gc.IsNil)
	c.Assert(removed, gc.HasLen, 0)
}

func (s *removeModelSuite) TestRemoveModelIsNoDeathInOtherModels(c *gc.C) {
	stays, err := pinger.New(pinger.Config{Base: s.f.base, Model: modelA, Key: "stays", Clock: s.f.clock, Recorder: func() pinger.PingRecorder { return s.f.batcher }})
	c.Assert(err, gc.IsNil)
	c.Assert(stays.Start(), gc.IsNil)
	defer func() { stays.Kill(); _ = stays.Wait() }()
	dies, err := pinger.New(pinger.Config{Base: s.f.base, Model: modelA, Key: "dies", Clock: s.f.clock, Recorder: func() pinger.PingRecorder { return s.f.batcher }})
	c.Assert(err, gc.IsNil)
	c.Assert(dies.Start(), gc.IsNil)
	removed, err := s.f.batcher.Register(s.f.base, modelB, "k")
	c.Assert(err, gc.IsNil)
	c.Assert(s.f.batcher.Ping(removed, schema.Slot(s.f.clock.Now(), schema.DefaultPeriod)), gc.IsNil)
	c.Assert(s.f.batcher.Sync(), gc.IsNil)
	s.f.watcher.Sync()
	for _, key := range []string{"stays", "dies"} {
		alive, err := s.f.watcher.Alive(key)
		c.Assert(err, gc.IsNil)
		c.Assert(alive, gc.Equals, true, gc.Commentf("%s", key))
	}
	s.f.batcher.Release(removed)
	c.Assert(presence.RemoveModel(context.Background(), s.f.DB, modelB), gc.IsNil)
	c.Assert(dies.Disconnect(), gc.IsNil) // the death this test must see
	c.Assert(s.f.batcher.Sync(), gc.IsNil)
	s.f.watcher.Sync()
	alive, err := s.f.watcher.Alive("stays")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, true)
	alive, err = s.f.watcher.Alive("dies")
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, false)
}

func (s *removeModelSuite) TestRemoveModelRejectsBadInput(c *gc.C) {
	c.Assert(errors.Is(presence.RemoveModel(context.Background(), nil, modelA), errors.NotValid), gc.Equals, true)
	c.Assert(errors.Is(presence.RemoveModel(context.Background(), s.f.DB, names.NewModelTag("x")), errors.NotValid), gc.Equals, true)
	c.Assert(errors.Is(presence.RemoveModelFrom(context.Background(), s.f.base, nil, modelA), errors.NotValid), gc.Equals, true)
}
