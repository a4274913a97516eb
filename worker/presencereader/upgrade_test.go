package presencereader_test

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/presencereader"
)

// upgradeSuite writes documents by hand, through a client of its own, as
// the version before writers' sequences (dbc3c94) wrote them, and reads
// them with this version's reader: controllers upgrade in place, one at a
// time, while the others still write the old way.
type upgradeSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&upgradeSuite{})

// oldEntries encodes a run of entries of one model as that version did:
// a format byte (1), the number of models and each model, then the number
// of entries and, for each, its model reference and its key; numbers as
// unsigned varints, strings as a varint length and their bytes.
func oldEntries(model string, keys ...string) bson.Binary {
	str := func(data []byte, s string) []byte {
		return append(binary.AppendUvarint(data, uint64(len(s))), s...)
	}
	data := []byte{1}
	data = binary.AppendUvarint(data, 1)
	data = str(data, model)
	data = binary.AppendUvarint(data, uint64(len(keys)))
	for _, key := range keys {
		data = binary.AppendUvarint(data, 0)
		data = str(data, key)
	}
	return bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: data}
}

// oldBits encodes a bitmap with the given indexes set as that version
// did: little-endian 64-bit words.
func oldBits(indexes ...int) bson.Binary {
	var words [1]uint64
	for _, i := range indexes {
		words[0] |= 1 << i
	}
	data := []byte{}
	if words[0] != 0 {
		data = binary.LittleEndian.AppendUint64(data, words[0])
	}
	return bson.Binary{Data: data}
}

// oldWriter is a writer of that version: its slots are its clock's.
type oldWriter struct {
	id    string
	model string
	pings *mongo.Collection
}

// register writes the writer's first beings document, naming keys from
// index 0 on, as that version's arbiter insert did.
func (w oldWriter) register(c *gc.C, beings *mongo.Collection, slot int64, keys ...string) {
	_, err := beings.InsertOne(context.Background(), bson.D{
		{Key: "_id", Value: w.id + ":0"},
		{Key: "writer", Value: w.id},
		{Key: "chunk", Value: 0},
		{Key: "slot", Value: slot},
		{Key: "entries", Value: oldEntries(w.model, keys...)},
	})
	c.Assert(err, gc.IsNil)
}

// ping writes the writer's document of slot, stamped at, with alive and
// dead bitmaps, carrying fresh as the keys from index from on.
func (w oldWriter) ping(c *gc.C, slot int64, at time.Time, alive, dead bson.Binary, from int, fresh ...string) {
	_, err := w.pings.UpdateOne(context.Background(), bson.D{{Key: "_id", Value: schema.PingID(slot, w.id)}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "slot", Value: slot},
		{Key: "writer", Value: w.id},
		{Key: "period", Value: int64(clocksPeriod)},
		{Key: "at", Value: at.UnixNano()},
		{Key: "alive", Value: alive},
		{Key: "dead", Value: dead},
		{Key: "freshFrom", Value: from},
		{Key: "fresh", Value: oldEntries(w.model, fresh...)},
	}}}, options.UpdateOne().SetUpsert(true))
	c.Assert(err, gc.IsNil)
}

func (s *upgradeSuite) TestDocumentsThePreviousVersionWroteAreRead(c *gc.C) {
	clk := agenttest.NewClock()
	db := s.NewDB(c)
	pings, beings := db.Collection("presence.pings"), db.Collection("presence.beings")
	model := clocksModel.Id()
	slot := schema.Slot(clk.Now(), clocksPeriod)
	// A controller still on that version: machine-0 in its beings,
	// machine-1 in its pings' fresh keys, disconnected in this slot.
	running := oldWriter{id: "65f000000000000000000001", model: model, pings: pings}
	running.register(c, beings, slot-1, "machine-0")
	running.ping(c, slot-1, clk.Now(), oldBits(0, 1), oldBits(), 1, "machine-1")
	running.ping(c, slot, clk.Now(), oldBits(0), oldBits(1), 1, "machine-1")
	// A controller of that version that has just stopped for good.
	stopped := oldWriter{id: "65f000000000000000000002", model: model, pings: pings}
	stopped.register(c, beings, slot-1, "machine-2")
	stopped.ping(c, slot-1, clk.Now(), oldBits(0), oldBits(), 1)
	stopped.ping(c, slot, clk.Now(), oldBits(0), oldBits(), 1)

	r, err := presencereader.New(presencereader.Config{
		Base: s.NewDB(c).Collection("presence"), Clock: clk, Period: clocksPeriod, SyncInterval: clocksStep,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), r)
	dying := make(chan struct{})
	view, err := r.NewView(clocksModel, dying, func() error { return presencereader.ErrStopped })
	c.Assert(err, gc.IsNil)
	defer view.Close()
	alive := func(key string) bool {
		ok, err := view.Alive(key)
		c.Assert(err, gc.IsNil)
		return ok
	}
	c.Assert(r.Refresh(), gc.IsNil)
	c.Assert(alive("machine-0"), gc.Equals, true)
	c.Assert(alive("machine-1"), gc.Equals, false)
	c.Assert(alive("machine-2"), gc.Equals, true)

	// The running controller goes on writing a slot at a time, as that
	// version did; the stopped one's key dies within Period + sync of
	// the reader's start.
	var deadAt time.Duration
	for at := clocksStep; at <= 2*clocksPeriod; at += clocksStep {
		clk.Advance(clocksStep)
		if now := schema.Slot(clk.Now(), clocksPeriod); now > slot {
			slot = now
			running.ping(c, slot, clk.Now(), oldBits(0), oldBits(), 1, "machine-1")
		}
		c.Assert(r.Refresh(), gc.IsNil)
		c.Assert(alive("machine-0"), gc.Equals, true, gc.Commentf("at %v", at))
		c.Assert(alive("machine-1"), gc.Equals, false, gc.Commentf("at %v", at))
		if deadAt == 0 && !alive("machine-2") {
			deadAt = at
		}
	}
	c.Logf("the stopped controller's key read dead %v after the reader started", deadAt)
	c.Assert(deadAt > 0 && deadAt <= clocksPeriod+clocksStep, gc.Equals, true, gc.Commentf("dead at %v", deadAt))
}
