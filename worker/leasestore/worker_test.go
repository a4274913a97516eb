package leasestore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

type storeSuite struct {
	fixture
}

var _ = gc.Suite(&storeSuite{})

var _ leaseexpiry.Store = (*leasestore.Store)(nil)

func (s *storeSuite) TestOneStoreServingFiftyModelsReadsOncePerTick(c *gc.C) {
	store, _, counter := s.newStore(c)
	var managers []leaseexpiry.ManagerWorker
	for i := 0; i < 50; i++ {
		m := s.newManager(c, store, modelTag(i))
		c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
		managers = append(managers, m)
	}
	counter.Reset()
	const ticks = 5
	for i := 0; i < ticks; i++ {
		agenttest.WaitAdvance(c, s.clock, time.Second, 1)
		// The timer is set again once the tick is done.
		agenttest.WaitTimers(c, s.clock, 1)
	}
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, ticks)
	c.Assert(counter.Writes(), gc.Equals, 0)
	for _, m := range managers {
		_, err := m.CheckLeadership("mysql", "mysql/0")
		c.Assert(err, gc.IsNil)
	}
}

func (s *storeSuite) TestManagerSeesOnlyItsModelsLeases(c *gc.C) {
	store, _, _ := s.newStore(c)
	a := s.newManager(c, store, modelTag(1))
	b := s.newManager(c, store, modelTag(2))
	c.Assert(a.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)

	_, err := b.CheckLeadership("mysql", "mysql/0")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true, gc.Commentf("%v", err))
	// Free in model 2, whatever model 1 holds.
	c.Assert(b.BlockUntilLeadershipReleased("mysql"), gc.IsNil)
	c.Assert(b.ClaimLeadership("mysql", "mysql/1", time.Minute), gc.IsNil)
	leases, _, _, _ := store.Leases(modelTag(1).Id())
	c.Assert(leases["mysql"].Holder, gc.Equals, "mysql/0")
	leases, _, _, _ = store.Leases(modelTag(2).Id())
	c.Assert(leases["mysql"].Holder, gc.Equals, "mysql/1")
}

func (s *storeSuite) TestClaimsOfManyModelsArrivingDuringAnInsertAreTheNextInsert(c *gc.C) {
	store, client, counter := s.newStore(c)
	counting := &countingStore{Store: store}
	var managers []leaseexpiry.ManagerWorker
	for i := 0; i < 51; i++ {
		managers = append(managers, s.newManager(c, counting, modelTag(i)))
	}
	// Keep the store's writer busy in an insert of one claim while 50
	// models claim.
	agenttest.WaitTimers(c, s.clock, 1)
	release := client.inserts.hold()
	errs := make([]error, len(managers))
	var wg sync.WaitGroup
	claim := func(i int) {
		defer wg.Done()
		errs[i] = managers[i].ClaimLeadership("mysql", "mysql/0", time.Minute)
	}
	wg.Add(1)
	go claim(0)
	client.waitInserting(c)
	for i := 1; i < len(managers); i++ {
		wg.Add(1)
		go claim(i)
	}
	waitCount(c, "claims queued", &counting.claims, int64(len(managers)))
	counter.Reset()
	release()
	wg.Wait()
	for _, err := range errs {
		c.Assert(err, gc.IsNil)
	}
	// The held insert, then the 50 claims' one insert.
	c.Assert(counter.CountOn("insert", "leases"), gc.Equals, 2)
	c.Assert(store.Report()["claim-batches"], gc.Equals, 2)
	// No claim read of its own: the reads that confirmed them are
	// the store's, one or two depending on when the second insert
	// ended.
	reads := counter.CountOn("find", "leases")
	c.Assert(reads >= 1 && reads <= 2, gc.Equals, true, gc.Commentf("%d reads", reads))
}

// claimBurst claims n leases of model 0 through store at once, from n
// goroutines let go together, as a controller's units renew, and checks
// that every claim was granted.
func claimBurst(c *gc.C, store *leasestore.Store, n int) {
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			app := fmt.Sprintf("app%d", i)
			_, errs[i] = store.Claim(context.Background(), lease.Claim{
				Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(0).Id(), Lease: app},
				Request: lease.Request{Holder: app + "/0", Duration: time.Minute},
			})
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		c.Assert(err, gc.IsNil)
	}
}

func (s *storeSuite) TestABurstOfClaimsAtAnIdleStoreIsOneBatch(c *gc.C) {
	store, _, counter := s.newStore(c, func(config *leasestore.Config) {
		config.Clock = clock.WallClock
	})
	// A burst's first claim is not written alone: the store waits for
	// the callers already on their way. The wait is on the wall clock, and
	// a machine too loaded to run the callers within it splits a burst
	// (about one in twenty under a parallel -race run); so five bursts are
	// made, the first claiming and the others renewing, and three must
	// have been one batch each. Before the store waited, every renewing
	// burst was split.
	var inserts []int
	whole := 0
	for range 5 {
		counter.Reset()
		claimBurst(c, store, 200)
		n := counter.CountOn("insert", "leases")
		inserts = append(inserts, n)
		if n == 1 {
			whole++
		}
	}
	c.Assert(whole >= 3, gc.Equals, true, gc.Commentf("inserts per burst: %v", inserts))
}

func (s *storeSuite) TestABurstOfClaimsOnAClockThatStandsStillIsWrittenWithoutAdvancingIt(c *gc.C) {
	store, _, _ := s.newStore(c)
	claimBurst(c, store, 50)
	c.Assert(store.Report()["claims"], gc.Equals, 50)
}

func (s *storeSuite) TestChecksOfManyModelsInOneRoundAreOneRead(c *gc.C) {
	store, client, counter := s.newStore(c)
	counting := &countingStore{Store: store}
	var managers []leaseexpiry.ManagerWorker
	for i := 0; i < 50; i++ {
		m := s.newManager(c, counting, modelTag(i))
		c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
		managers = append(managers, m)
	}
	// Keep the store busy in a read while every model checks.
	client.waitEntered(c)
	release := client.hold()
	store.Refresh()
	client.waitEntered(c)
	var wg sync.WaitGroup
	fences := make([]int64, len(managers))
	errs := make([]error, len(managers))
	for i, m := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			token, err := m.CheckLeadership("mysql", "mysql/0")
			if errs[i] = err; err == nil {
				fences[i] = token.Fence()
			}
		}()
	}
	waitCount(c, "reads queued", &counting.reads, int64(len(managers)))
	counter.Reset()
	release()
	wg.Wait()
	for i, err := range errs {
		c.Assert(err, gc.IsNil)
		c.Assert(fences[i], gc.Equals, int64(1))
	}
	// The held read, then the checks' one read.
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 2)
	c.Assert(store.Report()["check-batches"], gc.Equals, 1)
}

func (s *storeSuite) TestCheckSeesAReleaseMadeElsewhereAtOnce(c *gc.C) {
	store, _, _ := s.newStore(c, func(cfg *leasestore.Config) { cfg.MaxSleep = time.Hour })
	m := s.newManager(c, store, modelTag(0))
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	token, err := m.CheckLeadership("mysql", "mysql/0")
	c.Assert(err, gc.IsNil)

	// Another controller's store, whose manager releases.
	other, _, _ := s.newStore(c, func(cfg *leasestore.Config) { cfg.MaxSleep = time.Hour })
	c.Assert(s.newManager(c, other, modelTag(0)).ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	// The first store's view still says held; its checks read.
	leases, _, _, _ := store.Leases(modelTag(0).Id())
	c.Assert(leases["mysql"].Holder, gc.Equals, "mysql/0")
	c.Assert(errors.Is(token.Check(), leaseexpiry.ErrNotHeld), gc.Equals, true)
	_, err = m.CheckLeadership("mysql", "mysql/0")
	c.Assert(errors.Is(err, leaseexpiry.ErrNotHeld), gc.Equals, true)
}

func (s *storeSuite) TestHundredLeasesLapsingAtOnceAreExpiredWithOneReadAndOneInsert(c *gc.C) {
	client, _ := s.leaseClient(c, s.clock)
	claims := make([]lease.Claim, 100)
	for i := range claims {
		claims[i] = lease.Claim{
			Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(i).Id(), Lease: "mysql"},
			Request: lease.Request{Holder: "mysql/0", Duration: 10 * time.Second},
		}
	}
	_, errs, err := client.ClaimMany(context.Background(), claims)
	c.Assert(err, gc.IsNil)
	for _, err := range errs {
		c.Assert(err, gc.IsNil)
	}
	// The store reads the claims before it sets its first alarm.
	store, _, counter := s.newStore(c, func(cfg *leasestore.Config) { cfg.MaxSleep = time.Minute })
	agenttest.WaitTimers(c, s.clock, 1)
	counter.Reset()
	// The tick is at the moment others may claim: expiry plus skew.
	agenttest.WaitAdvance(c, s.clock, 10*time.Second+skew, 1)
	agenttest.WaitTimers(c, s.clock, 1)
	// The tick's read, then one insert on that read.
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 1)
	c.Assert(counter.CountOn("insert", "leases"), gc.Equals, 1)
	c.Assert(store.Report()["expired"], gc.Equals, 100)
	all, err := client.Leases(context.Background(), leaseexpiry.Namespace, "")
	c.Assert(err, gc.IsNil)
	c.Assert(all, gc.HasLen, 100)
	for key, info := range all {
		c.Assert(info.Holder, gc.Equals, "", gc.Commentf("%v", key))
	}
}

func (s *storeSuite) TestTickIsTheEarliestFreeAtCappedByMaxSleep(c *gc.C) {
	store, _, counter := s.newStore(c, func(cfg *leasestore.Config) { cfg.MaxSleep = time.Minute })
	m := s.newManager(c, store, modelTag(1))
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", 10*time.Second), gc.IsNil)
	agenttest.WaitTimers(c, s.clock, 1)
	counter.Reset()
	agenttest.WaitAdvance(c, s.clock, 10*time.Second+skew-time.Millisecond, 1)
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 0)
	agenttest.WaitAdvance(c, s.clock, time.Millisecond, 1)
	agenttest.WaitTimers(c, s.clock, 1)
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 1)
	// Nothing held: the next tick is MaxSleep away.
	agenttest.WaitAdvance(c, s.clock, time.Minute-time.Millisecond, 1)
	c.Assert(counter.CountOn("find", "leases"), gc.Equals, 1)
}

func (s *storeSuite) TestBlockReturnsWithinOneTickOfAReleaseElsewhere(c *gc.C) {
	_, _, waiter, leader := s.leaderElsewhere(c)
	done := make(chan error, 1)
	go func() { done <- waiter.BlockUntilLeadershipReleased("mysql") }()
	select {
	case err := <-done:
		c.Fatalf("returned while the leader holds: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	c.Assert(leader.ReleaseLeadership("mysql", "mysql/0"), gc.IsNil)
	select {
	case err := <-done:
		c.Fatalf("returned before a read showed the release: %v", err)
	case <-time.After(agenttest.ShortWait):
	}
	agenttest.WaitAdvance(c, s.clock, time.Second, 2)
	select {
	case err := <-done:
		c.Assert(err, gc.IsNil)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("not woken by the next tick")
	}
}

func (s *storeSuite) TestBlockFailsWhenTheManagerStopsAndTheStoreLivesOn(c *gc.C) {
	store, _, _ := s.newStore(c)
	m := s.newManager(c, store, modelTag(1))
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	done := make(chan error, 1)
	go func() { done <- m.BlockUntilLeadershipReleased("mysql") }()
	m.Kill()
	select {
	case err := <-done:
		c.Assert(err, gc.Equals, leaseexpiry.ErrStopped)
	case <-time.After(agenttest.LongWait):
		c.Fatalf("BlockUntilLeadershipReleased hung")
	}
	c.Assert(m.Wait(), gc.IsNil)
	other := s.newManager(c, store, modelTag(1))
	c.Assert(other.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
}

func (s *storeSuite) TestFailedReadKeepsTheLastViewAndIsLogged(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	logger := &agenttest.Logger{}
	store, client, _ := s.newStore(c, func(cfg *leasestore.Config) {
		cfg.CallTimeout = 500 * time.Millisecond
		cfg.Logger = logger
	})
	m := s.newManager(c, store, modelTag(1))
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)
	before, readAt, _, _ := store.Leases(modelTag(1).Id())

	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Check(s.Server.Resume(), gc.IsNil) }()
	store.Refresh()
	client.waitEntered(c)
	waitFor(c, "a logged read failure", func() bool {
		return slices.ContainsFunc(logger.Entries(), func(e string) bool {
			return strings.HasPrefix(e, "ERROR cannot read leases")
		})
	})
	after, readAfter, _, _ := store.Leases(modelTag(1).Id())
	c.Assert(after, gc.DeepEquals, before)
	c.Assert(readAfter, gc.Equals, readAt)
	c.Assert(store.Report()["read-failures"], gc.Equals, 1)
}

func (s *storeSuite) TestStopTakesUnderTwoSecondsWithTheServerPaused(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	store, client, _ := s.newStore(c)
	m := s.newManager(c, store, modelTag(1))
	c.Assert(m.ClaimLeadership("mysql", "mysql/0", time.Minute), gc.IsNil)

	c.Assert(s.Server.Pause(), gc.IsNil)
	defer func() { c.Check(s.Server.Resume(), gc.IsNil) }()
	store.Refresh()
	client.waitEntered(c)
	claimed := make(chan error, 1)
	go func() { claimed <- m.ClaimLeadership("mysql", "mysql/0", time.Minute) }()
	blocked := make(chan error, 1)
	go func() { blocked <- m.BlockUntilLeadershipReleased("mysql") }()

	start := time.Now()
	m.Kill()
	store.Kill()
	c.Assert(m.Wait(), gc.IsNil)
	c.Assert(store.Wait(), gc.IsNil)
	c.Assert(time.Since(start) < 2*time.Second, gc.Equals, true, gc.Commentf("stop took %v", time.Since(start)))
	for _, ch := range []chan error{claimed, blocked} {
		select {
		case err := <-ch:
			c.Assert(err, gc.NotNil)
		case <-time.After(agenttest.LongWait):
			c.Fatalf("a caller hung after the stop")
		}
	}
}

func (s *storeSuite) TestPruneRemovesEveryModelsSupersededTermsAtOnce(c *gc.C) {
	// Three terms of a lease in each of ten models, claimed around the
	// store.
	client, _ := s.leaseClient(c, s.clock)
	claims := make([]lease.Claim, 10)
	for i := range claims {
		claims[i] = lease.Claim{
			Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(i).Id(), Lease: "mysql"},
			Request: lease.Request{Holder: "mysql/0", Duration: time.Minute},
		}
	}
	for range 3 {
		_, errs, err := client.ClaimMany(context.Background(), claims)
		c.Assert(err, gc.IsNil)
		for _, err := range errs {
			c.Assert(err, gc.IsNil)
		}
	}
	// The store's first read is its first tick; the second prunes.
	_, _, counter := s.newStore(c, func(cfg *leasestore.Config) { cfg.PruneEvery = 2 })
	agenttest.WaitTimers(c, s.clock, 1)
	counter.Reset()
	agenttest.WaitAdvance(c, s.clock, time.Second, 1)
	agenttest.WaitTimers(c, s.clock, 1)
	c.Assert(counter.CountOn("delete", "leases"), gc.Equals, 1)
	n, err := s.DB.Collection("leases").CountDocuments(context.Background(), map[string]any{})
	c.Assert(err, gc.IsNil)
	c.Assert(n, gc.Equals, int64(10))
}

func (s *storeSuite) TestClaimOutsideTheStoresNamespaceOrModelIsNotValid(c *gc.C) {
	store, _, _ := s.newStore(c, func(cfg *leasestore.Config) { cfg.Model = modelTag(1) })
	for _, key := range []lease.Key{
		{Namespace: "other", Model: modelTag(1).Id(), Lease: "mysql"},
		{Namespace: leaseexpiry.Namespace, Model: modelTag(2).Id(), Lease: "mysql"},
	} {
		_, err := store.Claim(context.Background(), lease.Claim{Key: key, Request: lease.Request{Holder: "mysql/0", Duration: time.Minute}})
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
	}
}

func (s *storeSuite) TestClaimFailsOnceTheStoreStops(c *gc.C) {
	store, _, _ := s.newStore(c)
	store.Kill()
	c.Assert(store.Wait(), gc.IsNil)
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(1).Id(), Lease: "mysql"}
	_, err := store.Claim(context.Background(), lease.Claim{Key: key, Request: lease.Request{Holder: "mysql/0", Duration: time.Minute}})
	c.Assert(err, gc.Equals, leasestore.ErrStopped)
}

func (s *storeSuite) TestConfigValidation(c *gc.C) {
	client, _ := s.leaseClient(c, s.clock)
	valid := leasestore.Config{Client: client, Clock: s.clock}
	for i, t := range []struct {
		mutate func(*leasestore.Config)
		err    string
	}{
		{func(cfg *leasestore.Config) { cfg.Client = nil }, "nil Client not valid"},
		{func(cfg *leasestore.Config) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *leasestore.Config) { cfg.Model = names.NewModelTag("x") }, `model tag "model-x" not valid`},
		{func(cfg *leasestore.Config) { cfg.MaxSleep = -1 }, "negative MaxSleep not valid"},
		{func(cfg *leasestore.Config) { cfg.PruneEvery = -1 }, "negative PruneEvery not valid"},
		{func(cfg *leasestore.Config) { cfg.CallTimeout = -1 }, `CallTimeout -1ns \(must be in \[0, 5s\]\) not valid`},
		{func(cfg *leasestore.Config) { cfg.CallTimeout = time.Minute }, `CallTimeout 1m0s \(must be in \[0, 5s\]\) not valid`},
	} {
		c.Logf("case %d", i)
		cfg := valid
		t.mutate(&cfg)
		store, err := leasestore.New(cfg)
		c.Check(store, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
}
