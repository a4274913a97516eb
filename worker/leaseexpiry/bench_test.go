package leaseexpiry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/juju/names/v5"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// benchManager starts a manager on a fresh database of the embedded server
// (or PRESENCE_TEST_MONGO_URI) whose client counts its commands.
func benchManager(b *testing.B) (leaseexpiry.ManagerWorker, *agenttest.CommandCounter, func()) {
	server, err := agenttest.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	counter := &agenttest.CommandCounter{}
	client, err := server.NewClient(counter.Options())
	if err != nil {
		b.Fatal(err)
	}
	db := client.Database(fmt.Sprintf("bench_%d", time.Now().UnixNano()))
	clk := agenttest.NewClock()
	leases, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection("leases"), Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{
		Client: leases, Clock: clk, Model: names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a"), MaxSleep: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	return m, counter, func() {
		m.Kill()
		_ = m.Wait()
		_ = db.Drop(context.Background())
		_ = client.Disconnect(context.Background())
		_ = server.Destroy()
	}
}

// BenchmarkClaim claims leadership of a new application per iteration, one
// claim at a time: claims per second against the server, and database
// round trips per claim.
func BenchmarkClaim(b *testing.B) {
	m, counter, stop := benchManager(b)
	defer stop()
	counter.Reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		app := fmt.Sprintf("app%d", i)
		if err := m.ClaimLeadership(app, app+"/0", time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	b.ReportMetric(float64(counter.Count("find")+counter.Count("insert"))/float64(b.N), "roundtrips/claim")
}

// BenchmarkRenew1000 renews 1,000 leases held through one manager, all
// renewals in flight at once: round trips per renewal round.
func BenchmarkRenew1000(b *testing.B) {
	m, counter, stop := benchManager(b)
	defer stop()
	renew := func() {
		var wg sync.WaitGroup
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				app := fmt.Sprintf("app%d", i)
				if err := m.ClaimLeadership(app, app+"/0", time.Minute); err != nil {
					b.Error(err)
				}
			}(i)
		}
		wg.Wait()
	}
	renew()
	counter.Reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		renew()
	}
	b.StopTimer()
	b.ReportMetric(float64(counter.Count("find")+counter.Count("insert"))/float64(b.N), "roundtrips/round")
}
