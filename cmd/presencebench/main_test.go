package main

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/soakstat"
)

func TestPackage(t *testing.T) {
	gc.TestingT(t)
}

type presencebenchSuite struct{}

var _ = gc.Suite(&presencebenchSuite{})

func (*presencebenchSuite) TestQuickRunPrintsEverySection(c *gc.C) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"--quick", "--events", "5", "--sizes", "50"}, &stdout, &stderr)
	c.Assert(code, gc.Equals, 0, gc.Commentf("%s", stderr.String()))
	out := stdout.String()
	for _, section := range defaultSections {
		c.Check(strings.Contains(out, "\n"+section+" "), gc.Equals, true, gc.Commentf("no %s rows in:\n%s", section, out))
	}
	c.Check(out, gc.Matches, `(?s).*50 pingers, 1 model\(s\): write commands per flush +1\.0 .*`)
}

func (*presencebenchSuite) TestBadFlagsExitWithTwo(c *gc.C) {
	for _, args := range [][]string{{"--sizes", "x"}, {"--events", "0"}, {"--only", "nothing"}, {"stray"}, {"--duration", "0s"}} {
		var stdout, stderr bytes.Buffer
		c.Check(run(args, &stdout, &stderr), gc.Equals, 2, gc.Commentf("%v", args))
		c.Check(stderr.String(), gc.Not(gc.Equals), "")
	}
}

// parse parses args as the command's flags, its usage text discarded.
func parse(args ...string) (options, error) {
	return parseFlags(args, io.Discard)
}

func (*presencebenchSuite) TestHelpExitsWithZero(c *gc.C) {
	var stdout, stderr bytes.Buffer
	c.Check(run([]string{"-h"}, &stdout, &stderr), gc.Equals, 0)
	c.Check(stderr.String(), gc.Matches, `(?s).*-only string.*`)
}

func (*presencebenchSuite) TestDefaultsRunEverySectionButTheSoakAtFullSize(c *gc.C) {
	o, err := parse()
	c.Assert(err, gc.IsNil)
	c.Check(o.sizes, gc.DeepEquals, []int{1000, 10000, 100000})
	c.Check(o.events, gc.Equals, 200)
	c.Check(o.sections, gc.HasLen, len(allSections)-1)
	for _, s := range defaultSections {
		c.Check(o.sections[s], gc.Equals, true, gc.Commentf("%s", s))
	}
	c.Check(o.sections["soak"], gc.Equals, false)
}

func (*presencebenchSuite) TestTheSoakRunsWhenAskedForForTenMinutesUnlessTold(c *gc.C) {
	o, err := parse("--only", "soak")
	c.Assert(err, gc.IsNil)
	c.Check(o.sections, gc.DeepEquals, map[string]bool{"soak": true})
	c.Check(o.duration, gc.Equals, 10*time.Minute)
	o, err = parse("--only", "soak", "--duration", "2m")
	c.Assert(err, gc.IsNil)
	c.Check(o.duration, gc.Equals, 2*time.Minute)
}

func (*presencebenchSuite) TestAShortSoakPrintsEveryFigure(c *gc.C) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"--only", "soak", "--duration", "10s"}, &stdout, &stderr)
	c.Assert(code, gc.Equals, 0, gc.Commentf("%s", stderr.String()))
	for _, f := range soakstat.Figures {
		c.Check(stdout.String(), gc.Matches, `(?s).*\nsoak +`+regexp.QuoteMeta(f.Name)+`, peak of windows 2-5 .*`)
	}
	c.Check(stderr.String(), gc.Matches, `(?s).*soak: window 5 peak: own heap \d+ B.*`)
}

func (*presencebenchSuite) TestSizesMustBePositiveNumbers(c *gc.C) {
	for _, sizes := range []string{"x", "0", "-5", "10,,20", "1.5"} {
		_, err := parse("--sizes", sizes)
		c.Check(err, gc.ErrorMatches, `--sizes: ".*" is not a positive number`, gc.Commentf("%q", sizes))
	}
	o, err := parse("--sizes", " 10, 20")
	c.Assert(err, gc.IsNil)
	c.Check(o.sizes, gc.DeepEquals, []int{10, 20})
}

func (*presencebenchSuite) TestEventsMustBePositive(c *gc.C) {
	for _, events := range []string{"0", "-1"} {
		_, err := parse("--events", events)
		c.Check(err, gc.ErrorMatches, `--events must be positive`)
	}
}

func (*presencebenchSuite) TestOnlyRejectsAnUnknownSectionNamingTheKnownOnes(c *gc.C) {
	_, err := parse("--only", "writes,nothing")
	c.Check(err, gc.ErrorMatches, `--only: unknown section "nothing" \(have writes, controller, .*, leases, soak\)`)
}

func (*presencebenchSuite) TestOnlySelectsJustTheNamedSections(c *gc.C) {
	o, err := parse("--only", "leases, writes")
	c.Assert(err, gc.IsNil)
	c.Check(o.sections, gc.DeepEquals, map[string]bool{"writes": true, "leases": true})
}

func (*presencebenchSuite) TestStrayArgumentsAreRejected(c *gc.C) {
	_, err := parse("--quick", "stray")
	c.Check(err, gc.ErrorMatches, `unexpected arguments \["stray"\]`)
}

func (*presencebenchSuite) TestQuickShrinksTheSizesAndEventsNotGiven(c *gc.C) {
	o, err := parse("--quick")
	c.Assert(err, gc.IsNil)
	c.Check(o.sizes, gc.DeepEquals, []int{100, 1000})
	c.Check(o.events, gc.Equals, 20)
}

func (*presencebenchSuite) TestQuickKeepsTheSizesAndEventsGiven(c *gc.C) {
	o, err := parse("--quick", "--sizes", "1000,10000,100000", "--events", "200")
	c.Assert(err, gc.IsNil)
	c.Check(o.sizes, gc.DeepEquals, []int{1000, 10000, 100000})
	c.Check(o.events, gc.Equals, 200)
}
