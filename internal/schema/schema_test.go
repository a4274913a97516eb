package schema_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
)

func TestPackage(t *testing.T) {
	gc.TestingT(t)
}

type schemaSuite struct{}

var _ = gc.Suite(&schemaSuite{})

func (*schemaSuite) TestSlotsAreHalfPeriodsCountedFromTheEpoch(c *gc.C) {
	t := time.Unix(90, 0)
	c.Assert(schema.Slot(t, 60*time.Second), gc.Equals, int64(3))
	c.Assert(schema.Slot(t.Add(-time.Nanosecond), 60*time.Second), gc.Equals, int64(2))
	c.Assert(schema.SlotStart(3, 60*time.Second).Equal(t), gc.Equals, true)
	c.Assert(schema.PingInterval(60*time.Second), gc.Equals, 15*time.Second)
}

func (*schemaSuite) TestSlotBeforeTheEpochRoundsDown(c *gc.C) {
	c.Assert(schema.Slot(time.Unix(-1, 0), 60*time.Second), gc.Equals, int64(-1))
}

func (*schemaSuite) TestBitsRoundTrip(c *gc.C) {
	words := []uint64{1, 0, 1 << 63, 0, 0}
	encoded := schema.EncodeBits(nil, words)
	c.Assert(encoded, gc.HasLen, 24)
	c.Assert(schema.DecodeBits(nil, encoded), gc.DeepEquals, words[:3])
	var set []int
	schema.ForEachBit(words, func(i int) { set = append(set, i) })
	c.Assert(set, gc.DeepEquals, []int{0, 191})
}

func (*schemaSuite) TestDecodePadsAShortWord(c *gc.C) {
	c.Assert(schema.DecodeBits(nil, []byte{1, 2}), gc.DeepEquals, []uint64{0x0201})
}

func (*schemaSuite) TestKeyValidation(c *gc.C) {
	c.Assert(schema.ValidateKey("machine-0"), gc.IsNil)
	for _, key := range []string{"", "\xff", string(make([]byte, schema.MaxKeyLength+1))} {
		c.Check(errors.Is(schema.ValidateKey(key), errors.NotValid), gc.Equals, true, gc.Commentf("%q", key))
	}
}

func (*schemaSuite) TestModelValidation(c *gc.C) {
	c.Assert(schema.ValidateModel(names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")), gc.IsNil)
	c.Assert(errors.Is(schema.ValidateModel(names.NewModelTag("nope")), errors.NotValid), gc.Equals, true)
}

func (*schemaSuite) TestEntriesRoundTripAsOneBinaryValue(c *gc.C) {
	in := schema.BeingsDoc{Writer: "w", Chunk: 3, Entries: schema.NewEntries(
		[]string{"m1", "m2", "m1", "m3"}, []string{"a", "", "ключ", "d"})}
	data, err := bson.Marshal(in)
	c.Assert(err, gc.IsNil)
	c.Assert(bson.Raw(data).Lookup(schema.FieldEntries).Type, gc.Equals, bson.TypeBinary)
	var out schema.BeingsDoc
	c.Assert(bson.Unmarshal(data, &out), gc.IsNil)
	c.Assert(out, gc.DeepEquals, in)
	c.Assert(out.Validate(), gc.IsNil)
}

func (*schemaSuite) TestEntriesWrittenAsArraysBeforeAreStillRead(c *gc.C) {
	data, err := bson.Marshal(bson.D{{Key: schema.FieldEntries, Value: bson.D{
		{Key: "models", Value: bson.A{"m"}}, {Key: "model", Value: bson.A{int32(0), int32(0)}}, {Key: "keys", Value: bson.A{"a", "b"}},
	}}})
	c.Assert(err, gc.IsNil)
	var out schema.BeingsDoc
	c.Assert(bson.Unmarshal(data, &out), gc.IsNil)
	c.Assert(out.Entries, gc.DeepEquals, schema.Entries{Models: []string{"m"}, Model: []int32{0, 0}, Keys: []string{"a", "b"}})
}

func (*schemaSuite) TestBadEncodedEntriesAreRejectedWithoutAllocatingWhatTheyClaim(c *gc.C) {
	for i, data := range [][]byte{
		{},                             // no format
		{2, 0, 0},                      // unknown format
		{1, 0},                         // no entry count
		{1, 0, 0xff, 0xff, 0xff, 0x7f}, // 268 million entries in 0 bytes
		{1, 0xff, 0xff, 0xff, 0x7f},    // as many models
		{1, 1, 5, 'm'},                 // a model cut short
		{1, 1, 1, 'm', 1, 0, 9, 'k'},   // a key cut short
		{1, 1, 1, 'm', 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 'k'}, // a reference beyond int32
		{1, 0, 0, 7}, // bytes after the entries
	} {
		doc, err := bson.Marshal(bson.D{{Key: schema.FieldEntries, Value: bson.Binary{Data: data}}})
		c.Assert(err, gc.IsNil)
		var out schema.BeingsDoc
		c.Check(bson.Unmarshal(doc, &out), gc.NotNil, gc.Commentf("case %d", i))
	}
	doc, err := bson.Marshal(bson.D{{Key: schema.FieldEntries, Value: "text"}})
	c.Assert(err, gc.IsNil)
	var out schema.BeingsDoc
	c.Assert(bson.Unmarshal(doc, &out), gc.ErrorMatches, `(?s).*entries of BSON type string not valid.*`)
}

func (*schemaSuite) TestEntriesWithAModelReferenceOutOfRangeDecodeButFailValidation(c *gc.C) {
	doc, err := bson.Marshal(bson.D{{Key: schema.FieldEntries, Value: bson.Binary{Data: []byte{1, 1, 1, 'm', 1, 4, 1, 'k'}}}})
	c.Assert(err, gc.IsNil)
	var out schema.BeingsDoc
	c.Assert(bson.Unmarshal(doc, &out), gc.IsNil)
	c.Assert(out.Entries.Validate(schema.ChunkSize), gc.ErrorMatches, `model reference 4 of 1 models not valid`)
}

func (*schemaSuite) TestEntriesClaimingMoreThanAWriterCanHaveAreRejected(c *gc.C) {
	// 2 MB of zeros would hold a million one-byte models or entries.
	data := append([]byte{1}, binary.AppendUvarint(nil, schema.MaxIndex+1)...)
	data = append(data, make([]byte, 2*(schema.MaxIndex+1))...)
	doc, err := bson.Marshal(bson.D{{Key: schema.FieldEntries, Value: bson.Binary{Data: data}}})
	c.Assert(err, gc.IsNil)
	var out schema.BeingsDoc
	c.Assert(bson.Unmarshal(doc, &out), gc.ErrorMatches, `(?s).*1048577 items in 2097154 bytes not valid.*`)
}

func (*schemaSuite) TestObservedTimeMovesOnWithTheClockButNeverBack(c *gc.C) {
	var o schema.Observed
	start := time.Unix(1000, 0)
	c.Assert(o.At(start).Equal(start), gc.Equals, true)
	c.Assert(o.At(start.Add(time.Second)), gc.Equals, start.Add(time.Second))
	// Stepped back an hour: it stands, then moves on from there.
	c.Assert(o.At(start.Add(-time.Hour)), gc.Equals, start.Add(time.Second))
	c.Assert(o.At(start.Add(-time.Hour+2*time.Second)), gc.Equals, start.Add(3*time.Second))
}

func (*schemaSuite) TestNoticeChangesRoundTripAsOneBinaryValue(c *gc.C) {
	in := schema.NoticeDoc{Writer: "w", Slot: 7, Prompt: true, Changes: schema.NoticeChanges{
		{Model: "2a4b3c5d-0000-4000-8000-00000000000a", Key: "machine-0", Up: true},
		{Model: "2a4b3c5d-0000-4000-8000-00000000000b", Key: "unit-ü/1"},
	}}
	data, err := bson.Marshal(in)
	c.Assert(err, gc.IsNil)
	c.Assert(bson.Raw(data).Lookup("changes").Type, gc.Equals, bson.TypeBinary)
	var out schema.NoticeDoc
	c.Assert(bson.Unmarshal(data, &out), gc.IsNil)
	c.Assert(out, gc.DeepEquals, in)
	c.Assert(out.ValidateChanges(), gc.IsNil)

	// None is no field at all, and reads as none.
	data, err = bson.Marshal(schema.NoticeDoc{Writer: "w", Slot: 7})
	c.Assert(err, gc.IsNil)
	_, err = bson.Raw(data).LookupErr("changes")
	c.Assert(err, gc.NotNil)
}

func (*schemaSuite) TestNoticeChangesThatDoNotReadAsAWritersAreRefused(c *gc.C) {
	encode := func(payload []byte) []byte {
		data, err := bson.Marshal(bson.D{{Key: "writer", Value: "w"}, {Key: "changes", Value: bson.Binary{Data: payload}}})
		c.Assert(err, gc.IsNil)
		return data
	}
	for _, bad := range []struct {
		payload []byte
		err     string
	}{
		// A count no value of this size can hold allocates nothing.
		{binary.AppendUvarint([]byte{1}, 1<<40), "1099511627776 items in 0 bytes not valid"},
		{[]byte{2, 0}, "notice changes format 2 not valid"},
		{[]byte{1, 1, 7, 0, 0}, "change 0: flag 7 not valid"},
		{[]byte{1, 0, 9}, "1 bytes after the notice changes not valid"},
	} {
		var doc schema.NoticeDoc
		c.Check(bson.Unmarshal(encode(bad.payload), &doc), gc.ErrorMatches, ".*"+bad.err, gc.Commentf("%v", bad.payload))
	}
	data, err := bson.Marshal(bson.D{{Key: "writer", Value: "w"}, {Key: "changes", Value: bson.A{"not", "binary"}}})
	c.Assert(err, gc.IsNil)
	var doc schema.NoticeDoc
	c.Assert(bson.Unmarshal(data, &doc), gc.ErrorMatches, ".*notice changes of BSON type array not valid")
}
