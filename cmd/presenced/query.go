package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"

	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/presencereader"
)

// Exit codes of the one-shot queries, for scripts and health checks.
const (
	exitYes   = 0 // alive, or held
	exitNo    = 1 // dead, or no leader
	exitError = 2 // bad flags, or no answer from the database
)

// queryOptions are the flags the one-shot queries share.
type queryOptions struct {
	mongoURI   string
	database   string
	collection string
	leases     string
	model      names.ModelTag
	period     time.Duration
	timeout    time.Duration
	json       bool
	args       []string
}

// parseQuery parses a query's flags and positional arguments (flags may
// come before or after them). A query with an argName needs at least one
// argument and a --model; one without takes no argument, and --model is
// optional.
// extra adds flags of the query's own.
func parseQuery(name, argName string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (queryOptions, error) {
	var o queryOptions
	var model string
	fs := flag.NewFlagSet("presenced "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		if argName != "" {
			fmt.Fprintf(stderr, "usage: presenced %s %s... --model UUID --mongo-uri URI [flags]\n", name, argName)
		} else {
			fmt.Fprintf(stderr, "usage: presenced %s --mongo-uri URI [--model UUID] [flags]\n", name)
		}
		fs.PrintDefaults()
	}
	if argName == "" {
		fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	}
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "the deployment's MongoDB (required); nothing is written to it")
	fs.StringVar(&o.database, "database", databaseDBName, "database holding the presence and lease collections")
	fs.StringVar(&o.collection, "collection", baseCollection, "base presence collection")
	fs.StringVar(&o.leases, "leases", "leases", "lease collection")
	fs.StringVar(&model, "model", "", "the model's UUID (required)")
	fs.DurationVar(&o.period, "period", schema.DefaultPeriod, "the Period the deployment's pingers use")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the database")
	for _, f := range extra {
		f(fs)
	}
	var err error
	if o.args, err = parseInterleaved(fs, args); err != nil {
		return o, err
	}
	switch {
	case o.mongoURI == "":
		return o, errors.New("--mongo-uri is required")
	case (argName != "" || model != "") && !names.IsValidModel(model):
		return o, fmt.Errorf("--model %q is not a model UUID", model)
	case argName != "" && len(o.args) == 0:
		return o, fmt.Errorf("name at least one %s", argName)
	case argName == "" && len(o.args) > 0:
		return o, fmt.Errorf("unexpected arguments %q", o.args)
	case o.period <= 0 || o.timeout <= 0:
		return o, errors.New("--period and --timeout must be positive")
	}
	if err := checkURI(o.mongoURI); err != nil {
		return o, err
	}
	if model != "" {
		o.model = names.NewModelTag(model)
	}
	return o, nil
}

// checkURI returns an error, without the URI's password, unless uri is a
// well-formed MongoDB connection string.
func checkURI(uri string) error {
	if _, err := connstring.ParseAndValidate(uri); err != nil {
		return fmt.Errorf("--mongo-uri %s: %s", redactURI(uri), redact(err.Error(), uri))
	}
	return nil
}

// redact removes the password of uri from msg, and uri itself in favour
// of redactURI's version.
func redact(msg, uri string) string {
	if uri == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, uri, redactURI(uri))
	password := uriPassword(uri)
	if cs, err := connstring.Parse(uri); err == nil && cs.Password != "" {
		msg = strings.ReplaceAll(msg, cs.Password, "xxxxx")
	}
	if password != "" {
		msg = strings.ReplaceAll(msg, password, "xxxxx")
		if unescaped, err := url.PathUnescape(password); err == nil && unescaped != "" {
			msg = strings.ReplaceAll(msg, unescaped, "xxxxx")
		}
	}
	return msg
}

// redactURI returns uri with its password, if any, replaced by xxxxx. It
// does not need uri to be well-formed.
func redactURI(uri string) string {
	password := uriPassword(uri)
	if password == "" {
		return uri
	}
	return strings.Replace(uri, ":"+password+"@", ":xxxxx@", 1)
}

// uriPassword returns the password in uri's user information, as
// written, or "".
func uriPassword(uri string) string {
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return ""
	}
	if end := strings.IndexAny(rest, "/?"); end >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, password, _ := strings.Cut(rest[:at], ":")
	return password
}

// connect returns the query's database on a client that reads from the
// primary and fails within the timeout, and a function that disconnects.
func (o queryOptions) connect(ctx context.Context) (*mongo.Database, func(), error) {
	client, err := dial(ctx, o.mongoURI, o.timeout)
	if err != nil {
		return nil, nil, err
	}
	done := func() { _ = client.Disconnect(context.WithoutCancel(ctx)) }
	return client.Database(o.database), done, nil
}

// runQuery parses a query's flags, connects within its timeout and runs
// answer, which returns the exit code; any error is reported on stderr,
// without the URI's password, as exit code 2.
func runQuery(ctx context.Context, name, argName string, args []string, stdout, stderr io.Writer,
	answer func(context.Context, queryOptions, *mongo.Database, io.Writer) (int, error), extra ...func(*flag.FlagSet)) int {
	o, err := parseQuery(name, argName, args, stderr, extra...)
	if err != nil {
		return usageError(err, stderr)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	db, done, err := o.connect(ctx)
	if err == nil {
		defer done()
		var code int
		if code, err = answer(ctx, o, db, stdout); err == nil {
			return code
		}
	}
	fmt.Fprintf(stderr, "presenced %s: %s\n", name, redact(err.Error(), o.mongoURI))
	return exitError
}

// runAlive answers whether each key is alive in the model, one line per
// key, and exits 0 when all are, 1 when any is not, 2 on error. It makes
// one read, as a watcher's first: a key is alive when a live ping of it
// is in its controller's latest slots, and a controller that fell behind
// within the read window (the last three slots) keeps its keys alive, as
// a watcher would for a Period; a controller silent for longer has none.
// Documents written with another Period are skipped, and counted.
func runAlive(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "alive", "KEY", args, stdout, stderr, answerAlive)
}

func answerAlive(_ context.Context, o queryOptions, db *mongo.Database, stdout io.Writer) (int, error) {
	var stats presencereader.LoadStats
	r, err := presencereader.New(presencereader.Config{
		Base: db.Collection(o.collection), Clock: clock.WallClock, Period: o.period, SyncInterval: time.Hour,
		OnLoad: func(s presencereader.LoadStats) { stats = s },
	})
	if err != nil {
		return 0, err
	}
	defer func() { r.Kill(); _ = r.Wait() }()
	if err := r.Refresh(); err != nil {
		return 0, err
	}
	dying := make(chan struct{})
	view, err := r.NewView(o.model, dying, func() error { return nil })
	if err != nil {
		return 0, err
	}
	defer func() { close(dying); view.Close() }()
	code := exitYes
	for _, key := range o.args {
		alive, err := view.Alive(key)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		state := "dead"
		if alive {
			state = "alive"
		} else {
			code = exitNo
		}
		fmt.Fprintf(stdout, "%s %s\n", key, state)
	}
	if stats.Skipped > 0 {
		fmt.Fprintf(stdout, "# %d invalid documents skipped (another --period?)\n", stats.Skipped)
	}
	return code, nil
}

// runLeader prints each application's leader in the model, with its
// fence and expiry, and exits 0 when every one has a leader, 1 when any
// has none, 2 on error or when a lease's latest term is invalid.
func runLeader(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "leader", "APPLICATION", args, stdout, stderr, answerLeader)
}

func answerLeader(ctx context.Context, o queryOptions, db *mongo.Database, stdout io.Writer) (int, error) {
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection(o.leases), Clock: clock.WallClock})
	if err != nil {
		return 0, err
	}
	leases, err := client.Leases(ctx, leaseexpiry.Namespace, o.model.Id(), o.args...)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	code := exitYes
	for _, app := range o.args {
		info := leases[lease.Key{Namespace: leaseexpiry.Namespace, Model: o.model.Id(), Lease: app}]
		switch {
		case info.Invalid != "":
			code = exitError
			fmt.Fprintf(stdout, "%s frozen: %s (presenced lease reset)\n", app, info.Invalid)
		case !info.HeldBy(info.Holder, now):
			code = max(code, exitNo)
			fmt.Fprintf(stdout, "%s none\n", app)
		default:
			pinned := ""
			if info.Pinned() {
				pinned = fmt.Sprintf(" pinned by %v", info.Pins)
			}
			fmt.Fprintf(stdout, "%s %s fence %d until %s%s\n", app, info.Holder, info.Fence, info.Expiry.UTC().Format(time.RFC3339Nano), pinned)
		}
	}
	return code, nil
}

// usageError prints err unless the flag package did, and returns the
// exit code for bad flags (0 for --help).
func usageError(err error, stderr io.Writer) int {
	return flagError(err, stderr)
}
