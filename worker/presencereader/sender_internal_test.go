package presencereader

import (
	gc "gopkg.in/check.v1"
)

// senderSuite checks a Watch channel's sender from the inside.
type senderSuite struct{}

var _ = gc.Suite(&senderSuite{})

func (s *senderSuite) TestAnUnreadChannelHoldsOnePendingChangePerKeyHoweverOftenItFlaps(c *gc.C) {
	ch := make(chan Change)
	snd := newSender(ch, nil)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		snd.run(quit)
	}()
	defer func() { close(quit); <-done }()
	// Two keys delivered once each; then the channel is not read any
	// more, and a's next change waits on it.
	for _, key := range []string{"a", "b"} {
		snd.enqueue(key, false, 1, true)
		c.Assert(<-ch, gc.Equals, Change{Key: key, Alive: false})
	}
	snd.enqueue("a", true, 2, false)
	const flaps = 100000
	for i := range flaps {
		snd.enqueue("b", i%2 == 0, uint64(3+i), false)
	}
	snd.mu.Lock()
	pending, order := len(snd.pending), len(snd.order)
	snd.mu.Unlock()
	c.Check(pending, gc.Equals, 1)
	c.Assert(order <= 2, gc.Equals, true, gc.Commentf("the order holds %d entries after %d flaps", order, flaps))
	// What waits is delivered once the channel is read: a's latest
	// state, and nothing for b, which is back where it was.
	c.Assert(<-ch, gc.Equals, Change{Key: "a", Alive: true})
	snd.enqueue("b", true, flaps+3, false)
	c.Assert(<-ch, gc.Equals, Change{Key: "b", Alive: true})
}
