package pingbatcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// BenchmarkPing measures the in-memory cost of one ping in steady state:
// 10,000 registered pingers pinging a slot whose bitmap exists.
func BenchmarkPing(b *testing.B) {
	batcher, ids := benchBatcher(b, 10000)
	defer batcher.Kill()
	for _, id := range ids {
		if err := batcher.Ping(id, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := batcher.Ping(ids[i%len(ids)], 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPingParallel is BenchmarkPing with every core pinging at once,
// as many pinger goroutines do.
func BenchmarkPingParallel(b *testing.B) {
	batcher, ids := benchBatcher(b, 10000)
	defer batcher.Kill()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := batcher.Ping(ids[i%len(ids)], 1); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func benchBatcher(b *testing.B, n int) (*pingbatcher.PingBatcher, []pinger.Identity) {
	client, err := mongoClient()
	if err != nil {
		b.Fatal(err)
	}
	base := client.Database("bench").Collection("presence")
	batcher, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: never, Clock: agenttest.NewClock()})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]pinger.Identity, n)
	for i := range ids {
		if ids[i], err = batcher.Register(base, modelA, fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
	}
	return batcher, ids
}

// BenchmarkFlushWrites counts the database write commands and documents of
// one steady-state flush for 10,000 pingers in one model, on the embedded
// server (or PRESENCE_TEST_MONGO_URI). It reports writes/flush, the target
// being at most 1.
func BenchmarkFlushWrites(b *testing.B) {
	server, err := agenttest.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Destroy()
	var counter agenttest.CommandCounter
	client, err := server.NewClient(counter.Options())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	db := client.Database(fmt.Sprintf("bench_%d", time.Now().UnixNano()))
	defer db.Drop(context.Background())
	base := db.Collection("presence")
	batcher, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: never, Clock: agenttest.NewClock()})
	if err != nil {
		b.Fatal(err)
	}
	defer batcher.Kill()
	ids := make([]pinger.Identity, 10000)
	for i := range ids {
		if ids[i], err = batcher.Register(base, modelA, fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	counter.Reset()
	for i := 0; i < b.N; i++ {
		// Every flush is the first of a new slot, in which every pinger
		// pinged: the busiest steady-state flush.
		for _, id := range ids {
			if err := batcher.Ping(id, int64(i+1)); err != nil {
				b.Fatal(err)
			}
		}
		if err := batcher.Sync(); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			// The first flush also writes the writer's beings.
			counter.Reset()
		}
	}
	if b.N > 1 {
		b.ReportMetric(float64(counter.Writes())/float64(b.N-1), "writes/flush")
	}
}
