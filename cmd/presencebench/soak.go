package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence"
	"github.com/presencekit/presence/internal/memstat"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/internal/soakstat"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/pruner"
)

// The wall-clock soak has the testclock soak's shape (soak_test.go):
// soakLive models of soakKeys keys, soakAlive of them alive at any time,
// soakPerStep stop-and-start cycles every half Period, soakModels models
// created and removed over the run, controller 1 restarted with a new
// writer id every soakWindow, subscribers that never read.
const (
	soakModels  = 50
	soakLive    = 10
	soakKeys    = 60
	soakAlive   = 40
	soakPerStep = 8
	// soakWindows is how many windows the run after the warm-up is cut
	// into: the first is the baseline, as the testclock soak's first day.
	soakWindows = 5
	// soakSamples is how many samples each window takes.
	soakSamples = 8
)

// wallController is one controller: a batcher and a reader at the
// library's defaults, on the wall clock.
type wallController struct {
	batcher *pingbatcher.PingBatcher
	reader  *presencereader.Reader
	stats   *soakstat.LastLoad
}

// wallSoak is one wall-clock soak's state.
type wallSoak struct {
	base, leases *mongo.Collection
	db           *mongo.Database
	pruner       *pruner.Pruner
	client       lease.Client
	dying        chan struct{}

	// mu guards ctrl: the pingers' Recorder reads it.
	mu   sync.Mutex
	ctrl [2]*wallController

	models  []names.ModelTag
	next    int
	first   map[names.ModelTag]int
	pingers map[string]*pinger.Pinger // model/key -> its pinger, for live keys
	views   []*presencereader.View
	cycles  int
}

// benchSoak runs two controllers at the library's defaults on the wall
// clock for --duration with churn, and samples what the testclock soak
// samples (internal/soakstat): after a warm-up of the reader's LogAge and
// a Period, the rest is cut into soakWindows windows, and every later
// window's peak must be within 10% of the first's.
func benchSoak(ctx context.Context, e *env, t *table) error {
	db, done, err := e.database()
	if err != nil {
		return err
	}
	defer done()
	memstat.Enable()
	s, err := newWallSoak(db)
	if err != nil {
		return err
	}
	defer s.close()
	samples, err := s.run(ctx, e, e.opts.duration)
	if err != nil {
		return err
	}
	s.report(e, t, samples)
	return nil
}

// newWallSoak starts the two controllers, the pruner and soakLive models.
func newWallSoak(db *mongo.Database) (*wallSoak, error) {
	s := &wallSoak{db: db, base: db.Collection(schema.DefaultBase), leases: db.Collection("leases"),
		dying: make(chan struct{}), first: map[names.ModelTag]int{}, pingers: map[string]*pinger.Pinger{}}
	var err error
	if s.pruner, err = pruner.New(pruner.Config{Base: s.base, Clock: clock.WallClock}); err != nil {
		return nil, err
	}
	if s.client, err = lease.NewClient(lease.ClientConfig{Collection: s.leases, Clock: clock.WallClock}); err != nil {
		return nil, err
	}
	for i := range s.ctrl {
		if s.ctrl[i], err = s.start(); err != nil {
			return nil, err
		}
	}
	for range soakLive {
		if err := s.turnModels(context.Background()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// start starts a controller at the library's defaults.
func (s *wallSoak) start() (*wallController, error) {
	b, err := pingbatcher.New(pingbatcher.Config{Base: s.base, Clock: clock.WallClock})
	if err != nil {
		return nil, err
	}
	st := &soakstat.LastLoad{}
	r, err := presencereader.New(presencereader.Config{Base: s.base, Clock: clock.WallClock, OnLoad: st.OnLoad})
	if err != nil {
		b.Kill()
		return nil, err
	}
	return &wallController{batcher: b, reader: r, stats: st}, nil
}

// stopController stops ctl's workers and waits for them.
func stopController(ctl *wallController) {
	ctl.batcher.Kill()
	ctl.reader.Kill()
	_ = ctl.batcher.Wait()
	_ = ctl.reader.Wait()
}

// close stops every pinger and worker.
func (s *wallSoak) close() {
	close(s.dying)
	for _, p := range s.pingers {
		p.Kill()
		_ = p.Wait()
	}
	for _, v := range s.views {
		v.Close()
	}
	for _, ctl := range s.ctrl {
		stopController(ctl)
	}
	s.pruner.Kill()
	_ = s.pruner.Wait()
}

// recorder returns controller i's batcher, whichever it is now.
func (s *wallSoak) recorder(i int) func() pinger.PingRecorder {
	return func() pinger.PingRecorder {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ctrl[i].batcher
	}
}

// restart restarts controller 1 with a new writer id: its pingers find
// the new batcher at their next ping.
func (s *wallSoak) restart() error {
	ctl, err := s.start()
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.ctrl[1]
	s.ctrl[1] = ctl
	s.mu.Unlock()
	stopController(old)
	return nil
}

// turnModels creates a model, with soakAlive live keys, a lease and
// subscribers that never read on controller 0, and once soakLive are
// alive removes the oldest: its pingers stop, and it is removed.
func (s *wallSoak) turnModels(ctx context.Context) error {
	if len(s.models) == soakLive {
		gone := s.models[0]
		s.models = s.models[1:]
		for i := range soakKeys {
			s.stopKey(soakKey(gone, i), false)
		}
		delete(s.first, gone)
		s.views[0].Close()
		s.views = s.views[1:]
		if err := presence.RemoveModel(ctx, s.db, gone); err != nil {
			return err
		}
	}
	model := modelTag(s.next)
	s.next++
	s.models = append(s.models, model)
	for i := range soakAlive {
		if err := s.startKey(soakKey(model, i), i%2); err != nil {
			return err
		}
	}
	_, err := s.client.Claim(ctx, lease.Key{Namespace: leaseexpiry.Namespace, Model: model.Id(), Lease: "app"},
		lease.Request{Holder: "app/0", Duration: time.Minute})
	if err != nil {
		return err
	}
	v, err := s.ctrl[0].reader.NewView(model, s.dying, func() error { return presencereader.ErrStopped })
	if err != nil {
		return err
	}
	v.Subscribe() // never read
	v.SubscribeWith(presencereader.SubscribeConfig{Coalesce: false})
	s.views = append(s.views, v)
	return nil
}

// soakKey returns model's key i as model/key.
func soakKey(model names.ModelTag, i int) string {
	return fmt.Sprintf("%s/machine-%d", model.Id(), i)
}

// startKey starts a pinger for model/key mk through controller ctl.
func (s *wallSoak) startKey(mk string, ctl int) error {
	p, err := pinger.New(pinger.Config{Base: s.base, Model: names.NewModelTag(mk[:36]), Key: mk[37:],
		Recorder: s.recorder(ctl), Clock: clock.WallClock})
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	s.pingers[mk] = p
	return nil
}

// stopKey stops model/key mk's pinger, if it runs, with a Disconnect if
// disconnect is set, else silently.
func (s *wallSoak) stopKey(mk string, disconnect bool) {
	p := s.pingers[mk]
	if p == nil {
		return
	}
	if disconnect {
		_ = p.Disconnect()
	}
	p.Kill()
	_ = p.Wait()
	delete(s.pingers, mk)
}

// churn runs soakPerStep cycles as the testclock soak does: in each
// model in turn, the longest-lived key stops (Disconnects, or silently)
// and the longest-stopped starts.
func (s *wallSoak) churn() error {
	for range soakPerStep {
		model := s.models[s.cycles%len(s.models)]
		first := s.first[model]
		s.stopKey(soakKey(model, first%soakKeys), s.cycles%2 == 0)
		if err := s.startKey(soakKey(model, (first+soakAlive)%soakKeys), s.cycles/2%2); err != nil {
			return err
		}
		s.first[model] = first + 1
		s.cycles++
	}
	return nil
}

// soakSchedule is when a wall-clock soak of a duration does what: a
// warm-up of the reader's LogAge and a Period (the view's memory of gone
// keys fills up), then soakWindows windows each with a restart of
// controller 1 and soakSamples samples; a step every half Period and a
// model turn every 6 steps, as the testclock soak's every 3 simulated
// hours.
type soakSchedule struct {
	warmup, window, sample, step, turn time.Duration
}

func newSoakSchedule(duration time.Duration) soakSchedule {
	warmup := min(presencereader.DefaultLogAge+schema.DefaultPeriod, duration/2)
	window := (duration - warmup) / soakWindows
	return soakSchedule{warmup: warmup, window: window, sample: window / soakSamples,
		step: schema.DefaultPeriod / 2, turn: 6 * schema.DefaultPeriod / 2}
}

// run runs the soak for duration, or until ctx is done, and returns the
// samples taken after the warm-up, soakSamples a window.
func (s *wallSoak) run(ctx context.Context, e *env, duration time.Duration) ([]soakstat.Sample, error) {
	plan := newSoakSchedule(duration)
	e.logf("soak: %v warm-up, then %d windows of %v, a sample every %v", plan.warmup, soakWindows, plan.window, plan.sample)
	started := time.Now()
	tick := time.NewTicker(min(time.Second, plan.sample))
	defer tick.Stop()
	var samples []soakstat.Sample
	lastStep, lastTurn, restarts := started, started, 0
	for len(samples) < soakWindows*soakSamples {
		select {
		case <-ctx.Done():
			return samples, ctx.Err()
		case now := <-tick.C:
			if now.Sub(lastStep) >= plan.step {
				lastStep = now
				if err := s.churn(); err != nil {
					return nil, err
				}
			}
			if now.Sub(lastTurn) >= plan.turn {
				lastTurn = now
				if err := s.turnModels(ctx); err != nil {
					return nil, err
				}
			}
			since := now.Sub(started) - plan.warmup
			if since >= time.Duration(restarts)*plan.window+plan.window/2 {
				restarts++
				if err := s.restart(); err != nil {
					return nil, err
				}
			}
			if since >= time.Duration(len(samples))*plan.sample {
				sample, err := soakstat.Take(ctx, s.ctrl[0].reader, s.ctrl[0].stats.Get(), s.ctrl[0].batcher, s.base, s.leases)
				if err != nil {
					return nil, err
				}
				e.logf("soak: %v in, %d cycles: %v", now.Sub(started).Round(time.Second), s.cycles, sample)
				samples = append(samples, sample)
			}
		}
	}
	return samples, nil
}

// report adds the soak's rows: each figure's peak after the first
// window beside its peak in it.
func (s *wallSoak) report(e *env, t *table, samples []soakstat.Sample) {
	first := soakstat.Max(samples[:soakSamples])
	later := soakstat.Max(samples[soakSamples:])
	for w := range soakWindows {
		e.logf("soak: window %d peak: %v", w+1, soakstat.Max(samples[w*soakSamples:(w+1)*soakSamples]))
	}
	for _, f := range soakstat.Figures {
		t.add(row{
			section:  "soak",
			what:     fmt.Sprintf("%s, peak of windows 2-%d (%d churn cycles in all)", f.Name, soakWindows, s.cycles),
			measured: fmt.Sprint(f.Get(later)),
			baseline: fmt.Sprintf("%d in window 1", f.Get(first)),
			target:   "within 10% of window 1",
			verdict:  verdict(f.Within(later, first)),
		})
	}
	t.add(row{
		section:  "soak",
		what:     "whole process heap (driver and harness included), peak of windows 2-5",
		measured: fmt.Sprintf("%d B", later.Heap),
		baseline: fmt.Sprintf("%d B in window 1", first.Heap),
	})
}
