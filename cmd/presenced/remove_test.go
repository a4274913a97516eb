package main

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// removeSuite checks that a removed model leaves the operator's answers.
type removeSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&removeSuite{})

var removedModel = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")

// status runs `presenced status --json` and returns what it says.
func (s *removeSuite) status(c *gc.C) deploymentStatus {
	var stdout, stderr bytes.Buffer
	code := run([]string{"status", "--json", "--mongo-uri", s.Server.URI(), "--database", s.DB.Name()}, &stdout, &stderr)
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", stderr.String()))
	var st deploymentStatus
	c.Assert(json.Unmarshal(stdout.Bytes(), &st), gc.IsNil, gc.Commentf("%s", stdout.String()))
	return st
}

// modelsOf returns the models st lists, and those its leases name.
func modelsOf(st deploymentStatus) (models, leases []string) {
	for _, m := range st.Models {
		models = append(models, m.Model)
	}
	for _, l := range st.Leases {
		leases = append(leases, l.Model)
	}
	return models, leases
}

func (s *removeSuite) TestStatusForgetsARemovedModelAndItsLeases(c *gc.C) {
	base := s.DB.Collection(baseCollection)
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock, FlushInterval: 100 * time.Millisecond})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	start := func(model names.ModelTag, key string) *pinger.Pinger {
		p, err := pinger.New(pinger.Config{Base: base, Model: model, Key: key, Clock: clock.WallClock, Recorder: func() pinger.PingRecorder { return b }})
		c.Assert(err, gc.IsNil)
		c.Assert(p.Start(), gc.IsNil)
		return p
	}
	stays := start(queryModel, "machine-0")
	defer func() { stays.Kill(); _ = stays.Wait() }()
	var gone []*pinger.Pinger
	for _, key := range []string{"machine-0", "machine-1", "machine-2", "machine-3"} {
		gone = append(gone, start(removedModel, key))
	}
	c.Assert(b.Sync(), gc.IsNil)
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	for _, model := range []names.ModelTag{queryModel, removedModel} {
		key := lease.Key{Namespace: leaseexpiry.Namespace, Model: model.Id(), Lease: "mysql"}
		_, err = client.Claim(context.Background(), key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
		c.Assert(err, gc.IsNil)
	}
	models, leases := modelsOf(s.status(c))
	c.Assert(models, gc.DeepEquals, []string{queryModel.Id(), removedModel.Id()})
	c.Assert(leases, gc.DeepEquals, []string{queryModel.Id(), removedModel.Id()})

	// The removed model's engine stops, then the model is removed, twice.
	for _, p := range gone {
		c.Assert(p.Stop(), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)
	for range 2 {
		c.Assert(presence.RemoveModel(context.Background(), s.DB, removedModel), gc.IsNil)
	}
	st := s.status(c)
	models, leases = modelsOf(st)
	c.Check(models, gc.DeepEquals, []string{queryModel.Id()})
	c.Assert(leases, gc.DeepEquals, []string{queryModel.Id()})
	// The other model is untouched: its key is alive, its lease held.
	c.Assert(st.Models[0].Alive, gc.Equals, 1)
	c.Assert(st.Leases[0].Holder, gc.Equals, "mysql/0")
}
