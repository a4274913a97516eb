package main

import (
	"bytes"
	"strings"
	"testing"

	gc "gopkg.in/check.v1"
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
	for _, section := range allSections {
		c.Check(strings.Contains(out, "\n"+section+" "), gc.Equals, true, gc.Commentf("no %s rows in:\n%s", section, out))
	}
	c.Check(out, gc.Matches, `(?s).*50 pingers, 1 model\(s\): write commands per flush +1\.0 .*`)
}

func (*presencebenchSuite) TestBadFlagsExitWithTwo(c *gc.C) {
	for _, args := range [][]string{{"--sizes", "x"}, {"--events", "0"}, {"--only", "nothing"}, {"stray"}} {
		var stdout, stderr bytes.Buffer
		c.Check(run(args, &stdout, &stderr), gc.Equals, 2, gc.Commentf("%v", args))
		c.Check(stderr.String(), gc.Not(gc.Equals), "")
	}
}
