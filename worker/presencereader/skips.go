package presencereader

// reportSkipped records how many documents a load skipped, and logs the
// first of them (see logf: one line per LogEvery at most, whatever the
// number of documents). The reader keeps nothing per document: a
// controller written with another Period, whose every slot is a new
// document, costs no memory and a bounded number of lines. It must only
// be called from the loop goroutine.
func (r *Reader) reportSkipped(skipped []string) {
	r.skippedNow = len(skipped)
	if len(skipped) > 0 {
		r.logf("%s: skipping %s (%d documents skipped by this load)", r, skipped[0], len(skipped))
	}
}
