package agenttest

import (
	"context"

	"github.com/juju/errors"
	"github.com/juju/worker/v4/dependency"
	dt "github.com/juju/worker/v4/dependency/testing"
	gc "gopkg.in/check.v1"
)

// StubGetter returns a dependency.Getter that hands out resources by name,
// as dependency/testing.StubGetter does; an error value makes Get return
// that error.
func StubGetter(resources map[string]any) dependency.Getter {
	return dt.StubGetter(resources)
}

// StubGetterMissing returns a StubGetter over resources in which the input
// named missing gives dependency.ErrMissing, for the "each missing input"
// table of a manifold test.
func StubGetterMissing(resources map[string]any, missing string) dependency.Getter {
	copied := make(map[string]any, len(resources))
	for name, value := range resources {
		copied[name] = value
	}
	copied[missing] = dependency.ErrMissing
	return dt.StubGetter(copied)
}

// CheckMissingInputs starts manifold once per input with that input
// missing, and checks that each start fails with dependency.ErrMissing.
func CheckMissingInputs(c *gc.C, manifold dependency.Manifold, resources map[string]any) {
	for _, input := range manifold.Inputs {
		w, err := manifold.Start(context.Background(), StubGetterMissing(resources, input))
		c.Check(w, gc.IsNil, gc.Commentf("input %q", input))
		c.Check(errors.Is(err, dependency.ErrMissing), gc.Equals, true, gc.Commentf("input %q: %v", input, err))
	}
}

// InvalidConfig is one row of a manifold test's table of invalid configs:
// a change to a valid config and the error its Validate must then give.
type InvalidConfig[T any] struct {
	Mutate func(*T)
	Err    string
}

// CheckInvalidConfigs applies each row to a copy of valid and checks that
// the copy's Validate fails with an errors.NotValid error matching the
// row's Err, and that the manifold made from it by manifold refuses to
// start over resources with an errors.NotValid error too.
func CheckInvalidConfigs[T interface{ Validate() error }](
	c *gc.C, valid T, rows []InvalidConfig[T], manifold func(T) dependency.Manifold, resources map[string]any,
) {
	for i, row := range rows {
		c.Logf("case %d: %s", i, row.Err)
		config := valid
		row.Mutate(&config)
		err := config.Validate()
		c.Check(err, gc.ErrorMatches, row.Err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
		w, err := manifold(config).Start(context.Background(), StubGetter(resources))
		c.Check(w, gc.IsNil)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
