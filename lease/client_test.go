package lease_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
)

const skew = time.Second

var key = lease.Key{Namespace: "application-leadership", Model: "m", Lease: "mysql"}

type clientSuite struct {
	agenttest.MongoSuite
	clock  *testclock.Clock
	coll   *mongo.Collection
	client lease.Client
	ctx    context.Context
}

var _ = gc.Suite(&clientSuite{})

func (s *clientSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.clock = agenttest.NewClock()
	s.coll = s.DB.Collection("leases")
	s.client = s.newClient(c, s.coll)
	s.ctx = context.Background()
}

func (s *clientSuite) newClient(c *gc.C, coll *mongo.Collection) lease.Client {
	client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: s.clock, ClockSkew: skew})
	c.Assert(err, gc.IsNil)
	return client
}

func (s *clientSuite) claim(c *gc.C, holder string, d time.Duration) lease.Info {
	info, err := s.client.Claim(s.ctx, key, lease.Request{Holder: holder, Duration: d})
	c.Assert(err, gc.IsNil)
	return info
}

func (s *clientSuite) count(c *gc.C) int64 {
	n, err := s.coll.CountDocuments(s.ctx, bson.D{})
	c.Assert(err, gc.IsNil)
	return n
}

func (s *clientSuite) TestClaimOfAFreeLease(c *gc.C) {
	info := s.claim(c, "mysql/0", time.Minute)
	c.Assert(info.Holder, gc.Equals, "mysql/0")
	c.Assert(info.Term, gc.Equals, int64(1))
	c.Assert(info.Fence, gc.Equals, int64(1))
	c.Assert(info.Expiry.Equal(s.clock.Now().Add(time.Minute)), gc.Equals, true)
	leases, err := s.client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(leases[key].Holder, gc.Equals, "mysql/0")
}

func (s *clientSuite) TestATermReadsAsADateAndAnEmptyPinListToPeople(c *gc.C) {
	info := s.claim(c, "mysql/0", time.Minute)
	var raw bson.M
	c.Assert(s.coll.FindOne(s.ctx, bson.D{}).Decode(&raw), gc.IsNil)
	expiresAt, ok := raw["expiresAt"].(bson.DateTime)
	c.Assert(ok, gc.Equals, true, gc.Commentf("expiresAt is %T", raw["expiresAt"]))
	c.Assert(expiresAt.Time().Equal(info.Expiry.Truncate(time.Millisecond)), gc.Equals, true,
		gc.Commentf("%v, want %v", expiresAt.Time(), info.Expiry))
	c.Assert(raw["pins"], gc.DeepEquals, bson.A{})
}

func (s *clientSuite) TestClaimOfAHeldLeaseFails(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	_, err := s.client.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrHeld), gc.Equals, true, gc.Commentf("%v", err))
}

func (s *clientSuite) TestClaimByTheHolderExtendsKeepingTheFence(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	s.clock.Advance(10 * time.Second)
	info := s.claim(c, "mysql/0", time.Minute)
	c.Assert(info.Term, gc.Equals, int64(2))
	c.Assert(info.Fence, gc.Equals, int64(1))
	c.Assert(info.Expiry.Equal(s.clock.Now().Add(time.Minute)), gc.Equals, true)

	// A shorter extension never shortens the claim.
	info = s.claim(c, "mysql/0", time.Second)
	c.Assert(info.Expiry.Equal(s.clock.Now().Add(time.Minute)), gc.Equals, true)
}

func (s *clientSuite) TestOthersWaitForTheClockSkewAfterExpiry(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	s.clock.Advance(time.Minute + skew - time.Nanosecond)
	_, err := s.client.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrHeld), gc.Equals, true)
	s.clock.Advance(time.Nanosecond)
	info := s.claim(c, "mysql/1", time.Minute)
	c.Assert(info.Fence, gc.Equals, int64(2))
}

func (s *clientSuite) TestExtendNeedsTheHolder(c *gc.C) {
	_, err := s.client.Extend(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrNotHeld), gc.Equals, true)
	s.claim(c, "mysql/0", time.Minute)
	_, err = s.client.Extend(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrNotHeld), gc.Equals, true)
	info, err := s.client.Extend(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	c.Assert(info.Term, gc.Equals, int64(2))
}

func (s *clientSuite) TestReleaseFreesTheLeaseAtOnce(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	c.Assert(errors.Is(s.client.Release(s.ctx, key, "mysql/1"), lease.ErrNotHeld), gc.Equals, true)
	c.Assert(s.client.Release(s.ctx, key, "mysql/0"), gc.IsNil)
	info := s.claim(c, "mysql/1", time.Minute)
	c.Assert(info.Fence, gc.Equals, int64(2))
	c.Assert(info.Term, gc.Equals, int64(3))
}

func (s *clientSuite) TestExpireOnlyAfterExpiryAndSkew(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	c.Assert(errors.Is(s.client.Expire(s.ctx, key), lease.ErrHeld), gc.Equals, true)
	s.clock.Advance(time.Minute + skew)
	c.Assert(s.client.Expire(s.ctx, key), gc.IsNil)
	leases, err := s.client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(leases[key].Holder, gc.Equals, "")
	c.Assert(leases[key].Fence, gc.Equals, int64(1))
	// Expiring a free lease does nothing.
	c.Assert(s.client.Expire(s.ctx, key), gc.IsNil)
	c.Assert(s.count(c), gc.Equals, int64(2))
}

func (s *clientSuite) TestPinnedLeaseDoesNotExpire(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	c.Assert(s.client.Pin(s.ctx, key, "upgrade"), gc.IsNil)
	c.Assert(s.client.Pin(s.ctx, key, "upgrade"), gc.IsNil)
	s.clock.Advance(time.Hour)
	c.Assert(errors.Is(s.client.Expire(s.ctx, key), lease.ErrHeld), gc.Equals, true)
	_, err := s.client.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrHeld), gc.Equals, true)
	leases, err := s.client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(leases[key].HeldBy("mysql/0", s.clock.Now()), gc.Equals, true)

	c.Assert(s.client.Unpin(s.ctx, key, "upgrade"), gc.IsNil)
	s.claim(c, "mysql/1", time.Minute)
}

func (s *clientSuite) TestPinOfAnUnknownLeaseIsNotFound(c *gc.C) {
	c.Assert(errors.Is(s.client.Pin(s.ctx, key, "upgrade"), errors.NotFound), gc.Equals, true)
}

func (s *clientSuite) TestConcurrentClaimsOnSeparateClientsHaveOneWinner(c *gc.C) {
	const contenders = 8
	var wg sync.WaitGroup
	results := make(chan error, contenders)
	for i := 0; i < contenders; i++ {
		client := s.newClient(c, s.NewDB(c).Collection("leases"))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := client.Claim(s.ctx, key, lease.Request{Holder: fmt.Sprintf("mysql/%d", i), Duration: time.Minute})
			results <- err
		}(i)
	}
	wg.Wait()
	close(results)
	winners := 0
	for err := range results {
		switch {
		case err == nil:
			winners++
		case errors.Is(err, lease.ErrHeld), errors.Is(err, lease.ErrInvalid):
		default:
			c.Fatalf("unexpected error %v", err)
		}
	}
	c.Assert(winners, gc.Equals, 1)
	c.Assert(s.count(c), gc.Equals, int64(1))
}

func (s *clientSuite) TestRenewingManyLeasesTakesTwoRoundTrips(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	claims := make([]lease.Claim, 1000)
	for i := range claims {
		k := key
		k.Lease = fmt.Sprintf("app%d", i)
		claims[i] = lease.Claim{Key: k, Request: lease.Request{Holder: fmt.Sprintf("app%d/0", i), Duration: time.Minute}}
	}
	_, errs, err := client.ClaimMany(s.ctx, claims)
	c.Assert(err, gc.IsNil)
	for _, err := range errs {
		c.Assert(err, gc.IsNil)
	}
	// A controller renews on the view it read for its tick anyway: one
	// insert, and the read that confirms it.
	current, err := client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	counter.Reset()
	infos, errs, err := client.ClaimManyOn(s.ctx, claims, current)
	c.Assert(err, gc.IsNil)
	for i := range claims {
		c.Assert(errs[i], gc.IsNil)
		c.Assert(infos[i].Term, gc.Equals, int64(2))
	}
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 1)
	c.Assert(counter.Count("insert"), gc.Equals, 1)
	// Without a view: a read first, so three round trips.
	counter.Reset()
	_, _, err = client.ClaimMany(s.ctx, claims)
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 2)
	c.Assert(counter.Count("insert"), gc.Equals, 1)
}

func (s *clientSuite) TestAClaimOnAStaleViewFails(c *gc.C) {
	stale, err := s.client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	s.claim(c, "mysql/0", time.Minute)
	infos, errs, err := s.client.ClaimManyOn(s.ctx, []lease.Claim{{Key: key, Request: lease.Request{Holder: "mysql/1", Duration: time.Minute}}}, stale)
	c.Assert(err, gc.IsNil)
	c.Assert(errors.Is(errs[0], lease.ErrInvalid), gc.Equals, true, gc.Commentf("%v", errs[0]))
	c.Assert(infos[0], gc.DeepEquals, lease.Info{})
}

func (s *clientSuite) TestPruneKeepsTheLatestTermOfEachLease(c *gc.C) {
	for i := 0; i < 5; i++ {
		s.claim(c, "mysql/0", time.Minute)
	}
	other := key
	other.Lease = "wordpress"
	_, err := s.client.Claim(s.ctx, other, lease.Request{Holder: "wordpress/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	removed, err := s.client.Prune(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(removed, gc.Equals, 4)
	c.Assert(s.count(c), gc.Equals, int64(2))
	info := s.claim(c, "mysql/0", time.Minute)
	c.Assert(info.Term, gc.Equals, int64(6))
}

func (s *clientSuite) TestBadInputIsNotValidAndWritesNothing(c *gc.C) {
	for i, t := range []struct {
		key lease.Key
		req lease.Request
	}{
		{lease.Key{Namespace: "", Model: "m", Lease: "l"}, lease.Request{Holder: "h", Duration: time.Second}},
		{lease.Key{Namespace: "n", Model: "", Lease: "l"}, lease.Request{Holder: "h", Duration: time.Second}},
		{lease.Key{Namespace: "n", Model: "m", Lease: "a#b"}, lease.Request{Holder: "h", Duration: time.Second}},
		{key, lease.Request{Holder: "", Duration: time.Second}},
		{key, lease.Request{Holder: "h", Duration: 0}},
		{key, lease.Request{Holder: "h", Duration: -time.Second}},
	} {
		c.Logf("case %d", i)
		_, err := s.client.Claim(s.ctx, t.key, t.req)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
	}
	c.Assert(errors.Is(s.client.Pin(s.ctx, key, ""), errors.NotValid), gc.Equals, true)
	c.Assert(s.count(c), gc.Equals, int64(0))
}

func (s *clientSuite) TestConfigValidation(c *gc.C) {
	for i, t := range []struct {
		config lease.ClientConfig
		err    string
	}{
		{lease.ClientConfig{Clock: s.clock}, "nil Collection not valid"},
		{lease.ClientConfig{Collection: s.coll}, "nil Clock not valid"},
		{lease.ClientConfig{Collection: s.coll, Clock: s.clock, ClockSkew: -1}, "negative ClockSkew not valid"},
	} {
		c.Logf("case %d", i)
		_, err := lease.NewClient(t.config)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}

// stalledClient returns a client whose every call reaches the server hold
// late, so that its read and its insert are hold apart, and a function
// that closes its route.
func (s *clientSuite) stalledClient(c *gc.C, hold time.Duration) (lease.Client, func()) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	coll := s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection(s.coll.Name())
	client := s.newClient(c, coll)
	// Write once now, so that the index exists and the stalled
	// claim's commands are its read, its insert and its confirmation.
	other := key
	other.Lease = "other"
	_, err = client.Claim(s.ctx, other, lease.Request{Holder: "other/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	proxy.SetHold(hold)
	return client, func() { proxy.Close() }
}

func (s *clientSuite) TestAClaimThatStalledPastAPruneIsNotGranted(c *gc.C) {
	const hold = time.Second
	stalled, closeRoute := s.stalledClient(c, hold)
	defer closeRoute()
	result := make(chan error, 1)
	go func() {
		_, err := stalled.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
		result <- err
	}()
	// The stalled claim reads the free lease (term 0) at hold, and its
	// insert of term 1 lands at twice hold. Meanwhile another unit
	// claims term 1 and releases it in term 2, and the prune removes
	// term 1, so that its _id is free again.
	time.Sleep(hold + hold/4)
	s.claim(c, "mysql/0", time.Minute)
	c.Assert(s.client.Release(s.ctx, key, "mysql/0"), gc.IsNil)
	removed, err := s.client.Prune(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(removed, gc.Equals, 1)
	err = <-result
	c.Assert(errors.Is(err, lease.ErrInvalid), gc.Equals, true, gc.Commentf("%v", err))
	// The lease is still free for anyone, with the fence it had.
	leases, err := s.client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(leases[key].Holder, gc.Equals, "")
	c.Assert(leases[key].Term, gc.Equals, int64(2))
}

func (s *clientSuite) TestSafetyConcernsAreForcedWhateverTheURISays(c *gc.C) {
	var mu sync.Mutex
	sent := map[string]bson.Raw{}
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		mu.Lock()
		defer mu.Unlock()
		sent[e.CommandName] = e.Command
	}}
	uri := s.Server.URI() + "?w=1&readConcernLevel=local"
	if strings.Contains(s.Server.URI(), "?") {
		uri = s.Server.URI() + "&w=1&readConcernLevel=local"
	}
	coll := s.NewClient(c, options.Client().ApplyURI(uri).SetMonitor(monitor)).Database(s.DB.Name()).Collection("leases")
	client := s.newClient(c, coll)
	_, err := client.Claim(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	mu.Lock()
	defer mu.Unlock()
	c.Assert(sent["insert"].Lookup("writeConcern", "w").StringValue(), gc.Equals, "majority")
	c.Assert(sent["insert"].Lookup("writeConcern", "j").Boolean(), gc.Equals, true)
	c.Assert(sent["find"].Lookup("readConcern", "level").StringValue(), gc.Equals, "majority")
}

func (s *clientSuite) TestDurationsBeyondMaxDurationAreNotValid(c *gc.C) {
	for _, d := range []time.Duration{0, -time.Second, lease.DefaultMaxDuration + 1, math.MaxInt64} {
		_, err := s.client.Claim(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: d})
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v: %v", d, err))
	}
	c.Assert(s.count(c), gc.Equals, int64(0))
	_, err := lease.NewClient(lease.ClientConfig{Collection: s.coll, Clock: s.clock, MaxDuration: math.MaxInt64})
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
}

func (s *clientSuite) TestFrozenLeasesRefuseEveryChangeAndBlindNoOther(c *gc.C) {
	s.claim(c, "mysql/0", time.Minute)
	named := func(lease string, n any) bson.D {
		return bson.D{{Key: "_id", Value: fmt.Sprintf("%s#%s#%s#%v", key.Namespace, key.Model, lease, n)},
			{Key: "ns", Value: key.Namespace}, {Key: "model", Value: key.Model}, {Key: "lease", Value: lease}}
	}
	for _, doc := range []bson.D{
		append(named("hugeterm", int64(math.MaxInt64)), bson.E{Key: "term", Value: int64(math.MaxInt64)},
			bson.E{Key: "holder", Value: "x/0"}, bson.E{Key: "expiry", Value: int64(0)}, bson.E{Key: "fence", Value: int64(1)}),
		append(named("hugefence", 1), bson.E{Key: "term", Value: int64(1)},
			bson.E{Key: "holder", Value: "x/0"}, bson.E{Key: "expiry", Value: int64(0)}, bson.E{Key: "fence", Value: int64(math.MaxInt64)}),
		append(named("forever", 1), bson.E{Key: "term", Value: int64(1)},
			bson.E{Key: "holder", Value: "x/0"}, bson.E{Key: "expiry", Value: int64(math.MaxInt64)}, bson.E{Key: "fence", Value: int64(1)}),
		append(named("nonumber", "one"), bson.E{Key: "term", Value: int64(1)}),
		append(named("noholder", 1), bson.E{Key: "term", Value: int64(1)}, bson.E{Key: "holder", Value: 7}),
		{{Key: "_id", Value: "nobody's"}, {Key: "term", Value: int64(1)}},
	} {
		_, err := s.coll.InsertOne(s.ctx, doc)
		c.Assert(err, gc.IsNil)
	}
	leases, err := s.client.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(leases[key].Holder, gc.Equals, "mysql/0")
	c.Assert(leases[key].Invalid, gc.Equals, "")
	// Each lease that cannot go on safely is neither free nor granted,
	// and refuses every change rather than count from a number it
	// cannot go above.
	for _, name := range []string{"hugeterm", "hugefence", "forever", "nonumber", "noholder"} {
		k := keyOf(name)
		info := leases[k]
		c.Check(info.Invalid, gc.Not(gc.Equals), "", gc.Commentf("%s", name))
		c.Check(info.Free(s.clock.Now().Add(time.Hour)), gc.Equals, false, gc.Commentf("%s", name))
		_, err := s.client.Claim(s.ctx, k, lease.Request{Holder: name + "/1", Duration: time.Minute})
		c.Check(errors.Is(err, lease.ErrCorrupt), gc.Equals, true, gc.Commentf("%s: %v", name, err))
		c.Check(errors.Is(s.client.Expire(s.ctx, k), lease.ErrCorrupt), gc.Equals, true, gc.Commentf("%s", name))
	}
	// The mysql lease works as ever.
	_, err = s.client.Claim(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
}

func (s *clientSuite) TestATermBeyondMaxDurationIsNeverTakenForFree(c *gc.C) {
	// A client allowing long claims holds for 5h and extends; the old
	// term is pruned, so its _id is free again.
	long, err := lease.NewClient(lease.ClientConfig{Collection: s.coll, Clock: s.clock, ClockSkew: skew, MaxDuration: 10 * time.Hour})
	c.Assert(err, gc.IsNil)
	_, err = long.Claim(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: 5 * time.Hour})
	c.Assert(err, gc.IsNil)
	held, err := long.Claim(s.ctx, key, lease.Request{Holder: "mysql/0", Duration: 5 * time.Hour})
	c.Assert(err, gc.IsNil)
	_, err = long.Prune(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	// A client allowing 1h cannot trust that term, and must not take
	// the lease on an older view of it.
	_, err = s.client.Claim(s.ctx, key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(errors.Is(err, lease.ErrCorrupt), gc.Equals, true, gc.Commentf("%v", err))
	leases, err := long.Leases(s.ctx, key.Namespace, key.Model)
	c.Assert(err, gc.IsNil)
	c.Assert(leases[key].Holder, gc.Equals, "mysql/0")
	c.Assert(leases[key].Fence, gc.Equals, held.Fence)
}

func (s *clientSuite) TestReleaseTermLeavesALaterTermWithTheSameExpiry(c *gc.C) {
	first := s.claim(c, "mysql/0", 10*time.Minute)
	// A shorter extension keeps the expiry: the term differs, not the
	// holder or the expiry.
	second := s.claim(c, "mysql/0", time.Minute)
	c.Assert(second.Expiry.Equal(first.Expiry), gc.Equals, true)
	err := s.client.ReleaseTerm(s.ctx, key, first)
	c.Assert(errors.Is(err, lease.ErrNotHeld), gc.Equals, true, gc.Commentf("%v", err))
	c.Assert(s.client.ReleaseTerm(s.ctx, key, second), gc.IsNil)
}
