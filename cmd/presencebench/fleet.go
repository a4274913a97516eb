package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/benchkit"
	"github.com/presencekit/presence/internal/commands"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
	"github.com/presencekit/presence/worker/watcher"
)

// fleet is one controller's presence workers on the wall clock (a
// batcher, a reader, a pruner and a watcher per model) with its live
// pingers, counting every death its watchers report.
type fleet struct {
	s      settings
	models int
	// writerBase is where the batcher writes, readerBase where the
	// reader and the pruner read: the same database, through clients
	// that may take different routes to it.
	writerBase, readerBase *mongo.Collection
	// prefix starts the names of the fleet's keys, so that controllers
	// sharing a database ping keys of their own.
	prefix string

	b        *pingbatcher.PingBatcher
	r        *presencereader.Reader
	pr       *pruner.Pruner
	watchers []*watcher.Watcher
	d        *benchkit.Sightings
	cancel   context.CancelFunc
	pingers  []*pinger.Pinger

	flushes, loads durations
	slow           atomic.Int64 // flushes that took longer than a flush interval
	lastLoad       atomic.Pointer[loadSeen]
}

// loadSeen is a load's figures and when the reader reported them.
type loadSeen struct {
	presencereader.LoadStats
	at time.Time
}

// newFleet starts the workers of a controller with models models and no
// pinger yet.
func newFleet(ctx context.Context, e *env, s settings, models int, writerBase, readerBase *mongo.Collection) (*fleet, error) {
	f := &fleet{s: s, models: models, writerBase: writerBase, readerBase: readerBase, prefix: "live-"}
	var logger *stderrLogger
	if e.opts.logs {
		logger = &stderrLogger{}
	}
	var err error
	// As ControllerManifolds wires them: a prompt flush wakes the reader.
	wake := make(chan struct{}, 1)
	self := &pingbatcher.Self{}
	f.b, err = pingbatcher.New(pingbatcher.Config{
		Base: writerBase, FlushInterval: s.flush, Period: s.period, Clock: clock.WallClock, Logger: logger.orNil(),
		OnFlush: pingbatcher.WakeOnPrompt(wake, self.OnFlush(func(fs pingbatcher.FlushStats) {
			if fs.Documents > 0 || fs.Err != nil {
				f.flushes.add(fs.Took)
				if fs.Took > s.flush {
					f.slow.Add(1)
				}
			}
		})),
	})
	if err != nil {
		return nil, err
	}
	f.r, err = presencereader.New(presencereader.Config{
		Base: readerBase, Clock: clock.WallClock, Period: s.period, SyncInterval: s.sync, Logger: logger.orNil(), Wake: wake, Self: self.Writer,
		OnLoad: func(l presencereader.LoadStats) {
			if l.Err == nil {
				f.loads.add(l.Took)
			}
			f.lastLoad.Store(&loadSeen{LoadStats: l, at: time.Now()})
		},
	})
	if err != nil {
		f.stop()
		return nil, err
	}
	f.pr, err = pruner.New(pruner.Config{Base: readerBase, Clock: clock.WallClock, Period: s.period, Interval: 2 * s.period, Logger: logger.orNil()})
	if err != nil {
		f.stop()
		return nil, err
	}
	subCtx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	var subs []watcher.Subscription
	f.watchers, subs, err = watchModels(f.r, models)
	if err != nil {
		f.stop()
		return nil, err
	}
	f.d = benchkit.NewSightings(subCtx, subs...)
	return f, nil
}

// startFleet starts a fleet of models models on a fresh database of its
// own, its writer and reader sharing one client, and returns it with a
// function that stops it and then drops the database.
func startFleet(ctx context.Context, e *env, s settings, models int) (*fleet, func(), error) {
	db, done, err := e.database()
	if err != nil {
		return nil, nil, err
	}
	base := db.Collection("presence")
	fl, err := newFleet(ctx, e, s, models, base, base)
	if err != nil {
		done()
		return nil, nil, err
	}
	return fl, func() {
		fl.stop()
		done()
	}, nil
}

// remote is another controller's reader with a watcher per model on the
// same database, on a client of its own that counts its commands, and
// nothing else: it learns of the fleet's writes from their notices (or,
// with noPush, at its syncs), where the fleet's own reader is woken by
// its batcher.
type remote struct {
	r          *presencereader.Reader
	watchers   []*watcher.Watcher
	d          *benchkit.Sightings
	counter    *commands.Counter
	pings      string
	cancel     context.CancelFunc
	disconnect func()
}

// newRemote starts a remote reader and watchers of models models on the
// database of base, polling only if noPush is set.
func newRemote(ctx context.Context, e *env, s settings, models int, base *mongo.Collection, noPush bool) (*remote, error) {
	counter := &commands.Counter{}
	db, disconnect, err := e.connect(e.uri, counter.Options())
	if err != nil {
		return nil, err
	}
	own := db.Client().Database(base.Database().Name()).Collection(base.Name())
	r, err := presencereader.New(presencereader.Config{Base: own, Clock: clock.WallClock, Period: s.period, SyncInterval: s.sync, NoPush: noPush})
	if err != nil {
		disconnect()
		return nil, err
	}
	rm := &remote{r: r, counter: counter, pings: schema.Pings(own).Name(), disconnect: disconnect}
	subCtx, cancel := context.WithCancel(ctx)
	rm.cancel = cancel
	var subs []watcher.Subscription
	rm.watchers, subs, err = watchModels(r, models)
	if err != nil {
		rm.stop()
		return nil, err
	}
	rm.d = benchkit.NewSightings(subCtx, subs...)
	return rm, nil
}

// reads returns how many reads of the ping documents the remote sent.
func (rm *remote) reads() int {
	return rm.counter.CountOn("find", rm.pings)
}

// watchModels starts a watcher of each of models models over r, and a
// subscription to every key of each. On failure it kills the watchers it
// started.
func watchModels(r *presencereader.Reader, models int) ([]*watcher.Watcher, []watcher.Subscription, error) {
	var watchers []*watcher.Watcher
	var subs []watcher.Subscription
	for m := 0; m < models; m++ {
		w, err := watcher.New(watcher.Config{Reader: r, Model: modelTag(m)})
		if err != nil {
			for _, w := range watchers {
				w.Kill()
			}
			return nil, nil, err
		}
		watchers = append(watchers, w)
		subs = append(subs, w.Subscribe())
	}
	return watchers, subs, nil
}

// stop stops the remote's workers.
func (rm *remote) stop() {
	rm.cancel()
	for _, w := range rm.watchers {
		w.Kill()
	}
	rm.r.Kill()
	_ = rm.r.Wait()
	rm.disconnect()
}

// grow starts pingers until the fleet has n, spread over its models, and
// waits until the reader sees them all alive.
func (f *fleet) grow(ctx context.Context, n int, timeout time.Duration) error {
	var keys []string
	var causes []time.Time
	for i := len(f.pingers); i < n; i++ {
		key := fmt.Sprintf("%s%d", f.prefix, i)
		p, err := f.newPinger(key, i)
		if err != nil {
			return err
		}
		if err := p.Start(); err != nil {
			return err
		}
		f.pingers = append(f.pingers, p)
		keys, causes = append(keys, key), append(causes, time.Now())
	}
	if got := f.d.Wait(keys, causes, true, timeout); len(got) != len(keys) {
		return fmt.Errorf("only %d of %d new keys seen alive within %v", len(got), len(keys), timeout)
	}
	return ctx.Err()
}

// newPinger returns a pinger, not started, of key in the fleet's model
// i spreads to.
func (f *fleet) newPinger(key string, i int) (*pinger.Pinger, error) {
	return pinger.New(pinger.Config{
		Base: f.writerBase, Model: modelTag(i % f.models), Key: key, Clock: clock.WallClock, Period: f.s.period,
		Recorder: func() pinger.PingRecorder { return f.b },
	})
}

// confirmed waits until a load reported after since saw every live key
// alive by a ping of its own (none held for a late writer or a stall),
// and returns how long after since that was, or how many live keys were
// still unconfirmed at timeout.
func (f *fleet) confirmed(since time.Time, live int, timeout time.Duration) (time.Duration, int) {
	deadline := time.Now().Add(timeout)
	missing := live
	for time.Now().Before(deadline) {
		if l := f.lastLoad.Load(); l != nil && l.at.After(since) && l.Err == nil {
			missing = max(live-(l.Alive-l.Held), 0)
			if missing == 0 && !l.Stalled {
				return l.at.Sub(since), 0
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return timeout, missing
}

// stop stops everything the fleet started.
func (f *fleet) stop() {
	for _, p := range f.pingers {
		p.Kill()
	}
	if f.cancel != nil {
		f.cancel()
	}
	for _, w := range f.watchers {
		w.Kill()
	}
	if f.pr != nil {
		f.pr.Kill()
		_ = f.pr.Wait()
	}
	if f.r != nil {
		f.r.Kill()
		_ = f.r.Wait()
	}
	if f.b != nil {
		f.b.Kill()
		_ = f.b.Wait()
	}
	for _, p := range f.pingers {
		_ = p.Wait()
	}
}

// falseDeaths returns the deaths the fleet's watchers reported of keys
// that nobody stopped.
func (f *fleet) falseDeaths() int {
	return f.d.Unexpected()
}

// stderrLogger prints the workers' logs with the wall time.
type stderrLogger struct{}

// logger is what every worker's Logger field accepts.
type logger interface {
	Debugf(string, ...any)
	Infof(string, ...any)
	Errorf(string, ...any)
}

// orNil returns l as a logger, or a nil interface when l is nil, so that
// the workers stay silent.
func (l *stderrLogger) orNil() logger {
	if l == nil {
		return nil
	}
	return l
}

// Debugf prints a debug line.
func (*stderrLogger) Debugf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s DEBUG %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Infof prints an info line.
func (*stderrLogger) Infof(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s INFO %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Errorf prints an error line.
func (*stderrLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s ERROR %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
