package watcher_test

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
)

// controllersSuite runs several controllers, each with its own client,
// writing one database at once.
type controllersSuite struct {
	fixture
}

var _ = gc.Suite(&controllersSuite{})

func (s *controllersSuite) TestConcurrentControllersLoseNoPingsAndShareNoIdentity(c *gc.C) {
	const controllers, perController = 4, 100
	var wg sync.WaitGroup
	for ctrl := 0; ctrl < controllers; ctrl++ {
		base := s.NewDB(c).Collection("presence")
		b := s.newBatcher(c, base)
		for i := 0; i < perController; i++ {
			p := s.newPinger(c, b, base, modelA, fmt.Sprintf("c%d-%d", ctrl, i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Check(p.Start(), gc.IsNil)
				c.Check(b.Sync(), gc.IsNil)
			}()
		}
	}
	wg.Wait()

	w := s.newWatcher(c, s.base, modelA)
	c.Assert(w.Refresh(), gc.IsNil)
	for ctrl := 0; ctrl < controllers; ctrl++ {
		for i := 0; i < perController; i++ {
			assertAlive(c, w, fmt.Sprintf("c%d-%d", ctrl, i), true)
		}
	}

	// Every (writer, index) names one key, every key has exactly one
	// identity, and each controller is a writer of its own.
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.LongWait)
	defer cancel()
	// Keys registered since a writer's last beings write travel in its
	// ping documents; together they map every identity.
	identities := make(map[string]string) // "writer/index" -> key
	cur, err := schema.Beings(s.base).Find(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	var beings []schema.BeingsDoc
	c.Assert(cur.All(ctx, &beings), gc.IsNil)
	for _, doc := range beings {
		for i, key := range doc.Entries.Keys {
			identities[fmt.Sprintf("%s/%d", doc.Writer, doc.Chunk*schema.ChunkSize+i)] = key
		}
	}
	cur, err = schema.Pings(s.base).Find(ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	var pings []schema.PingDoc
	c.Assert(cur.All(ctx, &pings), gc.IsNil)
	for _, doc := range pings {
		for i, key := range doc.Fresh.Keys {
			identities[fmt.Sprintf("%s/%d", doc.Writer, doc.FreshFrom+i)] = key
		}
	}
	seen := make(map[string]string)
	writers := make(map[string]bool)
	for identity, key := range identities {
		writers[strings.Split(identity, "/")[0]] = true
		prev, dup := seen[key]
		c.Check(dup, gc.Equals, false, gc.Commentf("%q has %s and %s", key, prev, identity))
		seen[key] = identity
	}
	c.Assert(seen, gc.HasLen, controllers*perController)
	c.Assert(writers, gc.HasLen, controllers)
}
