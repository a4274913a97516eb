package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/juju/clock"

	"github.com/presencekit/presence/internal/schema"
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
	base, b, ids, stop, err := e.batcher(keys, 1, func(i int) string { return fmt.Sprintf("unit-%d", i) })
	if err != nil {
		return err
	}
	defer stop()
	alive := make([]bool, keys)
	for i := range alive {
		alive[i] = true
	}
	// write sets every key's state in the current slot and has v load
	// it: one load.
	write := func(v *presencereader.View) error {
		slot := schema.Slot(time.Now(), schema.DefaultPeriod)
		for i, id := range ids {
			if alive[i] {
				err = b.Ping(id, slot)
			} else {
				err = b.Disconnect(id, slot)
			}
			if err != nil {
				return err
			}
		}
		if err := b.Sync(); err != nil {
			return err
		}
		if v == nil {
			return nil
		}
		return v.Refresh()
	}
	if err := write(nil); err != nil {
		return err
	}
	r, err := presencereader.New(presencereader.Config{Base: base, Clock: clock.WallClock, SyncInterval: time.Hour, LogLength: logLength})
	if err != nil {
		return err
	}
	defer func() { r.Kill(); _ = r.Wait() }()
	dying := make(chan struct{})
	w, err := r.NewView(modelTag(0), dying, func() error { return presencereader.ErrStopped })
	if err != nil {
		return err
	}
	defer func() {
		close(dying)
		w.Close()
	}()
	if err := w.Refresh(); err != nil {
		return err
	}
	next := func(config presencereader.SubscribeConfig) (presencereader.Batch, time.Duration, error) {
		sub := w.SubscribeWith(config)
		defer sub.Close()
		started := time.Now()
		b, err := sub.NextBatch(ctx)
		return b, time.Since(started), err
	}
	first, _, err := next(presencereader.SubscribeConfig{})
	if err != nil {
		return err
	}
	if len(first.Events) != keys {
		return fmt.Errorf("snapshot of %d keys, want %d", len(first.Events), keys)
	}
	kept := first.End

	// The gap: 1% of the keys die, one load after another, and every
	// other one comes back at the next load.
	changing := keys / 100
	transitions := 0
	for load := 0; load < gapLoads && ctx.Err() == nil; load++ {
		for i := 0; i < changing; i++ {
			switch {
			case i%gapLoads == load:
				alive[i] = false
				transitions++
			case i%2 == 0 && i%gapLoads == load-1:
				alive[i] = true
				transitions++
			}
		}
		if err := write(w); err != nil {
			return err
		}
	}
	netChanged := 0
	for i := 0; i < changing; i++ {
		if !alive[i] {
			netChanged++
		}
	}

	resumed, resumeTook, err := next(presencereader.SubscribeConfig{After: kept})
	if err != nil {
		return err
	}
	coalesced, coalesceTook, err := next(presencereader.SubscribeConfig{After: kept, Coalesce: true})
	if err != nil {
		return err
	}
	fresh, freshTook, err := next(presencereader.SubscribeConfig{})
	if err != nil {
		return err
	}
	rLines, rBytes, err := encodeBatch(resumed)
	if err != nil {
		return err
	}
	cLines, cBytes, err := encodeBatch(coalesced)
	if err != nil {
		return err
	}
	fLines, fBytes, err := encodeBatch(fresh)
	if err != nil {
		return err
	}
	gapLog := w.Report()
	e.logf("%d keys, %d transitions of %d keys over %d loads: resume %d lines %d bytes in %v; coalesced %d lines %d bytes in %v; fresh snapshot %d lines %d bytes in %v; log %v entries, %v bytes",
		keys, transitions, changing, gapLoads, rLines, rBytes, resumeTook, cLines, cBytes, coalesceTook, fLines, fBytes, freshTook,
		gapLog["log-entries"], gapLog["log-bytes"])
	gap := fmt.Sprintf("%d keys, %d of them changing (%d transitions over %d loads)", keys, changing, transitions, gapLoads)
	t.add(row{
		section:  "subscribers",
		what:     "reconnect after a gap, resuming after the last position: " + gap,
		measured: fmt.Sprintf("%d lines, %d bytes", rLines, rBytes),
		baseline: fmt.Sprintf("fresh snapshot: %d lines, %d bytes", fLines, fBytes),
		ratio:    fmt.Sprintf("%.1fx fewer bytes", float64(fBytes)/float64(max(rBytes, 1))),
		target:   "every transition, no reset",
		verdict:  verdict(!resumed.Reset && !resumed.Snapshot && rLines == transitions+1),
	})
	t.add(row{
		section:  "subscribers",
		what:     "the same reconnect, coalesced (one line per key that changed)",
		measured: fmt.Sprintf("%d lines, %d bytes", cLines, cBytes),
		baseline: fmt.Sprintf("fresh snapshot: %d lines, %d bytes", fLines, fBytes),
		ratio:    fmt.Sprintf("%.1fx fewer bytes", float64(fBytes)/float64(max(cBytes, 1))),
		target:   "one line per key changed, no reset",
		verdict:  verdict(!coalesced.Reset && cLines == netChanged+1),
	})

	// Fill the log to its bound: every changing key flips at every
	// load.
	loads := 0
	for ctx.Err() == nil && loads < 10*logLength/max(changing, 1) {
		if entries, _ := w.Report()["log-entries"].(int); entries >= logLength {
			break
		}
		for i := 0; i < changing; i++ {
			alive[i] = !alive[i]
		}
		if err := write(w); err != nil {
			return err
		}
		loads++
	}
	full := w.Report()
	entries, _ := full["log-entries"].(int)
	bytes, _ := full["log-bytes"].(int)
	bound := logLength*32 + changing*48
	t.add(row{
		section:  "subscribers",
		what:     fmt.Sprintf("change log of one model at its bound (LogLength %d, %d keys changing)", logLength, changing),
		measured: fmt.Sprintf("%d entries, %d bytes", entries, bytes),
		target:   fmt.Sprintf("<= %d bytes (32 a change, 48 a key changed)", bound),
		verdict:  verdict(entries == logLength && bytes <= bound),
	})
	return nil
}
