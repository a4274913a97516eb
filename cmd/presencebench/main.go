// Command presencebench drives presencekit's real workers against the
// embedded MongoDB-wire server (or --mongo-uri) and prints one table of
// figures, each beside a baseline measured in the same run where one
// exists, and the target it is measured against.
//
//	go run ./cmd/presencebench                 # the full record (several minutes)
//	go run ./cmd/presencebench --quick         # tiny sizes, seconds: a smoke test
//	go run ./cmd/presencebench --profile prof  # also write CPU and heap profiles
//
// Every figure comes from the workers themselves: database commands are
// counted with the driver's command monitor, latencies on the real clock.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	mongoURI string
	quick    bool
	profile  string
	sizes    []int
	events   int
	sections map[string]bool
	// fault, if set, limits the stalls section to the faults whose
	// names contain it; logs sends the workers' logs to stderr.
	fault string
	logs  bool
	// shapes, if set, are the scale section's shapes instead of its own.
	shapes []shape
	// duration is how long the soak section runs.
	duration time.Duration
}

// sections, in the order they run.
var allSections = []string{"writes", "controller", "scale", "latency", "stalls", "overload", "watcher", "subscribers", "recorder", "leases", "soak"}

// defaultSections are those that run without --only: the soak runs for
// --duration, so it runs only when asked for.
var defaultSections = allSections[:len(allSections)-1]

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var sizes, only, shapes string
	fs := flag.NewFlagSet("presencebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mongoURI, "mongo-uri", "", "MongoDB to use instead of the embedded server")
	fs.BoolVar(&o.quick, "quick", false, "tiny sizes and short settings only: a smoke test in seconds")
	fs.StringVar(&o.profile, "profile", "", "directory to write cpu.pprof and heap.pprof to")
	fs.StringVar(&sizes, "sizes", "1000,10000,100000", "pinger counts for the writes section")
	fs.IntVar(&o.events, "events", 200, "events per latency measurement")
	fs.StringVar(&shapes, "shapes", "", "the scale section's shapes, as MODELSxAGENTS,... (default 1x10000,1000x10,1000x100)")
	fs.StringVar(&only, "only", strings.Join(defaultSections, ","), "sections to run (also: soak)")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the soak section runs")
	fs.StringVar(&o.fault, "fault", "", "run only the stalls whose names contain this")
	fs.BoolVar(&o.logs, "logs", false, "print the workers' logs of the stalls and overload sections to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("--sizes: %q is not a positive number", f)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.shapes, err = parseShapes(shapes); err != nil {
		return o, err
	}
	if o.events < 1 {
		return o, fmt.Errorf("--events must be positive")
	}
	if o.duration <= 0 {
		return o, fmt.Errorf("--duration must be positive")
	}
	o.sections = make(map[string]bool)
	for _, s := range strings.Split(only, ",") {
		s = strings.TrimSpace(s)
		if !contains(allSections, s) {
			return o, fmt.Errorf("--only: unknown section %q (have %s)", s, strings.Join(allSections, ", "))
		}
		o.sections[s] = true
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick && !set["sizes"] {
		o.sizes = []int{100, 1000}
	}
	if o.quick && !set["events"] {
		o.events = 20
	}
	if o.quick && !set["duration"] {
		o.duration = 30 * time.Second
	}
	return o, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "presencebench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.profile != "" {
		stopProfile, err := startProfile(o.profile)
		if err != nil {
			fmt.Fprintln(stderr, "presencebench:", err)
			return 1
		}
		defer stopProfile()
	}
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "presencebench:", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, o options, stdout, progress io.Writer) error {
	benchEnv, err := newEnv(o, progress)
	if err != nil {
		return err
	}
	defer benchEnv.close()
	t := &table{}
	fmt.Fprintf(progress, "machine: %s/%s, %d CPUs, %s; database: %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), benchEnv.describe())
	steps := []struct {
		name string
		run  func(context.Context, *env, *table) error
	}{
		{"writes", benchWrites},
		{"controller", benchController},
		{"scale", benchScale},
		{"latency", benchLatency},
		{"stalls", benchStalls},
		{"overload", benchOverload},
		{"watcher", benchWatcher},
		{"subscribers", benchSubscribers},
		{"recorder", benchRecorder},
		{"leases", benchLeases},
		{"soak", benchSoak},
	}
	for _, step := range steps {
		if !o.sections[step.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(progress, "== %s\n", step.name)
		started := time.Now()
		if err := step.run(ctx, benchEnv, t); err != nil {
			return fmt.Errorf("%s: %w", step.name, err)
		}
		fmt.Fprintf(progress, "   %s done in %.1fs\n", step.name, time.Since(started).Seconds())
	}
	t.print(stdout)
	return nil
}

func startProfile(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		heap, err := os.Create(filepath.Join(dir, "heap.pprof"))
		if err != nil {
			return
		}
		defer heap.Close()
		runtime.GC()
		_ = pprof.WriteHeapProfile(heap)
	}, nil
}

// parseShapes parses MODELSxAGENTS,... into shapes; empty gives none.
func parseShapes(list string) ([]shape, error) {
	var out []shape
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		var sh shape
		if n, err := fmt.Sscanf(f, "%dx%d", &sh.models, &sh.agents); n != 2 || err != nil || sh.models < 1 || sh.agents < 1 {
			return nil, fmt.Errorf("--shapes: %q is not MODELSxAGENTS", f)
		}
		out = append(out, sh)
	}
	return out, nil
}
