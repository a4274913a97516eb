package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
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
	exitYes     = 0 // alive, or held
	exitNo      = 1 // dead, or no leader
	exitError   = 2 // bad flags, no answer from the database, or no presence where asked
	exitUnknown = 3 // a key no model knows (alive)
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
// optional. Every missing required flag is named. extra adds flags of the
// query's own.
func parseQuery(name, argName string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (queryOptions, error) {
	var o queryOptions
	var model string
	usage := fmt.Sprintf("presenced %s --mongo-uri URI [--model UUID] [flags]", name)
	if argName != "" {
		usage = fmt.Sprintf("presenced %s %s... --model UUID --mongo-uri URI [flags]", name, argName)
	}
	fs := newCommandFlags("presenced "+name, usage, stderr)
	if argName == "" {
		fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	}
	deploymentFlags(fs, &o, &model)
	for _, f := range extra {
		f(fs.FlagSet)
	}
	var err error
	if o.args, err = fs.parse(args, true); err != nil {
		return o, err
	}
	required := map[string]string{"mongo-uri": o.mongoURI}
	if argName != "" {
		required["model"] = model
	}
	if err := fs.required(required); err != nil {
		return o, err
	}
	switch {
	case model != "" && !names.IsValidModel(model):
		return o, fs.bad(fmt.Errorf("--model %q is not a model UUID", model))
	case argName != "" && len(o.args) == 0:
		return o, fs.bad(fmt.Errorf("name at least one %s", argName))
	case argName == "" && len(o.args) > 0:
		return o, fs.bad(fmt.Errorf("unexpected arguments %q", o.args))
	}
	for _, arg := range o.args {
		if err := argChecks[argName](arg); err != nil {
			return o, fs.bad(err)
		}
	}
	if err := checkURI(o.mongoURI); err != nil {
		return o, fs.bad(err)
	}
	if model != "" {
		o.model = names.NewModelTag(model)
	}
	return o, nil
}

// argChecks check a query's arguments, by what they are: a bad one is
// not valid, and never an answer.
var argChecks = map[string]func(string) error{
	"KEY":         schema.ValidateKey,
	"APPLICATION": leaseexpiry.ValidateApplication,
}

// deploymentFlags defines the flags that name a deployment and how to
// read it, which every command that reads one shares; --model's value
// goes to model.
func deploymentFlags(fs *commandFlags, o *queryOptions, model *string) {
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "the deployment's MongoDB (required); only lease reset writes to it")
	fs.StringVar(&o.database, "database", databaseDBName, "database holding the presence and lease collections")
	fs.StringVar(&o.collection, "collection", baseCollection, "base presence collection")
	fs.StringVar(&o.leases, "leases", "leases", "lease collection")
	fs.StringVar(model, "model", "", "the model's UUID")
	fs.durationIn(&o.period, "period", 0, durationRange{0, rangePeriod.max},
		"the deployment's Period, as a check: no presence documents at it is an error (0: read it from the ping documents)")
	fs.durationIn(&o.timeout, "timeout", 10*time.Second, rangeTimeout, "how long to wait for the database")
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
	answer func(context.Context, queryOptions, *mongo.Database, io.Writer, io.Writer) (int, error), extra ...func(*flag.FlagSet)) int {
	o, err := parseQuery(name, argName, args, stderr, extra...)
	if err != nil {
		return flagError(err, stderr)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	db, done, err := o.connect(ctx)
	if err == nil {
		defer done()
		var code int
		if code, err = answer(ctx, o, db, stdout, stderr); err == nil {
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

func answerAlive(ctx context.Context, o queryOptions, db *mongo.Database, stdout, stderr io.Writer) (int, error) {
	base := db.Collection(o.collection)
	scan, err := scanPresence(ctx, base)
	if err != nil {
		return 0, errors.Trace(err)
	}
	scan.skipped.report(stderr, "presenced alive: ")
	period, err := scan.period(ctx, db, o.collection, o.period)
	if err != nil {
		return 0, errors.Trace(err)
	}
	states, err := statesOf(ctx, base, period, o.model, o.args)
	if err != nil {
		return 0, errors.Trace(err)
	}
	code := exitYes
	for _, key := range o.args {
		alive, known := states[key]
		state := "alive"
		switch {
		case !known:
			state, code = "unknown", exitUnknown
		case !alive:
			state = "dead"
			if code == exitYes {
				code = exitNo
			}
		}
		fmt.Fprintf(stdout, "%s %s\n", key, state)
	}
	return code, nil
}

// statesOf loads the presence of model once, as a watcher's first load,
// and returns the state of each of keys that any writer ever wrote in it.
func statesOf(ctx context.Context, base *mongo.Collection, period time.Duration, model names.ModelTag, keys []string) (map[string]bool, error) {
	r, err := presencereader.New(presencereader.Config{
		Base: base, Clock: clock.WallClock, Period: period, SyncInterval: time.Hour,
	})
	if err != nil {
		return nil, errors.Trace(err)
	}
	defer func() { r.Kill(); _ = r.Wait() }()
	if err := r.Refresh(); err != nil {
		return nil, errors.Trace(err)
	}
	dying := make(chan struct{})
	view, err := r.NewView(model, dying, func() error { return presencereader.ErrStopped })
	if err != nil {
		return nil, errors.Trace(err)
	}
	defer func() { close(dying); view.Close() }()
	// A snapshot of every key: one of some keys names them all, known
	// or not.
	sub := view.SubscribeWith(presencereader.SubscribeConfig{})
	defer sub.Close()
	snapshot, err := sub.NextBatch(ctx)
	if err != nil {
		return nil, errors.Trace(err)
	}
	wanted := make(map[string]bool, len(keys))
	for _, key := range keys {
		wanted[key] = true
	}
	states := make(map[string]bool, len(keys))
	for _, e := range snapshot.Events {
		if wanted[e.Key] {
			states[e.Key] = e.Alive
		}
	}
	return states, nil
}

// runLeader prints each application's leader in the model, with its
// fence and expiry, and exits 0 when every one has a leader, 1 when any
// has none, 2 on error or when a lease's latest term is invalid.
func runLeader(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "leader", "APPLICATION", args, stdout, stderr, answerLeader)
}

func answerLeader(ctx context.Context, o queryOptions, db *mongo.Database, stdout, _ io.Writer) (int, error) {
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
