package lease_test

import (
	"fmt"
	"time"

	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
)

// manyModels returns keys of one lease in each of n models.
func manyModels(n int) []lease.Key {
	keys := make([]lease.Key, n)
	for i := range keys {
		keys[i] = lease.Key{Namespace: key.Namespace, Model: fmt.Sprintf("model%d", i), Lease: "mysql"}
	}
	return keys
}

// claimAll claims every key for "mysql/0" with one ClaimMany.
func (s *clientSuite) claimAll(c *gc.C, client lease.Client, keys []lease.Key, d time.Duration) {
	claims := make([]lease.Claim, len(keys))
	for i, k := range keys {
		claims[i] = lease.Claim{Key: k, Request: lease.Request{Holder: "mysql/0", Duration: d}}
	}
	_, errs, err := client.ClaimMany(s.ctx, claims)
	c.Assert(err, gc.IsNil)
	for _, err := range errs {
		c.Assert(err, gc.IsNil)
	}
}

func (s *clientSuite) TestLeasesOfAnEmptyModelReadsEveryModelInOneRead(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	keys := manyModels(20)
	s.claimAll(c, client, keys, time.Minute)
	other := lease.Key{Namespace: "other", Model: "model0", Lease: "mysql"}
	_, err := client.Claim(s.ctx, other, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)

	counter.Reset()
	all, err := client.Leases(s.ctx, key.Namespace, "")
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 1)
	c.Assert(all, gc.HasLen, len(keys))
	for _, k := range keys {
		c.Assert(all[k].Holder, gc.Equals, "mysql/0")
	}
	one, err := client.Leases(s.ctx, key.Namespace, "model3")
	c.Assert(err, gc.IsNil)
	c.Assert(one, gc.HasLen, 1)
}

func (s *clientSuite) TestClaimsOfManyModelsAreOneReadOneInsertAndOneConfirmation(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	keys := manyModels(50)
	s.claimAll(c, client, keys, time.Minute)
	counter.Reset()
	s.claimAll(c, client, keys, time.Minute)
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 2)
	c.Assert(counter.Count("insert"), gc.Equals, 1)
}

func (s *clientSuite) TestInsertClaimsIsOneInsertAndConfirmGrantsOnlyTheLatestTerm(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	keys := manyModels(50)
	s.claimAll(c, client, keys, time.Minute)
	current, err := client.Leases(s.ctx, key.Namespace, "")
	c.Assert(err, gc.IsNil)
	claims := make([]lease.Claim, len(keys))
	for i, k := range keys {
		claims[i] = lease.Claim{Key: k, Request: lease.Request{Holder: "mysql/0", Duration: time.Minute}}
	}

	counter.Reset()
	infos, errs, err := client.InsertClaims(s.ctx, claims, current)
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Count("insert"), gc.Equals, 1)
	c.Assert(counter.Reads(), gc.Equals, 0)
	// Another writer moves the first lease on before the caller reads.
	_, err = client.Claim(s.ctx, keys[0], lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	latest, err := client.Leases(s.ctx, key.Namespace, "")
	c.Assert(err, gc.IsNil)
	for i, k := range keys {
		c.Assert(errs[i], gc.IsNil)
		c.Assert(infos[i].Term, gc.Equals, current[k].Term+1)
		err := lease.Confirm(k, infos[i], latest[k])
		if i == 0 {
			c.Assert(errors.Is(err, lease.ErrInvalid), gc.Equals, true, gc.Commentf("%v", err))
		} else {
			c.Assert(err, gc.IsNil)
		}
	}
}

func (s *clientSuite) TestExpireManyIsOneReadAndOneInsert(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	keys := manyModels(100)
	s.claimAll(c, client, keys, 10*time.Second)
	s.clock.Advance(10*time.Second + skew)

	counter.Reset()
	errs, err := client.ExpireMany(s.ctx, keys)
	c.Assert(err, gc.IsNil)
	c.Assert(errs, gc.HasLen, len(keys))
	for _, err := range errs {
		c.Assert(err, gc.IsNil)
	}
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 1)
	c.Assert(counter.Count("insert"), gc.Equals, 1)
	all, err := client.Leases(s.ctx, key.Namespace, "")
	c.Assert(err, gc.IsNil)
	for _, k := range keys {
		c.Assert(all[k].Holder, gc.Equals, "")
		c.Assert(all[k].Term, gc.Equals, int64(2))
	}
}

func (s *clientSuite) TestExpireManyAnswersEachKey(c *gc.C) {
	keys := manyModels(3)
	s.claimAll(c, s.client, keys[:2], 10*time.Second)
	c.Assert(s.client.Pin(s.ctx, keys[1], "machine-0"), gc.IsNil)
	s.clock.Advance(10*time.Second + skew)
	_, err := s.client.Claim(s.ctx, keys[2], lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	bad := lease.Key{Namespace: key.Namespace, Model: "", Lease: "mysql"}

	errs, err := s.client.ExpireMany(s.ctx, []lease.Key{keys[0], keys[1], keys[2], bad, keys[0]})
	c.Assert(err, gc.IsNil)
	c.Check(errs[0], gc.IsNil)
	c.Check(errors.Is(errs[1], lease.ErrHeld), gc.Equals, true, gc.Commentf("pinned: %v", errs[1]))
	c.Check(errors.Is(errs[2], lease.ErrHeld), gc.Equals, true, gc.Commentf("not expired: %v", errs[2]))
	c.Check(errors.Is(errs[3], errors.NotValid), gc.Equals, true, gc.Commentf("%v", errs[3]))
	c.Check(errs[4], gc.IsNil)
	// Free already: nothing to write, no error.
	errs, err = s.client.ExpireMany(s.ctx, keys[:1])
	c.Assert(err, gc.IsNil)
	c.Check(errs[0], gc.IsNil)
	c.Assert(s.count(c), gc.Equals, int64(5))
}

func (s *clientSuite) TestExpireManyLosesRacesWithErrInvalid(c *gc.C) {
	keys := manyModels(1)
	s.claimAll(c, s.client, keys, 10*time.Second)
	s.clock.Advance(10*time.Second + skew)
	// Another writer already took term 2: the expiry's term 2 loses.
	racer := s.newClient(c, s.NewDB(c).Collection("leases"))
	_, err := racer.Claim(s.ctx, keys[0], lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	errs, err := s.client.ExpireMany(s.ctx, keys)
	c.Assert(err, gc.IsNil)
	c.Check(errors.Is(errs[0], lease.ErrHeld), gc.Equals, true, gc.Commentf("%v", errs[0]))
}

func (s *clientSuite) TestPruneOfEveryModelIsOneReadAndOneDelete(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	keys := manyModels(30)
	for i := 0; i < 3; i++ {
		s.claimAll(c, client, keys, time.Minute)
	}
	counter.Reset()
	removed, err := client.Prune(s.ctx, key.Namespace, "")
	c.Assert(err, gc.IsNil)
	c.Assert(removed, gc.Equals, 2*len(keys))
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 1)
	c.Assert(counter.Count("delete"), gc.Equals, 1)
	c.Assert(s.count(c), gc.Equals, int64(len(keys)))
}

func (s *clientSuite) TestReadManyReadsKeysOfManyModelsInOneRead(c *gc.C) {
	var counter agenttest.CommandCounter
	client := s.newClient(c, s.NewClient(c, counter.Options()).Database(s.DB.Name()).Collection("leases"))
	keys := manyModels(20)
	s.claimAll(c, client, keys, time.Minute)
	missing := lease.Key{Namespace: key.Namespace, Model: "model0", Lease: "postgresql"}

	counter.Reset()
	infos, err := client.ReadMany(s.ctx, append([]lease.Key{missing}, keys[5:10]...))
	c.Assert(err, gc.IsNil)
	c.Assert(counter.Count("find")+counter.Count("getMore"), gc.Equals, 1)
	c.Assert(infos, gc.HasLen, 5)
	for _, k := range keys[5:10] {
		c.Assert(infos[k].Holder, gc.Equals, "mysql/0")
	}

	_, err = client.ReadMany(s.ctx, []lease.Key{{Namespace: key.Namespace, Model: "", Lease: "mysql"}})
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
}
