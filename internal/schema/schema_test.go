package schema_test

import (
	"testing"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
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
