package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/presencereader"
)

// deploymentStatus is what `presenced status` reports.
type deploymentStatus struct {
	Models    []modelKeys    `json:"models"`
	Writers   []writerStatus `json:"writers"`
	Leases    []leaseStatus  `json:"leases"`
	Documents map[string]int `json:"documents"`
	// Skipped counts the presence documents the read skipped as
	// invalid (another Period, say).
	Skipped int `json:"skipped"`
}

type modelKeys struct {
	Model string `json:"model"`
	Alive int    `json:"alive"`
	Dead  int    `json:"dead"`
	Total int    `json:"total"`
}

// writerStatus is one controller's ping batcher as its latest document
// shows it.
type writerStatus struct {
	Writer    string `json:"writer"`
	LastSlot  int64  `json:"lastSlot"`
	LastWrite string `json:"lastWrite"` // RFC 3339, by the writer's clock
	// Behind is how far the writer's last write is behind this
	// command's clock: the write's age plus the clock difference.
	Behind string `json:"behind"`
}

type leaseStatus struct {
	Model  string   `json:"model"`
	Lease  string   `json:"lease"`
	Holder string   `json:"holder,omitempty"`
	Fence  int64    `json:"fence"`
	Held   bool     `json:"held"`
	Expiry string   `json:"expiry,omitempty"` // RFC 3339
	Pins   []string `json:"pins,omitempty"`
	// Invalid says why the lease is frozen (granted to nobody until
	// `presenced lease reset`).
	Invalid string `json:"invalid,omitempty"`
	// Foreign says why its latest term is not one presencekit wrote.
	Foreign string `json:"foreign,omitempty"`
}

// runStatus prints every model's alive, dead and total keys, each
// controller's latest write, every lease and the collections' document
// counts, read-only; --model limits it to one model. It exits 0, or 2 on
// error.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "status", "", args, stdout, stderr, answerStatus)
}

func answerStatus(ctx context.Context, o queryOptions, db *mongo.Database, stdout io.Writer) (int, error) {
	var model []string
	if o.model.Id() != "" {
		model = []string{o.model.Id()}
	}
	st, err := statusOf(ctx, db, o.collection, o.leases, model, time.Now(), func(models []string) ([]modelKeys, int, error) {
		return presenceOf(db.Collection(o.collection), o.period, models)
	})
	if err != nil {
		return 0, err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return exitYes, enc.Encode(st)
	}
	printStatus(stdout, st)
	return exitYes, nil
}

// statusOf reads a deployment's status: the presence of models (every
// model any writer has keys of if none), as presence counts it, each
// writer's latest write, the leases of those models and the collections'
// document counts, judged at now. It only reads.
func statusOf(ctx context.Context, db *mongo.Database, collection, leases string, models []string, now time.Time,
	presence func([]string) ([]modelKeys, int, error)) (deploymentStatus, error) {
	base := db.Collection(collection)
	var st deploymentStatus
	var err error
	model := ""
	if len(models) == 1 {
		model = models[0]
	} else if models, err = modelsOf(ctx, base); err != nil {
		return st, errors.Annotate(err, "cannot search for models")
	}
	if st.Models, st.Skipped, err = presence(models); err != nil {
		return st, errors.Trace(err)
	}
	if st.Writers, err = writersOf(ctx, base, now); err != nil {
		return st, errors.Annotate(err, "cannot read the writers")
	}
	if st.Leases, err = leasesOf(ctx, db.Collection(leases), model, now); err != nil {
		return st, errors.Annotate(err, "cannot read the leases")
	}
	st.Documents = make(map[string]int)
	for _, coll := range []*mongo.Collection{schema.Pings(base), schema.Beings(base), db.Collection(leases)} {
		n, err := coll.CountDocuments(ctx, bson.D{})
		if err != nil {
			return st, errors.Annotatef(err, "cannot count %s", coll.Name())
		}
		st.Documents[coll.Name()] = int(n)
	}
	return st, nil
}

// modelsOf returns every model that any writer has keys of.
func modelsOf(ctx context.Context, base *mongo.Collection) ([]string, error) {
	cur, err := schema.Beings(base).Find(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	var docs []schema.BeingsDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	var out []string
	for _, doc := range docs {
		for _, m := range doc.Entries.Models {
			if names.IsValidModel(m) && !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// presenceOf loads the presence of models once, as a watcher's first
// load, and counts their keys.
func presenceOf(base *mongo.Collection, period time.Duration, models []string) ([]modelKeys, int, error) {
	var skipped int
	r, err := presencereader.New(presencereader.Config{
		Base: base, Clock: clock.WallClock, Period: period, SyncInterval: time.Hour,
		OnLoad: func(s presencereader.LoadStats) { skipped = s.Skipped },
	})
	if err != nil {
		return nil, 0, err
	}
	defer func() { r.Kill(); _ = r.Wait() }()
	if err := r.Refresh(); err != nil {
		return nil, 0, err
	}
	out := make([]modelKeys, 0, len(models))
	for _, m := range models {
		dying := make(chan struct{})
		view, err := r.NewView(names.NewModelTag(m), dying, func() error { return nil })
		if err != nil {
			return nil, 0, err
		}
		report := view.Report()
		close(dying)
		view.Close()
		total, _ := report["keys"].(int)
		alive, _ := report["alive"].(int)
		out = append(out, modelKeys{Model: m, Alive: alive, Dead: total - alive, Total: total})
	}
	return out, skipped, nil
}

// writersOf returns each writer's latest ping document's slot and stamp.
func writersOf(ctx context.Context, base *mongo.Collection, now time.Time) ([]writerStatus, error) {
	cur, err := schema.Pings(base).Find(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	latest := make(map[string]schema.PingDoc)
	for cur.Next(ctx) {
		var doc schema.PingDoc
		if cur.Decode(&doc) != nil || doc.Writer == "" {
			continue
		}
		if doc.Slot > latest[doc.Writer].Slot {
			latest[doc.Writer] = doc
		}
	}
	if err := cur.Err(); err != nil {
		return nil, err
	}
	out := make([]writerStatus, 0, len(latest))
	for writer, doc := range latest {
		at := time.Unix(0, doc.At)
		out = append(out, writerStatus{
			Writer: writer, LastSlot: doc.Slot, LastWrite: at.UTC().Format(time.RFC3339Nano),
			Behind: now.Sub(at).Round(time.Millisecond).String(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Writer < out[j].Writer })
	return out, nil
}

// leasesOf returns every leadership lease, of model or of every model,
// with whether it is held at now.
func leasesOf(ctx context.Context, coll *mongo.Collection, model string, now time.Time) ([]leaseStatus, error) {
	client, err := lease.NewClient(lease.ClientConfig{Collection: coll, Clock: clock.WallClock})
	if err != nil {
		return nil, err
	}
	leases, err := client.Leases(ctx, leaseexpiry.Namespace, model)
	if err != nil {
		return nil, err
	}
	out := make([]leaseStatus, 0, len(leases))
	for key, info := range leases {
		ls := leaseStatus{Model: key.Model, Lease: key.Lease, Holder: info.Holder, Fence: info.Fence, Pins: info.Pins,
			Invalid: info.Invalid, Foreign: info.Foreign, Held: info.HeldBy(info.Holder, now)}
		if info.Holder != "" && !info.Expiry.IsZero() {
			ls.Expiry = info.Expiry.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, ls)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Model < out[j].Model || (out[i].Model == out[j].Model && out[i].Lease < out[j].Lease)
	})
	return out, nil
}

// printStatus prints st as tables for people.
func printStatus(w io.Writer, st deploymentStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tALIVE\tDEAD\tTOTAL")
	for _, m := range st.Models {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", m.Model, m.Alive, m.Dead, m.Total)
	}
	fmt.Fprintln(tw, "\nCONTROLLER (WRITER)\tLAST SLOT\tLAST WRITE\tBEHIND")
	for _, wr := range st.Writers {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", wr.Writer, wr.LastSlot, wr.LastWrite, wr.Behind)
	}
	fmt.Fprintln(tw, "\nMODEL\tLEASE\tHOLDER\tFENCE\tEXPIRY\tPINS")
	for _, l := range st.Leases {
		holder := l.Holder
		if holder == "" {
			holder = "-"
		}
		if l.Foreign != "" {
			holder += " (FOREIGN TERM: " + l.Foreign + ")"
		}
		if l.Invalid != "" {
			holder += " FROZEN: " + l.Invalid
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%v\n", l.Model, l.Lease, holder, l.Fence, l.Expiry, l.Pins)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ndocuments: %v; presence documents skipped as invalid: %d\n", st.Documents, st.Skipped)
}
