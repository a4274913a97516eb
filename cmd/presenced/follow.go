package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
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
	sync      time.Duration
	refresh   time.Duration
	keepalive time.Duration
	listen    string
	after     []presencereader.Position
	coalesce  bool
}

// parseFollow parses watch's or serve's flags: serve takes --listen and
// no argument, watch takes keys.
func parseFollow(name string, args []string, stderr io.Writer) (followOptions, error) {
	var o followOptions
	var model string
	fs := flag.NewFlagSet("presenced "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		if name == "watch" {
			fmt.Fprintln(stderr, "usage: presenced watch --mongo-uri URI [--model UUID] [KEY...] [flags]")
		} else {
			fmt.Fprintln(stderr, "usage: presenced serve --mongo-uri URI [--listen ADDR] [--model UUID] [flags]")
		}
		fs.PrintDefaults()
	}
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "the deployment's MongoDB (required); nothing is written to it")
	fs.StringVar(&o.database, "database", databaseDBName, "database holding the presence and lease collections")
	fs.StringVar(&o.collection, "collection", baseCollection, "base presence collection")
	fs.StringVar(&o.leases, "leases", "leases", "lease collection")
	fs.StringVar(&model, "model", "", "follow this model only (default: every model)")
	fs.DurationVar(&o.period, "period", schema.DefaultPeriod, "the Period the deployment's pingers use")
	fs.DurationVar(&o.sync, "sync", time.Second, "time between reads of the presence documents")
	fs.DurationVar(&o.refresh, "refresh", 10*time.Second, "time between searches for new models (and lease reads)")
	fs.DurationVar(&o.keepalive, "keepalive", 15*time.Second, "time between keepalive lines")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the database at start")
	if name == "serve" {
		fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address for /status, /watch, /metrics and /healthz")
	} else {
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
	if o.args, err = parseInterleaved(fs, args); err != nil {
		return o, err
	}
	switch {
	case o.mongoURI == "":
		return o, errors.New("--mongo-uri is required")
	case model != "" && !names.IsValidModel(model):
		return o, fmt.Errorf("--model %q is not a model UUID", model)
	case name == "serve" && len(o.args) > 0:
		return o, fmt.Errorf("unexpected arguments %q", o.args)
	case name == "serve" && o.listen == "":
		return o, errors.New("--listen must not be empty")
	case o.period <= 0 || o.sync <= 0 || o.refresh <= 0 || o.keepalive <= 0 || o.timeout <= 0:
		return o, errors.New("--period, --sync, --refresh, --keepalive and --timeout must be positive")
	}
	for _, key := range o.args {
		if err := schema.ValidateKey(key); err != nil {
			return o, fmt.Errorf("key: %v", err)
		}
	}
	if model != "" {
		o.model = names.NewModelTag(model)
	}
	return o, nil
}

// parseInterleaved parses args with fs, flags and arguments in any order,
// and returns the arguments. A flag error is an errReported: the flag
// package has printed it.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var out []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, errReported{err}
		}
		rest = fs.Args()
		if len(rest) == 0 {
			return out, nil
		}
		out = append(out, rest[0])
		rest = rest[1:]
	}
}

// errReported is a flag error the flag package has already printed.
type errReported struct{ error }

func (e errReported) Unwrap() error { return e.error }

// flagError prints err unless the flag package did, and returns the exit
// code for bad flags (0 for --help).
func flagError(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if !errors.As(err, new(errReported)) {
		fmt.Fprintln(stderr, "presenced:", err)
	}
	return exitBadFlag
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
func followDeployment(ctx context.Context, o followOptions, m *metrics, logger *lineLogger) (*deployment, *mongo.Database, func(), error) {
	var opts []*mongooptions.ClientOptions
	if m != nil {
		opts = append(opts, m.monitor())
	}
	client, err := dial(ctx, o.mongoURI, o.timeout, opts...)
	if err != nil {
		return nil, nil, nil, err
	}
	disconnect := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = client.Disconnect(ctx)
	}
	db := client.Database(o.database)
	config := deploymentConfig{
		DB: db, Collection: o.collection, Leases: o.leases, Model: o.model.Id(),
		Clock: clock.WallClock, Logger: logger,
		Period: o.period, SyncInterval: o.sync, Refresh: o.refresh,
	}
	if m != nil {
		config.OnLoad, config.OnLeases = m.onLoad, m.onLeases
	}
	d, err := newDeployment(config)
	if err != nil {
		disconnect()
		return nil, nil, nil, err
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
		return nil, nil, nil, jujuerrors.New(redact(err.Error(), o.mongoURI))
	}
	return d, db, stop, nil
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
	d, _, stop, err := followDeployment(ctx, o, nil, newLineLogger(stderr, clock.WallClock))
	if err != nil {
		fmt.Fprintln(stderr, "presenced watch:", err)
		return exitFailed
	}
	defer stop()
	if o.model.Id() == "" && len(d.models()) == 0 {
		fmt.Fprintf(stderr, "presenced watch: no model has presence in %s.%s yet (another --database or --collection?); waiting for one\n",
			o.database, o.collection)
	}
	req := watchRequest{model: o.model.Id(), keys: o.args, after: o.after, coalesce: o.coalesce}
	if err := streamWatch(ctx, d, req, writeLines(stdout), clock.WallClock, o.keepalive); err != nil {
		fmt.Fprintln(stderr, "presenced watch:", redact(err.Error(), o.mongoURI))
		return exitFailed
	}
	return exitOK
}

// serveStatusDoc is what serve's /status answers: the deployment's
// status, as `presenced status --json` prints it, and the server's own.
type serveStatusDoc struct {
	Time          string `json:"time"`    // RFC 3339
	Started       string `json:"started"` // RFC 3339
	UptimeSeconds int64  `json:"uptime_seconds"`
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
	d, db, stop, err := followDeployment(ctx, o, m, logger)
	if err != nil {
		fmt.Fprintln(stderr, "presenced serve:", err)
		return exitFailed
	}
	defer stop()
	listener, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "presenced serve: cannot listen on %s: %v\n", o.listen, err)
		return exitFailed
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		now := clk.Now()
		var models []string
		if o.model.Id() != "" {
			models = []string{o.model.Id()}
		}
		st, err := statusOf(r.Context(), db, o.collection, o.leases, models, now, func(models []string) ([]modelKeys, int, error) {
			out := make([]modelKeys, 0, len(models))
			for _, model := range models {
				counts, err := d.counts(model)
				if err != nil {
					return nil, 0, err
				}
				out = append(out, counts)
			}
			return out, m.lastSkipped(), nil
		})
		if err != nil {
			jsonError(w, http.StatusServiceUnavailable, jujuerrors.New(redact(err.Error(), o.mongoURI)))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(serveStatusDoc{
			Time: now.UTC().Format(time.RFC3339), Started: started.UTC().Format(time.RFC3339),
			UptimeSeconds: int64(now.Sub(started) / time.Second), deploymentStatus: st,
		})
	})
	mux.HandleFunc("GET /watch", watchHandler(d, clk, o.keepalive))
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", healthz(m, clk, o.sync))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(listener) }()
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
