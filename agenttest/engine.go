package agenttest

import (
	"time"

	"github.com/juju/errors"
	"github.com/juju/worker/v4/dependency"

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
