package lease_test

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
)

// limit is the first term or fence number the client never writes.
const limit = int64(1) << 62

// keyOf returns the key of the lease called name.
func keyOf(name string) lease.Key {
	k := key
	k.Lease = name
	return k
}

// termID returns the _id of k's term number n, as the client writes it.
func termID(k lease.Key, n any) string {
	return fmt.Sprintf("%s#%s#%s#%v", k.Namespace, k.Model, k.Lease, n)
}

// insertTerm inserts, as another client would, a well-formed term of k
// numbered n with fields changed by extra (a field set to nil is left
// out).
func (s *clientSuite) insertTerm(c *gc.C, k lease.Key, n int64, holder string, fence int64, extra ...bson.E) {
	fields := map[string]any{
		"ns": k.Namespace, "model": k.Model, "lease": k.Lease, "term": n,
		"holder": holder, "expiry": s.clock.Now().Add(time.Minute).UnixNano(), "fence": fence, "pins": bson.A{},
	}
	for _, e := range extra {
		fields[e.Key] = e.Value
	}
	doc := bson.D{{Key: "_id", Value: termID(k, n)}}
	for _, name := range []string{"ns", "model", "lease", "term", "holder", "expiry", "fence", "pins"} {
		if v := fields[name]; v != nil {
			doc = append(doc, bson.E{Key: name, Value: v})
		}
	}
	_, err := s.coll.InsertOne(s.ctx, doc)
	c.Assert(err, gc.IsNil)
}

// latest reads k's latest term.
func (s *clientSuite) latest(c *gc.C, k lease.Key) lease.Info {
	infos, err := s.client.ReadMany(s.ctx, []lease.Key{k})
	c.Assert(err, gc.IsNil)
	return infos[k]
}

// releaseAndReclaim changes k's holder and returns the new holder's term:
// a/0 claims term 1 (fence 1) and releases it (term 2), b/0 claims term 3
// (fence 2) for a minute, and a prune, when asked for, leaves term 3
// alone.
func (s *clientSuite) releaseAndReclaim(c *gc.C, k lease.Key, prune bool) lease.Info {
	_, err := s.client.Claim(s.ctx, k, lease.Request{Holder: "a/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	c.Assert(s.client.Release(s.ctx, k, "a/0"), gc.IsNil)
	b, err := s.client.Claim(s.ctx, k, lease.Request{Holder: "b/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	c.Assert(b.Term, gc.Equals, int64(3))
	c.Assert(b.Fence, gc.Equals, int64(2))
	if prune {
		_, err = s.client.Prune(s.ctx, k.Namespace, k.Model)
		c.Assert(err, gc.IsNil)
	}
	return b
}

// claimAfter checks that c's claim of k is refused while b's term runs
// and granted, above every term and fence of b, once it has run out.
func (s *clientSuite) claimAfter(c *gc.C, k lease.Key, b lease.Info) {
	got, err := s.client.Claim(s.ctx, k, lease.Request{Holder: "c/0", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrHeld), gc.Equals, true,
		gc.Commentf("%s: granted term %d, fence %d while b/0 holds fence %d: %v", k.Lease, got.Term, got.Fence, b.Fence, err))
	s.clock.Advance(time.Minute + skew)
	got, err = s.client.Claim(s.ctx, k, lease.Request{Holder: "c/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil, gc.Commentf("%s", k.Lease))
	c.Assert(got.Term > b.Term, gc.Equals, true, gc.Commentf("%s: term %d after %d", k.Lease, got.Term, b.Term))
	c.Assert(got.Fence > b.Fence, gc.Equals, true, gc.Commentf("%s: fence %d after %d", k.Lease, got.Fence, b.Fence))
	c.Assert(s.latest(c, k).HeldBy("c/0", s.clock.Now()), gc.Equals, true)
}

func (s *clientSuite) TestAClaimAtTheEdgeOfTheNumbersStaysCheckableOrIsRefusedWritingNothing(c *gc.C) {
	for _, t := range []struct {
		name        string
		term, fence int64
	}{
		{"lastterm", limit - 1, 5},
		{"nexttolastterm", limit - 2, 5},
		{"thirdtolastterm", limit - 3, 5},
		{"lastfence", 5, limit - 1},
		{"nexttolastfence", 5, limit - 2},
		{"thirdtolastfence", 5, limit - 3},
	} {
		k := keyOf(t.name)
		s.insertTerm(c, k, t.term, "", t.fence)
		for _, holder := range []string{"x/0", "x/0", "y/0"} {
			before := s.count(c)
			got, err := s.client.Claim(s.ctx, k, lease.Request{Holder: holder, Duration: time.Minute})
			if err != nil {
				c.Check(s.count(c), gc.Equals, before, gc.Commentf("%s: refused (%v) but wrote", t.name, err))
				c.Check(errors.Is(err, lease.ErrHeld) || errors.Is(err, lease.ErrCorrupt), gc.Equals, true,
					gc.Commentf("%s: %v", t.name, err))
				continue
			}
			info := s.latest(c, k)
			c.Check(info.HeldBy(holder, s.clock.Now()), gc.Equals, true,
				gc.Commentf("%s: granted term %d, fence %d, then read as %+v", t.name, got.Term, got.Fence, info))
		}
	}
	// A pin at the edge too.
	k := keyOf("pinnedlast")
	s.insertTerm(c, k, limit-2, "x/0", 3)
	before := s.count(c)
	if err := s.client.Pin(s.ctx, k, "upgrade"); err != nil {
		c.Check(s.count(c), gc.Equals, before)
	} else {
		c.Check(s.latest(c, k).HeldBy("x/0", s.clock.Now().Add(time.Hour)), gc.Equals, true)
	}
}

func (s *clientSuite) TestPinsSurviveEveryChangeOfHolder(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	c.Assert(s.client.Pin(s.ctx, key, "upgrade"), gc.IsNil)
	c.Assert(s.client.Release(s.ctx, key, "mysql/0"), gc.IsNil)
	info := s.claim(c, "mysql/1", time.Minute)
	c.Assert(info.Pins, gc.DeepEquals, []string{"upgrade"})
	s.clock.Advance(time.Hour)
	c.Assert(errors.Is(s.client.Expire(s.ctx, key), lease.ErrHeld), gc.Equals, true)
	c.Assert(s.latest(c, key).HeldBy("mysql/1", s.clock.Now()), gc.Equals, true)
	c.Assert(s.client.Unpin(s.ctx, key, "upgrade"), gc.IsNil)
	c.Assert(s.client.Expire(s.ctx, key), gc.IsNil)
}

func (s *clientSuite) TestALatestTermWithABadKeyFieldStillCountsForTheLeaseItsIdNames(c *gc.C) {
	for _, t := range []struct {
		name   string
		update bson.D
	}{
		{"nolease", bson.D{{Key: "$unset", Value: bson.D{{Key: "lease", Value: ""}}}}},
		{"nons", bson.D{{Key: "$unset", Value: bson.D{{Key: "ns", Value: ""}}}}},
		{"intmodel", bson.D{{Key: "$set", Value: bson.D{{Key: "model", Value: 7}}}}},
	} {
		k := keyOf(t.name)
		b := s.releaseAndReclaim(c, k, true)
		_, err := s.coll.UpdateOne(s.ctx, bson.D{{Key: "_id", Value: termID(k, 3)}}, t.update)
		c.Assert(err, gc.IsNil)
		s.claimAfter(c, k, b)
	}
}

func (s *clientSuite) TestALatestTermWithoutItsTermFieldIsStillTheLatest(c *gc.C) {
	b := s.releaseAndReclaim(c, key, false)
	_, err := s.coll.UpdateOne(s.ctx, bson.D{{Key: "_id", Value: termID(key, 3)}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "term", Value: ""}}}})
	c.Assert(err, gc.IsNil)
	_, err = s.client.Prune(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	s.claimAfter(c, key, b)
}

func (s *clientSuite) TestAForeignTermCostsAtMostOneClaimAndNeverRestartsTheChain(c *gc.C) {
	for _, t := range []struct {
		name string
		term any
	}{
		{"stringterm", "one"},
		{"maxterm", int64(math.MaxInt64)},
	} {
		k := keyOf(t.name)
		// A chain that has come to term and fence 1,000.
		s.insertTerm(c, k, 1000, "", 1000)
		// Another client's term above it.
		s.insertTerm(c, k, 1001, "", 1000, bson.E{Key: "term", Value: t.term})
		var granted []lease.Info
		failed := 0
		for i := 0; i < 3; i++ {
			holder := fmt.Sprintf("u/%d", i)
			if got, err := s.client.Claim(s.ctx, k, lease.Request{Holder: holder, Duration: time.Minute}); err == nil {
				granted = append(granted, got)
				c.Assert(s.client.Release(s.ctx, k, holder), gc.IsNil)
			} else {
				failed++
			}
			_, err := s.client.Prune(s.ctx, k.Namespace, k.Model)
			c.Assert(err, gc.IsNil)
			if i == 0 {
				_, err := s.coll.DeleteOne(s.ctx, bson.D{{Key: "_id", Value: termID(k, 1001)}})
				c.Assert(err, gc.IsNil)
			}
		}
		c.Check(failed <= 1, gc.Equals, true, gc.Commentf("%s: %d claims failed", t.name, failed))
		for _, g := range granted {
			c.Check(g.Term > 1001 && g.Fence > 1000, gc.Equals, true,
				gc.Commentf("%s: granted term %d, fence %d below the chain's 1001/1000", t.name, g.Term, g.Fence))
		}
	}
}

func (s *clientSuite) TestTheHolderDoesNotDependOnTheOrderTheServerReturnsTerms(c *gc.C) {
	foreign := func(k lease.Key) {
		_, err := s.coll.InsertOne(s.ctx, bson.D{
			{Key: "_id", Value: "foreign " + k.Lease}, {Key: "ns", Value: k.Namespace}, {Key: "model", Value: k.Model},
			{Key: "lease", Value: k.Lease}, {Key: "term", Value: int64(1)}, {Key: "holder", Value: "evil/0"},
			{Key: "expiry", Value: s.clock.Now().Add(time.Minute).UnixNano()}, {Key: "fence", Value: int64(1)},
		})
		c.Assert(err, gc.IsNil)
	}
	first, second := keyOf("realfirst"), keyOf("foreignfirst")
	s.insertTerm(c, first, 1, "good/0", 1)
	foreign(first)
	foreign(second)
	s.insertTerm(c, second, 1, "good/0", 1)
	for _, k := range []lease.Key{first, second} {
		c.Check(s.latest(c, k).Holder, gc.Equals, "good/0", gc.Commentf("%s", k.Lease))
	}
}

func (s *clientSuite) TestAFrozenLeaseIsLoggedOnceAtErrorAndAResetSupersedesIt(c *gc.C) {
	logger := &agenttest.Logger{}
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.coll, Clock: s.clock, ClockSkew: skew, Logger: logger})
	c.Assert(err, gc.IsNil)
	held, err := client.Claim(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	_, err = s.coll.InsertOne(s.ctx, bson.D{{Key: "_id", Value: termID(key, "x")}})
	c.Assert(err, gc.IsNil)
	s.insertTerm(c, key, limit, "", 1)
	for range 3 {
		_, err := client.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
		c.Assert(errors.Is(err, lease.ErrCorrupt), gc.Equals, true, gc.Commentf("%v", err))
	}
	var errorLines []string
	for _, e := range logger.Entries() {
		if strings.HasPrefix(e, "ERROR") {
			errorLines = append(errorLines, e)
		}
	}
	c.Assert(errorLines, gc.HasLen, 1)
	c.Assert(errorLines[0], gc.Matches, `ERROR frozen lease application-leadership/m/mysql: term _id ".*#x" names no term number`)

	// A reset of a lease that is not frozen is refused.
	_, err = client.Reset(s.ctx, keyOf("other"))
	c.Assert(errors.Is(err, lease.ErrNotFrozen), gc.Equals, true, gc.Commentf("%v", err))
	reset, err := client.Reset(s.ctx, key)
	c.Assert(err, gc.IsNil)
	c.Assert(reset.Holder, gc.Equals, "")
	c.Assert(reset.Term > held.Term, gc.Equals, true)
	c.Assert(s.count(c), gc.Equals, int64(1))
	got, err := client.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	c.Assert(got.Term > reset.Term && got.Fence > held.Fence, gc.Equals, true, gc.Commentf("%+v after %+v", got, held))
}
