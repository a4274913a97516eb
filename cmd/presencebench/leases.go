package main

import (
	"context"
	"fmt"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/internal/commands"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// benchLeases measures claims per second through the leadership manager,
// the database round trips that renewing 1,000 held leases costs, through
// the client's batch and through the manager, and a controller's leases at
// scale (benchLeaseScale).
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
	if err := addClaimRow(ctx, e, t, m, counter, claims); err != nil {
		return err
	}
	if err := addRenewRows(ctx, e, t, client, m, counter, held); err != nil {
		return err
	}
	return benchLeaseScale(ctx, e, t)
}

// addClaimRow claims claims leases through m one after another and adds
// how many it claimed a second and the round trips each took.
func addClaimRow(ctx context.Context, e *env, t *table, m leaseexpiry.Manager, counter *commands.Counter, claims int) error {
	trips, took, err := roundTripsOf(counter, func() error {
		for i := 0; i < claims && ctx.Err() == nil; i++ {
			app := fmt.Sprintf("app%d", i)
			if err := m.ClaimLeadership(app, app+"/0", time.Minute); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	perSecond := float64(claims) / took.Seconds()
	perClaim := trips / float64(claims)
	e.logf("%d claims, one at a time: %.0f claims/s, %.2f round trips each", claims, perSecond, perClaim)
	t.add(row{section: "leases", what: fmt.Sprintf("claims through the manager, one at a time (%d)", claims),
		measured: fmt.Sprintf("%.0f claims/s, %.2f round trips per claim", perSecond, perClaim)})
	return nil
}

// addRenewRows renews held leases, claimed first through m, all at once
// through m, with one ClaimMany of client, and with one ClaimManyOn a
// view read before, and adds the round trips each took.
func addRenewRows(ctx context.Context, e *env, t *table, client lease.Client, m leaseexpiry.Manager, counter *commands.Counter, held int) error {
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
	trips, took, err := roundTripsOf(counter, func() error { return claimAll(m, batch) })
	if err != nil {
		return err
	}
	e.logf("renew %d held leases through the manager: %.0f round trips, %v", held, trips, took)
	t.add(renewRow(fmt.Sprintf("renew %d held leases through the manager, all at once", held), trips, took, 2))

	trips, took, err = roundTripsOf(counter, func() error {
		_, _, err := client.ClaimMany(ctx, batch)
		return err
	})
	if err != nil {
		return err
	}
	t.add(renewRow(fmt.Sprintf("renew %d held leases with one ClaimMany (read, insert, confirming read)", held), trips, took, 3))

	current, err := client.Leases(ctx, leaseexpiry.Namespace, modelTag(0).Id())
	if err != nil {
		return err
	}
	trips, took, err = roundTripsOf(counter, func() error {
		_, _, err := client.ClaimManyOn(ctx, batch, current)
		return err
	})
	if err != nil {
		return err
	}
	t.add(renewRow(fmt.Sprintf("renew %d held leases with one ClaimManyOn a view read before (insert, confirming read)", held), trips, took, 2))
	return nil
}

// renewRow is the leases row of a renewal that took trips round trips,
// against a target of most.
func renewRow(what string, trips float64, took time.Duration, most int) row {
	return row{section: "leases", what: what,
		measured: fmt.Sprintf("%.0f round trips, %v", trips, took.Round(time.Millisecond)),
		target:   fmt.Sprintf("<= %d round trips", most), verdict: verdict(trips <= float64(most))}
}

// roundTripsOf resets counter, runs f, and returns the round trips f's
// lease client sent and how long f took.
func roundTripsOf(counter *commands.Counter, f func() error) (float64, time.Duration, error) {
	counter.Reset()
	started := time.Now()
	err := f()
	return float64(roundTrips(counter)), time.Since(started), err
}

// claimAll claims every lease of batch through m at once, as the units of
// a controller's models do.
func claimAll(m leaseexpiry.Manager, batch []lease.Claim) error {
	_, err := concurrently(len(batch), func(i int) error {
		return m.ClaimLeadership(batch[i].Key.Lease, batch[i].Request.Holder, time.Minute)
	})
	return err
}

// roundTrips counts the reads and writes a lease client sent.
func roundTrips(c *commands.Counter) int {
	return c.Count("find") + c.Count("getMore") + c.Count("insert")
}
