package agenttest

import (
	"context"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/internal/schema"
)

// Reader is what Settle needs of a presence reader
// (*presencereader.Reader).
type Reader interface {
	Report() map[string]any
	Refresh() error
}

// Batcher is what Settle needs of a ping batcher
// (*pingbatcher.PingBatcher).
type Batcher interface {
	Sync() error
}

// Settle flushes batchers, and then returns once no load of any of
// readers is in flight or asked for: for a test that moves a test clock
// between loads it starts itself, with push on, before it moves the
// clock. Every batcher that may flush must be among batchers (a prompt
// flush appends a notice on the batcher's own time). A reader
// that tails the notices of base loads when one comes, on the tailing
// goroutine's time: a load in flight while the test clock moves on takes
// that long by the reader's clock, which the reader rightly takes for a
// stall of the database (it then holds late writers' keys, and forgets
// no writer, for a while). So each reader is waited for, up to LongWait,
// until it reports the newest notice taken (it does so from the load
// after it) or that it is not tailing, and then loads twice: a load
// asked for while a woken one is in flight follows it, so the second
// ends after every load a notice asked for.
func Settle(c *gc.C, base *mongo.Collection, batchers []Batcher, readers []Reader) {
	for _, b := range batchers {
		c.Assert(b.Sync(), gc.IsNil)
	}
	newest := NewestNotice(c, base)
	for _, r := range readers {
		c.Assert(Retry(LongWait, func() error {
			report := r.Report()
			if newest == "" || report["last-notice"] == newest || report["push"] != "notices" {
				return nil
			}
			return errors.Errorf("the reader took notice %v, not the newest, %s (push: %v)", report["last-notice"], newest, report["push"])
		}), gc.IsNil)
		c.Assert(r.Refresh(), gc.IsNil)
		c.Assert(r.Refresh(), gc.IsNil)
	}
}

// NewestNotice returns the _id, in hex, of the newest notice of the
// notices collection derived from base (see schema.Notices), or "" if
// there is none: what a reader's Report names as its last-notice once
// it took it. Newest is the last in the collection's natural order,
// which a tailing cursor follows: the order in which the server took the
// inserts, not the order of their _ids, which two batchers generate
// apart (one may insert a notice with the greater _id first).
func NewestNotice(c *gc.C, base *mongo.Collection) string {
	ctx, cancel := context.WithTimeout(context.Background(), LongWait)
	defer cancel()
	ids, err := schema.NoticeIDs(ctx, base)
	c.Assert(err, gc.IsNil)
	if len(ids) == 0 {
		return ""
	}
	newest, ok := ids[len(ids)-1].ObjectIDOK()
	c.Assert(ok, gc.Equals, true, gc.Commentf("a notice's _id is not an ObjectID: %v", ids[len(ids)-1]))
	return newest.Hex()
}
