package watcher_test

import (
	"fmt"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

// scaleSuite checks the detection bounds with 100,000 keys, driving the
// batcher directly as 100,000 pingers would.
type scaleSuite struct {
	fixture
}

var _ = gc.Suite(&scaleSuite{})

func (s *scaleSuite) TestDetectionBoundsHoldAtOneHundredThousandKeys(c *gc.C) {
	const keys = 100000
	b := s.newBatcher(c, s.base)
	w := s.newWatcher(c, s.base, modelA)
	ids := make([]pinger.Identity, keys)
	for i := range ids {
		id, err := b.Register(s.base, modelA, fmt.Sprintf("unit-app-%d", i))
		c.Assert(err, gc.IsNil)
		ids[i] = id
	}
	slot := schema.Slot(s.clock.Now(), period)
	pingAll := func(except func(int) bool) {
		slot = schema.Slot(s.clock.Now(), period)
		for i, id := range ids {
			if !except(i) {
				c.Assert(b.Ping(id, slot), gc.IsNil)
			}
		}
		c.Assert(b.Sync(), gc.IsNil)
	}
	none := func(int) bool { return false }
	pingAll(none)

	// Alive within one flush and one sync.
	c.Assert(w.Refresh(), gc.IsNil)
	for i := 0; i < keys; i += 997 {
		assertAlive(c, w, fmt.Sprintf("unit-app-%d", i), true)
	}

	// Disconnect: dead within one flush and one sync.
	disconnected := func(i int) bool { return i%10007 == 0 }
	for i, id := range ids {
		if disconnected(i) {
			c.Assert(b.Disconnect(id, slot), gc.IsNil)
		}
	}
	c.Assert(b.Sync(), gc.IsNil)
	c.Assert(w.Refresh(), gc.IsNil)
	for i := 0; i < keys; i += 1001 {
		assertAlive(c, w, fmt.Sprintf("unit-app-%d", i), !disconnected(i))
	}

	// Silence: the others keep pinging four times a period; the silent
	// ones are dead one period after their last ping (it was at the
	// start of its slot), and nobody else is.
	silent := func(i int) bool { return disconnected(i) || i%9973 == 1 }
	for i, id := range ids {
		if silent(i) && !disconnected(i) {
			// Their pingers stop: the batcher carries only the
			// indexes that pingers still hold.
			b.Release(id)
		}
	}
	lastPing := s.clock.Now()
	for s.clock.Now().Before(lastPing.Add(period)) {
		s.clock.Advance(schema.PingInterval(period))
		pingAll(silent)
		c.Assert(w.Refresh(), gc.IsNil)
		if s.clock.Now().Before(lastPing.Add(period)) {
			assertAlive(c, w, "unit-app-1", true)
		}
	}
	for i := 0; i < keys; i++ {
		if silent(i) || i%503 == 0 {
			assertAlive(c, w, fmt.Sprintf("unit-app-%d", i), !silent(i))
		}
	}
}
