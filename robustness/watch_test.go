package robustness_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/juju/errors"

	"github.com/presencekit/presence/robustness"
	"github.com/presencekit/presence/worker/presencereader"
)

// watchCtrl is the id under which the history records the /watch stream
// of cmd/presenced serve, a reader of its own over the run's database.
const watchCtrl = 99

var (
	presencedOnce sync.Once
	presencedPath string
	presencedErr  error
	// presencedDir holds the binary built, removed after the tests.
	presencedDir string
)

// presenced returns the path of a presenced binary:
// $PRESENCE_TEST_PRESENCED, or one built once per test process. The
// /watch handler is in package main, so the suite runs the real command.
func presenced() (string, error) {
	presencedOnce.Do(func() {
		if presencedPath = os.Getenv("PRESENCE_TEST_PRESENCED"); presencedPath != "" {
			return
		}
		dir, err := os.MkdirTemp("", "robustness-presenced")
		if err != nil {
			presencedErr = errors.Trace(err)
			return
		}
		presencedDir, presencedPath = dir, filepath.Join(dir, "presenced")
		out, err := exec.Command("go", "build", "-o", presencedPath, "github.com/presencekit/presence/cmd/presenced").CombinedOutput()
		if err != nil {
			presencedErr = errors.Annotatef(err, "cannot build presenced: %s", out)
		}
	})
	return presencedPath, presencedErr
}

// watchLine is the part of a /watch line the recorder reads.
type watchLine struct {
	Model       string            `json:"model"`
	Key         string            `json:"key"`
	Alive       *bool             `json:"alive"`
	Position    string            `json:"position"`
	Snapshot    bool              `json:"snapshot"`
	Reset       bool              `json:"reset"`
	SnapshotEnd bool              `json:"snapshot_end"`
	Positions   map[string]string `json:"positions"`
	Keepalive   bool              `json:"keepalive"`
}

// serveWatch starts `presenced serve` over the run's database and records
// two /watch streams of every model as streams of watchCtrl: "watch",
// which stays (CheckPresence reads it as a reader's), and "watch-resume",
// which goes away for a while now and then and resumes with after= the
// positions it last took. drop, if not nil, may lose a line (a positive
// control).
func (hs *harness) serveWatch(drop func(stream string, line watchLine) bool) error {
	bin, err := presenced()
	if err != nil {
		return errors.Trace(err)
	}
	t := hs.plan.Timing
	cmd := exec.CommandContext(hs.ctx, bin, "serve", "--mongo-uri", hs.server.URI(), "--database", hs.dbName,
		"--listen", "127.0.0.1:0", "--period", t.Period.String(), "--sync", t.SyncInterval.String(),
		"--refresh", "500ms", "--keepalive", "1s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return errors.Trace(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return errors.Annotate(err, "cannot start presenced serve")
	}
	hs.goes(func() { _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if _, rest, ok := strings.Cut(lines.Text(), "listening on http://"); ok {
			base := "http://" + strings.Fields(rest)[0]
			hs.serveBase.Store(&base)
			hs.goes(func() { _, _ = io.Copy(io.Discard, stdout) })
			hs.goes(func() { hs.watch(base, "watch", false, drop) })
			hs.goes(func() { hs.watch(base, "watch-resume", true, drop) })
			return nil
		}
	}
	return errors.Errorf("presenced serve did not say where it listens")
}

// watch records base's /watch as stream until the run ends; if resume,
// it stays 1-4 s, goes away for up to 1.5 s and resumes.
func (hs *harness) watch(base, stream string, resume bool, drop func(stream string, line watchLine) bool) {
	rng := rand.New(rand.NewPCG(hs.plan.Seed, watchCtrl))
	after := make(map[string]string) // model to the last position taken
	for hs.ctx.Err() == nil {
		query := url.Values{}
		for _, p := range after {
			query.Add("after", p)
		}
		ctx, cancel := context.WithCancel(hs.ctx)
		if resume {
			ctx, cancel = context.WithTimeout(hs.ctx, time.Second+time.Duration(rng.Int64N(int64(3*time.Second))))
		}
		err := hs.watchOnce(ctx, base+"/watch?"+query.Encode(), stream, after, drop)
		cancel()
		if err != nil && hs.ctx.Err() == nil {
			hs.logf("%s: %v", stream, err)
		}
		away := hs.plan.Timing.SyncInterval
		if resume {
			away = time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
		}
		hs.sleep(away)
	}
}

// watchOnce records one connection's lines as stream until ctx is done.
func (hs *harness) watchOnce(ctx context.Context, target, stream string, after map[string]string, drop func(stream string, line watchLine) bool) error {
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return errors.Trace(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil // the run or the connection's time is over, or serve is not up yet
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.Errorf("/watch answered %s", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	snapshot := make(map[string][]robustness.Op) // by model, until snapshot_end
	ended := false
	for {
		var line watchLine
		if dec.Decode(&line) != nil {
			return nil
		}
		now := hs.h.Now()
		if drop != nil && drop(stream, line) {
			continue
		}
		op := robustness.Op{Kind: robustness.OpEvent, Ctrl: watchCtrl, Call: now, Return: now, Result: robustness.Ok,
			Model: line.Model, Key: line.Key, Stream: stream}
		switch {
		case line.Keepalive:
		case line.SnapshotEnd:
			for model, p := range line.Positions {
				pos, err := presencereader.ParsePosition(p)
				if err != nil {
					return errors.Trace(err)
				}
				ops, snapped := snapshot[model]
				if !snapped && after[model] != "" {
					continue // resumed: its changes came as changes
				}
				if len(ops) == 0 {
					ops = []robustness.Op{{Kind: robustness.OpEvent, Ctrl: watchCtrl, Call: now, Return: now, Result: robustness.Ok,
						Model: model, Stream: stream, Snapshot: true, Note: "empty snapshot"}}
				}
				for _, op := range ops {
					op.Seq = pos.Seq
					hs.h.Add(op)
				}
				after[model] = p
			}
			clear(snapshot)
			ended = true
		case line.Reset:
			if line.Model != "" {
				snapshot[line.Model] = []robustness.Op{}
				delete(after, line.Model)
			} else {
				clear(after)
			}
		case line.Snapshot:
			if line.Alive == nil {
				continue // a key no model knows
			}
			op.Alive, op.Snapshot = *line.Alive, true
			if ended {
				// A model found after snapshot_end: its snapshot
				// says no position (see robustness.Unpositioned).
				op.Note = robustness.Unpositioned
				hs.h.Add(op)
				continue
			}
			snapshot[line.Model] = append(snapshot[line.Model], op)
		case line.Position != "" && line.Alive != nil:
			pos, err := presencereader.ParsePosition(line.Position)
			if err != nil {
				return errors.Trace(err)
			}
			op.Alive, op.Seq = *line.Alive, pos.Seq
			if !ended {
				op.Note = resumed // a change before snapshot_end follows an after=
			}
			hs.h.Add(op)
			after[line.Model] = line.Position
		default:
			return errors.Errorf("a /watch line the recorder does not know: %+v", line)
		}
	}
}

// resumed is the Note of a change a /watch stream resumed with after=
// sent before its snapshot_end line.
const resumed = "resumed"

// watchedModels says how many events of how many models the watch stream
// recorded, and how many came on resuming, for the log.
func watchedModels(ops []robustness.Op) string {
	models := make(map[string]bool)
	events, resumes := 0, 0
	for _, op := range ops {
		if op.Kind == robustness.OpEvent && strings.HasPrefix(op.Stream, "watch") {
			models[op.Model] = true
			events++
			if op.Note == resumed {
				resumes++
			}
		}
	}
	return fmt.Sprintf("%d /watch events of %d models, %d on resuming", events, len(models), resumes)
}

// serveHeap returns presenced serve's live heap: half its next GC goal
// (GOGC=100), from its /metrics.
func (hs *harness) serveHeap() (int, error) {
	base := hs.serveBase.Load()
	if base == nil {
		return 0, errors.New("serve not started")
	}
	ctx, cancel := context.WithTimeout(hs.ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", *base+"/metrics", nil)
	if err != nil {
		return 0, errors.Trace(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, errors.Trace(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "go_memstats_next_gc_bytes "); ok {
			goal, err := strconv.ParseFloat(v, 64)
			return int(goal / 2), errors.Trace(err)
		}
	}
	return 0, errors.New("no go_memstats_next_gc_bytes in /metrics")
}
