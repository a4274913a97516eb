package robustness

import (
	"fmt"
	"sort"
	"strings"
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
	// Starved is the whole bound of DESIGN §4 (Period + FlushInterval +
	// SyncInterval, no slack): a key may read dead once its writer has
	// written nothing for that long, as a writer starved of CPU does.
	// The history's OpFlush records say when a writer wrote, and its
	// OpPing records, if any, when the key's pinger pinged.
	Starved time.Duration
	// Holds overrides Hold for the readers it names.
	Holds map[int]time.Duration
	// AllLate is a reader's late bound (a Period): once no writer at
	// all has written for that long (every batcher starved or slow), a
	// reader sees no writer on time and holds every late writer's keys
	// as after trouble (Hold). The stale lives only this explains are
	// allowed; see AllowedDeaths. Zero allows none.
	AllLate time.Duration
	// Stall is the longest gap between a reader's loads (the
	// history's OpLoad records) that is not a stall: a reader that did
	// not load for longer (starved of CPU, or its database slow) reports
	// late by as long, and the stale lives that only this explains are
	// allowed; see AllowedDeaths. Zero allows none.
	Stall time.Duration
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
// controller and model, and the "watch" stream of a /watch) against what
// the pingers did: no key reads dead while one of its pingers is up
// (started at least Up ago, not yet told to stop, its controller not
// paused), and none reads alive once every pinger of the key has been
// stopped for Silent (Disconnect for Disconnect), longer by Hold after
// any trouble recorded in the history. A controller killed stops its
// pingers silently and its readers at once; a model removed ends its
// streams. A death while the writer
// had written nothing for the whole bound (Starved) is allowed; see
// AllowedDeaths. end is when the history was taken.
func CheckPresence(ops []Op, end time.Duration, b PresenceBounds) []Violation {
	out, _ := checkPresence(ops, end, b)
	return out
}

// AllowedDeaths returns the deaths CheckPresence allowed because the
// writer had written nothing for the whole bound (Starved) before them:
// a writer starved of CPU, which presence cannot tell from a dead one;
// and the stale lives it allowed because the reader stalled or no writer
// wrote at all (see PresenceBounds.Stall and AllLate): latency, not
// correctness.
func AllowedDeaths(ops []Op, end time.Duration, b PresenceBounds) []Violation {
	_, allowed := checkPresence(ops, end, b)
	return allowed
}

func checkPresence(ops []Op, end time.Duration, b PresenceBounds) (violations, allowed []Violation) {
	runs := make(map[keyOf]map[int]*run)
	var faults []Op
	var events []Op
	readers := make(map[int]bool)
	kills := make(map[int]Op)
	removed := make(map[string]time.Duration) // model to when its removal began
	wrote := make(map[int][]time.Duration)
	loads := make(map[int][]time.Duration)
	type pingerOf struct {
		keyOf
		ctrl int
	}
	pinged := make(map[pingerOf][]time.Duration)
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
			switch op.Fault {
			case FaultHostileDocument, FaultClockStep, FaultHostileTerm:
			case FaultModelRemove:
				// Not trouble: the model's pingers stop, then its
				// views close, and nothing is held to its streams.
				if at, ok := removed[op.Model]; !ok || op.Call < at {
					removed[op.Model] = op.Call
				}
			case FaultControllerKill:
				// Not trouble: a controller killed is dead, and its
				// keys must read dead within the bounds.
				if op.Result == Ok {
					kills[op.Ctrl] = op
				}
			default:
				faults = append(faults, op)
			}
		case OpPing:
			if op.Result == Ok {
				k := pingerOf{keyOf{op.Model, op.Key}, op.Ctrl}
				pinged[k] = append(pinged[k], op.Return)
			}
		case OpLoad:
			if op.Result == Ok {
				loads[op.Ctrl] = append(loads[op.Ctrl], op.Return)
			}
		case OpFlush:
			if op.Result == Ok && op.Counts["documents"] > 0 {
				wrote[op.Ctrl] = append(wrote[op.Ctrl], op.Return)
			}
		case OpEvent:
			if op.Stream == "fast" || op.Stream == "watch" {
				events = append(events, op)
				readers[op.Ctrl] = true
			}
		}
	}
	// Trouble the flushes show: every writer late at once.
	var writes []time.Duration
	for _, ts := range wrote {
		writes = append(writes, ts...)
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i] < writes[j] })
	lenient := append([]Op(nil), faults...)
	for i := 1; i < len(writes) && b.AllLate > 0; i++ {
		if writes[i]-writes[i-1] > b.AllLate {
			lenient = append(lenient, Op{Kind: OpFault, Ctrl: -1, Call: writes[i-1] + b.AllLate, Return: writes[i], Note: "no writer wrote"})
		}
	}
	// A kill ends every pinger of the controller, as a silent stop.
	for _, rs := range runs {
		for _, r := range rs {
			if kill, ok := kills[r.ctrl]; ok && (r.end.Kind == "" || r.end.Call > kill.Call) {
				r.end = Op{Kind: OpStop, Ctrl: r.ctrl, Call: kill.Call, Return: kill.Return, Result: Ok, Note: "killed"}
			}
		}
	}
	// starved reports whether writer had written nothing for the whole
	// bound before at, or the key's pinger on it had not pinged, if the
	// history records its pings.
	starved := func(k keyOf, writer int, at time.Duration) bool {
		if b.Starved == 0 {
			return false
		}
		within := func(ts []time.Duration) bool {
			for _, t := range ts {
				if t <= at && t > at-b.Starved {
					return true
				}
			}
			return false
		}
		pings, ok := pinged[pingerOf{k, writer}]
		return !within(wrote[writer]) || ok && !within(pings)
	}
	// Reported states by reader, key, in order of return; and when each
	// reader's stream began. A removed model's streams end at its
	// removal.
	reported := make(map[int]map[keyOf][]Op)
	began := make(map[int]time.Duration)
	for _, e := range events {
		if at, ok := removed[e.Model]; ok && e.Return >= at {
			continue
		}
		if t, ok := began[e.Ctrl]; !ok || e.Call < t {
			began[e.Ctrl] = e.Call
		}
		if reported[e.Ctrl] == nil {
			reported[e.Ctrl] = make(map[keyOf][]Op)
		}
		k := keyOf{e.Model, e.Key}
		reported[e.Ctrl][k] = append(reported[e.Ctrl][k], e)
	}
	var out []Violation
	readerEnd := func(reader int) time.Duration {
		if kill, ok := kills[reader]; ok {
			return kill.Call
		}
		return end
	}
	// stalls are the gaps between each reader's loads longer than
	// b.Stall.
	stalls := make(map[int][]interval)
	for reader, ts := range loads {
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i := 1; i < len(ts) && b.Stall > 0; i++ {
			if ts[i]-ts[i-1] > b.Stall {
				stalls[reader] = append(stalls[reader], interval{ts[i-1], ts[i]})
			}
		}
	}
	keys := make([]keyOf, 0, len(runs))
	for k := range runs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].model+keys[i].key < keys[j].model+keys[j].key })
	for reader := range readers {
		for _, k := range keys {
			mustAlive, mustDead := expected(runs[k], faults, nil, reader, end, b)
			_, mustDeadStalled := expected(runs[k], lenient, stalls[reader], reader, end, b)
			// A reader judges a writer by the progress it has seen
			// itself: one that began after the run did (a controller
			// restarted) may take the silent bound to see none.
			mustDead = subtract(mustDead, interval{0, began[reader] + b.Silent})
			mustDeadStalled = subtract(mustDeadStalled, interval{0, began[reader] + b.Silent})
			until := readerEnd(reader)
			if at, ok := removed[k.model]; ok {
				until = min(until, at)
			}
			for _, seen := range states(reported[reader][k], until) {
				for _, want := range mustAlive {
					if !seen.alive && overlaps(seen.interval, want.interval) {
						v := Violation{"presence", fmt.Sprintf("false death: key %s of model %s read dead at reader c%d over %s while a pinger was up over %s (pingers: %s)",
							k.key, short(k.model), reader, seen.interval, want.interval, describeRuns(runs[k]))}
						if starved(k, want.writer, max(seen.From, want.From)) {
							allowed = append(allowed, v)
							continue
						}
						out = append(out, v)
					}
				}
				for _, want := range mustDead {
					if seen.alive && overlaps(seen.interval, want) {
						v := Violation{"presence", fmt.Sprintf("stale life: key %s of model %s read alive at reader c%d over %s, past every bound since its pingers stopped, over %s (pingers: %s)",
							k.key, short(k.model), reader, seen.interval, want, describeRuns(runs[k]))}
						if !overlapsAny(seen.interval, mustDeadStalled) {
							v.What += "; the reader stalled, or no writer wrote for a Period"
							allowed = append(allowed, v)
							continue
						}
						out = append(out, v)
					}
				}
			}
		}
	}
	return out, allowed
}

func (i interval) String() string {
	return fmt.Sprintf("[%.3fs, %.3fs)", i.From.Seconds(), i.To.Seconds())
}

// overlapsAny reports whether a overlaps any of ins.
func overlapsAny(a interval, ins []interval) bool {
	for _, in := range ins {
		if overlaps(a, in) {
			return true
		}
	}
	return false
}

// overlaps reports whether a and b share an instant; an empty interval
// shares none.
func overlaps(a, b interval) bool {
	return a.From < a.To && b.From < b.To && a.From < b.To && b.From < a.To
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

// upOn is an interval in which a key must read alive, and the
// controller whose pinger makes it so.
type upOn struct {
	interval
	writer int
}

// expected returns when reader must report the key alive and when dead.
//
// A key may read alive later by the length of every stall of the reader
// (stalls) that began before it was due to read dead.
func expected(runs map[int]*run, faults []Op, stalls []interval, reader int, end time.Duration, b PresenceBounds) (mustAlive []upOn, mustDead []interval) {
	if hold, ok := b.Holds[reader]; ok {
		b.Hold = hold
	}
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
		if !r.start.Returned() || r.start.Result != Ok || to < from {
			to = from
		}
		up := []interval{{from, to}}
		for _, f := range faults {
			if f.Ctrl == r.ctrl && f.Ctrl >= 0 {
				up = subtract(up, interval{f.Call, faultEnd(f, end) + b.Silent + b.Up})
			}
		}
		for _, in := range up {
			mustAlive = append(mustAlive, upOn{in, r.ctrl})
		}
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
			for _, s := range stalls {
				if s.From < until && s.To > r.end.Call {
					until += s.To - s.From
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

// Unpositioned is the Note of a snapshot's event that came with no
// position to continue from: /watch sends the snapshot of a model found
// after its snapshot_end line with none, so the stream's first change of
// that model cannot be checked against it.
const Unpositioned = "snapshot with no position"

// CheckStreams checks every subscription stream: its changes come in the
// order of their positions with none skipped (a snapshot or a reset sets
// the position, recorded as the event's Seq; an Unpositioned snapshot
// leaves it to the next change), each key's changes alternate, and two
// streams of one controller's view agree on every position both saw.
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
	unknown := make(map[streamKey]bool) // cursor set by the next change
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
			unknown[sk] = e.Note == Unpositioned
			last[sk][e.Key] = e.Alive
			continue
		}
		if want := cursor[sk] + 1; e.Seq != want && !unknown[sk] {
			out = append(out, Violation{"streams", fmt.Sprintf("%s: position %d where %d was due", e, e.Seq, want)})
		}
		cursor[sk], unknown[sk] = e.Seq, false
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
	// Heaps bounds the growth of the heaps that samples measure, by
	// count name (in bytes).
	Heaps map[string]HeapBound
}

// HeapBound bounds a heap's growth over a run. The baseline is the
// largest sample within Warmup after Warmup (the workers started, the
// first keys loaded); every later sample must stay within Factor times
// the baseline, scaled by how much the live keys (the sum of the counts
// named "keys ...") grew since, plus Slack bytes.
type HeapBound struct {
	Warmup time.Duration
	Factor float64
	Slack  int
}

// CheckResources checks every sample against bounds: no term of a
// model's lease once a removal of the model returned without error; each
// named count,
// and every lease's terms ("terms <model>/<lease>") against TermsBase plus
// twice the claims and releases of that lease within Window before the
// sample (a change and, at most, an expiry each). Samples taken during a
// fault or within Window after it are not held to any bound: prunes fail
// while the database is in trouble.
func CheckResources(ops []Op, end time.Duration, b ResourceBounds) []Violation {
	var out []Violation
	var changes, faults, removals []Op
	for _, op := range ops {
		switch {
		case op.Kind == OpFault && op.Fault == FaultModelRemove && op.Returned() && op.Note == "":
			removals = append(removals, op)
			faults = append(faults, op)
		case op.Kind == OpFault && op.Fault != FaultHostileDocument:
			faults = append(faults, op)
		case (op.Kind == OpClaim || op.Kind == OpRelease) && op.Result != Denied:
			changes = append(changes, op)
		}
	}
	out = append(out, checkHeaps(ops, b.Heaps)...)
	for _, s := range ops {
		if s.Kind != OpSample {
			continue
		}
		for _, r := range removals {
			for name, n := range s.Counts {
				if s.Call > r.Return && n > 0 && strings.HasPrefix(name, "terms "+r.Model+"/") {
					out = append(out, Violation{"resources", fmt.Sprintf("%s: %s keeps %d terms after its model's removal %s", s, name, n, r)})
				}
			}
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

// liveKeys is the sum of a sample's counts of view entries.
func liveKeys(s Op) int {
	n := 0
	for name, v := range s.Counts {
		if strings.HasPrefix(name, "keys ") {
			n += v
		}
	}
	return n
}

// checkHeaps checks every heap of bounds against its HeapBound.
func checkHeaps(ops []Op, bounds map[string]HeapBound) []Violation {
	var out []Violation
	names := make([]string, 0, len(bounds))
	for name := range bounds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		hb := bounds[name]
		base, baseKeys := 0, 0
		for _, s := range ops {
			v, ok := s.Counts[name]
			if s.Kind != OpSample || !ok || s.Return < hb.Warmup {
				continue
			}
			if s.Return < 2*hb.Warmup {
				if v > base {
					base, baseKeys = v, liveKeys(s)
				}
				continue
			}
			if base == 0 {
				break // no baseline: the heap was not measured early
			}
			scale := 1.0
			if baseKeys > 0 {
				scale = max(1, float64(liveKeys(s))/float64(baseKeys))
			}
			if limit := int(hb.Factor*scale*float64(base)) + hb.Slack; v > limit {
				out = append(out, Violation{"resources", fmt.Sprintf("%s: %s grew to %d bytes, above its bound %d (baseline %d bytes with %d live keys)",
					s, name, v, limit, base, baseKeys)})
			}
		}
	}
	return out
}
