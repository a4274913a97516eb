package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
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
	// Period is the deployment's, as its ping documents say.
	Period string `json:"period"`
	// Push is how the deployment's readers hear other controllers'
	// writes (see pushPath).
	Push      string         `json:"push"`
	Models    []modelKeys    `json:"models"`
	Writers   []writerStatus `json:"writers"`
	Leases    []leaseStatus  `json:"leases"`
	Documents map[string]int `json:"documents"`
	// Skipped counts the presence documents the read skipped as
	// invalid (another Period, a field of the wrong type, a bitmap too
	// long); SkippedDocuments names them (at most maxNamedSkips).
	Skipped          int          `json:"skipped"`
	SkippedDocuments []skippedDoc `json:"skipped_documents,omitempty"`
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
// error or when the database holds no presence at the Period asked.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "status", "", args, stdout, stderr, answerStatus)
}

func answerStatus(ctx context.Context, o queryOptions, db *mongo.Database, stdout, _ io.Writer) (int, error) {
	base := db.Collection(o.collection)
	scan, err := scanPresence(ctx, base)
	if err != nil {
		return 0, errors.Trace(err)
	}
	period, err := scan.period(ctx, db, o.collection, o.period)
	if err != nil {
		return 0, errors.Trace(err)
	}
	st, err := statusOf(ctx, db, o.leases, o.model.Id(), scan, period, time.Now(), func(models []string) ([]modelKeys, error) {
		return presenceOf(base, period, models)
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

// statusOf reads a deployment's status from scan: the presence of model
// (of every model the scan found if empty), as presence counts it, and
// the rest as documentsStatus reads it, judged at now. It only reads.
func statusOf(ctx context.Context, db *mongo.Database, leases, model string, scan *presenceScan, period time.Duration, now time.Time,
	presence func([]string) ([]modelKeys, error)) (deploymentStatus, error) {
	st, err := documentsStatus(ctx, db, leases, model, scan, period, now)
	if err != nil {
		return st, errors.Trace(err)
	}
	if st.Models, err = presence(scan.modelsOf(model)); err != nil {
		return st, errors.Trace(err)
	}
	return st, nil
}

// documentsStatus reads what a deployment's status says of its documents,
// all but the presence of its models: each writer's latest write as scan
// found it, the leases of model (of every model if empty), the documents
// scan skipped and the collections' document counts, judged at now. It
// only reads.
func documentsStatus(ctx context.Context, db *mongo.Database, leases, model string, scan *presenceScan, period time.Duration, now time.Time) (deploymentStatus, error) {
	st := deploymentStatus{Period: period.String()}
	st.Writers = writersOf(scan, now)
	var err error
	if st.Push, err = pushPath(ctx, db, scan.base); err != nil {
		return st, errors.Trace(err)
	}
	if st.Leases, err = leasesOf(ctx, db.Collection(leases), model, now); err != nil {
		return st, errors.Annotate(err, "cannot read the leases")
	}
	st.SkippedDocuments, st.Skipped = scan.skipped.list()
	st.Documents = make(map[string]int)
	for _, coll := range []*mongo.Collection{schema.Pings(scan.base), schema.Beings(scan.base), db.Collection(leases)} {
		n, err := coll.CountDocuments(ctx, bson.D{})
		if err != nil {
			return st, errors.Annotatef(err, "cannot count %s", coll.Name())
		}
		st.Documents[coll.Name()] = int(n)
	}
	return st, nil
}

// pushPath says how the deployment's readers hear the writes of other
// controllers (see README, "Push"): by tailing the notices if their
// collection is capped, else by polling; on a replica set, by a change
// stream on the ping documents too. It only reads.
func pushPath(ctx context.Context, db *mongo.Database, base *mongo.Collection) (string, error) {
	var hello struct {
		SetName string `bson:"setName"`
	}
	if err := db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return "", errors.Annotate(err, "cannot ask the server whether it is a replica set")
	}
	notices := schema.Notices(base).Name()
	specs, err := db.ListCollectionSpecifications(ctx, bson.D{{Key: "name", Value: notices}})
	if err != nil {
		return "", errors.Annotatef(err, "cannot look for %s", notices)
	}
	path := "notices: readers tail " + notices
	switch {
	case len(specs) == 0:
		path = "polling: no controller has created " + notices + " yet"
	case !capped(specs[0].Options):
		path = "polling: " + notices + " is not capped, so readers cannot tail it"
	}
	if hello.SetName != "" {
		path = "change stream (replica set " + hello.SetName + ") and " + path
	}
	return path, nil
}

// capped reports whether a collection's options say it is capped.
func capped(options bson.Raw) bool {
	ok, _ := options.Lookup("capped").BooleanOK()
	return ok
}

// presenceOf loads the presence of models once, as a watcher's first
// load, and counts their keys.
func presenceOf(base *mongo.Collection, period time.Duration, models []string) ([]modelKeys, error) {
	r, err := presencereader.New(presencereader.Config{
		Base: base, Clock: clock.WallClock, Period: period, SyncInterval: time.Hour,
	})
	if err != nil {
		return nil, err
	}
	defer func() { r.Kill(); _ = r.Wait() }()
	if err := r.Refresh(); err != nil {
		return nil, err
	}
	out := make([]modelKeys, 0, len(models))
	for _, m := range models {
		dying := make(chan struct{})
		view, err := r.NewView(names.NewModelTag(m), dying, func() error { return nil })
		if err != nil {
			return nil, err
		}
		report := view.Report()
		close(dying)
		view.Close()
		total, _ := report["keys"].(int)
		alive, _ := report["alive"].(int)
		out = append(out, modelKeys{Model: m, Alive: alive, Dead: total - alive, Total: total})
	}
	return out, nil
}

// writersOf returns each writer's latest valid ping document's slot and
// stamp, judged at now.
func writersOf(scan *presenceScan, now time.Time) []writerStatus {
	out := make([]writerStatus, 0, len(scan.latest))
	for writer, doc := range scan.latest {
		at := time.Unix(0, doc.At)
		out = append(out, writerStatus{
			Writer: writer, LastSlot: doc.Slot, LastWrite: at.UTC().Format(time.RFC3339Nano),
			Behind: now.Sub(at).Round(time.Millisecond).String(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Writer < out[j].Writer })
	return out
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

// printStatus prints st for people: a section per kind of thing, each an
// aligned table, in the order of statusSections.
func printStatus(w io.Writer, st deploymentStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, section := range statusSections {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		section(tw, st)
	}
	_ = tw.Flush()
}

// statusSections print the parts of a status as tables, one header line
// and a line per row, cells separated by tabs.
var statusSections = []func(io.Writer, deploymentStatus){
	func(w io.Writer, st deploymentStatus) {
		fmt.Fprintf(w, "PERIOD\t%s\t(read from the ping documents)\n", st.Period)
		fmt.Fprintf(w, "PUSH\t%s\n", st.Push)
	},
	func(w io.Writer, st deploymentStatus) {
		fmt.Fprintln(w, "MODEL\tALIVE\tDEAD\tTOTAL")
		for _, m := range st.Models {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", m.Model, m.Alive, m.Dead, m.Total)
		}
	},
	func(w io.Writer, st deploymentStatus) {
		fmt.Fprintln(w, "CONTROLLER (WRITER)\tLAST SLOT\tLAST WRITE\tBEHIND")
		for _, wr := range st.Writers {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", wr.Writer, wr.LastSlot, wr.LastWrite, wr.Behind)
		}
	},
	func(w io.Writer, st deploymentStatus) {
		fmt.Fprintln(w, "MODEL\tLEASE\tHOLDER\tFENCE\tEXPIRY\tPINS")
		for _, l := range st.Leases {
			fmt.Fprintln(w, strings.Join(leaseRow(l), "\t"))
		}
	},
	func(w io.Writer, st deploymentStatus) {
		fmt.Fprintln(w, "COLLECTION\tDOCUMENTS")
		for _, coll := range sortedKeys(st.Documents) {
			fmt.Fprintf(w, "%s\t%d\n", coll, st.Documents[coll])
		}
	},
	func(w io.Writer, st deploymentStatus) {
		fmt.Fprintf(w, "SKIPPED DOCUMENTS\t%d\t(invalid: no reader applies them)\n", st.Skipped)
		for _, doc := range st.SkippedDocuments {
			fmt.Fprintf(w, "%s\t%s\t%s\n", doc.Kind, doc.ID, doc.Reason)
		}
		if more := st.Skipped - len(st.SkippedDocuments); more > 0 {
			fmt.Fprintf(w, "...\t%d more\t\n", more)
		}
	},
}

// leaseRow returns the cells of a lease's line in the lease table.
func leaseRow(l leaseStatus) []string {
	holder, expiry, pins := l.Holder, l.Expiry, strings.Join(l.Pins, ",")
	if holder == "" {
		holder = "-"
	}
	if l.Foreign != "" {
		holder += " (FOREIGN TERM: " + l.Foreign + ")"
	}
	if l.Invalid != "" {
		holder += " FROZEN: " + l.Invalid
	}
	for _, cell := range []*string{&expiry, &pins} {
		if *cell == "" {
			*cell = "-"
		}
	}
	return []string{l.Model, l.Lease, holder, strconv.FormatInt(l.Fence, 10), expiry, pins}
}
