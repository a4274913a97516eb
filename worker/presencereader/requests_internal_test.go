package presencereader

import (
	"context"
	"errors"
	"time"

	"github.com/juju/names/v5"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

// requestsSuite checks how requests meet a reader that died, from the
// inside: only the inside can make it die with an error of its own.
type requestsSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&requestsSuite{})

func (s *requestsSuite) TestARequestAfterTheReaderDiedReturnsItsDeathErrorPromptly(c *gc.C) {
	r, err := New(Config{Base: s.DB.Collection("presence"), Clock: agenttest.NewClock(), SyncInterval: time.Hour})
	c.Assert(err, gc.IsNil)
	model := names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000b")
	alive := make(chan struct{})
	v, err := r.NewView(model, alive, func() error { return ErrStopped })
	c.Assert(err, gc.IsNil)
	sub := v.Subscribe("k")
	boom := errors.New("boom")
	r.catacomb.Kill(boom)
	c.Assert(r.Wait(), gc.Equals, boom)

	ch := make(chan Change, 1)
	// Each request kind, with the death error it must return, or none
	// where the method returns nothing.
	for _, t := range []struct {
		about string
		call  func() error
		err   error
	}{
		{"attach", func() error { _, err := r.NewView(model, alive, func() error { return ErrStopped }); return err }, boom},
		{"sync", r.Refresh, boom},
		{"sync for a view", v.Sync, boom},
		{"start sync", func() error { v.StartSync(); return nil }, nil},
		{"watch", func() error { return v.Watch("k", ch) }, boom},
		{"unwatch", func() error { v.Unwatch("k", ch); return nil }, nil},
		{"alive", func() error { _, err := v.Alive("k"); return err }, boom},
		{"snapshot", func() error { _, err := sub.Next(context.Background()); return err }, boom},
		{"unsubscribe", func() error { sub.Close(); return nil }, nil},
		{"subscribe", func() error { _, err := v.Subscribe("k").Next(context.Background()); return err }, boom},
		{"model stats", func() error { return errors.New(v.Report()["error"].(string)) }, boom},
		{"detach", func() error { v.Close(); return nil }, nil},
	} {
		done := make(chan error, 1)
		go func() { done <- t.call() }()
		select {
		case err := <-done:
			if t.err == nil {
				c.Check(err, gc.IsNil, gc.Commentf("%s", t.about))
			} else {
				c.Check(err, gc.ErrorMatches, t.err.Error(), gc.Commentf("%s", t.about))
			}
		case <-time.After(agenttest.LongWait):
			c.Fatalf("%s: no answer from a dead reader", t.about)
		}
	}
}
