package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4"
	"github.com/juju/worker/v4/dependency"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/embedded"
)

const (
	databaseName   = "database"
	databaseDBName = "presenced"
	baseCollection = "presence"
)

// serve runs everything until ctx is done, then stops it all.
func serve(ctx context.Context, o options, out io.Writer) error {
	started := time.Now()
	clk := clock.WallClock
	fmt.Fprintln(out, "presenced: starting")
	uri, stopDatabase, err := database(ctx, o, out)
	if err != nil {
		return err
	}
	defer stopDatabase()

	models := make([]names.ModelTag, o.models)
	for i := range models {
		models[i] = names.NewModelTag(modelID(i))
	}
	m := newMetrics(o.flush, true, clk)
	reg := newRegistry(models)
	term := newTerminal(out, clk)
	logger := newLineLogger(term, clk)
	engine, err := newEngine(o, uri, models, reg, m, logger)
	if err != nil {
		return err
	}
	stopEngine := func() {
		engine.Kill()
		_ = engine.Wait()
	}
	fmt.Fprintln(out, "engine started; waiting for the workers")
	if err := reg.waitReady(ctx); err != nil {
		stopEngine()
		fmt.Fprintln(out, "stopped before the workers were ready")
		return nil
	}

	sim := newSimulation(o, reg, m, clk, out, term)
	if err := sim.start(ctx); err != nil {
		sim.stop()
		stopEngine()
		return err
	}
	listener, err := net.Listen("tcp", o.listen)
	if err != nil {
		sim.stop()
		stopEngine()
		return fmt.Errorf("cannot listen on %s: %w", o.listen, err)
	}
	writes := newWriteRate(m, clk.Now())
	srv, limited := newHTTPServer(newHandler(o, reg, sim, m, writes, clk, started), logger, listener, o.streams)
	// Streams end when the demo stops.
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(limited) }()
	go releaseMemory(ctx, 10*time.Second)
	fmt.Fprintf(out, "listening on http://%s (/status, /watch?key=machine-0, /metrics, /healthz)\n", listener.Addr())

	followers := make(chan struct{})
	followCtx, stopFollowing := context.WithCancel(ctx)
	go func() {
		defer close(followers)
		followAll(followCtx, reg, sim)
	}()

	churn := clk.NewTimer(o.churn)
	display := clk.NewTimer(o.display)
	sampler := clk.NewTimer(time.Second)
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-churn.Chan():
			sim.step()
			churn.Reset(o.churn)
		case <-sampler.Chan():
			writes.sample(clk.Now())
			sampler.Reset(time.Second)
		case <-display.Chan():
			rate := writes.perSecond(clk.Now())
			term.status(status(reg, sim, m, clk, started, rate))
			display.Reset(o.display)
		case err := <-serveDone:
			running = false
			fmt.Fprintln(out, "HTTP server stopped:", err)
		}
	}

	stopping := time.Now()
	fmt.Fprintln(out, "stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	stopFollowing()
	// The engine goes first: units blocked in ClaimLeadership on a hung
	// database return once their manager stops.
	engine.Kill()
	sim.stop()
	stopEngine()
	<-followers
	stopDatabase()
	fmt.Fprintf(out, "stopped cleanly in %.1fs\n", time.Since(stopping).Seconds())
	return nil
}

// modelID returns the UUID of the demo's model i.
func modelID(i int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
}

// database returns the URI to use, starting the embedded server unless
// --mongo-uri was given, and a function that stops it (safe to call twice).
// A given URI must answer a ping within --timeout.
func database(ctx context.Context, o options, out io.Writer) (string, func(), error) {
	if o.mongoURI != "" {
		client, err := dial(ctx, o.mongoURI, o.timeout)
		if err != nil {
			return "", nil, err
		}
		_ = client.Disconnect(context.WithoutCancel(ctx))
		fmt.Fprintf(out, "using MongoDB at %s\n", redactURI(o.mongoURI))
		return o.mongoURI, func() {}, nil
	}
	dir, cleanup := o.dataDir, func() {}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "presenced-")
		if err != nil {
			return "", nil, err
		}
		dir, cleanup = tmp, func() { _ = os.RemoveAll(tmp) }
	}
	srv, err := embedded.Start(embedded.Config{Dir: dir})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	uri := srv.URI()
	fmt.Fprintf(out, "embedded MongoDB-wire server (FerretDB on SQLite) at %s, data in %s\n", uri, dir)
	stopped := false
	return uri, func() {
		if !stopped {
			stopped = true
			srv.Stop()
			cleanup()
		}
	}, nil
}

// newEngine starts a dependency engine with the database, the controller
// set, every model's set (prefixed "m<i>-") and a publisher per model.
func newEngine(o options, uri string, models []names.ModelTag, reg *registry, m *metrics, logger *lineLogger) (*dependency.Engine, error) {
	engine, err := dependency.NewEngine(dependency.EngineConfig{
		IsFatal:          func(error) bool { return false },
		WorstError:       func(err, _ error) error { return err },
		ErrorDelay:       time.Second,
		BounceDelay:      10 * time.Millisecond,
		BackoffFactor:    1.5,
		BackoffResetTime: time.Minute,
		MaxDelay:         10 * time.Second,
		Clock:            clock.WallClock,
		Metrics:          m,
		Logger:           logger,
	})
	if err != nil {
		return nil, err
	}
	manifolds := dependency.Manifolds{
		databaseName: presence.DatabaseManifold(uri, databaseDBName,
			mongooptions.Client().SetServerSelectionTimeout(5*time.Second), m.monitor()),
	}
	maps.Copy(manifolds, presence.ControllerManifolds(presence.ControllerManifoldsConfig{
		Logger:        logger,
		DatabaseName:  databaseName,
		Clock:         clock.WallClock,
		Collection:    baseCollection,
		FlushInterval: o.flush,
		Period:        o.period,
		SyncInterval:  o.sync,
		PruneInterval: 4 * o.period,
		OnFlush:       m.onFlush,
		OnLoad:        m.onLoad,
	}))
	for i, model := range models {
		prefix := "m" + strconv.Itoa(i) + "-"
		maps.Copy(manifolds, presence.ModelManifolds(presence.ModelManifoldsConfig{
			Logger:       logger,
			DatabaseName: databaseName,
			Model:        model,
			Prefix:       prefix,
			APIServer:    true,
			Collection:   baseCollection,
			Period:       o.period,
		}))
		manifolds[prefix+"publisher"] = reg.publisher(i, prefix)
	}
	if err := dependency.Validate(manifolds); err != nil {
		return nil, err
	}
	if err := dependency.Install(engine, manifolds); err != nil {
		_ = worker.Stop(engine)
		return nil, err
	}
	return engine, nil
}

// followAll reports every change that each model's current watcher sees,
// following the watcher across engine restarts.
func followAll(ctx context.Context, reg *registry, sim *simulation) {
	done := make(chan struct{})
	for i := range reg.models {
		go func() {
			defer func() { done <- struct{}{} }()
			for ctx.Err() == nil {
				o, changed := reg.get(i)
				follow(ctx, o, i, sim)
				select {
				case <-changed:
				case <-ctx.Done():
				}
			}
		}()
	}
	for range reg.models {
		<-done
	}
}

// follow reports one watcher's changes until it or ctx stops.
func follow(ctx context.Context, o outputs, model int, sim *simulation) {
	sub := o.watcher.Subscribe()
	defer sub.Close()
	if _, err := sub.Next(ctx); err != nil {
		return
	}
	for {
		changes, err := sub.Next(ctx)
		if err != nil {
			return
		}
		for _, c := range changes {
			sim.report(model, c.Key, c.Alive)
		}
	}
}

// lineLogger prints the errors of the engine and of the workers, one line
// per cause at most every logEvery, with how many it held back:
// an operator sees a database outage or a worker restarting without the
// terminal scrolling away. Other levels are dropped: the terminal shows
// the status. It is safe for concurrent use.
type lineLogger struct {
	out   io.Writer
	clock clock.Clock

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// logEvery is how often one cause may print.
const logEvery = 10 * time.Second

func newLineLogger(out io.Writer, clk clock.Clock) *lineLogger {
	return &lineLogger{out: out, clock: clk, last: make(map[string]time.Time), held: make(map[string]int)}
}

// Tracef is part of the dependency.Logger interface.
func (*lineLogger) Tracef(string, ...any) {}

// Debugf is part of the dependency.Logger interface.
func (*lineLogger) Debugf(string, ...any) {}

// Infof is part of the dependency.Logger interface.
func (*lineLogger) Infof(string, ...any) {}

// Errorf is part of the dependency.Logger interface.
func (l *lineLogger) Errorf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	cause := causeOf(format, args)
	if last, ok := l.last[cause]; ok && now.Sub(last) < logEvery {
		l.held[cause]++
		return
	}
	line := fmt.Sprintf(format, args...)
	if n := l.held[cause]; n > 0 {
		line += fmt.Sprintf(" (and %d more like it)", n)
	}
	l.last[cause], l.held[cause] = now, 0
	fmt.Fprintln(l.out, "ERROR", line)
}

// causeOf names the cause of an error line: its format, and its first
// argument when that is a string, which is how the engine and the workers
// name the worker or the thing that failed ("%q manifold worker returned
// unexpected error: %v"). The error itself is left out: it may change with
// every occurrence of one cause.
func causeOf(format string, args []any) string {
	if len(args) > 0 {
		if name, ok := args[0].(string); ok {
			return format + "\x00" + name
		}
	}
	return format
}
