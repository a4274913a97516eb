package presencereader_test

import (
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/worker/presencereader"
)

type positionSuite struct{}

var _ = gc.Suite(&positionSuite{})

func (s *positionSuite) TestAPositionReadsBackFromItsString(c *gc.C) {
	for _, p := range []presencereader.Position{
		{},
		{View: "8e3c4082a9ad53b7", Seq: 0},
		{View: "8e3c4082a9ad53b7", Seq: 42},
		{View: "a", Seq: 18446744073709551615},
	} {
		got, err := presencereader.ParsePosition(p.String())
		c.Assert(err, gc.IsNil)
		c.Assert(got, gc.Equals, p)
	}
	c.Assert(presencereader.Position{}.String(), gc.Equals, "")
	c.Assert(presencereader.Position{View: "ab12", Seq: 7}.String(), gc.Equals, "ab12.7")
}

func (s *positionSuite) TestABadPositionIsNotValid(c *gc.C) {
	for _, bad := range []string{
		".", "ab12", "ab12.", ".7", "AB12.7", "ab-12.7", "ab12.-7", "ab12.+7", "ab12.7.1", "ab12. 7",
		"ab12.18446744073709551616", "ab12.0x7", "0123456789012345678901234567890123456789012345678901234567890123456789.1",
	} {
		_, err := presencereader.ParsePosition(bad)
		c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%q: %v", bad, err))
	}
}
