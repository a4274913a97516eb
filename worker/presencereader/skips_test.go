package presencereader_test

import (
	"context"
	"strings"
	"time"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/presencereader"
)

// skipsSuite checks that what the reader skips costs bounded memory and
// bounded log lines.
type skipsSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&skipsSuite{})

func (s *skipsSuite) TestAControllerWithAnotherPeriodCostsBoundedRecordsAndLines(c *gc.C) {
	const period = 10 * time.Second
	clk := agenttest.NewClock()
	base := s.DB.Collection("presence")
	logger := &agenttest.Logger{}
	r, err := presencereader.New(presencereader.Config{Base: base, Clock: clk, Period: period, SyncInterval: 1000 * time.Hour, Logger: logger})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	// A controller written with half the Period: every one of its slots
	// is a new document that this reader reads and skips.
	foreign, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clk, Period: period / 2, FlushInterval: 1000 * time.Hour})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), foreign)
	id, err := foreign.Register(nil, stressModel, "machine-0")
	c.Assert(err, gc.IsNil)
	pings := schema.Pings(base)
	const slots = 200
	for range slots {
		clk.Advance(schema.SlotLength(period))
		slot := schema.Slot(clk.Now(), period/2)
		c.Assert(foreign.Ping(id, slot), gc.IsNil)
		c.Assert(foreign.Sync(), gc.IsNil)
		// As a pruner would, keep the foreign writer's latest slots.
		_, err := pings.DeleteMany(context.Background(), bson.D{{Key: schema.FieldSlot, Value: bson.D{{Key: "$lt", Value: slot - schema.KeepSlots}}}})
		c.Assert(err, gc.IsNil)
		c.Assert(r.Refresh(), gc.IsNil)
	}
	lines := 0
	for _, e := range logger.Entries() {
		if strings.Contains(e, "skipping") {
			lines++
		}
	}
	elapsed := slots * schema.SlotLength(period)
	c.Check(lines > 0, gc.Equals, true)
	c.Check(lines <= 1+int(elapsed/presencereader.LogEvery), gc.Equals, true,
		gc.Commentf("%d lines for %d slots of %v", lines, slots, schema.SlotLength(period)))
	records := r.Report()["skipped-documents"].(int)
	c.Logf("%d lines and %d skip records after %d slots", lines, records, slots)
	c.Assert(records > 0, gc.Equals, true)
	c.Assert(records <= schema.KeepSlots+1, gc.Equals, true, gc.Commentf("%d skip records after %d slots", records, slots))
}
