package leasestore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/worker/v4"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

// BenchmarkCommandsPerTick measures the database commands of one tick of
// the lease work of a controller, each model holding one lease: one model,
// 1,000 models served by one store, and 1,000 models each with a manager
// running a private store (the cost before the shared store). Run it with
// a fixed number of ticks:
//
//	go test -run XXX -bench CommandsPerTick -benchtime 3x ./worker/leasestore
func BenchmarkCommandsPerTick(b *testing.B) {
	for _, t := range []struct {
		name    string
		models  int
		private bool
	}{
		{"1-model", 1, false},
		{"1000-models-one-store", 1000, false},
		{"1000-models-private-stores", 1000, true},
		{"100-models-private-stores", 100, true},
	} {
		b.Run(t.name, func(b *testing.B) {
			benchTicks(b, t.models, t.private)
		})
	}
}

// benchClient starts a server for the benchmark and returns a database
// of it, the counter of its commands, a test clock and a lease client of
// that clock. The benchmark's cleanup stops them.
func benchClient(b *testing.B) (*mongo.Database, *agenttest.CommandCounter, *testclock.Clock, lease.Client) {
	server, err := agenttest.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = server.Destroy() })
	counter := &agenttest.CommandCounter{}
	mc, err := server.NewClient(counter.Options())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	db := mc.Database(fmt.Sprintf("bench_%d", time.Now().UnixNano()))
	b.Cleanup(func() { _ = db.Drop(context.Background()) })
	clk := agenttest.NewClock()
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection("leases"), Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	return db, counter, clk, client
}

func benchTicks(b *testing.B, models int, private bool) {
	_, counter, clk, client := benchClient(b)
	claims := make([]lease.Claim, models)
	for i := range claims {
		claims[i] = lease.Claim{
			Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(i).Id(), Lease: "mysql"},
			Request: lease.Request{Holder: "mysql/0", Duration: time.Hour},
		}
	}
	if _, _, err := client.ClaimMany(context.Background(), claims); err != nil {
		b.Fatal(err)
	}

	var workers []worker.Worker
	defer func() {
		for _, w := range workers {
			w.Kill()
		}
		for _, w := range workers {
			_ = w.Wait()
		}
	}()
	if private {
		for i := 0; i < models; i++ {
			m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Client: client, Clock: clk, Model: modelTag(i)})
			if err != nil {
				b.Fatal(err)
			}
			workers = append(workers, m)
		}
	} else {
		store, err := leasestore.New(leasestore.Config{Client: client, Clock: clk})
		if err != nil {
			b.Fatal(err)
		}
		workers = append(workers, store)
		for i := 0; i < models; i++ {
			m, err := leaseexpiry.NewManager(leaseexpiry.ManagerConfig{Store: store, Clock: clk, Model: modelTag(i)})
			if err != nil {
				b.Fatal(err)
			}
			workers = append(workers, m)
		}
	}
	// One timer per store: the managers have none.
	timers := 1
	if private {
		timers = models
	}
	// A thousand private stores take far longer than one to finish a
	// tick on the embedded server.
	wait := agenttest.LongWait * time.Duration(1+models/100)
	tick := func() {
		if err := clk.WaitAdvance(time.Second, wait, timers); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle := func() {
		if err := clk.WaitAdvance(0, wait, timers); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle()
	counter.Reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tick()
		waitIdle()
	}
	b.StopTimer()
	b.ReportMetric(float64(counter.CountOn("find", "leases"))/float64(b.N), "reads/tick")
	b.ReportMetric(float64(counter.Count("find")+counter.Count("getMore")+counter.Writes())/float64(b.N), "commands/tick")
}
