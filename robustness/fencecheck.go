package robustness

import "fmt"

// FencedWrite is one write that a guarded resource accepted, in the order
// the resource holds them: the unit that wrote and the fence its token
// carried.
type FencedWrite struct {
	Unit  string
	Fence int64
}

// CheckFencedWrites checks Jepsen's lock-set property on the logs of
// resources written through leadership tokens' guards (resource name to
// the writes it accepted, in order): no write of a deposed leader lands
// after a newer leader's, so fences never go down along a log, and one
// fence is never written by two units (a fence names one holder's
// tenure).
func CheckFencedWrites(logs map[string][]FencedWrite) []Violation {
	var out []Violation
	for resource, log := range logs {
		writerOf := make(map[int64]string)
		for i, w := range log {
			if i > 0 && w.Fence < log[i-1].Fence {
				out = append(out, Violation{Checker: "fenced writes", What: fmt.Sprintf(
					"resource %s: write %d by %s with fence %d landed after write %d by %s with fence %d",
					resource, i, w.Unit, w.Fence, i-1, log[i-1].Unit, log[i-1].Fence)})
			}
			if other, ok := writerOf[w.Fence]; ok && other != w.Unit {
				out = append(out, Violation{Checker: "fenced writes", What: fmt.Sprintf(
					"resource %s: fence %d written by %s and by %s", resource, w.Fence, other, w.Unit)})
			}
			writerOf[w.Fence] = w.Unit
		}
	}
	return out
}
