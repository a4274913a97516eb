package robustness

import (
	"fmt"
	"sort"
	"time"
)

// PresenceBounds are the detection bounds CheckPresence holds a run to,
// each with the harness's slack for scheduling and the race detector.
type PresenceBounds struct {
	// Up: a started pinger's key reads alive within FlushInterval +
	// SyncInterval.
	Up time.Duration
	// Silent: a stopped pinger's key reads dead within Period +
	// FlushInterval + SyncInterval.
	Silent time.Duration
	// Disconnect: a Disconnect is seen within a flush and a sync.
	Disconnect time.Duration
	// Hold: after any trouble (the server paused, killed or slow, the
	// writer's or the reader's controller paused) a reader may hold a
	// late writer's keys alive for MaxStall, plus a Period.
	Hold time.Duration
}

// interval is [From, To) on the harness's clock.
type interval struct{ From, To time.Duration }

// run is one pinger's life, Start to Stop or Disconnect.
type run struct {
	ctrl       int
	start, end Op // end.Kind is "" while running
}

type keyOf struct{ model, key string }

// CheckPresence checks every reader's stream (the "fast" stream of each
// controller and model) against what the pingers did: no key reads dead
// while one of its pingers is up (started at least Up ago, not yet told
// to stop, its controller not paused), and none reads alive once every
// pinger of the key has been stopped for Silent (Disconnect for
// Disconnect), longer by Hold after any trouble recorded in the history.
// end is when the history was taken.
func CheckPresence(ops []Op, end time.Duration, b PresenceBounds) []Violation {
	runs := make(map[keyOf]map[int]*run)
	var faults []Op
	var events []Op
	readers := make(map[int]bool)
	for _, op := range ops {
		k := keyOf{op.Model, op.Key}
		switch op.Kind {
		case OpStart:
			if runs[k] == nil {
				runs[k] = make(map[int]*run)
			}
			runs[k][op.Run] = &run{ctrl: op.Ctrl, start: op}
		case OpStop, OpDisconnect:
			if r := runs[k][op.Run]; r != nil {
				r.end = op
			}
		case OpFault:
			if op.Fault != FaultHostileDocument && op.Fault != FaultClockStep {
				faults = append(faults, op)
			}
		case OpEvent:
			if op.Stream == "fast" {
				events = append(events, op)
				readers[op.Ctrl] = true
			}
		}
	}
	// Reported states by reader, key, in order of return.
	reported := make(map[int]map[keyOf][]Op)
	for _, e := range events {
		if reported[e.Ctrl] == nil {
			reported[e.Ctrl] = make(map[keyOf][]Op)
		}
		k := keyOf{e.Model, e.Key}
		reported[e.Ctrl][k] = append(reported[e.Ctrl][k], e)
	}
	var out []Violation
	keys := make([]keyOf, 0, len(runs))
	for k := range runs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].model+keys[i].key < keys[j].model+keys[j].key })
	for reader := range readers {
		for _, k := range keys {
			mustAlive, mustDead := expected(runs[k], faults, reader, end, b)
			for _, seen := range states(reported[reader][k], end) {
				for _, want := range mustAlive {
					if !seen.alive && overlaps(seen.interval, want) {
						out = append(out, Violation{"presence", fmt.Sprintf("false death: key %s of model %s read dead at reader c%d over %s while a pinger was up over %s (pingers: %s)",
							k.key, short(k.model), reader, seen.interval, want, describeRuns(runs[k]))})
					}
				}
				for _, want := range mustDead {
					if seen.alive && overlaps(seen.interval, want) {
						out = append(out, Violation{"presence", fmt.Sprintf("stale life: key %s of model %s read alive at reader c%d over %s, past every bound since its pingers stopped, over %s (pingers: %s)",
							k.key, short(k.model), reader, seen.interval, want, describeRuns(runs[k]))})
					}
				}
			}
		}
	}
	return out
}

func (i interval) String() string {
	return fmt.Sprintf("[%.3fs, %.3fs)", i.From.Seconds(), i.To.Seconds())
}

func overlaps(a, b interval) bool {
	return a.From < b.To && b.From < a.To
}

func describeRuns(runs map[int]*run) string {
	ids := make([]int, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var s string
	for _, id := range ids {
		r := runs[id]
		s += fmt.Sprintf("{%s", r.start)
		if r.end.Kind != "" {
			s += " then " + r.end.String()
		}
		s += "} "
	}
	return s
}

type state struct {
	interval
	alive bool
}

// states turns a reader's events for one key into the states it reported
// and over which times.
func states(events []Op, end time.Duration) []state {
	sort.SliceStable(events, func(i, j int) bool { return events[i].Return < events[j].Return })
	var out []state
	for i, e := range events {
		to := end
		if i+1 < len(events) {
			to = events[i+1].Return
		}
		if to > e.Return {
			out = append(out, state{interval{e.Return, to}, e.Alive})
		}
	}
	return out
}

// expected returns when reader must report the key alive and when dead.
func expected(runs map[int]*run, faults []Op, reader int, end time.Duration, b PresenceBounds) (mustAlive, mustDead []interval) {
	// trouble is every fault this reader and this run's writer may be
	// excused for.
	trouble := func(writer int) []interval {
		var out []interval
		for _, f := range faults {
			if f.Ctrl == -1 || f.Ctrl == reader || f.Ctrl == writer {
				out = append(out, interval{f.Call, faultEnd(f, end)})
			}
		}
		return out
	}
	var maybeAlive []interval
	first := end
	for _, r := range runs {
		first = min(first, r.start.Call)
		troubles := trouble(r.ctrl)
		// Up: from Up after the start returned, later if trouble
		// overlapped the start, until the stop was called, except
		// while the writer's controller was paused and Up after.
		from := r.start.Return + b.Up
		for changed := true; changed; {
			changed = false
			for _, t := range troubles {
				if t.From < from && t.To+b.Up > from && t.To > r.start.Call-b.Up {
					from, changed = t.To+b.Up, true
				}
			}
		}
		to := end
		if r.end.Kind != "" {
			to = r.end.Call
		}
		if !r.start.Returned() || r.start.Result != Ok {
			to = from
		}
		up := []interval{{from, to}}
		for _, f := range faults {
			if f.Ctrl == r.ctrl && f.Ctrl >= 0 {
				up = subtract(up, interval{f.Call, faultEnd(f, end) + b.Silent + b.Up})
			}
		}
		mustAlive = append(mustAlive, up...)
		// Maybe alive: from the start's call until the bound after
		// the stop returned, longer by Hold after overlapping trouble.
		until := end
		if r.end.Kind != "" && r.end.Returned() {
			bound := b.Silent
			if r.end.Kind == OpDisconnect && r.end.Result == Ok {
				bound = b.Disconnect
			}
			until = r.end.Return + bound
			for changed := true; changed; {
				changed = false
				for _, t := range troubles {
					if t.From < until && t.To+b.Hold > until && t.To > r.start.Call {
						until, changed = t.To+b.Hold, true
					}
				}
			}
		}
		maybeAlive = append(maybeAlive, interval{r.start.Call, until})
	}
	mustDead = subtractAll([]interval{{first, end}}, maybeAlive)
	return mustAlive, mustDead
}

// subtract returns the parts of ins outside cut.
func subtract(ins []interval, cut interval) []interval {
	var out []interval
	for _, in := range ins {
		if !overlaps(in, cut) {
			if in.To > in.From {
				out = append(out, in)
			}
			continue
		}
		if in.From < cut.From {
			out = append(out, interval{in.From, cut.From})
		}
		if cut.To < in.To {
			out = append(out, interval{cut.To, in.To})
		}
	}
	return out
}

func subtractAll(ins, cuts []interval) []interval {
	for _, c := range cuts {
		ins = subtract(ins, c)
	}
	return ins
}

// CheckStreams checks every subscription stream: its changes come in the
// order of their positions with none skipped (a snapshot or a reset sets
// the position, recorded as the event's Seq), each key's changes
// alternate, and two streams of one controller's view agree on every
// position both saw.
func CheckStreams(ops []Op) []Violation {
	type streamKey struct {
		ctrl          int
		model, stream string
	}
	type seen struct {
		key   string
		alive bool
	}
	cursor := make(map[streamKey]uint64)
	last := make(map[streamKey]map[string]bool)
	byPos := make(map[streamKey]map[uint64]seen) // stream "" holds every stream's
	var out []Violation
	events := make([]Op, 0, len(ops))
	for _, op := range ops {
		if op.Kind == OpEvent {
			events = append(events, op)
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].Return < events[j].Return })
	for _, e := range events {
		sk := streamKey{e.Ctrl, e.Model, e.Stream}
		if last[sk] == nil {
			last[sk] = make(map[string]bool)
		}
		if e.Snapshot {
			cursor[sk] = e.Seq
			last[sk][e.Key] = e.Alive
			continue
		}
		if want := cursor[sk] + 1; e.Seq != want {
			out = append(out, Violation{"streams", fmt.Sprintf("%s: position %d where %d was due", e, e.Seq, want)})
		}
		cursor[sk] = e.Seq
		if was, ok := last[sk][e.Key]; ok && was == e.Alive {
			out = append(out, Violation{"streams", fmt.Sprintf("%s: a change to the state the key already had", e)})
		}
		last[sk][e.Key] = e.Alive
		all := streamKey{e.Ctrl, e.Model, ""}
		if byPos[all] == nil {
			byPos[all] = make(map[uint64]seen)
		}
		if prev, ok := byPos[all][e.Seq]; ok && prev != (seen{e.Key, e.Alive}) {
			out = append(out, Violation{"streams", fmt.Sprintf("%s: another stream of the view saw %+v at that position", e, prev)})
		}
		byPos[all][e.Seq] = seen{e.Key, e.Alive}
	}
	return out
}

// ResourceBounds are what CheckResources allows.
type ResourceBounds struct {
	// Counts bounds each count of a sample by name; a count not named
	// is not bounded here.
	Counts map[string]int
	// TermsBase is how many terms a lease may keep besides those of its
	// recent changes (PruneEvery + 2).
	TermsBase int
	// Window is how far back recent changes count, and how long after
	// a fault heals its samples are not held to any bound: nothing can
	// be pruned while the database is in trouble.
	Window time.Duration
}

// CheckResources checks every sample against bounds: each named count,
// and every lease's terms ("terms <model>/<lease>") against TermsBase plus
// twice the claims and releases of that lease within Window before the
// sample (a change and, at most, an expiry each). Samples taken during a
// fault or within Window after it are not held to any bound: prunes fail
// while the database is in trouble.
func CheckResources(ops []Op, end time.Duration, b ResourceBounds) []Violation {
	var out []Violation
	var changes, faults []Op
	for _, op := range ops {
		switch {
		case op.Kind == OpFault && op.Fault != FaultHostileDocument:
			faults = append(faults, op)
		case (op.Kind == OpClaim || op.Kind == OpRelease) && op.Result != Denied:
			changes = append(changes, op)
		}
	}
	for _, s := range ops {
		if s.Kind != OpSample {
			continue
		}
		window := interval{s.Return - b.Window, s.Return + 1}
		troubled := false
		for _, f := range faults {
			troubled = troubled || overlaps(window, interval{f.Call, faultEnd(f, end) + b.Window})
		}
		if troubled {
			continue
		}
		for name, n := range s.Counts {
			if limit, ok := b.Counts[name]; ok && n > limit {
				out = append(out, Violation{"resources", fmt.Sprintf("%s: %s is %d, above its bound %d", s, name, n, limit)})
			}
			var model, lease string
			if _, err := fmt.Sscanf(name, "terms %s", &model); err != nil || b.TermsBase == 0 {
				continue
			}
			limit := b.TermsBase
			for _, c := range changes {
				lease = c.Model + "/" + c.Lease
				if lease == model && c.Call < window.To && (!c.Returned() || c.Return > window.From) {
					limit += 2
				}
			}
			if n > limit {
				out = append(out, Violation{"resources", fmt.Sprintf("%s: lease %s keeps %d terms, above its bound %d", s, model, n, limit)})
			}
		}
	}
	return out
}
