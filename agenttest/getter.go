package agenttest

import (
	"github.com/juju/worker/v4/dependency"
	dt "github.com/juju/worker/v4/dependency/testing"
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
