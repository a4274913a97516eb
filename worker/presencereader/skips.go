package presencereader

import (
	"strings"
)

// maxNamed is how many skipped documents one log line names.
const maxNamed = 8

// reportSkipped records how many documents a load skipped, and names each
// of them once in the log: a line names the documents no earlier line
// named (up to maxNamed, counting the rest), and lines are bounded as
// every line of the reader is (see logf: one per LogEvery at most), so a
// document a held-back line would have named is named by a later one if
// it is still there. The reader remembers only the named documents that
// the load skipped: a controller written with another Period, whose every
// slot is a new document, costs memory for the documents in the database
// and a bounded number of lines. It must only be called from the loop
// goroutine.
func (r *Reader) reportSkipped(skipped []string) {
	r.skippedNow = len(skipped)
	named := make(map[string]bool, len(r.named))
	var fresh []string
	for _, why := range skipped {
		if r.named[why] {
			named[why] = true
		} else {
			fresh = append(fresh, why)
		}
	}
	r.named = named
	if len(fresh) == 0 {
		return
	}
	shown := fresh[:min(len(fresh), maxNamed)]
	if r.logf("%s: skipping %d documents that do not read as their writers wrote them: %s (%d more unnamed)",
		r, len(skipped), strings.Join(shown, "; "), len(fresh)-len(shown)) {
		for _, why := range shown {
			named[why] = true
		}
	}
}
