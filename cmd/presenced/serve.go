package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/internal/embedded"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// serve runs the demo until ctx is done.
func serve(ctx context.Context, o options, out io.Writer) error {
	uri, stopServer, err := database(o, out)
	if err != nil {
		return err
	}
	defer stopServer()

	client, err := mongo.Connect(mongooptions.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		return fmt.Errorf("cannot connect to %s: %w", uri, err)
	}
	defer client.Disconnect(context.Background())
	db := client.Database("presenced")
	base := db.Collection("presence")
	clk := clock.WallClock

	batcher, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: o.flush, Clock: clk})
	if err != nil {
		return err
	}
	workers := []worker.Worker{batcher}
	defer func() {
		for _, w := range workers {
			w.Kill()
		}
		for _, w := range workers {
			_ = w.Wait()
		}
	}()

	models := make([]names.ModelTag, o.models)
	watchers := make([]*watcher.Watcher, o.models)
	for i := range models {
		models[i] = names.NewModelTag(fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1))
		w, err := watcher.New(watcher.Config{Base: base, Model: models[i], Clock: clk, Period: o.period, SyncInterval: o.sync})
		if err != nil {
			return err
		}
		p, err := pruner.New(pruner.Config{Base: base, Model: models[i], Clock: clk, Period: o.period, Interval: 4 * o.period})
		if err != nil {
			return err
		}
		watchers[i] = w
		workers = append(workers, w, p)
	}

	sim := newSimulation(o, base, models, batcher, clk)
	fmt.Fprintf(out, "starting %d agents across %d models (period %v, flush %v, sync %v)\n", o.agents, o.models, o.period, o.flush, o.sync)
	if err := sim.start(ctx, out); err != nil {
		return err
	}
	defer sim.stop()

	var wg sync.WaitGroup
	for i, w := range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			follow(ctx, w, models[i], sim, out)
		}()
	}
	summary := time.NewTicker(5 * time.Second)
	defer summary.Stop()
	churn := time.NewTicker(o.churn)
	defer churn.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "stopping")
			wg.Wait()
			return nil
		case <-churn.C:
			sim.step(out)
		case <-summary.C:
			printSummary(ctx, out, db, watchers, models)
		}
	}
}

// database returns the URI to use, starting the embedded server unless
// --mongo-uri was given, and a function that stops it.
func database(o options, out io.Writer) (string, func(), error) {
	if o.mongoURI != "" {
		return o.mongoURI, func() {}, nil
	}
	dir, cleanup := o.dataDir, func() {}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "presenced-")
		if err != nil {
			return "", nil, err
		}
		dir, cleanup = tmp, func() { _ = os.RemoveAll(tmp) }
	}
	srv, err := embedded.Start(embedded.Config{Dir: dir})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	uri := srv.URI()
	fmt.Fprintf(out, "embedded MongoDB-wire server (FerretDB on SQLite) at %s, data in %s\n", uri, dir)
	return uri, func() { srv.Stop(); cleanup() }, nil
}

// follow prints every change one watcher reports, with the detection
// latency of deaths the simulation caused.
func follow(ctx context.Context, w *watcher.Watcher, model names.ModelTag, sim *simulation, out io.Writer) {
	sub := w.Subscribe()
	defer sub.Close()
	first := true
	for {
		changes, err := sub.Next(ctx)
		if err != nil {
			return
		}
		if first {
			first = false
			continue
		}
		for _, c := range changes {
			fmt.Fprintln(out, sim.describe(model, c))
		}
	}
}

func printSummary(ctx context.Context, out io.Writer, db *mongo.Database, watchers []*watcher.Watcher, models []names.ModelTag) {
	var parts []string
	for i, w := range watchers {
		report := w.Report()
		parts = append(parts, fmt.Sprintf("%s…: %v alive", models[i].Id()[24:], report["alive"]))
	}
	sort.Strings(parts)
	docs, _ := db.Collection("presence.pings").CountDocuments(ctx, bson.D{})
	fmt.Fprintf(out, "-- %s | ping documents: %d\n", joinParts(parts), docs)
}

func joinParts(parts []string) string {
	s := ""
	for i, p := range parts {
		if i > 0 {
			s += " | "
		}
		s += p
	}
	return s
}
