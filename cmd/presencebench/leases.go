package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/internal/commands"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// benchLeases measures claims per second through the leadership manager,
// and the database round trips that renewing 1,000 held leases costs,
// through the client's batch and through the manager.
func benchLeases(ctx context.Context, e *env, t *table) error {
	claims, held := 500, 1000
	if e.opts.quick {
		claims, held = 50, 100
	}
	db, counter, done, err := e.counted()
	if err != nil {
		return err
	}
	defer done()
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection("leases"), Clock: clock.WallClock})
	if err != nil {
		return err
	}
	m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Client: client, Clock: clock.WallClock, Model: modelTag(0), MaxSleep: time.Hour})
	if err != nil {
		return err
	}
	defer func() { m.Kill(); _ = m.Wait() }()

	counter.Reset()
	started := time.Now()
	for i := 0; i < claims && ctx.Err() == nil; i++ {
		app := fmt.Sprintf("app%d", i)
		if err := m.ClaimLeadership(app, app+"/0", time.Minute); err != nil {
			return err
		}
	}
	perSecond := float64(claims) / time.Since(started).Seconds()
	trips := float64(roundTrips(counter)) / float64(claims)
	e.logf("%d claims, one at a time: %.0f claims/s, %.2f round trips each", claims, perSecond, trips)
	t.add(row{section: "leases", what: fmt.Sprintf("claims through the manager, one at a time (%d)", claims),
		measured: fmt.Sprintf("%.0f claims/s, %.2f round trips per claim", perSecond, trips)})

	batch := make([]lease.Claim, held)
	for i := range batch {
		app := fmt.Sprintf("held%d", i)
		batch[i] = lease.Claim{
			Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(0).Id(), Lease: app},
			Request: lease.Request{Holder: app + "/0", Duration: time.Minute},
		}
	}
	// The leases are first claimed through the manager, so that its
	// store's view holds them, as a controller's does for what it
	// renews; then renewed through it, then through the client alone
	// (which leaves the store's view behind, so it comes last).
	if err := claimAll(m, batch); err != nil {
		return err
	}
	counter.Reset()
	started = time.Now()
	if err := claimAll(m, batch); err != nil {
		return err
	}
	took := time.Since(started)
	trips = float64(roundTrips(counter))
	e.logf("renew %d held leases through the manager: %.0f round trips, %v", held, trips, took)
	t.add(row{section: "leases", what: fmt.Sprintf("renew %d held leases through the manager, all at once", held),
		measured: fmt.Sprintf("%.0f round trips, %v", trips, took.Round(time.Millisecond)), target: "<= 2 round trips", verdict: verdict(trips <= 2)})

	counter.Reset()
	started = time.Now()
	if _, _, err := client.ClaimMany(ctx, batch); err != nil {
		return err
	}
	took = time.Since(started)
	trips = float64(roundTrips(counter))
	t.add(row{section: "leases", what: fmt.Sprintf("renew %d held leases with one ClaimMany (read, insert, confirming read)", held),
		measured: fmt.Sprintf("%.0f round trips, %v", trips, took.Round(time.Millisecond)), target: "<= 3 round trips", verdict: verdict(trips <= 3)})

	current, err := client.Leases(ctx, leaseexpiry.Namespace, modelTag(0).Id())
	if err != nil {
		return err
	}
	counter.Reset()
	started = time.Now()
	if _, _, err := client.ClaimManyOn(ctx, batch, current); err != nil {
		return err
	}
	took = time.Since(started)
	trips = float64(roundTrips(counter))
	t.add(row{section: "leases", what: fmt.Sprintf("renew %d held leases with one ClaimManyOn a view read before (insert, confirming read)", held),
		measured: fmt.Sprintf("%.0f round trips, %v", trips, took.Round(time.Millisecond)), target: "<= 2 round trips", verdict: verdict(trips <= 2)})
	return nil
}

// claimAll claims every lease of batch through m at once, as the units of
// a controller's models do.
func claimAll(m leaseexpiry.Manager, batch []lease.Claim) error {
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	for _, c := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.ClaimLeadership(c.Key.Lease, c.Request.Holder, time.Minute); err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// roundTrips counts the reads and writes a lease client sent.
func roundTrips(c *commands.Counter) int {
	return c.Count("find") + c.Count("getMore") + c.Count("insert")
}
