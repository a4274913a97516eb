package main

import (
	"net"
	"net/http"
	"sync"
)

// maxPending is how many connections beyond the streams an HTTP server
// reads requests from and answers at once.
const maxPending = 64

// connLimit is a listener that admits at most a number of connections at
// once that are new or busy with a request: a connection takes a slot
// when it is accepted and gives it back once it is idle, hijacked or
// closed. Beyond that Accept waits, and further clients wait in the
// kernel's accept queue, costing this process nothing.
//
// Without it, each of 10,000 clients arriving within a second got a
// goroutine and 8 KB of buffers as soon as it was accepted, faster than
// they were answered (1,400 at once, measured): /status waited in a run
// queue that long, and the runtime keeps the goroutines' descriptors and
// the poller's and net/http's per-connection records at their peak for
// good. With it, both are bounded by the slots.
// The price: a connection that sends its request slowly holds its slot
// until the server's ReadHeaderTimeout.
//
// A connection that is kept alive takes no slot for its later requests
// (net/http gives no way to wait there); it took one when it was
// accepted. Its methods are safe for concurrent use.
type connLimit struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

// limitConns returns l admitting at most n connections at once, new or
// busy with a request. The server that accepts from it must call its
// connState on every change of a connection's state.
func limitConns(l net.Listener, n int) *connLimit {
	return &connLimit{Listener: l, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

// Accept waits for a slot and a connection. It is part of the
// net.Listener interface.
func (l *connLimit) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	conn, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotConn{Conn: conn, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

// Close closes the listener; an Accept waiting for a slot returns
// net.ErrClosed. It is part of the net.Listener interface.
func (l *connLimit) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// connState gives a connection's slot back once it is idle, hijacked or
// closed. It is an http.Server's ConnState hook.
func (l *connLimit) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateIdle, http.StateHijacked, http.StateClosed:
		if sc, ok := c.(*slotConn); ok {
			sc.release()
		}
	}
}

// slotConn is a connection that holds a slot of a connLimit until its
// release is called (once or more).
type slotConn struct {
	net.Conn
	release func()
}

// CloseWrite shuts the connection's writing side, as net/http does before
// it closes a connection that it answered, where the connection can.
func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
