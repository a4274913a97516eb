package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"time"
)

// streamLimits bound the /watch streams of one process, so that slow and
// idle clients cost a bounded amount: at most maxStreams at once (more
// are answered 503 and their connections closed), and a stream whose
// client has not taken a line within writeTimeout is closed.
type streamLimits struct {
	// keepalive is the time between keepalive lines of an idle stream.
	keepalive time.Duration
	// maxStreams is the most streams open at once.
	maxStreams int
	// writeTimeout is how long one line may take to reach the client.
	writeTimeout time.Duration
}

// streamGate admits at most a number of streams at once. It is safe for
// concurrent use.
type streamGate struct {
	slots chan struct{}
}

// newStreamGate returns a gate that admits n streams at once.
func newStreamGate(n int) *streamGate {
	return &streamGate{slots: make(chan struct{}, n)}
}

// enter takes a place for a stream, without waiting, and reports whether
// there was one; a stream that entered must leave.
func (g *streamGate) enter() bool {
	select {
	case g.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// leave gives a stream's place back.
func (g *streamGate) leave() {
	<-g.slots
}

// open returns how many streams are open.
func (g *streamGate) open() int {
	return len(g.slots)
}

// strictQuery answers 400 with the reason to a request whose query string
// does not parse strictly (a ";" separator, a bad escape), which
// r.URL.Query would silently cut short, and passes the rest to next.
func strictQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("query %q does not parse: %v", r.URL.RawQuery, err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// noQuery answers 400 to a request with any query parameter, for the
// endpoints that take none, and passes the rest to next.
func noQuery(next http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("%s takes no parameters, got %q", r.URL.Path, r.URL.RawQuery))
			return
		}
		next.ServeHTTP(w, r)
	}
}

// newHTTPServer returns a server for handler and the listener it is to
// serve on: l, admitting --max-streams and maxPending more connections
// at once (see connLimit). Every request's query is checked strictly, a
// client that sends no headers is dropped after 10 s, an idle connection
// after a minute, and the server's own errors (refused connections, say)
// are logged through logger, one line per cause.
func newHTTPServer(handler http.Handler, logger *lineLogger, l net.Listener, limits streamLimits) (*http.Server, net.Listener) {
	limit := limitConns(l, limits.maxStreams+maxPending)
	return &http.Server{
		Handler:           strictQuery(handler),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(httpErrors{logger}, "", 0),
		ConnState:         limit.connState,
	}, limit
}

// httpErrors writes the HTTP server's error lines through a lineLogger.
type httpErrors struct{ logger *lineLogger }

// Write is part of the io.Writer interface.
func (h httpErrors) Write(p []byte) (int, error) {
	h.logger.Errorf("http server: %s", string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && p[len(p)-1] == '\n' {
		p = p[:len(p)-1]
	}
	return p
}

// errStreamsFull is why a stream is refused.
var errStreamsFull = errors.New("too many /watch streams open; try again later")

// lineWriter sends a stream's lines to an HTTP client, with a deadline
// for each write: a line, or the lines held, that cannot be written
// within the deadline (the client reads nothing, or too slowly) fails,
// and the stream ends. Lines are held in the response's buffer, which
// goes out when it fills and at each flush: one write for many lines,
// not one per line. It is a lineSink.
type lineWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	enc      *json.Encoder
	deadline time.Duration
	// held is whether anything was written since the last flush: the
	// response's header, at first.
	held bool
}

// newLineWriter returns a lineWriter for w with the given deadline.
func newLineWriter(w http.ResponseWriter, deadline time.Duration) *lineWriter {
	return &lineWriter{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w), deadline: deadline, held: true}
}

// send is part of the lineSink interface.
func (l *lineWriter) send(line watchLine) bool {
	l.held = true
	return l.setDeadline() && l.enc.Encode(line) == nil
}

// flush is part of the lineSink interface. Its first call sends the
// response's header.
func (l *lineWriter) flush() bool {
	if !l.held {
		return true
	}
	l.held = false
	return l.setDeadline() && l.rc.Flush() == nil
}

// setDeadline gives the next write to the client the deadline, and
// reports whether it could.
func (l *lineWriter) setDeadline() bool {
	err := l.rc.SetWriteDeadline(time.Now().Add(l.deadline))
	return err == nil || errors.Is(err, http.ErrNotSupported)
}
