package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
)

// resumeLine is one NDJSON line of a watch stream with positions: a
// change or state, or the marker that ends a snapshot or a resume.
type resumeLine struct {
	Key      string `json:"key,omitempty"`
	Alive    *bool  `json:"alive,omitempty"`
	Snapshot bool   `json:"snapshot,omitempty"`
	Reset    bool   `json:"reset,omitempty"`
	End      bool   `json:"end,omitempty"`
	Position string `json:"position,omitempty"`
}

// countingWriter counts the bytes written through it.
type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}

// encodeBatch writes b as a client would receive it, one line per event
// and an end marker with the batch's position, and returns the lines and
// bytes.
func encodeBatch(b presencereader.Batch) (lines, bytes int, err error) {
	var out countingWriter
	enc := json.NewEncoder(io.Writer(&out))
	for _, e := range b.Events {
		alive := e.Alive
		if err := enc.Encode(resumeLine{Key: e.Key, Alive: &alive, Snapshot: b.Snapshot, Position: e.Position.String()}); err != nil {
			return 0, 0, err
		}
	}
	if err := enc.Encode(resumeLine{End: true, Reset: b.Reset, Position: b.End.String()}); err != nil {
		return 0, 0, err
	}
	return len(b.Events) + 1, out.n, nil
}

// benchResume measures a subscriber that reconnects after a gap in which
// 1% of the keys changed: what resuming after its last position sends,
// every transition or coalesced, against a fresh snapshot taken in the
// same run; and the memory of the model's change log at its bound.
func benchResume(ctx context.Context, e *env, t *table) error {
	keys, gapLoads, logLength := 100000, 30, presencereader.DefaultLogLength
	if e.opts.quick {
		keys, gapLoads, logLength = 1000, 5, 100
	}
	rig, err := newResumeRig(e, keys, logLength)
	if err != nil {
		return err
	}
	defer rig.close()
	first, _, err := rig.next(ctx, presencereader.SubscribeConfig{})
	if err != nil {
		return err
	}
	if len(first.Events) != keys {
		return fmt.Errorf("snapshot of %d keys, want %d", len(first.Events), keys)
	}
	changing := keys / 100
	g, err := rig.gap(ctx, changing, gapLoads)
	if err != nil {
		return err
	}
	if err := rig.addReconnectRows(ctx, e, t, first.End, g); err != nil {
		return err
	}
	if err := rig.fillLog(ctx, changing); err != nil {
		return err
	}
	rig.addLogRow(t, changing)
	return nil
}

// resumeRig is one model's keys written by a batcher and read by a view
// of a reader that loads only when asked to, for the resume figures.
type resumeRig struct {
	b         *pingbatcher.PingBatcher
	ids       []pinger.Identity
	alive     []bool
	logLength int
	r         *presencereader.Reader
	view      *presencereader.View
	done      []func()
}

// newResumeRig writes keys keys alive and starts a reader whose change
// log holds logLength changes, and a view of the model on it.
func newResumeRig(e *env, keys, logLength int) (*resumeRig, error) {
	base, b, ids, stop, err := e.batcher(keys, 1, func(i int) string { return fmt.Sprintf("unit-%d", i) })
	if err != nil {
		return nil, err
	}
	rig := &resumeRig{b: b, ids: ids, alive: make([]bool, keys), logLength: logLength, done: []func(){stop}}
	for i := range rig.alive {
		rig.alive[i] = true
	}
	if err := rig.write(); err != nil {
		rig.close()
		return nil, err
	}
	rig.r, err = presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, SyncInterval: time.Hour, LogLength: logLength})
	if err != nil {
		rig.close()
		return nil, err
	}
	rig.done = append(rig.done, func() { rig.r.Kill(); _ = rig.r.Wait() })
	dying := make(chan struct{})
	rig.view, err = rig.r.NewView(modelTag(0), dying, func() error { return presencereader.ErrStopped })
	if err != nil {
		rig.close()
		return nil, err
	}
	rig.done = append(rig.done, func() {
		close(dying)
		rig.view.Close()
	})
	if err := rig.view.Refresh(); err != nil {
		rig.close()
		return nil, err
	}
	return rig, nil
}

// close stops what the rig started, the last first.
func (rig *resumeRig) close() {
	for i := len(rig.done) - 1; i >= 0; i-- {
		rig.done[i]()
	}
}

// write sets every key's state in the current slot.
func (rig *resumeRig) write() error {
	return writeStates(rig.b, rig.ids, currentSlot(), func(i int) bool { return rig.alive[i] })
}

// load writes every key's state and has the view load it: one load.
func (rig *resumeRig) load() error {
	if err := rig.write(); err != nil {
		return err
	}
	return rig.view.Refresh()
}

// next subscribes to the view with config and returns its first batch and
// how long it took to come.
func (rig *resumeRig) next(ctx context.Context, config presencereader.SubscribeConfig) (presencereader.Batch, time.Duration, error) {
	sub := rig.view.SubscribeWith(config)
	defer sub.Close()
	started := time.Now()
	b, err := sub.NextBatch(ctx)
	return b, time.Since(started), err
}

// resumeGap is what changed in a gap: the keys changing, their
// transitions, the loads they came over, and the keys dead at its end.
type resumeGap struct {
	changing, transitions, loads, netChanged int
}

// gap has the first changing keys die, one load after another over
// loads loads, and every other one come back at the next load.
func (rig *resumeRig) gap(ctx context.Context, changing, loads int) (resumeGap, error) {
	g := resumeGap{changing: changing, loads: loads}
	for load := 0; load < loads && ctx.Err() == nil; load++ {
		for i := 0; i < changing; i++ {
			switch {
			case i%loads == load:
				rig.alive[i] = false
				g.transitions++
			case i%2 == 0 && i%loads == load-1:
				rig.alive[i] = true
				g.transitions++
			}
		}
		if err := rig.load(); err != nil {
			return g, err
		}
	}
	for i := 0; i < changing; i++ {
		if !rig.alive[i] {
			g.netChanged++
		}
	}
	return g, nil
}

// encoded is a batch as a client receives it, and how long it took.
type encoded struct {
	batch        presencereader.Batch
	lines, bytes int
	took         time.Duration
}

// fetch subscribes with config and encodes the first batch.
func (rig *resumeRig) fetch(ctx context.Context, config presencereader.SubscribeConfig) (encoded, error) {
	b, took, err := rig.next(ctx, config)
	if err != nil {
		return encoded{}, err
	}
	lines, bytes, err := encodeBatch(b)
	return encoded{batch: b, lines: lines, bytes: bytes, took: took}, err
}

// addReconnectRows measures a reconnect after g resuming after kept, the
// same coalesced and a fresh snapshot, and adds the first two beside the
// third.
func (rig *resumeRig) addReconnectRows(ctx context.Context, e *env, t *table, kept presencereader.Position, g resumeGap) error {
	resumed, err := rig.fetch(ctx, presencereader.SubscribeConfig{After: kept})
	if err != nil {
		return err
	}
	coalesced, err := rig.fetch(ctx, presencereader.SubscribeConfig{After: kept, Coalesce: true})
	if err != nil {
		return err
	}
	fresh, err := rig.fetch(ctx, presencereader.SubscribeConfig{})
	if err != nil {
		return err
	}
	gapLog := rig.view.Report()
	e.logf("%d keys, %d transitions of %d keys over %d loads: resume %d lines %d bytes in %v; coalesced %d lines %d bytes in %v; fresh snapshot %d lines %d bytes in %v; log %v entries, %v bytes",
		len(rig.ids), g.transitions, g.changing, g.loads, resumed.lines, resumed.bytes, resumed.took, coalesced.lines, coalesced.bytes, coalesced.took,
		fresh.lines, fresh.bytes, fresh.took, gapLog["log-entries"], gapLog["log-bytes"])
	gap := fmt.Sprintf("%d keys, %d of them changing (%d transitions over %d loads)", len(rig.ids), g.changing, g.transitions, g.loads)
	t.add(reconnectRow("reconnect after a gap, resuming after the last position: "+gap, resumed, fresh,
		"every transition, no reset", !resumed.batch.Reset && !resumed.batch.Snapshot && resumed.lines == g.transitions+1))
	t.add(reconnectRow("the same reconnect, coalesced (one line per key that changed)", coalesced, fresh,
		"one line per key changed, no reset", !coalesced.batch.Reset && coalesced.lines == g.netChanged+1))
	return nil
}

// reconnectRow is the subscribers row of what a reconnect got beside a
// fresh snapshot.
func reconnectRow(what string, got, fresh encoded, target string, ok bool) row {
	return row{
		section:  "subscribers",
		what:     what,
		measured: fmt.Sprintf("%d lines, %d bytes", got.lines, got.bytes),
		baseline: fmt.Sprintf("fresh snapshot: %d lines, %d bytes", fresh.lines, fresh.bytes),
		ratio:    fmt.Sprintf("%.1fx fewer bytes", float64(fresh.bytes)/float64(max(got.bytes, 1))),
		target:   target,
		verdict:  verdict(ok),
	}
}

// fillLog fills the view's change log to its bound: every changing key
// flips at every load.
func (rig *resumeRig) fillLog(ctx context.Context, changing int) error {
	for loads := 0; ctx.Err() == nil && loads < 10*rig.logLength/max(changing, 1); loads++ {
		if entries, _ := rig.view.Report()["log-entries"].(int); entries >= rig.logLength {
			return nil
		}
		for i := 0; i < changing; i++ {
			rig.alive[i] = !rig.alive[i]
		}
		if err := rig.load(); err != nil {
			return err
		}
	}
	return nil
}

// addLogRow adds the change log's size against its bound.
func (rig *resumeRig) addLogRow(t *table, changing int) {
	full := rig.view.Report()
	entries, _ := full["log-entries"].(int)
	bytes, _ := full["log-bytes"].(int)
	bound := rig.logLength*32 + changing*48
	t.add(row{
		section:  "subscribers",
		what:     fmt.Sprintf("change log of one model at its bound (LogLength %d, %d keys changing)", rig.logLength, changing),
		measured: fmt.Sprintf("%d entries, %d bytes", entries, bytes),
		target:   fmt.Sprintf("<= %d bytes (32 a change, 48 a key changed)", bound),
		verdict:  verdict(entries == rig.logLength && bytes <= bound),
	})
}
