package embedded_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/embedded"
)

func TestPackage(t *testing.T) { gc.TestingT(t) }

type embeddedSuite struct{}

var _ = gc.Suite(&embeddedSuite{})

func (s *embeddedSuite) TestStartRefusesAnEmptyDir(c *gc.C) {
	srv, err := embedded.Start(embedded.Config{})
	c.Assert(srv, gc.IsNil)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
}

func (s *embeddedSuite) TestAStartedServerStoresWhatAClientWritesAcrossARestart(c *gc.C) {
	dir := c.MkDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	srv, client := startAndConnect(c, dir)
	_, err := client.Database("d").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}})
	c.Assert(err, gc.IsNil)
	c.Assert(client.Disconnect(ctx), gc.IsNil)
	srv.Stop()

	srv, client = startAndConnect(c, dir)
	defer srv.Stop()
	defer func() { _ = client.Disconnect(ctx) }()
	n, err := client.Database("d").Collection("c").CountDocuments(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(1))
}

func (s *embeddedSuite) TestTheWriteAheadLogIndexIsNotAFileThatCanBeTruncatedUnderTheServer(c *gc.C) {
	dir := c.MkDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, client := startAndConnect(c, dir)
	defer srv.Stop()
	defer func() { _ = client.Disconnect(ctx) }()
	_, err := client.Database("d").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}})
	c.Assert(err, gc.IsNil)
	shm, err := filepath.Glob(filepath.Join(dir, "*-shm"))
	c.Assert(err, gc.IsNil)
	c.Assert(shm, gc.HasLen, 0)
}

// startAndConnect starts a server on dir and connects a client to it. The
// caller disconnects the client and stops the server.
func startAndConnect(c *gc.C, dir string) (*embedded.Server, *mongo.Client) {
	srv, err := embedded.Start(embedded.Config{Dir: dir})
	c.Assert(err, gc.IsNil)
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()))
	c.Assert(err, gc.IsNil)
	return srv, client
}
