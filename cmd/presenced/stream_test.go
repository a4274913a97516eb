package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/juju/clock/testclock"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/worker/presencereader"
)

// streamSuite tests the bounds on slow and idle HTTP clients: the write
// deadline of a stream and the connections a server reads at once. Its
// deadlines are net/http's, on the wall clock, and short.
type streamSuite struct{}

var _ = gc.Suite(&streamSuite{})

// smallBuffers is a listener whose connections have small send buffers,
// so that a client that reads nothing holds up the server's writes after
// a few kilobytes, not megabytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		err = conn.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return conn, err
}

// startStreamServer serves src on /watch with the write timeout given,
// and returns the server and a channel that receives when a stream ends.
func startStreamServer(src source, writeTimeout time.Duration) (*httptest.Server, <-chan struct{}) {
	limits := streamLimits{keepalive: time.Hour, maxStreams: 10, writeTimeout: writeTimeout}
	handler := watchHandler(src, testclock.NewClock(time.Unix(0, 0)), limits, newStreamGate(limits.maxStreams))
	ended := make(chan struct{}, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler(w, r)
		ended <- struct{}{}
	}))
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	return srv, ended
}

// dialStream opens a /watch stream of model A on srv, with a receive
// buffer of readBuffer bytes unless it is 0, and returns the connection
// and the stream's body, which the caller may read or not.
func dialStream(c *gc.C, srv *httptest.Server, readBuffer int) (net.Conn, io.Reader) {
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	c.Assert(err, gc.IsNil)
	if readBuffer > 0 {
		c.Assert(conn.(*net.TCPConn).SetReadBuffer(readBuffer), gc.IsNil)
	}
	_, err = fmt.Fprintf(conn, "GET /watch?model=%s HTTP/1.1\r\nHost: test\r\n\r\n", modelA)
	c.Assert(err, gc.IsNil)
	r := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(r, nil)
	c.Assert(err, gc.IsNil)
	c.Assert(resp.StatusCode, gc.Equals, http.StatusOK)
	return conn, resp.Body
}

// bigSnapshot returns a snapshot of n keys, each line about 100 bytes.
func bigSnapshot(n int) []presencereader.Change {
	changes := make([]presencereader.Change, n)
	for i := range changes {
		changes[i] = presencereader.Change{Key: fmt.Sprintf("machine-%d", i), Alive: true}
	}
	return changes
}

func (*streamSuite) TestAStreamIsClosedOnceItsClientTakesNothingForTheWriteTimeout(c *gc.C) {
	const writeTimeout = 300 * time.Millisecond
	const keys = 1000 // 95 KB of lines, ten times what the buffers hold

	// Control: a client that takes its snapshot, then reads nothing for
	// three write timeouts while the stream has nothing to send, still
	// gets the next change. The deadline is on writes, not on quiet.
	src := newFakeSource(modelA)
	srv, ended := startStreamServer(src, writeTimeout)
	defer srv.Close()
	conn, body := dialStream(c, srv, 0)
	defer conn.Close()
	src.push(modelA, bigSnapshot(keys)...)
	dec := json.NewDecoder(body)
	lines := 0
	for {
		var line watchLine
		c.Assert(dec.Decode(&line), gc.IsNil, gc.Commentf("after %d lines", lines))
		lines++
		if line.SnapshotEnd {
			break
		}
	}
	c.Assert(lines, gc.Equals, keys+1)
	time.Sleep(3 * writeTimeout)
	select {
	case <-ended:
		c.Fatalf("a quiet stream was closed")
	default:
	}
	src.push(modelA, presencereader.Change{Key: "machine-0", Alive: false})
	var change watchLine
	c.Assert(dec.Decode(&change), gc.IsNil)
	c.Assert(change, gc.DeepEquals, changeLine(modelA, "machine-0", false, 1))

	// A client that reads nothing while its snapshot is sent: the
	// stream is closed once a write has waited the write timeout.
	src = newFakeSource(modelA)
	srv, ended = startStreamServer(src, writeTimeout)
	defer srv.Close()
	conn, _ = dialStream(c, srv, 4096)
	defer conn.Close()
	src.push(modelA, bigSnapshot(keys)...)
	started := time.Now()
	select {
	case <-ended:
		took := time.Since(started)
		c.Logf("a client reading nothing: stream closed after %v", took)
		c.Assert(took >= writeTimeout, gc.Equals, true, gc.Commentf("%v", took))
	case <-time.After(writeTimeout + 10*time.Second):
		c.Fatalf("a stream whose client reads nothing is still open %v later", writeTimeout+10*time.Second)
	}
}

// limitedServer serves on a connLimit of slots connections: /block
// answers once release is closed, after telling entered; the rest answer
// at once. It returns the server's address, the server and what Serve
// returned, once it does.
func limitedServer(c *gc.C, slots int, entered chan<- struct{}, release <-chan struct{}) (string, *http.Server, <-chan error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	c.Assert(err, gc.IsNil)
	limit := limitConns(l, slots)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/block" {
				entered <- struct{}{}
				<-release
			}
			_, _ = io.WriteString(w, "ok")
		}),
		ConnState: limit.connState,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(limit) }()
	return l.Addr().String(), srv, served
}

// getAsync GETs url on a connection of its own, and hands over the status
// or the error.
func getAsync(url string) <-chan error {
	done := make(chan error, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		done <- err
	}()
	return done
}

func (*streamSuite) TestAConnectionBeyondTheSlotsWaitsUntilOneIsIdle(c *gc.C) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	addr, srv, _ := limitedServer(c, 1, entered, release)
	defer srv.Close()
	first := getAsync("http://" + addr + "/block")
	<-entered
	second := getAsync("http://" + addr + "/")
	select {
	case err := <-second:
		c.Fatalf("a second connection was answered while the only slot was busy: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The first answers and its connection goes idle: the second gets
	// the slot, and its answer.
	close(release)
	c.Assert(<-first, gc.IsNil)
	select {
	case err := <-second:
		c.Assert(err, gc.IsNil)
	case <-time.After(10 * time.Second):
		c.Fatalf("the second connection was not answered once the slot was free")
	}
}

func (*streamSuite) TestShuttingDownEndsServeWhileItWaitsForASlot(c *gc.C) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	addr, srv, served := limitedServer(c, 1, entered, release)
	first := getAsync("http://" + addr + "/block")
	<-entered
	// Serve waits for a slot that the first request holds; Shutdown
	// waits for that request, and Serve returns meanwhile.
	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-served:
		c.Assert(err, gc.Equals, http.ErrServerClosed)
	case <-time.After(10 * time.Second):
		c.Fatalf("Serve did not return while the server shut down")
	}
	close(release)
	c.Assert(<-first, gc.IsNil)
	c.Assert(<-shutdown, gc.IsNil)
}
