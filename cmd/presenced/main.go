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
// Whatever standard output and standard error do (a full pipe nobody
// reads), a signal or the end of --duration ends it: what they have not
// taken by then is dropped.
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
			return detached(ctx, stdout, stderr, func(stdout, stderr io.Writer) int {
				return command(ctx, args[1:], stdout, stderr)
			})
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
	return detached(ctx, stdout, stderr, func(stdout, stderr io.Writer) int {
		if err := serve(ctx, opts, stdout); err != nil {
			fmt.Fprintln(stderr, "presenced:", redact(err.Error(), opts.mongoURI))
			return exitFailed
		}
		return exitOK
	})
}

// detached runs f with stdout and stderr behind detachedWriters that give
// way once ctx is done, and waits for what it wrote to be taken (for
// outputGrace at most once ctx is done).
func detached(ctx context.Context, stdout, stderr io.Writer, f func(stdout, stderr io.Writer) int) int {
	out, errs := newDetachedWriter(stdout, ctx.Done()), newDetachedWriter(stderr, ctx.Done())
	code := f(out, errs)
	out.drain(ctx)
	errs.drain(ctx)
	return code
}

type options struct {
	mongoURI string
	dataDir  string
	listen   string
	agents   int
	models   int
	apps     int
	units    int
	duration time.Duration
	period   time.Duration
	flush    time.Duration
	sync     time.Duration
	churn    time.Duration
	display  time.Duration
	timeout  time.Duration
	streams  streamLimits
}

// parseFlags parses the demo's flags and checks them, each against its
// range and against each other, before anything is allocated.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := newCommandFlags("presenced", "presenced [demo] [flags]", stderr)
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "MongoDB to use instead of the embedded server")
	fs.StringVar(&o.dataDir, "data", "", "directory for the embedded server's data (default: a temporary directory, removed at exit)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address for /status, /watch and /metrics")
	fs.intIn(&o.agents, "agents", 1000, rangeAgents, "simulated agents, spread over the models")
	fs.intIn(&o.models, "models", 5, rangeModels, "models")
	fs.intIn(&o.apps, "apps", 3, rangeApps, fmt.Sprintf("applications per model contending for leadership; models x apps x units at most %d", maxUnits))
	fs.intIn(&o.units, "units", 3, rangeUnits, "units per application")
	fs.durationIn(&o.duration, "duration", 0, rangeDuration, "stop after this long (0: run until Ctrl-C)")
	fs.durationIn(&o.period, "period", 2*time.Second, rangePeriod, "presence slot length (the library's default is 10s)")
	fs.durationIn(&o.flush, "flush", 250*time.Millisecond, rangeFlush, "ping batcher flush interval, under half of --period")
	fs.durationIn(&o.sync, "sync", 250*time.Millisecond, rangeSync, "watcher sync interval")
	fs.durationIn(&o.churn, "churn", 500*time.Millisecond, rangeChurn, "time between simulated joins, leaves and crashes")
	fs.durationIn(&o.display, "display", 3*time.Second, rangeDisplay, "time between status lines in the terminal")
	fs.durationIn(&o.timeout, "timeout", 10*time.Second, rangeTimeout, "how long --mongo-uri may take to answer at start")
	streamFlags(fs, &o.streams)
	rest, err := fs.parse(args, false)
	if err != nil {
		return o, err
	}
	switch {
	case len(rest) > 0:
		return o, fs.bad(fmt.Errorf("unexpected arguments %q", rest))
	case o.agents < o.models:
		return o, fs.bad(fmt.Errorf("--agents (%d) must be at least --models (%d)", o.agents, o.models))
	case o.models*o.apps*o.units > maxUnits:
		return o, fs.bad(fmt.Errorf("--models x --apps x --units is %d units, more than %d", o.models*o.apps*o.units, maxUnits))
	case o.flush >= o.period/2:
		return o, fs.bad(fmt.Errorf("--flush (%v) must be under half of --period (%v)", o.flush, o.period))
	case o.listen == "":
		return o, fs.bad(fmt.Errorf("--listen must not be empty"))
	}
	return o, nil
}

// streamFlags defines the flags that bound /watch streams, the demo's
// and serve's: --keepalive, --max-streams and --write-timeout.
func streamFlags(fs *commandFlags, l *streamLimits) {
	fs.durationIn(&l.keepalive, "keepalive", 15*time.Second, rangeKeepalive, "time between keepalive lines on /watch")
	fs.intIn(&l.maxStreams, "max-streams", 256, rangeStreams, "most /watch streams at once; more are answered 503")
	fs.durationIn(&l.writeTimeout, "write-timeout", 10*time.Second, rangeWriteTimeout, "a /watch stream whose client takes longer to take a line is closed")
}
