package presence_test

import (
	"context"
	"time"

	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

func (s *modelHostSuite) TestARemovedModelIsPurgedOnceItsEngineStopped(c *gc.C) {
	s.purge = true
	defer func() { s.purge = false }()
	leases, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: agenttest.NewClock()})
	c.Assert(err, gc.IsNil)
	for _, model := range []names.ModelTag{hostedModel(1), hostedModel(2)} {
		_, err := leases.Claim(context.Background(), lease.Key{Namespace: leaseexpiry.Namespace, Model: model.Id(), Lease: "app"},
			lease.Request{Holder: "app/0", Duration: time.Hour})
		c.Assert(err, gc.IsNil)
	}
	models := presence.NewModelList(hostedModel(1), hostedModel(2))
	ups := make(chan up, 10)
	engine := s.hostEngine(c, &agenttest.Logger{}, models, ups, nil)
	defer workertest.CleanKill(agenttest.C(c), engine)
	waitUp(c, ups, 2)
	c.Assert(s.leasesOf(c, hostedModel(1)), gc.Not(gc.Equals), 0)

	models.Remove(hostedModel(1))
	agenttest.WaitFor(c, agenttest.LongWait, "model 1 purged", func() bool {
		return s.leasesOf(c, hostedModel(1)) == 0 && s.markedRemoved(c, hostedModel(1))
	})
	// The model that stays keeps its lease and is not marked.
	c.Assert(s.leasesOf(c, hostedModel(2)), gc.Not(gc.Equals), 0)
	c.Assert(s.markedRemoved(c, hostedModel(2)), gc.Equals, false)
}

func (s *modelHostSuite) TestWithoutPurgeRemovedARemovedModelsLeasesStay(c *gc.C) {
	leases, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: agenttest.NewClock()})
	c.Assert(err, gc.IsNil)
	_, err = leases.Claim(context.Background(), lease.Key{Namespace: leaseexpiry.Namespace, Model: hostedModel(1).Id(), Lease: "app"},
		lease.Request{Holder: "app/0", Duration: time.Hour})
	c.Assert(err, gc.IsNil)
	models := presence.NewModelList(hostedModel(1), hostedModel(2))
	ups := make(chan up, 10)
	logger := &agenttest.Logger{}
	engine := s.hostEngine(c, logger, models, ups, nil)
	defer workertest.CleanKill(agenttest.C(c), engine)
	first := waitUp(c, ups, 2)
	models.Remove(hostedModel(1))
	waitStopped(c, first[hostedModel(1)])
	workertest.CleanKill(agenttest.C(c), engine)
	c.Assert(s.leasesOf(c, hostedModel(1)), gc.Not(gc.Equals), 0)
	c.Assert(s.markedRemoved(c, hostedModel(1)), gc.Equals, false)
}

// leasesOf counts model's lease documents.
func (s *modelHostSuite) leasesOf(c *gc.C, model names.ModelTag) int64 {
	n, err := s.DB.Collection("leases").CountDocuments(context.Background(), bson.D{{Key: "model", Value: model.Id()}})
	c.Assert(err, gc.IsNil)
	return n
}

// markedRemoved reports whether model has a removal marker.
func (s *modelHostSuite) markedRemoved(c *gc.C, model names.ModelTag) bool {
	removed, err := schema.RemovedModels(context.Background(), s.DB.Collection("presence"))
	c.Assert(err, gc.IsNil)
	return removed[model.Id()]
}
