package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// outputGrace is how long a process that is stopping waits for its
// output to be taken before it exits without it.
const outputGrace = 300 * time.Millisecond

// errOutputStopped is what a write returns that was dropped because the
// process is stopping and its output is not being taken.
var errOutputStopped = errors.New("output not taken, and stopping")

// detachedWriter writes to its output from a goroutine of its own, so
// that an output that blocks (a full pipe nobody reads, a suspended
// terminal) never keeps the process from stopping: until stop is closed
// a write waits for room, as a plain write would; after it, a write that
// finds no room is dropped. It is safe for concurrent use, and keeps the
// order of writes.
type detachedWriter struct {
	out   io.Writer
	stop  <-chan struct{}
	lines chan []byte

	mu      sync.Mutex
	pending int           // writes accepted and not yet written
	idle    chan struct{} // closed while pending is zero
}

// newDetachedWriter returns a writer to out that gives way once stop is
// closed, and starts its goroutine, which ends with the process.
func newDetachedWriter(out io.Writer, stop <-chan struct{}) *detachedWriter {
	w := &detachedWriter{out: out, stop: stop, lines: make(chan []byte, 256), idle: make(chan struct{})}
	close(w.idle)
	go func() {
		for p := range w.lines {
			_, _ = out.Write(p)
			w.done()
		}
	}()
	return w
}

// Write is part of the io.Writer interface.
func (w *detachedWriter) Write(p []byte) (int, error) {
	line := bytes.Clone(p)
	w.mu.Lock()
	if w.pending == 0 {
		w.idle = make(chan struct{})
	}
	w.pending++
	w.mu.Unlock()
	select {
	case w.lines <- line:
		return len(p), nil
	case <-w.stop:
	}
	select {
	case w.lines <- line:
		return len(p), nil
	default:
		w.done()
		return 0, errOutputStopped
	}
}

// underlying returns the writer w writes to.
func (w *detachedWriter) underlying() io.Writer {
	return w.out
}

// done counts one accepted write as written (or dropped).
func (w *detachedWriter) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending--
	if w.pending == 0 {
		close(w.idle)
	}
}

// drain waits until everything written is out, or, once ctx is done, for
// outputGrace at most.
func (w *detachedWriter) drain(ctx context.Context) {
	w.mu.Lock()
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return
	case <-ctx.Done():
	}
	timer := time.NewTimer(outputGrace)
	defer timer.Stop()
	select {
	case <-idle:
	case <-timer.C:
	}
}
