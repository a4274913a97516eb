package ratelog_test

import (
	"fmt"
	"testing"
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/ratelog"
)

func TestPackage(t *testing.T) {
	gc.TestingT(t)
}

type limiterSuite struct{}

var _ = gc.Suite(&limiterSuite{})

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *limiterSuite) TestOneLinePerCauseAndIntervalWithTheRestCounted(c *gc.C) {
	l := ratelog.New(time.Minute, 8)
	written := 0
	for i := range 600 { // ten minutes, one line a second
		if ok, held := l.Allow("cause", epoch.Add(time.Duration(i)*time.Second)); ok {
			written++
			if i > 0 {
				c.Check(held, gc.Equals, 59)
			}
		}
	}
	c.Assert(written, gc.Equals, 10)
	c.Assert(l.Held(), gc.Equals, 590)
}

func (s *limiterSuite) TestCausesAreBoundedWhateverTheirNumber(c *gc.C) {
	l := ratelog.New(time.Minute, 8)
	written := 0
	for i := range 10000 {
		if ok, _ := l.Allow(fmt.Sprintf("cause %d", i), epoch); ok {
			written++
		}
	}
	c.Assert(l.Causes() <= 8, gc.Equals, true)
	c.Assert(written, gc.Equals, 8)
	// Causes that wrote an interval ago make room for new ones.
	ok, _ := l.Allow("new", epoch.Add(time.Minute))
	c.Assert(ok, gc.Equals, true)
}
