package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

// limitsSuite checks issue 27's points 5 and 6: clients that never read,
// flags without bounds, and output that blocked the stop.
type limitsSuite struct {
	agenttest.MongoSuite
	binary string
}

var _ = gc.Suite(&limitsSuite{})

func (s *limitsSuite) SetUpSuite(c *gc.C) {
	s.MongoSuite.SetUpSuite(c)
	s.binary = build(c)
}

// Point 6: --agents 100000000 reached 1.9 GB in 8 s on main, --models
// 1000000 and --apps 100000 --units 1000 died of Go's out-of-memory,
// --display 1ns wrote 67.6 MB of log in 5 s, and a flag-parse error
// printed the whole usage.
func (s *limitsSuite) TestFlagsOutOfRangeAreRefusedInOneLineBeforeAnythingStarts(c *gc.C) {
	for _, args := range [][]string{
		{"--agents", "100000000"},
		{"--models", "1000000"},
		{"--apps", "100000", "--units", "1000"},
		{"--apps", "100", "--units", "100", "--models", "5"},
		{"--display", "1ns"},
		{"--period", "1ns"},
		{"--max-streams", "0"},
		{"--no-such-flag"},
		{"status", "--timeout", "1ns", "--mongo-uri", "mongodb://127.0.0.1:1"},
		{"serve", "--keepalive", "1ns", "--mongo-uri", "mongodb://127.0.0.1:1"},
		{"watch", "--sync", "-1s", "--mongo-uri", "mongodb://127.0.0.1:1"},
	} {
		var stdout, stderr bytes.Buffer
		started := time.Now()
		code := run(args, &stdout, &stderr)
		took := time.Since(started)
		comment := gc.Commentf("%v: %s", args, stderr.String())
		c.Check(code, gc.Equals, exitBadFlag, comment)
		c.Check(took < time.Second, gc.Equals, true, comment)
		c.Check(strings.Count(stderr.String(), "\n"), gc.Equals, 1, comment)
		c.Check(stderr.String(), gc.Matches, `presenced( \w+)?: .* \(see presenced( \w+)? --help\)\n`, comment)
		c.Check(stdout.String(), gc.Equals, "", comment)
	}
	var stdout, stderr bytes.Buffer
	c.Assert(run([]string{"--help"}, &stdout, &stderr), gc.Equals, exitOK)
	for _, want := range []string{"(1 to 100000)", "(1 to 1000)", "(100ms to 1h0m0s)", "(1 to 10000)"} {
		c.Check(strings.Contains(stderr.String(), want), gc.Equals, true, gc.Commentf("%s", want))
	}
}

// fullPipe returns the writing end of a pipe that nobody reads, already
// full: a write to it blocks. The reading end stays open until the test
// ends.
func fullPipe(c *gc.C) *os.File {
	r, w, err := os.Pipe()
	c.Assert(err, gc.IsNil)
	fd := int(w.Fd())
	c.Assert(syscall.SetNonblock(fd, true), gc.IsNil)
	chunk := make([]byte, 4096)
	for {
		if _, err := syscall.Write(fd, chunk); err != nil {
			break
		}
	}
	c.Assert(syscall.SetNonblock(fd, false), gc.IsNil)
	c.Logf("pipe %s full", r.Name())
	openPipes = append(openPipes, r)
	return w
}

// openPipes keeps the reading ends of full pipes open (and from the
// garbage collector, which would close them).
var openPipes []*os.File

// startBlocked starts the demo with standard output and error a full
// pipe, with the tests' short settings and args.
func (s *limitsSuite) startBlocked(c *gc.C, args ...string) (*exec.Cmd, chan error) {
	out := fullPipe(c)
	args = append([]string{"--listen", "127.0.0.1:0", "--period", "1s", "--flush", "100ms", "--sync", "100ms",
		"--churn", "10ms", "--display", "100ms", "--agents", "100", "--models", "2", "--mongo-uri", s.Server.URI()}, args...)
	cmd := exec.Command(s.binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	c.Assert(cmd.Start(), gc.IsNil)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, exited
}

func (s *limitsSuite) TestDurationEndsTheDemoWhateverStandardOutputDoes(c *gc.C) {
	started := time.Now()
	cmd, exited := s.startBlocked(c, "--duration", "3s")
	defer func() { _ = cmd.Process.Kill() }()
	select {
	case <-exited:
		took := time.Since(started)
		c.Logf("--duration 3s with a full pipe: exited after %v", took)
		c.Assert(took < 5*time.Second, gc.Equals, true, gc.Commentf("%v", took))
	case <-time.After(30 * time.Second):
		c.Fatalf("--duration 3s did not end the demo within 30s")
	}
}

func (s *limitsSuite) TestSIGINTEndsTheDemoWhateverStandardOutputDoes(c *gc.C) {
	cmd, exited := s.startBlocked(c)
	defer func() { _ = cmd.Process.Kill() }()
	time.Sleep(3 * time.Second)
	signalled := time.Now()
	c.Assert(cmd.Process.Signal(syscall.SIGINT), gc.IsNil)
	select {
	case <-exited:
		took := time.Since(signalled)
		c.Logf("SIGINT with a full pipe: exited after %v", took)
		c.Assert(took < 2*time.Second, gc.Equals, true, gc.Commentf("%v", took))
	case <-time.After(30 * time.Second):
		c.Fatalf("SIGINT did not end the demo within 30s")
	}
}

// Point 5: 10,000 /watch clients that never read took serve from 48 MB
// to 1.42 GB RSS on main, /status timed out, and 1.2 GB was still held a
// minute after they left.
func (s *limitsSuite) TestTenThousandClientsThatNeverReadAreBounded(c *gc.C) {
	if os.Getenv("PRESENCED_LOAD") == "" {
		c.Skip("10,000 connections for 90 s: set PRESENCED_LOAD=1")
	}
	s.checkClientsThatNeverRead(c, 10000)
}

// Point 5 as CI runs it: 2,000 clients, eight times the default cap of
// streams, hold serve to the same bounds.
func (s *limitsSuite) TestClientsThatNeverReadBeyondTheCapAreBounded(c *gc.C) {
	s.checkClientsThatNeverRead(c, 2000)
}

// checkClientsThatNeverRead starts serve with its default limits, has n
// /watch clients connect at once and never read, and checks that /status
// answers within 100 ms while they are connected, that RSS stays under
// 300 MB, and that a minute after they leave RSS is back within 10% of
// where it started.
//
// What "started" means: the Go runtime never gives back some memory sized
// by the largest load a process has had: a descriptor for every goroutine
// it ran at once, and the garbage collector's and the spans' metadata for
// its largest heap. Holding the default 256 streams once (a 25 MB heap at
// its peak, all of it given back) leaves serve about 3 MB above a fresh
// process's 4 MB for good, most of it that metadata, and the more clients
// are refused at once the larger the peak. So the start is measured once
// the process has taken the same load once (its cap of streams, the rest
// refused), and the check is that taking it again leaves nothing more
// behind: nothing accumulates per client. The log gives RSS fresh too,
// and where the memory is at each point.
func (s *limitsSuite) checkClientsThatNeverRead(c *gc.C, n int) {
	defer startPinger(c, s.DB, keysNamed(200)...)()
	cmd := exec.Command(s.binary, "serve", "--listen", "127.0.0.1:0", "--mongo-uri", s.Server.URI(),
		"--database", s.DB.Name(), "--sync", "100ms")
	stdout, stdoutWriter := io.Pipe()
	cmd.Stdout, cmd.Stderr = stdoutWriter, os.Stderr
	c.Assert(cmd.Start(), gc.IsNil)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := &output{}
	go lines.read(stdout)
	listening := lines.wait(c, "presenced serve: following ", time.Minute)
	addr := strings.Fields(strings.SplitAfter(listening, "http://")[1])[0]
	base := "http://" + addr
	pid := cmd.Process.Pid

	// One connection, kept alive, as a monitoring system's: the time
	// is the server's, not that of a connection queued behind n.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}, Timeout: 10 * time.Second}
	get := func(path string) []byte {
		resp, err := client.Get(base + path)
		c.Assert(err, gc.IsNil)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Assert(err, gc.IsNil)
		c.Assert(resp.StatusCode, gc.Equals, http.StatusOK, gc.Commentf("%s", body))
		return body
	}
	statusTook := func() time.Duration {
		started := time.Now()
		get("/status")
		return time.Since(started)
	}
	// Warm up: every code path the clients take is in memory (the
	// binary's pages count in RSS once touched, and are never given
	// back), and the load is taken once.
	freshRSS := rss(c, pid)
	freshMemory := memoryOf(get("/metrics"))
	for range 10 {
		statusTook()
	}
	closeAll(neverReading(c, addr, n))
	// Two of serve's releases: the first collection only moves what
	// sync.Pools hold aside, the second frees it.
	startRSS := lowestRSS(c, pid, 21*time.Second)
	startMemory := memoryOf(get("/metrics"))

	// Meanwhile, /status every 100 ms, and the peak RSS. A request is
	// counted while they connect if it was asked before the last had
	// connected.
	var mu sync.Mutex
	var slowest, slowestWhileConnecting time.Duration
	var surged time.Time
	peak := startRSS
	done := make(chan struct{})
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			asked := time.Now()
			took := statusTook()
			mem := rss(c, pid)
			mu.Lock()
			if surged.IsZero() || asked.Before(surged) {
				slowestWhileConnecting = max(slowestWhileConnecting, took)
			} else {
				slowest = max(slowest, took)
			}
			peak = max(peak, mem)
			mu.Unlock()
		}
	}()
	conns := neverReading(c, addr, n)
	mu.Lock()
	surged = time.Now()
	mu.Unlock()
	time.Sleep(5 * time.Second)
	close(done)
	<-watching
	peakMemory := memoryOf(get("/metrics"))
	closeAll(conns)
	left := time.Now()
	after := lowestRSS(c, pid, time.Minute, startRSS*11/10)
	afterMemory := memoryOf(get("/metrics"))

	mu.Lock()
	defer mu.Unlock()
	c.Logf("%d clients: %d connected; /status slowest %v while they connected, %v while they were connected",
		n, len(conns), slowestWhileConnecting.Round(time.Millisecond), slowest.Round(time.Millisecond))
	c.Logf("anonymous RSS %.1f MB fresh, %.1f MB at start (after the same load once), %.1f MB at peak, %.1f MB %v after they left",
		mb(freshRSS), mb(startRSS), mb(peak), mb(after), time.Since(left).Round(time.Second))
	c.Logf("fresh: %s\nat start: %s\nat peak: %s\nafter: %s", freshMemory, startMemory, peakMemory, afterMemory)
	c.Check(len(conns), gc.Equals, n)
	c.Check(slowest < 100*time.Millisecond, gc.Equals, true, gc.Commentf("%v", slowest))
	c.Check(peak < 300<<20, gc.Equals, true, gc.Commentf("%.1f MB", mb(peak)))
	c.Check(after <= startRSS*11/10, gc.Equals, true, gc.Commentf("%.1f MB, started at %.1f MB", mb(after), mb(startRSS)))
	c.Check(statusTook() < 100*time.Millisecond, gc.Equals, true)
}

// neverReading connects n clients to addr, 50 at a time, each of which
// asks for /watch and never reads, and returns their connections.
func neverReading(c *gc.C, addr string, n int) []net.Conn {
	conns := make(chan net.Conn, n)
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 50 {
				conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					continue
				}
				_, _ = fmt.Fprintf(conn, "GET /watch HTTP/1.1\r\nHost: test\r\n\r\n")
				conns <- conn
			}
		}()
	}
	wg.Wait()
	close(conns)
	var out []net.Conn
	for conn := range conns {
		out = append(out, conn)
	}
	return out
}

func closeAll(conns []net.Conn) {
	for _, conn := range conns {
		conn.Close()
	}
}

// lowestRSS samples the anonymous RSS of process pid every second for
// the time given, or until it is at most the bound given, and returns the
// lowest: serve gives idle memory back every 10 s, and the heap grows
// between.
func lowestRSS(c *gc.C, pid int, within time.Duration, bound ...int) int {
	lowest := rss(c, pid)
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		if len(bound) > 0 && lowest <= bound[0] {
			break
		}
		time.Sleep(time.Second)
		lowest = min(lowest, rss(c, pid))
	}
	return lowest
}

func mb(bytes int) float64 { return float64(bytes) / (1 << 20) }

// memoryOf says where a process's memory is, from its /metrics: the
// heap in use, idle but not given back, goroutine stacks, and the
// runtime's metadata (the garbage collector's, the spans', the rest),
// which it never gives back.
func memoryOf(metrics []byte) string {
	values := make(map[string]float64)
	for _, line := range strings.Split(string(metrics), "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(name, "#") {
			v, err := strconv.ParseFloat(value, 64)
			if err == nil {
				values[name] = v
			}
		}
	}
	m := func(name string) float64 { return values[name] / (1 << 20) }
	return fmt.Sprintf("heap in use %.1f MB, idle %.1f MB; stacks %.1f MB; GC metadata %.1f MB, spans %.1f MB, other %.1f MB; %.0f goroutines",
		m("go_memstats_heap_inuse_bytes"), m("go_memstats_heap_idle_bytes")-m("go_memstats_heap_released_bytes"),
		m("go_memstats_stack_inuse_bytes"), m("go_memstats_gc_sys_bytes"), m("go_memstats_mspan_sys_bytes"),
		m("go_memstats_other_sys_bytes"), values["go_goroutines"])
}

// keysNamed returns n keys, machine-0 on.
func keysNamed(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "machine-" + strconv.Itoa(i)
	}
	return keys
}

// rss returns the anonymous resident set size of process pid (its
// memory, not the pages of its binary), in bytes.
func rss(c *gc.C, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	c.Assert(err, gc.IsNil)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			c.Assert(err, gc.IsNil)
			return kb << 10
		}
	}
	c.Fatalf("no RssAnon for %d", pid)
	return 0
}

// Point 5, the parts a load cannot show: beyond --max-streams a stream is
// refused with 503, and its place comes back when a stream ends.
func (s *limitsSuite) TestStreamsBeyondTheCapAreRefused(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	serve := startCommand(runServe, "--listen", "127.0.0.1:0", "--mongo-uri", s.Server.URI(),
		"--database", s.DB.Name(), "--sync", "100ms", "--max-streams", "2")
	defer serve.stop(c)
	listening := serve.lines.wait(c, "presenced serve: following ", time.Minute)
	base := "http://" + strings.Fields(strings.SplitAfter(listening, "http://")[1])[0]
	_, closeFirst := watchLines(c, base+"/watch")
	_, closeSecond := watchLines(c, base+"/watch")
	defer closeSecond()
	resp, err := http.Get(base + "/watch")
	c.Assert(err, gc.IsNil)
	resp.Body.Close()
	c.Assert(resp.StatusCode, gc.Equals, http.StatusServiceUnavailable)
	closeFirst()
	deadline := time.Now().Add(agenttest.LongWait)
	for {
		resp, err := http.Get(base + "/watch")
		c.Assert(err, gc.IsNil)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		c.Assert(time.Now().Before(deadline), gc.Equals, true, gc.Commentf("the first stream's place never came back"))
		time.Sleep(50 * time.Millisecond)
	}
}
