package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/wireproxy"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

// leaseShape is how a controller's leases are spread: models of apps
// applications each.
type leaseShape struct {
	models, apps int
}

func (s leaseShape) leases() int {
	return s.models * s.apps
}

func (s leaseShape) String() string {
	return fmt.Sprintf("%d models x %d apps", s.models, s.apps)
}

// leaseLoad is the workload of a scale run: every lease renewed once a
// period by its holder, one lease in dyingEvery claimed for dyingFor and
// never renewed (so that the store expires it), and a lease released
// through another controller while a caller here waits for it, again and
// again, for window.
type leaseLoad struct {
	period, window, dyingFor time.Duration
	dyingEvery               int
}

// leaseScale is what a scale run of a shape measured.
type leaseScale struct {
	shape leaseShape
	load  leaseLoad
	// claims were granted and failed failed, of those sent during the
	// window; latencies holds each claim's time in Store.Claim.
	claims, failed int
	latencies      []time.Duration
	// tickTrips is the commands the server saw per tick once claims
	// stopped (the tick's read, expiry and prune).
	tickTrips float64
	// expired is how many leases the store expired.
	expired int
	// mostDocs is the most term documents any lease had at the end,
	// docs the documents of all.
	mostDocs, docs int
	// cpu is the controller's CPU time over the window: the store, the
	// lease client and the callers.
	cpu time.Duration
	// released holds, per release through another controller, how long
	// a caller blocked here took to return after it: unseenAfter for one
	// that had not returned by then, which ends the measurement.
	released []time.Duration
	// read is one read of every lease of the namespace, timed alone;
	// storeReads holds the store's own reads during the window.
	read       time.Duration
	storeReads []time.Duration
}

// timedClient is a lease client that times the store's reads.
type timedClient struct {
	lease.Client
	mu    sync.Mutex
	reads []time.Duration
}

// Snapshot is part of the lease.Client interface.
func (c *timedClient) Snapshot(ctx context.Context, namespace, model string) (lease.Snapshot, error) {
	started := time.Now()
	snap, err := c.Client.Snapshot(ctx, namespace, model)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads = append(c.reads, time.Since(started))
	return snap, err
}

// take returns the reads timed since the last take.
func (c *timedClient) take() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads := c.reads
	c.reads = nil
	return reads
}

// leaseScaleSettings are the store's settings in a scale run.
const (
	scaleMaxSleep   = leasestore.DefaultMaxSleep
	scalePruneEvery = leasestore.DefaultPruneEvery
	// claimTarget is issue 24's bound on a claim's p99.
	claimTarget = 50 * time.Millisecond
	// unseenAfter is how long a blocked caller is given to see a
	// release.
	unseenAfter = time.Minute
)

// benchLeaseScale runs each shape at full size and, as its baseline, at a
// tenth of the leases, and adds their rows.
func benchLeaseScale(ctx context.Context, e *env, t *table) error {
	load := leaseLoad{period: 30 * time.Second, window: 30 * time.Second, dyingFor: 5 * time.Second, dyingEvery: 100}
	shapes := [][2]leaseShape{
		{{models: 1000, apps: 10}, {models: 100, apps: 10}},
		{{models: 1, apps: 10000}, {models: 1, apps: 1000}},
	}
	if e.opts.quick {
		load = leaseLoad{period: 2 * time.Second, window: 2 * time.Second, dyingFor: time.Second, dyingEvery: 10}
		shapes = [][2]leaseShape{
			{{models: 10, apps: 10}, {models: 5, apps: 2}},
			{{models: 1, apps: 100}, {models: 1, apps: 10}},
		}
	}
	for _, pair := range shapes {
		var runs [2]leaseScale
		for i, shape := range pair {
			e.logf("leases at scale: %v, renewed every %v, for %v", shape, load.period, load.window)
			s, err := runLeaseScale(ctx, e, shape, load)
			if err != nil {
				return fmt.Errorf("leases at scale, %v: %w", shape, err)
			}
			runs[i] = s
		}
		addLeaseScaleRows(t, runs[0], runs[1])
	}
	return nil
}

// runLeaseScale runs load over shape's leases through one store on a
// wall clock, with a wire proxy counting the commands at the server's side.
func runLeaseScale(ctx context.Context, e *env, shape leaseShape, load leaseLoad) (leaseScale, error) {
	s := leaseScale{shape: shape, load: load}
	db, proxy, done, err := e.proxied()
	if err != nil {
		return s, err
	}
	defer done()
	coll := db.Collection(leaseCollection)
	client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clock.WallClock})
	if err != nil {
		return s, err
	}
	claims := scaleClaims(shape, load)
	if err := seedLeases(ctx, client, claims); err != nil {
		return s, err
	}
	timed := &timedClient{Client: client}
	store, err := leasestore.New(leasestore.Config{
		Client: timed, Clock: clock.WallClock, MaxSleep: scaleMaxSleep,
		PruneEvery: scalePruneEvery, CallTimeout: leasestore.MaxCallTimeout,
	})
	if err != nil {
		return s, err
	}
	defer func() { store.Kill(); _ = store.Wait() }()
	if err := waitReads(ctx, store, 1); err != nil {
		return s, err
	}
	started := time.Now()
	if _, err := client.Leases(ctx, leaseexpiry.Namespace, ""); err != nil {
		return s, err
	}
	s.read = time.Since(started)

	timed.take()
	expired0 := reportInt(store, "expired")
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	wg.Add(1)
	var releaseErr error
	go func() {
		defer wg.Done()
		s.released, releaseErr = releasesSeen(ctx, e, db, store, load.window)
	}()
	s.latencies, s.failed = renewFor(ctx, store, claims, load)
	wg.Wait()
	s.cpu = cpuTime() - cpu0
	s.claims = len(s.latencies) - s.failed
	s.storeReads = timed.take()
	if releaseErr != nil {
		return s, releaseErr
	}

	// Claims have stopped: what the server sees now is the ticks'.
	proxy.Reset()
	reads0 := reportInt(store, "reads")
	if err := waitReads(ctx, store, reads0+3); err != nil {
		return s, err
	}
	s.tickTrips = float64(roundTripsAt(proxy)) / float64(reportInt(store, "reads")-reads0)
	s.expired = reportInt(store, "expired") - expired0
	s.mostDocs, s.docs, err = docsPerLease(ctx, coll)
	return s, err
}

// scaleClaims returns a claim of every lease of shape by its unit, the
// dying ones (one in load.dyingEvery) for load.dyingFor, the others for
// a minute.
func scaleClaims(shape leaseShape, load leaseLoad) []lease.Claim {
	claims := make([]lease.Claim, 0, shape.leases())
	for m := range shape.models {
		for a := range shape.apps {
			app := fmt.Sprintf("app%d", a)
			d := time.Minute
			if len(claims)%load.dyingEvery == load.dyingEvery-1 {
				d = load.dyingFor
			}
			claims = append(claims, lease.Claim{
				Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(m).Id(), Lease: app},
				Request: lease.Request{Holder: app + "/0", Duration: d},
			})
		}
	}
	return claims
}

// seedLeases claims every lease with one insert and one confirming read.
func seedLeases(ctx context.Context, client lease.Client, claims []lease.Claim) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	_, errs, err := client.ClaimManyOn(ctx, claims, nil)
	if err != nil {
		return err
	}
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("cannot seed %v: %w", claims[i].Key, err)
		}
	}
	return nil
}

// renewFor renews every lease but the dying ones once a period, spread
// evenly over it as independent units renew, through store, until
// load.window has passed, and returns every renewal's latency and how
// many failed.
func renewFor(ctx context.Context, store *leasestore.Store, claims []lease.Claim, load leaseLoad) ([]time.Duration, int) {
	var renewing []lease.Claim
	for _, c := range claims {
		if c.Request.Duration != load.dyingFor {
			renewing = append(renewing, c)
		}
	}
	var mu sync.Mutex
	var latencies []time.Duration
	failed := 0
	var wg sync.WaitGroup
	every := load.period / time.Duration(len(renewing))
	start := time.Now()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	sent := 0
	for ctx.Err() == nil && time.Since(start) < load.window {
		<-ticker.C
		due := int(time.Since(start) / every)
		for ; sent < due; sent++ {
			claim := renewing[sent%len(renewing)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				began := time.Now()
				_, err := store.Claim(cctx, claim)
				took := time.Since(began)
				mu.Lock()
				defer mu.Unlock()
				latencies = append(latencies, took)
				if err != nil {
					failed++
				}
			}()
		}
	}
	wg.Wait()
	return latencies, failed
}

// releasesSeen repeats, until window has passed: another controller (a
// lease client of its own) claims a lease of the first model, a caller
// here blocks until it is released, and the other controller releases it.
// It returns how long each blocked caller took to return after the
// release; one that has not returned after unseenAfter counts as that,
// and ends the measurement.
func releasesSeen(ctx context.Context, e *env, db *mongo.Database, store *leasestore.Store, window time.Duration) ([]time.Duration, error) {
	other, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection(leaseCollection), Clock: clock.WallClock})
	if err != nil {
		return nil, err
	}
	m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Store: store, Clock: clock.WallClock, Model: modelTag(0)})
	if err != nil {
		return nil, err
	}
	defer func() { m.Kill(); _ = m.Wait() }()
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(0).Id(), Lease: "contested"}
	var seen []time.Duration
	for start := time.Now(); ctx.Err() == nil && time.Since(start) < window; {
		if err := retried(func() error {
			_, err := other.Claim(ctx, key, lease.Request{Holder: "contested/1", Duration: time.Minute})
			return err
		}); err != nil {
			return seen, err
		}
		// Wait until this controller's store has seen the holder.
		for {
			leases, _, _, changed := store.Leases(key.Model)
			if leases[key.Lease].Holder == "contested/1" {
				break
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return seen, ctx.Err()
			}
		}
		returned := make(chan time.Time, 1)
		go func() {
			_ = m.BlockUntilLeadershipReleased(key.Lease)
			returned <- time.Now()
		}()
		if err := retried(func() error { return other.Release(ctx, key, "contested/1") }); err != nil {
			return seen, err
		}
		released := time.Now()
		select {
		case at := <-returned:
			seen = append(seen, at.Sub(released))
		case <-time.After(unseenAfter):
			e.logf("  a blocked caller has not seen the release of %v after %v", key, unseenAfter)
			return append(seen, unseenAfter), nil
		}
	}
	e.logf("  %d releases through another controller", len(seen))
	return seen, nil
}

// retried calls f until it does not fail with lease.ErrInvalid (another
// writer got in first), as every caller of a lease client must.
func retried(f func() error) error {
	for {
		if err := f(); !errors.Is(err, lease.ErrInvalid) {
			return err
		}
	}
}

// waitReads waits until store has read n times.
func waitReads(ctx context.Context, store *leasestore.Store, n int) error {
	for reportInt(store, "reads") < n {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func reportInt(store *leasestore.Store, name string) int {
	n, _ := store.Report()[name].(int)
	return n
}

// roundTripsAt counts the reads and writes the proxy passed.
func roundTripsAt(proxy *wireproxy.Proxy) int {
	counts := proxy.Counts()
	return counts["find"] + counts["getMore"] + writesIn(counts)
}

// docsPerLease returns the most term documents any lease of coll has, and
// how many there are in all.
func docsPerLease(ctx context.Context, coll *mongo.Collection) (int, int, error) {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return 0, 0, err
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return 0, 0, err
	}
	counts := make(map[string]int)
	most := 0
	for _, d := range docs {
		key := d.ID[:max(0, strings.LastIndex(d.ID, "#"))]
		counts[key]++
		most = max(most, counts[key])
	}
	return most, len(docs), nil
}

// addLeaseScaleRows adds the rows of run, beside base, the same shape
// with fewer leases measured in the same run.
func addLeaseScaleRows(t *table, run, base leaseScale) {
	what := func(f string) string {
		return fmt.Sprintf("%s, %d leases (%v) renewed every %v", f, run.shape.leases(), run.shape, run.load.period)
	}
	baseline := func(m string) string {
		return fmt.Sprintf("%s at %d leases (%v)", m, base.shape.leases(), base.shape)
	}
	p50, p99, _ := percentiles(run.latencies)
	b50, b99, _ := percentiles(base.latencies)
	t.add(row{section: "leases", what: what("claim p50 / p99"),
		measured: fmt.Sprintf("%s / %s", ms(p50), ms(p99)),
		baseline: baseline(fmt.Sprintf("%s / %s", ms(b50), ms(b99))),
		ratio:    timesOf(p99, b99), target: "p99 <= " + ms(claimTarget), verdict: verdict(p99 > 0 && p99 <= claimTarget)})
	t.add(row{section: "leases", what: what("claims granted per second"),
		measured: fmt.Sprintf("%.0f/s (%d failed)", perSecond(run.claims, run.load.window), run.failed),
		baseline: baseline(fmt.Sprintf("%.0f/s (%d failed)", perSecond(base.claims, base.load.window), base.failed)),
		target:   fmt.Sprintf("%.0f/s, none failed", perSecond(run.shape.leases(), run.load.period)),
		verdict:  verdict(run.failed == 0 && run.claims > 0)})
	t.add(row{section: "leases", what: what("store round trips per tick (at the server)"),
		measured: fmt.Sprintf("%.2f", run.tickTrips), baseline: baseline(fmt.Sprintf("%.2f", base.tickTrips)),
		target: "<= 2", verdict: verdict(run.tickTrips <= 2)})
	most := scalePruneEvery + 2
	t.add(row{section: "leases", what: what("lease documents per lease (most; all / leases)"),
		measured: fmt.Sprintf("%d; %.2f", run.mostDocs, float64(run.docs)/float64(run.shape.leases())),
		baseline: baseline(fmt.Sprintf("%d; %.2f", base.mostDocs, float64(base.docs)/float64(base.shape.leases()))),
		target:   fmt.Sprintf("<= %d", most), verdict: verdict(run.mostDocs <= most)})
	t.add(row{section: "leases", what: what("controller CPU for leases"),
		measured: fmt.Sprintf("%.0f ms/s", perSecond(int(run.cpu.Milliseconds()), run.load.window)),
		baseline: baseline(fmt.Sprintf("%.0f ms/s", perSecond(int(base.cpu.Milliseconds()), base.load.window))),
		ratio:    timesOf(run.cpu, base.cpu)})
	_, seen, _ := percentiles(run.released)
	_, baseSeen, _ := percentiles(base.released)
	_, read, _ := percentiles(run.storeReads)
	bound := scaleMaxSleep + read
	t.add(row{section: "leases", what: what(fmt.Sprintf("release elsewhere seen by a blocked caller, p99 of %d", len(run.released))),
		measured: seenOf(seen), baseline: baseline(seenOf(baseSeen)), ratio: timesOf(seen, baseSeen),
		target:  fmt.Sprintf("<= MaxSleep + one read (p99 of the store's) = %s", ms(bound)),
		verdict: verdict(len(run.released) > 0 && seen <= bound)})
	_, baseRead, _ := percentiles(base.storeReads)
	t.add(row{section: "leases", what: what("one read of every lease: alone; the store's p99; leases expired by the store"),
		measured: fmt.Sprintf("%s; %s; %d expired of %d dying", ms(run.read), ms(read), run.expired, run.shape.leases()/run.load.dyingEvery),
		baseline: baseline(fmt.Sprintf("%s; %s; %d expired", ms(base.read), ms(baseRead), base.expired)),
		ratio:    timesOf(read, baseRead)})
}

// seenOf returns d, or that it was not seen, if it is unseenAfter.
func seenOf(d time.Duration) string {
	if d >= unseenAfter {
		return "not seen in " + ms(unseenAfter)
	}
	return ms(d)
}

// perSecond returns n per second of d.
func perSecond(n int, d time.Duration) float64 {
	return float64(n) / d.Seconds()
}

// timesOf returns how many times base measured is, as "12.3x", or "-"
// when base is zero.
func timesOf(measured, base time.Duration) string {
	if base <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", float64(measured)/float64(base))
}
