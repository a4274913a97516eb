package robustness

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kind names what an Op records.
type Kind string

// The kinds of Op.
const (
	// Lease operations, through one controller's leadership manager.
	OpClaim   Kind = "claim"
	OpCheck   Kind = "check"
	OpRelease Kind = "release"
	OpBlock   Kind = "block"
	// OpPin and OpUnpin pin and unpin a lease for an entity (Unit):
	// a pinned lease does not lapse, whoever holds it.
	OpPin   Kind = "pin"
	OpUnpin Kind = "unpin"
	// OpWrite is a leader's write to its lease's resource through its
	// token's guard (leaseexpiry.UpdateGuarded); Denied means fenced.
	OpWrite Kind = "write"

	// Pinger operations.
	OpStart      Kind = "start"
	OpStop       Kind = "stop"
	OpDisconnect Kind = "disconnect"

	// OpEvent is a change a subscription returned, at its Return; Call
	// is when the Next that returned it was called.
	OpEvent Kind = "event"

	// OpFault is a fault, from its injection (Call) to its healing
	// (Return); Ctrl is the controller it hit, or -1 for the server.
	OpFault Kind = "fault"

	// OpSample is a measurement of resources at Return.
	OpSample Kind = "sample"

	// OpFlush is one flush of a controller's batcher, from its start
	// to its end; Result is Ok when it wrote, Unknown when it failed.
	OpFlush Kind = "flush"
	// OpLoad is one load of a controller's reader, at Return; Result
	// is Ok when it read, Unknown when it failed.
	OpLoad Kind = "load"
	// OpPing is a pinger's ping of its key (Seq is the slot) as its
	// controller's batcher took it, at Return.
	OpPing Kind = "ping"
)

// Result is how an operation ended.
type Result string

// The results of an Op.
const (
	// Ok: granted, held, released, returned.
	Ok Result = "ok"
	// Denied: a claim denied, a check or release of a lease not held.
	Denied Result = "denied"
	// Unknown: an error, a timeout, or no answer by the end of the run:
	// the operation may or may not have taken effect.
	Unknown Result = "unknown"
)

// Pending is the Return of an operation that had not returned when the
// history was taken.
const Pending = time.Duration(-1)

// Op is one recorded operation or event. Call and Return are times since
// the history began on the harness's clock (the monotonic wall clock),
// never a controller's skewed clock.
type Op struct {
	Kind   Kind
	Ctrl   int
	Call   time.Duration
	Return time.Duration
	Result Result

	// Model is the model's UUID.
	Model string

	// Lease fields: the lease (application), the unit, the claim's
	// duration and the fence a check returned.
	Lease    string
	Unit     string
	Duration time.Duration
	Fence    int64

	// Presence fields: the key, the pinger's run (Start to Stop or
	// Disconnect of one pinger), a change's state, and the stream and
	// position of a subscription's event.
	Key      string
	Run      int
	Alive    bool
	Stream   string
	Seq      uint64
	Snapshot bool

	// Fault is the kind of a fault.
	Fault FaultKind

	// Counts are a sample's measurements by name.
	Counts map[string]int

	// Note says anything else worth reading in a failure.
	Note string
}

// Returned reports whether the operation returned before the history was
// taken.
func (op Op) Returned() bool {
	return op.Return >= 0
}

// String describes the operation in one line.
func (op Op) String() string {
	ret := "pending"
	if op.Returned() {
		ret = fmt.Sprintf("%.3fs", op.Return.Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%.3fs..%s] c%d %s", op.Call.Seconds(), ret, op.Ctrl, op.Kind)
	for _, f := range []struct{ name, v string }{
		{"model", short(op.Model)}, {"lease", op.Lease}, {"unit", op.Unit}, {"key", op.Key},
		{"fault", string(op.Fault)}, {"stream", op.Stream}, {"result", string(op.Result)}, {"note", op.Note},
	} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%s", f.name, f.v)
		}
	}
	switch op.Kind {
	case OpClaim:
		fmt.Fprintf(&b, " for=%v", op.Duration)
	case OpCheck, OpWrite:
		fmt.Fprintf(&b, " fence=%d", op.Fence)
	case OpEvent:
		fmt.Fprintf(&b, " alive=%v seq=%d snapshot=%v", op.Alive, op.Seq, op.Snapshot)
	case OpStart, OpStop, OpDisconnect:
		fmt.Fprintf(&b, " run=%d", op.Run)
	case OpSample:
		fmt.Fprintf(&b, " counts=%v", op.Counts)
	}
	return b.String()
}

func short(model string) string {
	if len(model) > 8 {
		return model[len(model)-4:]
	}
	return model
}

// History records operations from many goroutines at once. Its methods
// are safe for concurrent use.
type History struct {
	start time.Time

	mu  sync.Mutex
	ops []Op
}

// NewHistory returns an empty history whose clock starts now.
func NewHistory() *History {
	return &History{start: time.Now()}
}

// Now returns the time since the history began, on the harness's clock.
func (h *History) Now() time.Duration {
	return time.Since(h.start)
}

// Begin records op as called now and pending, and returns its index for
// End.
func (h *History) Begin(op Op) int {
	op.Call, op.Return = h.Now(), Pending
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	return len(h.ops) - 1
}

// End records that the operation at i returned now with result, after
// fill (if not nil) has completed it.
func (h *History) End(i int, result Result, fill func(*Op)) {
	now := h.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops[i].Return, h.ops[i].Result = now, result
	if fill != nil {
		fill(&h.ops[i])
	}
}

// Add records op as it is, its times included.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// Ops returns a copy of the operations recorded so far, in the order they
// were called.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// Violation is one way a history broke a model.
type Violation struct {
	// Checker names the checker that found it.
	Checker string
	// What says what was broken, with the operations involved.
	What string
}

// String is the violation in one line.
func (v Violation) String() string {
	return v.Checker + ": " + v.What
}
