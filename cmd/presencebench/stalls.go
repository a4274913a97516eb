package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/wireproxy"
)

// demoSettings are presenced's demo settings, the short ones under which
// issue 11 saw false deaths.
var demoSettings = settings{"demo", 250 * time.Millisecond, 250 * time.Millisecond, 2 * time.Second}

// stallRig is a server of the stalls section's own, which it may pause
// and kill, with a proxy in front of it for the batcher's client.
type stallRig struct {
	server   *child
	proxy    *wireproxy.Proxy
	proxyURI string
	writer   *mongo.Database
	reader   *mongo.Database
	done     []func()
}

func newStallRig(e *env) (*stallRig, error) {
	dir, err := os.MkdirTemp("", "presencebench-stalls-")
	if err != nil {
		return nil, err
	}
	rig := &stallRig{done: []func(){func() { _ = os.RemoveAll(dir) }}}
	if rig.server, err = startChild(dir, ""); err != nil {
		rig.close()
		return nil, err
	}
	rig.done = append(rig.done, rig.server.stop)
	proxy, proxyURI, err := wireproxy.NewFor(rig.server.uri)
	if err != nil {
		rig.close()
		return nil, err
	}
	rig.proxy, rig.proxyURI = proxy, proxyURI
	rig.done = append(rig.done, func() { _ = proxy.Close() })
	// The rig's server goes with its data, so nothing is dropped.
	reader, disconnectReader, err := e.connect(rig.server.uri)
	if err != nil {
		rig.close()
		return nil, err
	}
	rig.done = append(rig.done, disconnectReader)
	rig.reader = reader
	// The writer's client reaches the same database through the proxy.
	writer, disconnectWriter, err := e.connect(proxyURI)
	if err != nil {
		rig.close()
		return nil, err
	}
	rig.done = append(rig.done, disconnectWriter)
	rig.writer = writer.Client().Database(reader.Name())
	return rig, nil
}

// controller returns the databases of another controller on the rig: a
// writer's client through the proxy and a reader's straight to the
// server, both clients of its own.
func (rig *stallRig) controller(e *env) (writer, reader *mongo.Database, err error) {
	r, disconnectReader, err := e.connect(rig.server.uri)
	if err != nil {
		return nil, nil, err
	}
	rig.done = append(rig.done, disconnectReader)
	w, disconnectWriter, err := e.connect(rig.proxyURI)
	if err != nil {
		return nil, nil, err
	}
	rig.done = append(rig.done, disconnectWriter)
	return w.Client().Database(rig.reader.Name()), r.Client().Database(rig.reader.Name()), nil
}

func (rig *stallRig) close() {
	for i := len(rig.done) - 1; i >= 0; i-- {
		rig.done[i]()
	}
}

// fault is one way the database stops answering for a while; it returns
// when the database is back.
type fault struct {
	name string
	run  func(rig *stallRig, scale float64) error
}

// scaled returns d times scale.
func scaled(d time.Duration, scale float64) time.Duration {
	return time.Duration(float64(d) * scale)
}

// faults are issue 11's stalls. With scale 1 they last as the issue
// says; quick runs shrink them.
var faults = []fault{
	{"every flush held up 7 periods, then applied", func(rig *stallRig, scale float64) error {
		rig.proxy.SetHold(scaled(7*demoSettings.period, scale))
		time.Sleep(scaled(7*demoSettings.period, scale))
		rig.proxy.SetHold(0)
		return nil
	}},
	{"server SIGSTOPped for 30s", func(rig *stallRig, scale float64) error {
		if err := rig.server.signal(syscall.SIGSTOP); err != nil {
			return err
		}
		time.Sleep(scaled(30*time.Second, scale))
		return rig.server.signal(syscall.SIGCONT)
	}},
	{"server killed for 15s, then restarted", func(rig *stallRig, scale float64) error {
		if err := rig.server.kill(); err != nil {
			return err
		}
		time.Sleep(scaled(15*time.Second, scale))
		return rig.server.restart()
	}},
	{"server killed 3 times in a minute (5s down, 15s up)", func(rig *stallRig, scale float64) error {
		for i := 0; i < 3; i++ {
			if err := rig.server.kill(); err != nil {
				return err
			}
			time.Sleep(scaled(5*time.Second, scale))
			if err := rig.server.restart(); err != nil {
				return err
			}
			if i < 2 {
				time.Sleep(scaled(15*time.Second, scale))
			}
		}
		return nil
	}},
}

// benchStalls breaks the database under a controller at the demo's
// settings, in each of the ways issue 11 found false deaths, at both
// scales, and counts the deaths its watchers report (every key stays
// alive, so each is false), how long after the database came back every
// key was alive again by a ping of its own, and how many never were (a
// lost ping). It does it again with two controllers sharing the
// database, each with its own clients and half of the keys: writers then
// come back from a stall one after the other, and a reader judges each
// by its own.
func benchStalls(ctx context.Context, e *env, t *table) error {
	if e.server == nil {
		t.add(row{section: "stalls", what: "skipped: pausing and killing the database needs the embedded server"})
		return nil
	}
	shapes := []shape{{1, 10000}, {1000, 10}}
	scale, run := 1.0, faults
	if e.opts.quick {
		// A smoke test: one shape, two faults, a tenth of their length.
		shapes = []shape{{5, 10}}
		scale, run = 0.1, []fault{faults[0], faults[2]}
	}
	for _, controllers := range []int{1, 2} {
		for _, sh := range shapes {
			for _, f := range run {
				if ctx.Err() != nil {
					return nil
				}
				if !strings.Contains(f.name, e.opts.fault) {
					continue
				}
				if err := stallOnce(ctx, e, t, sh, f, scale, controllers); err != nil {
					return fmt.Errorf("%s, %v, %d controller(s): %w", f.name, sh, controllers, err)
				}
			}
		}
	}
	return nil
}

// stallOnce runs f under controllers controllers that share the shape's
// keys out between them.
func stallOnce(ctx context.Context, e *env, t *table, sh shape, f fault, scale float64, controllers int) error {
	rig, err := newStallRig(e)
	if err != nil {
		return err
	}
	defer rig.close()
	s := demoSettings
	live := sh.models * sh.agents
	fleets, err := rig.startFleets(ctx, e, sh, controllers)
	if err != nil {
		return err
	}
	// Steady state first: every key pinged in two slots.
	time.Sleep(s.period)
	if err := f.run(rig, scale); err != nil {
		return err
	}
	back := time.Now()
	var recovered time.Duration
	lost := 0
	for _, fl := range fleets {
		r, l := fl.confirmed(back, live, 30*time.Second+4*s.period)
		recovered, lost = max(recovered, r), max(lost, l)
	}
	// Whatever false deaths a recovery brings come within a few
	// periods.
	time.Sleep(3 * s.period)
	seen, clean := falseDeaths(fleets)
	clean = clean && lost == 0
	e.logf("%s, %v, %d controller(s): %s false deaths, every key confirmed alive %v after the database was back, %d never",
		f.name, sh, controllers, seen, ms(recovered), lost)
	t.add(row{
		section:  "stalls",
		what:     fmt.Sprintf("%s, %v, %d controller(s), demo settings", f.name, sh, controllers),
		measured: fmt.Sprintf("%s false deaths; all live keys pinged again %v after; %d pings lost", seen, ms(recovered), lost),
		target:   "0 false deaths, 0 lost",
		verdict:  verdict(clean),
	})
	return nil
}

// startFleets starts controllers fleets at the demo settings on the rig,
// the first on the rig's own clients and the others each on clients of
// its own, with the models of shape sh and its agents shared out between
// them; the rig stops them when it closes.
func (rig *stallRig) startFleets(ctx context.Context, e *env, sh shape, controllers int) ([]*fleet, error) {
	fleets := make([]*fleet, controllers)
	for i := range fleets {
		writer, reader := rig.writer, rig.reader
		if i > 0 {
			var err error
			if writer, reader, err = rig.controller(e); err != nil {
				return nil, err
			}
		}
		fl, err := newFleet(ctx, e, demoSettings, sh.models, writer.Collection("presence"), reader.Collection("presence"))
		if err != nil {
			return nil, err
		}
		rig.done = append(rig.done, fl.stop)
		if controllers > 1 {
			fl.prefix = fmt.Sprintf("c%d-live-", i+1)
		}
		if err := fl.grow(ctx, sh.models*sh.agents/controllers, time.Minute); err != nil {
			return nil, err
		}
		fleets[i] = fl
	}
	return fleets, nil
}

// falseDeaths returns each fleet's false deaths, as "n/m/...", and
// whether there were none.
func falseDeaths(fleets []*fleet) (string, bool) {
	deaths := make([]string, len(fleets))
	none := true
	for i, fl := range fleets {
		n := fl.falseDeaths()
		deaths[i] = fmt.Sprint(n)
		none = none && n == 0
	}
	return strings.Join(deaths, "/"), none
}
