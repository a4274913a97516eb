package presencereader

import (
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
)

// forgetViewSuite checks, from the inside, that forgetting keys leaves
// no per-key state behind.
type forgetViewSuite struct{}

var _ = gc.Suite(&forgetViewSuite{})

func (s *forgetViewSuite) TestForgettingKeysRenumbersWhichWriterRecordedEachDeath(c *gc.C) {
	v := newView()
	v.learn("gone", 0, schema.NewEntries([]string{"m"}, []string{"a", "b"}))
	v.learn("live", 0, schema.NewEntries([]string{"m"}, []string{"c"}))
	kept := v.models["m"].ids["c"]
	v.deadBy[kept] = v.writer["live"]
	c.Assert(v.deadBy, gc.HasLen, 3)

	// The first sweep sees every key as learnt since the last; once
	// their writer is gone, the next, after a load that changed none,
	// forgets a and b.
	v.sweep(logEpoch, time.Minute)
	delete(v.writer, "gone")
	v.epoch++
	v.sweep(logEpoch.Add(time.Second), time.Minute)
	c.Assert(v.keys, gc.DeepEquals, []string{"c"})
	c.Assert(v.deadBy, gc.HasLen, 1)
	c.Assert(v.deadBy[v.models["m"].ids["c"]], gc.Equals, v.writer["live"])
}
