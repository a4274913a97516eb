package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// idleMemoryLimit is how much more memory the heap may hold than it held
// live after the last release before releaseMemory collects and returns
// what is garbage or idle.
const idleMemoryLimit = 1 << 20

// releaseMemory checks every interval, until ctx is done, whether the heap
// holds more than idleMemoryLimit beyond what was live after its last
// release, and if so collects it and returns what is idle to the operating
// system at once. After a surge (thousands of clients come and gone) the
// heap would otherwise hold their garbage until its next collection,
// whose goal the surge set high, and the runtime's own scavenger takes
// minutes over what it frees. A process that holds steady is collected
// once an interval at most, a small cost beside the collections its own
// work causes.
func releaseMemory(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var stats runtime.MemStats
	var live uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		runtime.ReadMemStats(&stats)
		if held := stats.HeapInuse + stats.HeapIdle - stats.HeapReleased; held > live+idleMemoryLimit {
			debug.FreeOSMemory()
			runtime.ReadMemStats(&stats)
			live = stats.HeapAlloc
		}
	}
}
