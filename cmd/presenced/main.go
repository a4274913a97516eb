// Command presenced runs presencekit end to end: the embedded MongoDB-wire
// server (or a real MongoDB), a dependency engine with the whole manifold
// set for several models, and a simulation: agents that join, leave
// cleanly and crash silently, and units of a few applications contending
// for leadership. It shows live what is alive, who leads, each detection
// with its latency and the database writes per second, and serves
//
//	GET /status         the same, as JSON
//	GET /watch?key=K    a stream of JSON lines: the snapshot, then deltas
//	GET /metrics        Prometheus metrics
//	GET /healthz        200 while the presence reader reads
//
// on --listen (default 127.0.0.1:8080). Ctrl-C stops it cleanly.
//
//	go run ./cmd/presenced
//	go run ./cmd/presenced --agents 5000 --models 10 --duration 1m
//	go run ./cmd/presenced --mongo-uri mongodb://localhost:27017
//
// "presenced demo" is the same. Three one-shot queries answer an operator
// about a real deployment, read-only, with an exit code for scripts and
// health checks (0 alive or held, 1 dead or no leader, 2 error):
//
//	presenced alive machine-0 machine-1 --model UUID --mongo-uri URI [--database D] [--period P]
//	presenced leader mysql --model UUID --mongo-uri URI [--database D]
//	presenced status --mongo-uri URI [--database D] [--model UUID] [--json]
//
// A frozen lease (see package lease; status shows it) is reset by an
// operator, who must confirm; this one writes (exit 0 reset, 1 not done,
// 2 error):
//
//	presenced lease reset APPLICATION --model UUID --mongo-uri URI --yes
//
// "presenced explain" decodes the presence documents (which key each bit
// stands for, slots and stamps as times), read-only:
//
//	presenced explain --mongo-uri URI [--database D] [--model UUID] [--period P] [--json]
//
// Two more follow a real deployment until stopped, read-only too (exit 0
// when stopped, 1 when the database does not answer within --timeout, 2
// on bad flags):
//
//	presenced watch --mongo-uri URI [--model UUID] [KEY...]    the /watch stream on stdout
//	presenced serve --mongo-uri URI [--listen ADDR]            /status, /watch, /metrics, /healthz
//
// A --mongo-uri that is malformed or does not answer within --timeout
// (default 10 s) stops every mode, the demo included, with the driver's
// reason and never the URI's password.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args and runs until the duration passes or a signal comes. It
// returns the exit code: 0 on a clean stop, 1 on failure, 2 on bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "alive", "leader", "status", "explain", "watch", "serve", "lease":
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			command := map[string]func(context.Context, []string, io.Writer, io.Writer) int{
				"alive": runAlive, "leader": runLeader, "status": runStatus, "explain": runExplain,
				"watch": runWatch, "serve": runServe, "lease": runLease,
			}[args[0]]
			return command(ctx, args[1:], stdout, stderr)
		case "demo":
			args = args[1:]
		}
	}
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return flagError(err, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.duration)
		defer cancel()
	}
	if err := serve(ctx, opts, stdout); err != nil {
		fmt.Fprintln(stderr, "presenced:", redact(err.Error(), opts.mongoURI))
		return exitFailed
	}
	return exitOK
}

type options struct {
	mongoURI  string
	dataDir   string
	listen    string
	agents    int
	models    int
	apps      int
	units     int
	duration  time.Duration
	period    time.Duration
	flush     time.Duration
	sync      time.Duration
	churn     time.Duration
	display   time.Duration
	keepalive time.Duration
	timeout   time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "MongoDB to use instead of the embedded server")
	fs.StringVar(&o.dataDir, "data", "", "directory for the embedded server's data (default: a temporary directory, removed at exit)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address for /status, /watch and /metrics")
	fs.IntVar(&o.agents, "agents", 1000, "simulated agents, spread over the models")
	fs.IntVar(&o.models, "models", 5, "models")
	fs.IntVar(&o.apps, "apps", 3, "applications per model contending for leadership")
	fs.IntVar(&o.units, "units", 3, "units per application")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.DurationVar(&o.period, "period", 2*time.Second, "presence slot length (the library's default is 10s)")
	fs.DurationVar(&o.flush, "flush", 250*time.Millisecond, "ping batcher flush interval")
	fs.DurationVar(&o.sync, "sync", 250*time.Millisecond, "watcher sync interval")
	fs.DurationVar(&o.churn, "churn", 500*time.Millisecond, "time between simulated joins, leaves and crashes")
	fs.DurationVar(&o.display, "display", 3*time.Second, "time between status lines in the terminal")
	fs.DurationVar(&o.keepalive, "keepalive", 15*time.Second, "time between keepalive lines on /watch")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long --mongo-uri may take to answer at start")
	if err := fs.Parse(args); err != nil {
		return o, errReported{err}
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.models < 1:
		return o, fmt.Errorf("--models must be at least 1, got %d", o.models)
	case o.agents < o.models:
		return o, fmt.Errorf("--agents (%d) must be at least --models (%d)", o.agents, o.models)
	case o.apps < 0 || o.units < 1:
		return o, fmt.Errorf("--apps must not be negative and --units must be at least 1")
	case o.duration < 0:
		return o, fmt.Errorf("--duration must not be negative")
	case o.period <= 0 || o.flush <= 0 || o.sync <= 0 || o.churn <= 0 || o.display <= 0 || o.keepalive <= 0 || o.timeout <= 0:
		return o, fmt.Errorf("--period, --flush, --sync, --churn, --display, --keepalive and --timeout must be positive")
	case o.flush >= o.period/2:
		return o, fmt.Errorf("--flush (%v) must be under half of --period (%v)", o.flush, o.period)
	case o.listen == "":
		return o, fmt.Errorf("--listen must not be empty")
	}
	return o, nil
}
