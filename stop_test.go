package presence_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// stopSuite checks that a controller with its model sets stops within
// five seconds whatever the database does: every call has a deadline and
// stopping cancels what is in flight.
type stopSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&stopSuite{})

const (
	stoppingModels = 5
	stopBound      = 5 * time.Second
)

// busyEngine starts a controller set and stoppingModels model sets on
// the wall clock with short intervals, and units that claim leadership
// in a loop, as presenced's simulation does. It returns the engine and a
// function that waits for the units once the engine is stopping.
func (s *stopSuite) busyEngine(c *gc.C, uri string) (*dependency.Engine, func()) {
	engine, err := dependency.NewEngine(agenttest.EngineConfig(nil))
	c.Assert(err, gc.IsNil)
	manifolds := presence.ControllerManifolds(presence.ControllerManifoldsConfig{
		DatabaseName:  "database",
		Clock:         clock.WallClock,
		Period:        time.Second,
		FlushInterval: 100 * time.Millisecond,
		SyncInterval:  100 * time.Millisecond,
		PruneInterval: time.Second,
	})
	manifolds["database"] = presence.DatabaseManifold(uri, s.DB.Name(), options.Client().SetServerSelectionTimeout(2*time.Second))
	managers := make(chan leaseexpiry.Manager, stoppingModels)
	for i := 0; i < stoppingModels; i++ {
		prefix := fmt.Sprintf("m%d-", i)
		for name, m := range presence.ModelManifolds(presence.ModelManifoldsConfig{
			DatabaseName: "database",
			Model:        hostedModel(i),
			Prefix:       prefix,
			AgentKey:     agentOf(i),
			Period:       time.Second,
		}) {
			manifolds[name] = m
		}
		manifolds[prefix+"units"] = unitsManifold(prefix+presence.LeaseManagerName, managers)
	}
	c.Assert(dependency.Install(engine, manifolds), gc.IsNil)
	var wg sync.WaitGroup
	for i := 0; i < stoppingModels; i++ {
		var manager leaseexpiry.Manager
		select {
		case manager = <-managers:
		case <-time.After(agenttest.LongWait):
			c.Fatalf("lease managers did not start")
		}
		for u := 0; u < 3; u++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					err := manager.ClaimLeadership("app", fmt.Sprintf("app/%d", u), 2*time.Second)
					if errors.Is(err, leaseexpiry.ErrStopped) {
						return
					}
				}
			}()
		}
	}
	return engine, wg.Wait
}

// unitsManifold hands its model's lease manager to managers once.
func unitsManifold(managerName string, managers chan<- leaseexpiry.Manager) dependency.Manifold {
	var once sync.Once
	return dependency.Manifold{
		Inputs: []string{managerName},
		Start: func(_ context.Context, getter dependency.Getter) (worker.Worker, error) {
			var manager leaseexpiry.Manager
			if err := getter.Get(managerName, &manager); err != nil {
				return nil, errors.Trace(err)
			}
			once.Do(func() { managers <- manager })
			return workertest.NewErrorWorker(nil), nil
		},
	}
}

// checkStopsInTime kills engine and checks that it and the units are done
// within stopBound.
func checkStopsInTime(c *gc.C, engine *dependency.Engine, units func()) {
	started := time.Now()
	engine.Kill()
	done := make(chan struct{})
	go func() {
		_ = engine.Wait()
		units()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(4 * stopBound):
		c.Fatalf("engine did not stop within %v", 4*stopBound)
	}
	took := time.Since(started)
	c.Logf("stopped in %v", took)
	c.Assert(took < stopBound, gc.Equals, true, gc.Commentf("stop took %v", took))
}

func (s *stopSuite) TestStopIsPromptWithTheServerHung(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	engine, units := s.busyEngine(c, s.Server.URI())
	time.Sleep(time.Second)
	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Assert(s.Server.Resume(), gc.IsNil) }()
	// Let calls pile up against the hung server.
	time.Sleep(time.Second)
	checkStopsInTime(c, engine, units)
}

func (s *stopSuite) TestStopIsPromptWithTheServerDown(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot kill an external MongoDB")
	}
	engine, units := s.busyEngine(c, s.Server.URI())
	time.Sleep(time.Second)
	c.Assert(s.Server.Kill(), gc.IsNil)
	defer func() { c.Assert(s.Server.Start(), gc.IsNil) }()
	time.Sleep(time.Second)
	checkStopsInTime(c, engine, units)
}

func (s *stopSuite) TestStopIsPromptWithTheServerSlow(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	engine, units := s.busyEngine(c, uri)
	time.Sleep(time.Second)
	// Every reply now takes three seconds: flushes and loads time out,
	// lease calls crawl.
	proxy.SetDelay(3 * time.Second)
	time.Sleep(time.Second)
	checkStopsInTime(c, engine, units)
}
