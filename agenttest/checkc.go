package agenttest

import (
	"context"
	"time"

	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"
)

// ShortWait is how long a test waits to be fairly sure that something does
// not happen.
const ShortWait = 50 * time.Millisecond

// LongWait is how long a test waits for something that should happen
// before it gives up.
const LongWait = 30 * time.Second

// C adapts a *check.C to workertest.C, which wants Context (with a deadline)
// and Helper, so that the workertest helpers take check.v1 tests:
//
//	defer workertest.CleanKill(agenttest.C(c), w)
//
// The context's deadline is LongWait from the call.
func C(c *gc.C) workertest.C {
	ctx, cancel := context.WithTimeout(context.Background(), LongWait)
	return &checkC{C: c, ctx: ctx, cancel: cancel}
}

type checkC struct {
	*gc.C
	ctx    context.Context
	cancel context.CancelFunc
}

// Context is part of the workertest.C interface.
func (c *checkC) Context() context.Context {
	return c.ctx
}

// Helper is part of the workertest.C interface; check.v1 has no notion of
// helpers, so it does nothing.
func (c *checkC) Helper() {}
