package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// idleMemoryLimit is how much memory the heap may hold idle, neither in
// use nor returned to the operating system, before releaseMemory returns
// it.
const idleMemoryLimit = 4 << 20

// releaseMemory checks every interval, until ctx is done, whether a surge
// (thousands of clients come and gone) left more than idleMemoryLimit of
// the heap idle, and if so returns it to the operating system at once:
// the runtime's own scavenger takes minutes over it.
func releaseMemory(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var stats runtime.MemStats
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		runtime.ReadMemStats(&stats)
		if stats.HeapIdle-stats.HeapReleased > idleMemoryLimit {
			debug.FreeOSMemory()
		}
	}
}
