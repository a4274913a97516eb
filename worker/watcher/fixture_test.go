package watcher_test

import (
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/watcher"
)

const (
	period = 30 * time.Second
	// Flushes and syncs are driven by Sync in these tests; their timers
	// are set far beyond any clock advance a test makes.
	never = 24 * time.Hour
)

var (
	modelA = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")
	modelB = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")
)

// fixture gives each test a database, a test clock and helpers that make
// workers killed at teardown.
type fixture struct {
	agenttest.MongoSuite
	clock   *testclock.Clock
	base    *mongo.Collection
	cleanup []func()
}

func (s *fixture) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.base = s.DB.Collection("presence")
	s.cleanup = nil
}

func (s *fixture) TearDownTest(c *gc.C) {
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	s.MongoSuite.TearDownTest(c)
}

func (s *fixture) newBatcher(c *gc.C, base *mongo.Collection) *pingbatcher.PingBatcher {
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: never, Period: period, Clock: s.clock})
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { workertest.CleanKill(agenttest.C(c), b) })
	return b
}

func (s *fixture) newWatcher(c *gc.C, base *mongo.Collection, model names.ModelTag) *watcher.Watcher {
	w, err := watcher.New(watcher.Config{Base: base, Model: model, Clock: s.clock, Period: period, SyncInterval: never, NoPush: true})
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { workertest.CleanKill(agenttest.C(c), w) })
	return w
}

func (s *fixture) newPinger(c *gc.C, b pinger.PingRecorder, base *mongo.Collection, model names.ModelTag, key string) *pinger.Pinger {
	p, err := pinger.New(pinger.Config{
		Base:     base,
		Model:    model,
		Key:      key,
		Recorder: func() pinger.PingRecorder { return b },
		Clock:    s.clock,
		Period:   period,
	})
	c.Assert(err, gc.IsNil)
	s.cleanup = append(s.cleanup, func() { p.Kill(); c.Check(p.Wait(), gc.IsNil) })
	return p
}

func assertChange(c *gc.C, ch <-chan watcher.Change, want watcher.Change) {
	select {
	case got := <-ch:
		c.Assert(got, gc.Equals, want)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("no change; want %v", want)
	}
}

func assertNoChange(c *gc.C, ch <-chan watcher.Change) {
	select {
	case got := <-ch:
		c.Fatalf("unexpected change %v", got)
	case <-time.After(agenttest.ShortWait):
	}
}

func assertAlive(c *gc.C, w *watcher.Watcher, key string, want bool) {
	alive, err := w.Alive(key)
	c.Assert(err, gc.IsNil)
	c.Assert(alive, gc.Equals, want, gc.Commentf("key %q", key))
}
