package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/juju/clock"
	jujuerrors "github.com/juju/errors"
	"github.com/juju/names/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/presencereader"
)

// Exit codes of watch and serve (and of the demo).
const (
	exitOK      = 0 // stopped by a signal
	exitFailed  = 1 // no database, or it failed later
	exitBadFlag = 2 // bad flags
)

// followOptions are the flags of watch and serve, the commands that
// follow a deployment until stopped.
type followOptions struct {
	queryOptions
	sync     time.Duration
	refresh  time.Duration
	listen   string
	after    []presencereader.Position
	coalesce bool
	streams  streamLimits
}

// parseFollow parses watch's or serve's flags: serve takes --listen and
// no argument, watch takes keys.
func parseFollow(name string, args []string, stderr io.Writer) (followOptions, error) {
	var o followOptions
	var model string
	usage := "presenced serve --mongo-uri URI [--listen ADDR] [--model UUID] [flags]"
	if name == "watch" {
		usage = "presenced watch --mongo-uri URI [--model UUID] [KEY...] [flags]"
	}
	fs := newCommandFlags("presenced "+name, usage, stderr)
	deploymentFlags(fs, &o.queryOptions, &model)
	fs.durationIn(&o.sync, "sync", time.Second, rangeSync, "time between reads of the presence documents")
	fs.durationIn(&o.refresh, "refresh", 10*time.Second, rangeRefresh, "time between searches for new models (and reads of the leases and of what /status says of the documents)")
	if name == "serve" {
		fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address for /status, /watch, /metrics and /healthz")
		streamFlags(fs, &o.streams)
	} else {
		fs.durationIn(&o.streams.keepalive, "keepalive", 15*time.Second, rangeKeepalive, "time between keepalive lines")
		fs.Func("after", "resume after this position, one per model (repeatable); a position this process's logs do not hold gets a reset line", func(value string) error {
			after, err := presencereader.ParsePosition(value)
			if err == nil && !after.IsZero() {
				o.after = append(o.after, after)
			}
			return err
		})
		fs.BoolVar(&o.coalesce, "coalesce", false, "at most one change per key and read, instead of every transition")
	}
	var err error
	if o.args, err = fs.parse(args, true); err != nil {
		return o, err
	}
	if err := fs.required(map[string]string{"mongo-uri": o.mongoURI}); err != nil {
		return o, err
	}
	switch {
	case model != "" && !names.IsValidModel(model):
		return o, fs.bad(fmt.Errorf("--model %q is not a model UUID", model))
	case name == "serve" && len(o.args) > 0:
		return o, fs.bad(fmt.Errorf("unexpected arguments %q", o.args))
	case name == "serve" && o.listen == "":
		return o, fs.bad(errors.New("--listen must not be empty"))
	}
	for _, key := range o.args {
		if err := schema.ValidateKey(key); err != nil {
			return o, fs.bad(err)
		}
	}
	if model != "" {
		o.model = names.NewModelTag(model)
	}
	return o, nil
}

// dial connects to the URI with the client options given, pings it
// within timeout and returns the client; an error names the driver's
// reason without the URI's password.
func dial(ctx context.Context, uri string, timeout time.Duration, opts ...*mongooptions.ClientOptions) (*mongo.Client, error) {
	if err := checkURI(uri); err != nil {
		return nil, err
	}
	client, err := mongo.Connect(append([]*mongooptions.ClientOptions{
		mongooptions.Client().ApplyURI(uri).SetServerSelectionTimeout(timeout).SetReadPreference(readpref.Primary()),
	}, opts...)...)
	if err != nil {
		return nil, jujuerrors.Errorf("cannot connect to the database: %s", redact(err.Error(), uri))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := client.Ping(ctx, nil); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, jujuerrors.Errorf("cannot reach the database within %v: %s", timeout, redact(err.Error(), uri))
	}
	return client, nil
}

// followDeployment connects to o's deployment and starts following it, read-only;
// the returned function stops it all.
func followDeployment(ctx context.Context, o followOptions, m *metrics, logger *lineLogger) (*deployment, func(), error) {
	var opts []*mongooptions.ClientOptions
	if m != nil {
		opts = append(opts, m.monitor())
	}
	client, err := dial(ctx, o.mongoURI, o.timeout, opts...)
	if err != nil {
		return nil, nil, err
	}
	disconnect := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = client.Disconnect(ctx)
	}
	db := client.Database(o.database)
	period, err := followPeriod(ctx, db, o, logger)
	if err != nil {
		disconnect()
		return nil, nil, err
	}
	config := deploymentConfig{
		DB: db, Collection: o.collection, Leases: o.leases, Model: o.model.Id(),
		Clock: clock.WallClock, Logger: logger,
		Period: period, SyncInterval: o.sync, Refresh: o.refresh,
	}
	if m != nil {
		config.OnLoad, config.OnLeases = m.onLoad, m.onLeases
	}
	d, err := newDeployment(config)
	if err != nil {
		disconnect()
		return nil, nil, err
	}
	stop := func() {
		d.Kill()
		_ = d.Wait()
		disconnect()
	}
	readyCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := d.ready(readyCtx); err != nil {
		stop()
		return nil, nil, jujuerrors.New(redact(err.Error(), o.mongoURI))
	}
	return d, stop, nil
}

// followPeriod returns the Period to follow o's deployment with: its ping
// documents', with --period as a check (an errNoAnswer if none has it).
// A database with no presence yet is followed at --period, or at the
// library's default, and the logger says so.
func followPeriod(ctx context.Context, db *mongo.Database, o followOptions, logger *lineLogger) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	scan, err := scanPresence(ctx, db.Collection(o.collection))
	if err != nil {
		return 0, jujuerrors.Annotate(err, "cannot read the presence documents")
	}
	period, err := scan.period(ctx, db, o.collection, o.period)
	if err == nil || scan.pings > 0 {
		return period, jujuerrors.Trace(err)
	}
	period = o.period
	if period == 0 {
		period = schema.DefaultPeriod
	}
	fmt.Fprintf(logger.out, "presenced: %v; following at period %v\n", err, period)
	return period, nil
}

// runWatch prints the NDJSON stream of /watch for the keys named (every
// key if none) in the model given (every model if none), read-only, until
// a signal. It exits 0 when stopped, 1 when the database is unreachable
// or the stream fails, 2 on bad flags.
func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFollow("watch", args, stderr)
	if err != nil {
		return flagError(err, stderr)
	}
	d, stop, err := followDeployment(ctx, o, nil, newLineLogger(stderr, clock.WallClock))
	if err != nil {
		fmt.Fprintln(stderr, "presenced watch:", err)
		return followFailure(err)
	}
	defer stop()
	if o.model.Id() == "" && len(d.models()) == 0 {
		fmt.Fprintf(stderr, "presenced watch: no model has presence in %s.%s yet (another --database or --collection?); waiting for one\n",
			o.database, o.collection)
	}
	req := watchRequest{model: o.model.Id(), keys: o.args, after: o.after, coalesce: o.coalesce}
	if err := streamWatch(ctx, d, req, writeLines(stdout), clock.WallClock, o.streams.keepalive); err != nil {
		fmt.Fprintln(stderr, "presenced watch:", redact(err.Error(), o.mongoURI))
		return exitFailed
	}
	return exitOK
}

// followFailure returns the exit code for why a deployment cannot be
// followed: 2 when it holds presence, but at none of the Period asked;
// 1 when it cannot be read.
func followFailure(err error) int {
	if errors.As(err, new(errNoAnswer)) {
		return exitBadFlag
	}
	return exitFailed
}

// serveStatusDoc is what serve's /status answers: the deployment's
// status, as `presenced status --json` prints it, and the server's own.
// The models' keys are as the reader's latest load found them; the rest
// of the deployment's status is as the documents were at Read (they are
// read every --refresh, not per request, so that /status answers at once
// whatever the load).
type serveStatusDoc struct {
	Time          string `json:"time"`    // RFC 3339
	Started       string `json:"started"` // RFC 3339
	UptimeSeconds int64  `json:"uptime_seconds"`
	Read          string `json:"read"` // RFC 3339, with fractions of a second
	deploymentStatus
}

// runServe serves /status, /watch, /metrics and /healthz over a real
// deployment, read-only, until a signal. It exits 0 when stopped, 1 when
// the database is unreachable or the server fails, 2 on bad flags.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFollow("serve", args, stderr)
	if err != nil {
		return flagError(err, stderr)
	}
	clk := clock.WallClock
	started := clk.Now()
	m := newMetrics(0, false, clk)
	logger := newLineLogger(stderr, clk)
	d, stop, err := followDeployment(ctx, o, m, logger)
	if err != nil {
		fmt.Fprintln(stderr, "presenced serve:", err)
		return followFailure(err)
	}
	defer stop()
	listener, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "presenced serve: cannot listen on %s: %v\n", o.listen, err)
		return exitFailed
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", noQuery(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := clk.Now()
		st, read, err := d.status()
		if err != nil {
			jsonError(w, http.StatusServiceUnavailable, jujuerrors.New(redact(err.Error(), o.mongoURI)))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(serveStatusDoc{
			Time: now.UTC().Format(time.RFC3339), Started: started.UTC().Format(time.RFC3339),
			UptimeSeconds: int64(now.Sub(started) / time.Second), Read: read.UTC().Format(time.RFC3339Nano), deploymentStatus: st,
		})
	})))
	mux.HandleFunc("GET /watch", watchHandler(d, clk, o.streams, newStreamGate(o.streams.maxStreams)))
	mux.Handle("GET /metrics", noQuery(promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})))
	mux.HandleFunc("GET /healthz", noQuery(healthz(m, clk, o.sync)))
	srv, limited := newHTTPServer(mux, logger, listener, o.streams)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(limited) }()
	go releaseMemory(ctx, 10*time.Second)
	fmt.Fprintf(stdout, "presenced serve: following %s read-only; listening on http://%s (/status, /watch, /metrics, /healthz)\n",
		redactURI(o.mongoURI), listener.Addr())
	code := exitOK
	select {
	case <-ctx.Done():
	case err := <-served:
		fmt.Fprintln(stderr, "presenced serve: HTTP server stopped:", err)
		code = exitFailed
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return code
}

// healthz answers 200 while the presence reader's latest load succeeded
// within the last few syncs, 503 with the reason otherwise.
func healthz(m *metrics, clk clock.Clock, sync time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := m.health(clk.Now(), max(5*sync, 10*time.Second)); err != nil {
			jsonError(w, http.StatusServiceUnavailable, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{\"ok\":true}\n")
	}
}
