// Package memstat measures the heap that given packages hold: what was
// allocated with one of their functions on the stack and is still in
// use, from the runtime's memory profile. It lets a soak measure the
// structures of the workers it drives rather than the whole process,
// whose driver pools and test state have lives of their own.
package memstat

import (
	"math"
	"runtime"
	"strings"
)

// SampleRate is the runtime.MemProfileRate that Enable sets: the profile
// samples one allocation per SampleRate bytes on average, so that a heap
// of a few hundred kilobytes is measured within about 2% (one standard
// deviation).
const SampleRate = 128

// Enable makes the runtime sample allocations at SampleRate. Call it
// before the allocations to be measured: those made before are sampled
// at the rate of their time, and InUse scales each by the rate in force
// when it is called.
func Enable() {
	runtime.MemProfileRate = SampleRate
}

// InUse runs the garbage collector and returns an estimate of the bytes
// in use that were allocated with a function of one of pkgs (import
// paths) on the stack. A stack deeper than the profile records is cut at
// its deepest frames, so an allocation made far below the package's
// function may go uncounted.
func InUse(pkgs ...string) uint64 {
	// The profile is as of the last completed collection; the second
	// one makes it include everything freed before the first.
	runtime.GC()
	runtime.GC()
	var records []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		records = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(records, true); ok {
			records = records[:n]
			break
		}
	}
	var total float64
	for i := range records {
		r := &records[i]
		if r.InUseObjects() > 0 && fromAny(r.Stack(), pkgs) {
			total += scaled(r.InUseObjects(), r.InUseBytes())
		}
	}
	return uint64(total)
}

// scaled estimates the bytes that objects sampled objects of bytes in all
// stand for, as pprof does: an object of size s is sampled with
// probability 1-exp(-s/rate).
func scaled(objects, bytes int64) float64 {
	rate := runtime.MemProfileRate
	if rate <= 1 {
		return float64(bytes)
	}
	size := float64(bytes) / float64(objects)
	return float64(bytes) / (1 - math.Exp(-size/float64(rate)))
}

// fromAny reports whether a function of one of pkgs is on stack.
func fromAny(stack []uintptr, pkgs []string) bool {
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		for _, pkg := range pkgs {
			if strings.HasPrefix(f.Function, pkg+".") {
				return true
			}
		}
		if !more {
			return false
		}
	}
}
