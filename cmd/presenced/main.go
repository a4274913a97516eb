// Command presenced runs presencekit end to end: the embedded MongoDB-wire
// server (or a real MongoDB), the presence workers, and simulated agents
// across models that join, leave cleanly and crash silently. It prints
// what it sees as it happens.
//
//	go run ./cmd/presenced
//	go run ./cmd/presenced --agents 5000 --models 10 --duration 1m
//	go run ./cmd/presenced --mongo-uri mongodb://localhost:27017
//
// Ctrl-C stops it cleanly.
package main

import (
	"context"
	"errors"
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
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "presenced:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.duration)
		defer cancel()
	}
	if err := serve(ctx, opts, stdout); err != nil {
		fmt.Fprintln(stderr, "presenced:", err)
		return 1
	}
	return 0
}

type options struct {
	mongoURI string
	dataDir  string
	agents   int
	models   int
	duration time.Duration
	period   time.Duration
	flush    time.Duration
	sync     time.Duration
	churn    time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "MongoDB to use instead of the embedded server")
	fs.StringVar(&o.dataDir, "data", "", "directory for the embedded server's data (default: a temporary directory, removed at exit)")
	fs.IntVar(&o.agents, "agents", 200, "simulated agents")
	fs.IntVar(&o.models, "models", 3, "models the agents are spread over")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.DurationVar(&o.period, "period", 2*time.Second, "presence slot length")
	fs.DurationVar(&o.flush, "flush", 250*time.Millisecond, "ping batcher flush interval")
	fs.DurationVar(&o.sync, "sync", 250*time.Millisecond, "watcher sync interval")
	fs.DurationVar(&o.churn, "churn", 500*time.Millisecond, "time between simulated joins, leaves and crashes")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.agents < 1:
		return o, fmt.Errorf("--agents must be at least 1, got %d", o.agents)
	case o.models < 1 || o.models > o.agents:
		return o, fmt.Errorf("--models must be between 1 and --agents, got %d", o.models)
	case o.duration < 0:
		return o, fmt.Errorf("--duration must not be negative")
	case o.period <= 0 || o.flush <= 0 || o.sync <= 0 || o.churn <= 0:
		return o, fmt.Errorf("--period, --flush, --sync and --churn must be positive")
	case o.flush >= o.period/2:
		return o, fmt.Errorf("--flush (%v) must be under half of --period (%v)", o.flush, o.period)
	}
	return o, nil
}
