package presencereader

import (
	"slices"
	"strings"
	"time"

	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

// changesSuite checks how the reader reacts to change streams, from the
// inside: the embedded server has none, so the wake a stream would bring
// is sent by hand.
type changesSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&changesSuite{})

func (s *changesSuite) newReader(c *gc.C, loads chan<- LoadStats, logger Logger, wake <-chan struct{}) *Reader {
	r, err := New(Config{
		Base: s.DB.Collection("presence"), Clock: agenttest.NewClock(), SyncInterval: time.Hour, Logger: logger,
		OnLoad: func(stats LoadStats) { loads <- stats }, Wake: wake,
	})
	c.Assert(err, gc.IsNil)
	return r
}

func (s *changesSuite) TestAWakeLoadsWithoutWaitingForTheSyncInterval(c *gc.C) {
	loads := make(chan LoadStats, 10)
	r := s.newReader(c, loads, nil, nil)
	defer workertest.CleanKill(agenttest.C(c), r)
	<-loads
	r.wakes <- struct{}{}
	select {
	case stats := <-loads:
		c.Assert(stats.Err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("no load after a wake")
	}
}

func (s *changesSuite) TestAWakeFromABatcherInTheProcessLoadsWithoutWaitingForTheSyncInterval(c *gc.C) {
	loads := make(chan LoadStats, 10)
	wake := make(chan struct{}, 1)
	r := s.newReader(c, loads, nil, wake)
	defer workertest.CleanKill(agenttest.C(c), r)
	<-loads
	for i := 0; i < 2; i++ {
		wake <- struct{}{}
		select {
		case stats := <-loads:
			c.Assert(stats.Err, gc.IsNil)
		case <-time.After(agenttest.LongWait):
			c.Fatalf("no load after wake %d", i)
		}
	}
}

func (s *changesSuite) TestWithoutChangeStreamsTheReaderSaysSoAndPolls(c *gc.C) {
	if s.Server.External() {
		c.Skip("an external MongoDB may have change streams")
	}
	logger := &agenttest.Logger{}
	loads := make(chan LoadStats, 10)
	r := s.newReader(c, loads, logger, nil)
	defer workertest.CleanKill(agenttest.C(c), r)
	<-loads
	agenttest.WaitFor(c, agenttest.LongWait, "the reader says it has no change stream", func() bool {
		return slices.ContainsFunc(logger.Entries(), func(line string) bool {
			return strings.Contains(line, "no change stream")
		})
	})
	c.Assert(r.Refresh(), gc.IsNil)
}
