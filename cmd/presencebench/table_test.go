package main

import (
	"bytes"
	"time"

	gc "gopkg.in/check.v1"
)

type tableSuite struct{}

var _ = gc.Suite(&tableSuite{})

func (*tableSuite) TestPrintAlignsEveryColumnTwoSpacesPastItsWidestCell(c *gc.C) {
	t := &table{}
	t.add(row{section: "writes", what: "a", measured: "1", baseline: "b", ratio: "2x fewer", target: "<= 2", verdict: "yes"})
	t.add(row{section: "subscribers", what: "a longer figure", measured: "22", baseline: "a baseline wider than its header", ratio: "10x fewer", target: "<= 20", verdict: "NO"})
	var out bytes.Buffer
	t.print(&out)
	c.Check(out.String(), gc.Equals, ""+
		"section      figure           measured  baseline (same run)               ratio      target  met\n"+
		"-------      ------           --------  -------------------               -----      ------  ---\n"+
		"writes       a                1         b                                 2x fewer   <= 2    yes\n"+
		"subscribers  a longer figure  22        a baseline wider than its header  10x fewer  <= 20   NO\n")
}

func (*tableSuite) TestPrintShowsEmptyCellsAsDashes(c *gc.C) {
	t := &table{}
	t.add(row{section: "leases", what: "claims", measured: "5/s"})
	var out bytes.Buffer
	t.print(&out)
	c.Check(out.String(), gc.Matches, `(?s).*\nleases   claims  5/s       -                    -      -       -\n`)
}

func (*tableSuite) TestPrintWithNoRowsPrintsTheHeader(c *gc.C) {
	var out bytes.Buffer
	(&table{}).print(&out)
	c.Check(out.String(), gc.Equals, ""+
		"section  figure  measured  baseline (same run)  ratio  target  met\n"+
		"-------  ------  --------  -------------------  -----  ------  ---\n")
}

func (*tableSuite) TestRatioSaysHowManyTimesFewerToTheWhole(c *gc.C) {
	c.Check(ratio(120, 10), gc.Equals, "12x fewer")
	c.Check(ratio(29, 10), gc.Equals, "3x fewer")
	c.Check(ratio(5, 10), gc.Equals, "0x fewer")
}

func (*tableSuite) TestRatioOverNothingMeasuredIsADash(c *gc.C) {
	c.Check(ratio(5, 0), gc.Equals, "-")
}

func (*tableSuite) TestMsRoundsToTheMillisecond(c *gc.C) {
	c.Check(ms(1499*time.Microsecond), gc.Equals, "1ms")
	c.Check(ms(1500*time.Microsecond), gc.Equals, "2ms")
	c.Check(ms(2500*time.Millisecond+400*time.Microsecond), gc.Equals, "2.5s")
	c.Check(ms(0), gc.Equals, "0s")
}

func (*tableSuite) TestVerdictIsYesOrAShoutedNo(c *gc.C) {
	c.Check(verdict(true), gc.Equals, "yes")
	c.Check(verdict(false), gc.Equals, "NO")
}
