package leasestore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/leasestore"
)

// BenchmarkTenThousandLeasesRenewedEvery30s runs one controller's store
// over 1,000 models of 10 applications, each leader renewing its minute
// lease every 30 s as units do: a sixtieth of the leases every half
// second, so that claims come more often than MaxSleep. Each iteration is
// one second of the test clock (two rounds of renewals, then whatever
// tick falls due). It reports the store's round trips per tick (every
// command sent but the inserts of claims, per read: the read, expiries
// and prunes), reads per second and per insert of claims (a claim makes
// no read of its own: it waits for the store's next), claim p99 on the
// wall clock, terms kept per lease (PruneEvery 10) and the controller's
// CPU (the server runs in its own process when PRESENCE_TEST_MONGOD is
// set). Run it for at least a minute of leases:
//
//	go test -run XXX -bench TenThousand -benchtime 60x ./worker/leasestore
func BenchmarkTenThousandLeasesRenewedEvery30s(b *testing.B) {
	const models, apps, pruneEvery = 1000, 10, 10
	db, counter, clk, client := benchClient(b)
	claims := make([]lease.Claim, 0, models*apps)
	for m := range models {
		for a := range apps {
			app := fmt.Sprintf("app%d", a)
			claims = append(claims, lease.Claim{
				Key:     lease.Key{Namespace: leaseexpiry.Namespace, Model: modelTag(m).Id(), Lease: app},
				Request: lease.Request{Holder: app + "/0", Duration: time.Minute},
			})
		}
	}
	for chunk := range slices.Chunk(claims, 1000) {
		if _, _, err := client.ClaimMany(context.Background(), chunk); err != nil {
			b.Fatal(err)
		}
	}
	store, err := leasestore.New(leasestore.Config{Client: client, Clock: clk, MaxSleep: time.Second, PruneEvery: pruneEvery, CallTimeout: leasestore.MaxCallTimeout})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { store.Kill(); _ = store.Wait() }()
	wait := 10 * agenttest.LongWait
	if err := clk.WaitAdvance(0, wait, 1); err != nil {
		b.Fatal(err)
	}

	var latencies []time.Duration
	var mu sync.Mutex
	// renew renews the leases due in the round-th half second.
	renew := func(round int) {
		var wg sync.WaitGroup
		for i := round % 60; i < len(claims); i += 60 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				_, err := store.Claim(context.Background(), claims[i])
				mu.Lock()
				defer mu.Unlock()
				latencies = append(latencies, time.Since(start))
				if err != nil {
					b.Errorf("renewal of %v: %v", claims[i].Key, err)
				}
			}()
		}
		wg.Wait()
	}
	reads0 := store.Report()["reads"].(int)
	batches0 := store.Report()["claim-batches"].(int)
	counter.Reset()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for half := range 2 {
			renew(2*i + half)
			if err := clk.WaitAdvance(500*time.Millisecond, wait, 1); err != nil {
				b.Fatal(err)
			}
			if err := clk.WaitAdvance(0, wait, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	reads := store.Report()["reads"].(int) - reads0
	batches := store.Report()["claim-batches"].(int) - batches0
	tickTrips := counter.Reads() + counter.Writes() - batches
	slices.Sort(latencies)
	perLease, err := termsPerLease(db.Collection("leases"))
	if err != nil {
		b.Fatal(err)
	}
	seconds := float64(b.N)
	b.ReportMetric(float64(tickTrips)/max(float64(reads), 1), "trips/tick")
	b.ReportMetric(float64(reads)/seconds, "reads/s")
	b.ReportMetric(float64(reads)/max(float64(batches), 1), "reads/claim-batch")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "claim-p99-ms")
	b.ReportMetric(float64(perLease), "max-terms/lease")
	b.ReportMetric(float64(cpu.Milliseconds())/seconds, "cpu-ms/s")
	b.ReportMetric(0, "ns/op")
}

// termsPerLease returns the most terms any lease of coll has.
func termsPerLease(coll *mongo.Collection) (int, error) {
	cur, err := coll.Find(context.Background(), bson.D{})
	if err != nil {
		return 0, err
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(context.Background(), &docs); err != nil {
		return 0, err
	}
	counts := make(map[string]int)
	most := 0
	for _, d := range docs {
		lease := d.ID[:strings.LastIndex(d.ID, "#")]
		counts[lease]++
		most = max(most, counts[lease])
	}
	return most, nil
}

// cpuTime returns the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
