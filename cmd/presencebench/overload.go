package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/presencekit/presence/worker/pinger"
)

// benchOverload finds the load that a controller sustains on the
// database at the demo's settings (its flushes and reads keep within
// their intervals), on both axes, then runs twice that load for two
// minutes while agents come and go, and reports false deaths and how
// detection degrades.
func benchOverload(ctx context.Context, e *env, t *table) error {
	s := demoSettings
	first, most := 1000, 64000
	duration, round := 2*time.Minute, 10*time.Second
	if e.opts.quick {
		first, most = 50, 50
		duration, round = 4*time.Second, 2*time.Second
	}
	for _, perModel := range []int{0, 10} {
		axis := "one model"
		if perModel > 0 {
			axis = fmt.Sprintf("models of %d", perModel)
		}
		sustained, at, err := findSustained(ctx, e, s, first, most, perModel)
		if err != nil {
			return fmt.Errorf("%s: %w", axis, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		e.logf("%s: %d keys sustained (%s)", axis, sustained, at)
		t.add(row{
			section:  "overload",
			what:     fmt.Sprintf("load sustained at demo settings, %s (flush and read p99 within 250ms; tried up to %d)", axis, most),
			measured: fmt.Sprintf("%d keys: %s", sustained, at),
		})
		if err := overloadRun(ctx, e, t, s, 2*sustained, perModel, axis, duration, round); err != nil {
			return fmt.Errorf("%s: %w", axis, err)
		}
	}
	return nil
}

// modelsFor returns how many models keys spread over: one, or one per
// perModel keys.
func modelsFor(keys, perModel int) int {
	if perModel == 0 {
		return 1
	}
	return max(keys/perModel, 1)
}

// findSustained doubles the number of live keys from first up to most
// and returns the largest that kept flushes and reads within their
// intervals over three periods, with the figures it measured there.
func findSustained(ctx context.Context, e *env, s settings, first, most, perModel int) (int, string, error) {
	best, figures := 0, "nothing sustained"
	for n := first; n <= most && ctx.Err() == nil; n *= 2 {
		ok, got, err := sustains(ctx, e, s, n, perModel)
		if err != nil {
			return 0, "", err
		}
		e.logf("%d keys over %d model(s): %s", n, modelsFor(n, perModel), got)
		if !ok {
			break
		}
		best, figures = n, got
	}
	return best, figures, nil
}

// sustains runs n live keys for three periods and reports whether the
// database kept up.
func sustains(ctx context.Context, e *env, s settings, n, perModel int) (bool, string, error) {
	fl, stop, err := startFleet(ctx, e, s, modelsFor(n, perModel))
	if err != nil {
		return false, "", err
	}
	defer stop()
	if err := fl.grow(ctx, n, time.Minute); err != nil {
		return false, err.Error(), nil
	}
	flushMark, loadMark := fl.flushes.count(), fl.loads.count()
	time.Sleep(3 * s.period)
	_, flushP99, _ := percentiles(fl.flushes.since(flushMark))
	_, loadP99, _ := percentiles(fl.loads.since(loadMark))
	flushes, loads := len(fl.flushes.since(flushMark)), len(fl.loads.since(loadMark))
	// The reader must also keep its pace (a stalled one takes no
	// samples); a batcher that falls behind shows in slow flushes and
	// in keys read dead.
	wantLoads := int(3 * s.period / s.sync / 2)
	ok := flushP99 <= s.flush && loadP99 <= s.sync && loads >= wantLoads && fl.falseDeaths() == 0
	return ok, fmt.Sprintf("flush p99 %v over %d flushes, read p99 %v over %d reads, %d false deaths",
		ms(flushP99), flushes, ms(loadP99), loads, fl.falseDeaths()), nil
}

// overloadRun runs live keys for duration while, every round, ten agents
// start, and then half of them disconnect and half go silent, and
// reports the false deaths and the detection latency round by round.
func overloadRun(ctx context.Context, e *env, t *table, s settings, live, perModel int, axis string, duration, round time.Duration) error {
	fl, stop, err := startFleet(ctx, e, s, modelsFor(live, perModel))
	if err != nil {
		return err
	}
	defer stop()
	if err := fl.grow(ctx, live, 2*time.Minute); err != nil {
		t.add(row{section: "overload", what: fmt.Sprintf("twice that (%d keys), %s", live, axis),
			measured: fmt.Sprintf("could not bring them up: %v", err), target: "0 false deaths", verdict: verdict(false)})
		return nil
	}
	var res overloadResult
	started := time.Now()
	for i := 0; time.Since(started) < duration && ctx.Err() == nil; i++ {
		began := time.Now()
		if err := res.addRound(fl, i); err != nil {
			return err
		}
		time.Sleep(time.Until(began.Add(round)))
	}
	res.report(e, t, fl, live, axis, duration, round)
	return nil
}

// overloadEvents is how many agents come and go in each round of an
// overload run.
const overloadEvents = 10

// overloadResult is what an overload run's rounds detected.
type overloadResult struct {
	// rounds are the worst Disconnect and silent detections of each
	// round, as "d/q".
	rounds              []string
	disconnects, silent []time.Duration
}

// addRound starts overloadEvents agents of fl, the round's ith, waits
// until they read alive, has half of them disconnect and half go silent,
// and records how long each death took to be seen.
func (res *overloadResult) addRound(fl *fleet, i int) error {
	timeout := 2*(fl.s.period+fl.s.flush+fl.s.sync) + 10*time.Second
	keys := make([]string, overloadEvents)
	causes := make([]time.Time, overloadEvents)
	ps := make([]*pinger.Pinger, overloadEvents)
	defer func() {
		for _, p := range ps {
			if p != nil {
				p.Kill()
				_ = p.Wait()
			}
		}
	}()
	for j := range keys {
		keys[j] = fmt.Sprintf("%s%d-%d", eventPrefix, i, j)
		p, err := fl.newPinger(keys[j], i*overloadEvents+j)
		if err != nil {
			return err
		}
		ps[j] = p
		if err := p.Start(); err != nil {
			return err
		}
		causes[j] = time.Now()
	}
	fl.d.Wait(keys, causes, true, timeout)
	for j := range ps {
		causes[j] = time.Now()
		if j%2 == 0 {
			_ = ps[j].Disconnect()
		} else {
			_ = ps[j].Stop()
		}
	}
	var d, q []time.Duration
	for j, l := range fl.d.Wait(keys, causes, false, timeout) {
		if j%2 == 0 {
			d = append(d, l)
		} else {
			q = append(q, l)
		}
	}
	res.disconnects, res.silent = append(res.disconnects, d...), append(res.silent, q...)
	_, dWorst, _ := percentiles(d)
	_, qWorst, _ := percentiles(q)
	res.rounds = append(res.rounds, fmt.Sprintf("%v/%v", ms(dWorst), ms(qWorst)))
	return nil
}

// report logs the run of live keys on axis and adds its rows: the false
// deaths fl saw, and detection as it degraded.
func (res *overloadResult) report(e *env, t *table, fl *fleet, live int, axis string, duration, round time.Duration) {
	deaths := fl.falseDeaths()
	_, dP99, dMax := percentiles(res.disconnects)
	_, qP99, qMax := percentiles(res.silent)
	_, flushP99, _ := percentiles(fl.flushes.get())
	_, loadP99, _ := percentiles(fl.loads.get())
	e.logf("overload, %s, %d keys: %d false deaths; per round, worst Disconnect/silent detection: %s",
		axis, live, deaths, strings.Join(res.rounds, " "))
	t.add(row{
		section: "overload",
		what:    fmt.Sprintf("twice that (%d keys), %s, for %v: false deaths", live, axis, duration),
		measured: fmt.Sprintf("%d false deaths; flush p99 %v, read p99 %v, slow flushes %d",
			deaths, ms(flushP99), ms(loadP99), fl.slow.Load()),
		target:  "0 false deaths",
		verdict: verdict(deaths == 0),
	})
	_, _, silentBound := fl.s.bounds()
	t.add(row{
		section: "overload",
		what:    fmt.Sprintf("twice that (%d keys), %s: detection as it degrades (%d events)", live, axis, len(res.disconnects)+len(res.silent)),
		measured: fmt.Sprintf("Disconnect p99 %v max %v; silent p99 %v max %v; per %v round: %s",
			ms(dP99), ms(dMax), ms(qP99), ms(qMax), round, strings.Join(res.rounds, " ")),
		target: fmt.Sprintf("reported; at the sustained load silent p99 <= %v", silentBound),
	})
}
