package pingbatcher_test

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/mongo"

	gc "gopkg.in/check.v1"
)

func TestPackage(t *testing.T) {
	gc.TestingT(t)
}

// mongoClient returns a client that never needs a server: benchmarks of
// in-memory work pass its collections around without using them.
func mongoClient() (*mongo.Client, error) {
	return mongo.Connect()
}
