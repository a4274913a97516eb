package embedded_test

import (
	"os"
	"runtime/debug"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/embedded"
)

type processSuite struct{}

var _ = gc.Suite(&processSuite{})

// tunedGCPercent returns the collector's target that TuneServerProcess
// leaves with GOGC set to gogc ("" for unset), and restores both.
func tunedGCPercent(c *gc.C, gogc string) int {
	old, had := os.LookupEnv("GOGC")
	defer func() {
		if had {
			c.Check(os.Setenv("GOGC", old), gc.IsNil)
		} else {
			c.Check(os.Unsetenv("GOGC"), gc.IsNil)
		}
	}()
	c.Assert(os.Setenv("GOGC", gogc), gc.IsNil)
	if gogc == "" {
		c.Assert(os.Unsetenv("GOGC"), gc.IsNil)
	}
	prev := debug.SetGCPercent(100)
	embedded.TuneServerProcess()
	return debug.SetGCPercent(prev)
}

// A process that runs the server alone collects far less often than Go's
// default would have it.
func (*processSuite) TestTuneServerProcessRaisesTheCollectorsTarget(c *gc.C) {
	c.Assert(tunedGCPercent(c, ""), gc.Equals, 800)
}

// GOGC, where an operator sets it, is left as chosen.
func (*processSuite) TestTuneServerProcessLeavesAChosenGOGCAlone(c *gc.C) {
	c.Assert(tunedGCPercent(c, "100"), gc.Equals, 100)
}
