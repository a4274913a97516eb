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

// A client that keeps connections open, idle or busy (what a streaming
// watch holds through its controller), does not hold up Stop: it ends
// within half a second. A tailable awaitData getMore in flight holds the
// server for up to its maxTimeMS (the server's, not ours to cut short).
func (s *embeddedSuite) TestStopEndsPromptlyWithClientsConnected(c *gc.C) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, client := startAndConnect(c, c.MkDir())
	defer func() { _ = client.Disconnect(ctx) }()
	coll := client.Database("d").Collection("c")
	_, err := coll.InsertOne(ctx, bson.D{{Key: "n", Value: 1}})
	c.Assert(err, gc.IsNil)
	busy := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			for {
				select {
				case <-busy:
					return
				default:
				}
				if _, err := coll.CountDocuments(ctx, bson.D{}); err != nil {
					return
				}
			}
		}()
	}
	defer close(busy)
	c.Assert(client.Ping(ctx, nil), gc.IsNil)

	started := time.Now()
	srv.Stop()
	took := time.Since(started)
	c.Logf("Stop took %v", took)
	c.Assert(took < 500*time.Millisecond, gc.Equals, true, gc.Commentf("Stop took %v", took))
}
