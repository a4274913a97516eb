package main

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// startPinger runs a ping batcher (the library's, with the default
// Period) on db with a pinger for each key in queryModel, and waits until
// they are written. The test defers the function it returns, which stops
// them.
func startPinger(c *gc.C, db *mongo.Database, keys ...string) func() {
	base := db.Collection(baseCollection)
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock, FlushInterval: 100 * time.Millisecond})
	c.Assert(err, gc.IsNil)
	var pingers []*pinger.Pinger
	for _, key := range keys {
		p, err := pinger.New(pinger.Config{
			Base: base, Model: queryModel, Key: key, Clock: clock.WallClock,
			Recorder: func() pinger.PingRecorder { return b },
		})
		c.Assert(err, gc.IsNil)
		c.Assert(p.Start(), gc.IsNil)
		pingers = append(pingers, p)
	}
	c.Assert(b.Sync(), gc.IsNil)
	return func() {
		for _, p := range pingers {
			p.Kill()
			_ = p.Wait()
		}
		workertest.CleanKill(agenttest.C(c), b)
	}
}
