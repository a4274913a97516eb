package embedded_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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

// A command that its deadline (maxTimeMS) cuts short as the server's
// query returns its first row leaves the database usable: every command
// without such a deadline, from any client, during and after, is
// answered. modernc.org/sqlite before v1.40.1 left that query's statement
// running and its connection interrupted for good, and every command that
// the server's pool then gave that connection failed at once with
// "interrupted (9)": one database of the server in trouble until it was
// dropped (issue: a presencebench scale shape disrupted for its whole
// length). The command cut short may itself fail either way, as a
// deadline or as "interrupted": that is its own deadline at work.
func (s *embeddedSuite) TestACommandCutShortByItsDeadlineLeavesTheDatabaseUsable(c *gc.C) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, client := startAndConnect(c, c.MkDir())
	defer srv.Stop()
	defer func() { _ = client.Disconnect(ctx) }()
	db := client.Database("d")
	docs := make([]any, 50)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: strings.Repeat("x", 200)}}
	}
	_, err := db.Collection("c").InsertMany(ctx, docs)
	c.Assert(err, gc.IsNil)

	// Finds that each get a millisecond, from several connections at
	// once, so that deadlines land at every point of the server's query,
	// each followed by a find without a deadline. Their context has none
	// either, from which the driver would set maxTimeMS itself.
	var cutShort, failed atomic.Int64
	var lastErr atomic.Value
	answered := func(err error) {
		if err != nil {
			failed.Add(1)
			lastErr.Store(err.Error())
		}
	}
	cut := bson.D{{Key: "find", Value: "c"}, {Key: "filter", Value: bson.D{}}, {Key: "maxTimeMS", Value: 1}}
	plain := bson.D{{Key: "find", Value: "c"}, {Key: "filter", Value: bson.D{{Key: "_id", Value: 1}}}}
	concurrently(4, 300, func() {
		if db.RunCommand(context.Background(), cut).Err() != nil {
			cutShort.Add(1)
		}
		answered(db.RunCommand(context.Background(), plain).Err())
	})
	c.Logf("%d finds cut short by their deadline", cutShort.Load())
	// The deadlines did cut queries short: the race was run.
	c.Assert(cutShort.Load() > 0, gc.Equals, true)

	// Then writes and reads, from as many connections as the finds used,
	// so that the server's pool hands out every connection it holds.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	concurrently(4, 50, func() {
		_, err := db.Collection("c").InsertOne(ctx, bson.D{})
		answered(err)
		answered(db.Collection("c").FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err())
	})
	c.Assert(failed.Load(), gc.Equals, int64(0), gc.Commentf("last error: %v", lastErr.Load()))
}

// concurrently runs f n times in each of workers goroutines, and returns
// when every run has returned.
func concurrently(workers, n int, f func()) {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				f()
			}
		}()
	}
	wg.Wait()
}
