package main

import (
	"context"
	"runtime/debug"
	"time"
)

// releaseMemory collects the heap and returns what is idle to the
// operating system every interval, until ctx is done. After a surge
// (thousands of clients come and gone) the heap would otherwise hold
// their garbage until its next collection, which the surge's heap goal
// puts off while the process is quiet, and the runtime's own scavenger
// takes minutes over what that frees. Only a collection shows that what
// is live has shrunk, so one runs every interval whatever the heap
// looks like: for a quiet process it costs a millisecond; for a busy one
// it is one more beside the many its work causes.
func releaseMemory(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			debug.FreeOSMemory()
		}
	}
}
