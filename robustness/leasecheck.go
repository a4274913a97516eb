package robustness

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// LeaseBounds are what CheckLeases and CheckBlocks allow for.
type LeaseBounds struct {
	// Skew is how far apart, at most, any two lease clients' clocks were
	// during the run, by the harness's clock, plus the claim's own
	// latency: a holder's claim is surely valid until its call plus its
	// duration minus Skew, and may lapse (and the lease be granted to
	// another) from then on.
	Skew time.Duration

	// Release is how long after a release (or after a lapse) a blocked
	// caller may take to return, while the database is well: a store
	// read comes within MaxSleep plus the read's own time.
	Release time.Duration

	// Trouble is how much longer a blocked caller may take when a fault
	// overlaps its wait, beyond the fault itself: a read that fails
	// waits for its deadline and for the next tick.
	Trouble time.Duration
}

// leaseInput is one operation as the model sees it.
type leaseInput struct {
	op   Op
	unit string
}

// leaseState is the sequential model of one fenced lease. The model has
// no clock: an operation may take effect at any instant inside its call,
// so a lapse is allowed to any operation that returned after the holder's
// claim could have lapsed.
type leaseState struct {
	// Holder holds the lease, or nobody ("") once released.
	Holder string
	// ValidUntil is when the holder's claim may first lapse, on the
	// harness's clock.
	ValidUntil time.Duration
	// Fence is the holder's fence as a check returned it, 0 while no
	// check has; Floor is the highest fence of earlier holders.
	Fence, Floor int64
	// Pins are the entities that pinned the lease: while any has, the
	// lease does not lapse, whoever holds it.
	Pins string
}

// pinned reports whether any entity pins the lease.
func (s leaseState) pinned() bool {
	return s.Pins != ""
}

// pin returns s with entity's pin added or (pinned false) removed. Pins
// is a sorted, comma-separated set, so that states compare.
func (s leaseState) pin(entity string, pinned bool) leaseState {
	set := strings.Split(s.Pins, ",")
	set = slices.DeleteFunc(set, func(e string) bool { return e == "" || e == entity })
	if pinned {
		set = append(set, entity)
	}
	slices.Sort(set)
	s.Pins = strings.Join(set, ",")
	return s
}

// grant returns the states after a claim by unit granted by an operation
// that returned at ret and was called at call. The first is the claim
// taken as an extension where the unit held the lease, the second as a
// new holder (after a lapse and an expiry, possibly).
func (s leaseState) grant(in leaseInput, skew time.Duration) []any {
	valid := in.op.Call + in.op.Duration - skew
	lapsed := s.Holder == "" || !s.pinned() && (in.op.Return > s.ValidUntil || !in.op.Returned())
	var out []any
	if s.Holder == in.unit {
		ext := s
		ext.ValidUntil = max(s.ValidUntil, valid)
		out = append(out, ext)
	}
	if lapsed {
		out = append(out, leaseState{Holder: in.unit, ValidUntil: valid, Floor: max(s.Floor, s.Fence), Pins: s.Pins})
	}
	return out
}

// leaseModel is the Porcupine model of one lease's history.
func leaseModel(skew time.Duration) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{leaseState{}} },
		Step: func(state, input, output any) []any {
			s, in := state.(leaseState), input.(leaseInput)
			op := in.op
			mayLapse := s.Holder == "" || !s.pinned() && (!op.Returned() || op.Return > s.ValidUntil)
			switch op.Kind {
			case OpClaim:
				switch op.Result {
				case Ok:
					return s.grant(in, skew)
				case Denied:
					// A claim that lost a race twice is denied too.
					return []any{s}
				default:
					return append([]any{s}, s.grant(in, skew)...)
				}
			case OpCheck:
				if op.Result == Denied {
					if s.Holder != in.unit || mayLapse {
						return []any{s}
					}
					return nil
				}
				if s.Holder != in.unit || op.Fence <= s.Floor || (s.Fence != 0 && s.Fence != op.Fence) {
					return nil
				}
				s.Fence = op.Fence
				return []any{s}
			case OpRelease:
				released := leaseState{Floor: max(s.Floor, s.Fence), Pins: s.Pins}
				switch op.Result {
				case Ok:
					if s.Holder != in.unit {
						return nil
					}
					return []any{released}
				case Denied:
					if s.Holder != in.unit || mayLapse {
						return []any{s}
					}
					return nil
				default:
					if s.Holder == in.unit {
						return []any{s, released}
					}
					return []any{s}
				}
			case OpBlock:
				// A block that returned saw the lease free at some
				// instant inside its call.
				if mayLapse {
					return []any{s}
				}
				return nil
			case OpFault:
				// A hostile term may end the holder's tenure (the
				// lease freezes, or reads as free) and its pins:
				// never lower the fence.
				return []any{s, leaseState{Floor: max(s.Floor, s.Fence)}}
			case OpPin, OpUnpin:
				changed := s.pin(in.unit, op.Kind == OpPin)
				if op.Result == Ok {
					return []any{changed}
				}
				return []any{s, changed}
			}
			return []any{s}
		},
		DescribeOperation: func(input, output any) string {
			return input.(leaseInput).op.String()
		},
		DescribeState: func(state any) string {
			return fmt.Sprintf("%+v", state.(leaseState))
		},
	}
	return nm.ToModel()
}

// CheckLeases checks that every lease's history is linearizable against a
// fenced lease (see leaseState), lease by lease. A released lease keeps
// its fence: the next holder's must be higher. A hostile term written for
// a lease (FaultHostileTerm) may end its holder's tenure, as a release
// would, but never lower its fence.
func CheckLeases(ops []Op, bounds LeaseBounds) []Violation {
	byLease := make(map[string][]porcupine.Operation)
	for _, op := range ops {
		switch op.Kind {
		case OpClaim, OpRelease, OpPin, OpUnpin:
		case OpCheck, OpBlock:
			if op.Result == Unknown || !op.Returned() {
				continue // a read with no answer constrains nothing
			}
		case OpFault:
			if op.Fault != FaultHostileTerm {
				continue
			}
		default:
			continue
		}
		ret := int64(op.Return)
		if !op.Returned() || op.Result == Unknown {
			ret = math.MaxInt64
		}
		name := op.Model + "/" + op.Lease
		byLease[name] = append(byLease[name], porcupine.Operation{
			ClientId: op.Ctrl,
			Input:    leaseInput{op: op, unit: op.Unit},
			Call:     int64(op.Call),
			Output:   op.Result,
			Return:   ret,
		})
	}
	names := make([]string, 0, len(byLease))
	for name := range byLease {
		names = append(names, name)
	}
	sort.Strings(names)
	model := leaseModel(bounds.Skew)
	var out []Violation
	for _, name := range names {
		history := byLease[name]
		result := porcupine.CheckOperationsTimeout(model, history, time.Minute)
		switch result {
		case porcupine.Ok:
		case porcupine.Unknown:
			out = append(out, Violation{"leases", fmt.Sprintf("lease %s: linearizability check timed out on %d operations", name, len(history))})
		default:
			out = append(out, Violation{"leases", fmt.Sprintf("lease %s is not linearizable against a fenced lease; its %d operations:\n%s",
				name, len(history), describe(history))})
		}
	}
	return out
}

func describe(history []porcupine.Operation) string {
	var s string
	for i, op := range history {
		if i == 60 {
			return s + fmt.Sprintf("\t... and %d more\n", len(history)-i)
		}
		s += "\t" + op.Input.(leaseInput).op.String() + "\n"
	}
	return s
}

// CheckBlocks checks that every BlockUntilLeadershipReleased called while
// a lease was held returned within bounds.Release of a release that left
// the lease free that long, bounds.Trouble more for every fault that
// overlapped the wait. A lease taken again within the bound (a claim
// granted after the release and called before the bound passed) excuses
// the block: it may never have been free at a read. So does a hostile
// term written for the lease before the block returned: a lease may
// freeze on a term it cannot read (see FrozenLeases).
func CheckBlocks(ops []Op, end time.Duration, bounds LeaseBounds) []Violation {
	var faults []Op
	hostile := make(map[string]time.Duration)
	for _, op := range ops {
		if op.Kind == OpFault {
			faults = append(faults, op)
			if _, ok := hostile[op.Model+"/"+op.Lease]; !ok && op.Fault == FaultHostileTerm {
				hostile[op.Model+"/"+op.Lease] = op.Call
			}
		}
	}
	var out []Violation
	for _, b := range ops {
		if b.Kind != OpBlock || b.Result == Unknown && b.Returned() {
			continue
		}
		returned := b.Return
		if !b.Returned() {
			returned = end
		}
		if at, ok := hostile[b.Model+"/"+b.Lease]; ok && at < returned {
			continue
		}
		for _, r := range ops {
			if r.Kind != OpRelease || r.Result != Ok || r.Model != b.Model || r.Lease != b.Lease || r.Return < b.Call || r.Return > returned {
				continue
			}
			deadline := r.Return + bounds.Release
			for _, f := range faults {
				if f.Call < deadline && (f.Return < 0 || f.Return+bounds.Trouble > r.Return) {
					deadline = max(deadline, faultEnd(f, end)+bounds.Trouble+bounds.Release)
				}
			}
			if deadline > end || returned <= deadline || retaken(ops, r, deadline) {
				continue
			}
			state := "had not returned by the end"
			if b.Returned() {
				state = fmt.Sprintf("returned only after %v", b.Return-r.Return)
			}
			out = append(out, Violation{"blocks", fmt.Sprintf("%s %s; the lease was released and free from %s (bound %v)",
				b, state, r, deadline-r.Return)})
			break
		}
	}
	return out
}

// faultEnd returns when f healed, or end if it had not.
func faultEnd(f Op, end time.Duration) time.Duration {
	if !f.Returned() {
		return end
	}
	return f.Return
}

// retaken reports whether a claim of r's lease was, or may have been,
// granted after the release r and called before deadline.
func retaken(ops []Op, r Op, deadline time.Duration) bool {
	for _, c := range ops {
		if c.Kind == OpClaim && c.Result != Denied && c.Model == r.Model && c.Lease == r.Lease &&
			c.Call < deadline && (!c.Returned() || c.Return > r.Call) {
			return true
		}
	}
	return false
}

// FrozenLeases names the leases that a hostile term hit and that no claim
// was granted after, with the junk written: an allowed outcome (DESIGN §4:
// a lease that cannot continue safely is frozen and reported), recorded
// so that a run says how often it happens.
func FrozenLeases(ops []Op) []string {
	var out []string
	for _, f := range ops {
		if f.Kind != OpFault || f.Fault != FaultHostileTerm || !f.Returned() {
			continue
		}
		granted := false
		for _, c := range ops {
			granted = granted || c.Kind == OpClaim && c.Result == Ok && c.Model == f.Model && c.Lease == f.Lease && c.Call > f.Return
		}
		if !granted {
			out = append(out, fmt.Sprintf("%s/%s since %.3fs (%s)", short(f.Model), f.Lease, f.Return.Seconds(), f.Note))
		}
	}
	return out
}
