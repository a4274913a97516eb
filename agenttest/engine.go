package agenttest

import (
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4/dependency"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/enginekit"
)

// ValueManifold returns a manifold with no inputs whose Output fills a
// pointer to value's own type or to any interface value implements: how a
// test offers a fake, a clock or a *mongo.Database under a manifold name.
// It is enginekit.ValueManifold, which a production main can use too.
func ValueManifold(value any) dependency.Manifold {
	return enginekit.ValueManifold(value)
}

// EngineOutput waits until the manifold called name runs in engine and
// fills out from its Output, failing after timeout or when the engine
// stops first. It is enginekit.Output.
func EngineOutput(engine *dependency.Engine, name string, out any, timeout time.Duration) error {
	return errors.Trace(enginekit.Output(engine, name, out, timeout))
}

// EngineConfig returns a dependency.EngineConfig for tests: on the wall
// clock (the engine's own delays are not what a test controls), no error
// fatal, restarts after 10 ms and never later than 100 ms, and logger
// (nil means silent).
func EngineConfig(logger dependency.Logger) dependency.EngineConfig {
	if logger == nil {
		logger = &Logger{}
	}
	return dependency.EngineConfig{
		IsFatal:          func(error) bool { return false },
		WorstError:       func(err, _ error) error { return err },
		ErrorDelay:       10 * time.Millisecond,
		BounceDelay:      10 * time.Millisecond,
		BackoffFactor:    1,
		BackoffResetTime: time.Second,
		MaxDelay:         100 * time.Millisecond,
		Clock:            clock.WallClock,
		Metrics:          dependency.DefaultMetrics(),
		Logger:           logger,
	}
}

// NewEngine returns a running engine made with EngineConfig(nil); kill it
// (workertest.CleanKill) when done.
func NewEngine(c *gc.C) *dependency.Engine {
	engine, err := dependency.NewEngine(EngineConfig(nil))
	c.Assert(err, gc.IsNil)
	return engine
}
