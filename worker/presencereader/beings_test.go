package presencereader_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

// beingsSuite checks how a reader fetches the keys of the indexes it
// cannot name yet.
type beingsSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&beingsSuite{})

// beingsFilters reads every key of a writer of n live keys with a new
// reader, and returns the filters of the reader's beings queries.
func (s *beingsSuite) beingsFilters(c *gc.C, n int) []bson.Raw {
	const period = 10 * time.Second
	clk := agenttest.NewClock()
	base := s.DB.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clk, Period: period, FlushInterval: time.Hour})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	for i := range n {
		id, err := b.Register(base, stressModel, fmt.Sprintf("machine-%d", i))
		c.Assert(err, gc.IsNil)
		c.Assert(b.Ping(id, schema.Slot(clk.Now(), period)), gc.IsNil)
	}
	c.Assert(b.Sync(), gc.IsNil)

	var mu sync.Mutex
	var filters []bson.Raw
	monitor := &event.CommandMonitor{Started: func(_ context.Context, ev *event.CommandStartedEvent) {
		if ev.CommandName == "find" && ev.Command.Lookup("find").StringValue() == schema.Beings(base).Name() {
			mu.Lock()
			defer mu.Unlock()
			filters = append(filters, ev.Command.Lookup("filter").Document())
		}
	}}
	r, err := presencereader.New(presencereader.Config{
		Base:  s.NewClient(c, options.Client().SetMonitor(monitor)).Database(s.DB.Name()).Collection("presence"),
		Clock: clk, Period: period, SyncInterval: time.Hour,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	dying := make(chan struct{})
	defer close(dying)
	v, err := r.NewView(stressModel, dying, func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	c.Assert(r.Refresh(), gc.IsNil)
	for _, i := range []int{0, n / 2, n - 1} {
		alive, err := v.Alive(fmt.Sprintf("machine-%d", i))
		c.Assert(err, gc.IsNil)
		c.Assert(alive, gc.Equals, true, gc.Commentf("machine-%d", i))
	}
	mu.Lock()
	defer mu.Unlock()
	return filters
}

func (s *beingsSuite) TestAFewBeingsDocumentsAreReadEachByItsID(c *gc.C) {
	// Three chunks: three reads, each by _id alone, which every server
	// answers from its _id index.
	filters := s.beingsFilters(c, 2*schema.ChunkSize+1)
	c.Assert(filters, gc.HasLen, 3)
	for i, f := range filters {
		c.Assert(f.String(), gc.Equals, fmt.Sprintf(`{"_id": "%s"}`, schema.BeingsID(writerOf(c, s), i)))
	}
}

func (s *beingsSuite) TestManyBeingsDocumentsAreReadWithOneQuery(c *gc.C) {
	filters := s.beingsFilters(c, 9*schema.ChunkSize)
	c.Assert(filters, gc.HasLen, 1)
	_, err := filters[0].LookupErr("$or")
	c.Assert(err, gc.IsNil)
}

// writerOf returns the writer of the one beings document of chunk 0.
func writerOf(c *gc.C, s *beingsSuite) string {
	var doc schema.BeingsDoc
	err := schema.Beings(s.DB.Collection("presence")).FindOne(context.Background(), bson.D{{Key: schema.FieldChunk, Value: 0}}).Decode(&doc)
	c.Assert(err, gc.IsNil)
	return doc.Writer
}
