package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4/workertest"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
)

// followSuite runs watch and serve against a database that the library's
// own workers keep writing meanwhile, and counts what reaches the server
// from presenced through a proxy.
type followSuite struct {
	agenttest.MongoSuite
	proxy *agenttest.Proxy
	uri   string
}

var _ = gc.Suite(&followSuite{})

// otherModel has no keys: a key of queryModel must not be found in it.
var otherModel = "2a4b3c5d-0000-4000-8000-00000000000b"

func (s *followSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	s.proxy, s.uri = proxy, uri
}

func (s *followSuite) TearDownTest(c *gc.C) {
	if s.proxy != nil {
		s.proxy.Close()
	}
	s.MongoSuite.TearDownTest(c)
}

// startWriter runs a ping batcher with machine-0 alive in queryModel, and
// a mysql lease held by mysql/0, on the suite's own client: a controller
// that goes on writing while presenced reads. The test defers the
// function it returns, which stops the writer.
func (s *followSuite) startWriter(c *gc.C) func() {
	base := s.DB.Collection(baseCollection)
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock, FlushInterval: 100 * time.Millisecond, Period: time.Second})
	c.Assert(err, gc.IsNil)
	stopBatcher := func() { workertest.CleanKill(agenttest.C(c), b) }
	p, err := pinger.New(pinger.Config{
		Base: base, Model: queryModel, Key: "machine-0", Clock: clock.WallClock, Period: time.Second,
		Recorder: func() pinger.PingRecorder { return b },
	})
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	stop := func() {
		p.Kill()
		_ = p.Wait()
		stopBatcher()
	}
	c.Assert(b.Sync(), gc.IsNil)
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: queryModel.Id(), Lease: "mysql"}
	_, err = client.Claim(context.Background(), key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	return stop
}

// assertNoWrites checks that nothing presenced sent through the proxy
// writes, and that it did read.
func (s *followSuite) assertNoWrites(c *gc.C) {
	counts := s.proxy.Counts()
	for _, write := range []string{"insert", "update", "delete", "createIndexes", "findAndModify", "drop", "create"} {
		c.Check(counts[write], gc.Equals, 0, gc.Commentf("%s: %v", write, counts))
	}
	c.Check(counts["find"] > 0, gc.Equals, true, gc.Commentf("%v", counts))
}

// command runs a long-running subcommand in a goroutine until stopped.
type command struct {
	lines  *output
	cancel context.CancelFunc
	code   chan int
	stderr *syncBuffer
}

func (s *followSuite) start(c *gc.C, run func(context.Context, []string, io.Writer, io.Writer) int, args ...string) *command {
	return startCommand(run, append(args, "--mongo-uri", s.uri, "--database", s.DB.Name(), "--period", "1s", "--sync", "100ms", "--timeout", "10s")...)
}

// startCommand runs a long-running subcommand with args in a goroutine
// until stopped.
func startCommand(run func(context.Context, []string, io.Writer, io.Writer) int, args ...string) *command {
	ctx, cancel := context.WithCancel(context.Background())
	out, in := io.Pipe()
	cmd := &command{lines: &output{}, cancel: cancel, code: make(chan int, 1), stderr: &syncBuffer{}}
	go cmd.lines.read(out)
	go func() {
		cmd.code <- run(ctx, args, in, cmd.stderr)
		in.Close()
	}()
	return cmd
}

// stop cancels the command and checks that it exits 0 within 5 s.
func (cmd *command) stop(c *gc.C) {
	cmd.cancel()
	select {
	case code := <-cmd.code:
		c.Assert(code, gc.Equals, exitOK, gc.Commentf("%s", cmd.stderr))
	case <-time.After(5 * time.Second):
		c.Fatalf("did not stop within 5s")
	}
}

func (s *followSuite) TestWatchStreamsTheSnapshotAndWritesNothing(c *gc.C) {
	defer s.startWriter(c)()
	cmd := s.start(c, runWatch, "machine-0", "ghost", "--keepalive", "200ms")
	end := cmd.lines.wait(c, `{"snapshot_end":true`, time.Minute)
	c.Assert(end, gc.Matches, `\{"snapshot_end":true,"positions":\{"`+queryModel.Id()+`":"[0-9a-f]+\.\d+"\},"time":"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ"\}`)
	cmd.lines.wait(c, `{"keepalive":true`, 10*time.Second)
	cmd.stop(c)
	text := cmd.lines.text()
	c.Assert(text, jsonLinesContain, `{"model":"`+queryModel.Id()+`","key":"machine-0","known":true,"alive":true,"snapshot":true}`)
	c.Assert(text, jsonLinesContain, `{"key":"ghost","known":false,"snapshot":true}`)
	s.assertNoWrites(c)
}

func (s *followSuite) TestWatchWithAModelLooksNowhereElse(c *gc.C) {
	defer s.startWriter(c)()
	cmd := s.start(c, runWatch, "machine-0", "--model", otherModel)
	cmd.lines.wait(c, `{"snapshot_end":true`, time.Minute)
	cmd.stop(c)
	c.Assert(cmd.lines.text(), jsonLinesContain, `{"key":"machine-0","known":false,"snapshot":true}`)
}

func (s *followSuite) TestServeAnswersEveryEndpointAndWritesNothing(c *gc.C) {
	defer s.startWriter(c)()
	cmd := s.start(c, runServe, "--listen", "127.0.0.1:0")
	listening := cmd.lines.wait(c, "presenced serve: following ", time.Minute)
	c.Assert(strings.Contains(listening, s.uri), gc.Equals, true)
	base := "http://" + strings.Fields(strings.SplitAfter(listening, "http://")[1])[0]

	resp, err := http.Get(base + "/healthz")
	c.Assert(err, gc.IsNil)
	resp.Body.Close()
	c.Assert(resp.StatusCode, gc.Equals, http.StatusOK)

	var st serveStatusDoc
	getJSON(c, base+"/status", &st)
	c.Assert(st.Models, gc.DeepEquals, []modelKeys{{Model: queryModel.Id(), Alive: 1, Total: 1}})
	c.Assert(st.Leases, gc.HasLen, 1)
	c.Assert(st.Leases[0].Held, gc.Equals, true)
	_, err = time.Parse(time.RFC3339, st.Started)
	c.Assert(err, gc.IsNil)
	c.Assert(st.UptimeSeconds >= 0, gc.Equals, true)

	resp, err = http.Get(base + "/watch?key=machine-0")
	c.Assert(err, gc.IsNil)
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	c.Assert(err, gc.IsNil)
	c.Assert(first, gc.Equals, `{"model":"`+queryModel.Id()+`","key":"machine-0","known":true,"alive":true,"snapshot":true}`+"\n")

	resp, err = http.Get(base + "/watch?model=abc")
	c.Assert(err, gc.IsNil)
	resp.Body.Close()
	c.Assert(resp.StatusCode, gc.Equals, http.StatusBadRequest)

	resp, err = http.Get(base + "/metrics")
	c.Assert(err, gc.IsNil)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.Assert(err, gc.IsNil)
	for _, want := range []string{"presence_database_write_commands_total 0", "presence_reader_loads_total{result=\"ok\"}",
		"presence_database_errors_total{kind=\"timeout\",op=\"read\"} 0",
		"presence_leases_held{model=\"" + queryModel.Id() + "\"} 1", "go_goroutines"} {
		c.Check(strings.Contains(string(body), want), gc.Equals, true, gc.Commentf("%s", want))
	}
	cmd.stop(c)
	s.assertNoWrites(c)
}

func (s *followSuite) TestAWatchClientThatReconnectsAfterItsPositionGetsOnlyWhatItMissed(c *gc.C) {
	base := s.DB.Collection(baseCollection)
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock, FlushInterval: 100 * time.Millisecond, Period: time.Second})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	newPinger := func(key string) *pinger.Pinger {
		p, err := pinger.New(pinger.Config{
			Base: base, Model: queryModel, Key: key, Clock: clock.WallClock,
			Recorder: func() pinger.PingRecorder { return b },
		})
		c.Assert(err, gc.IsNil)
		c.Assert(p.Start(), gc.IsNil)
		c.Assert(b.Sync(), gc.IsNil)
		return p
	}
	defer newPinger("machine-0").Kill()

	cmd := s.start(c, runServe, "--listen", "127.0.0.1:0")
	defer cmd.stop(c)
	listening := cmd.lines.wait(c, "presenced serve: following ", time.Minute)
	server := "http://" + strings.Fields(strings.SplitAfter(listening, "http://")[1])[0]
	url := server + "/watch?model=" + queryModel.Id()
	// waitAlive waits until serve's reader has loaded n keys alive: a
	// change it never loaded is no change to resume.
	waitAlive := func(n int) {
		c.Assert(agenttest.Retry(time.Minute, func() error {
			var st serveStatusDoc
			getJSON(c, server+"/status", &st)
			if len(st.Models) != 1 || st.Models[0].Alive != n {
				return fmt.Errorf("serve does not see %d alive: %+v", n, st.Models)
			}
			return nil
		}), gc.IsNil)
	}
	waitAlive(1)

	// The first connection: the snapshot, and the position it ends at.
	lines, closeFirst := watchLines(c, url)
	var snapshot []watchLine
	for line := range lines {
		if line.SnapshotEnd {
			snapshot = append(snapshot, line)
			break
		}
		snapshot = append(snapshot, line)
	}
	closeFirst()
	c.Assert(snapshot, gc.HasLen, 2)
	c.Assert(snapshot[0], gc.DeepEquals, keyLine(queryModel.Id(), "machine-0", true, true))
	after := snapshot[1].Positions[queryModel.Id()]
	c.Assert(after, gc.Not(gc.Equals), "")

	// While nobody watches, machine-1 comes and goes.
	p := newPinger("machine-1")
	waitAlive(2)
	c.Assert(p.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	waitAlive(1)

	// The reconnection gets both transitions, in order, with positions
	// after the one it gave, and nothing of machine-0, which did not
	// change.
	lines, closeSecond := watchLines(c, url+"&after="+after)
	defer closeSecond()
	var got []watchLine
	for line := range lines {
		if line.SnapshotEnd || line.Keepalive {
			continue
		}
		c.Assert(line.Snapshot, gc.Equals, false, gc.Commentf("%+v", line))
		c.Assert(line.Reset, gc.Equals, false, gc.Commentf("%+v", line))
		got = append(got, line)
		if len(got) == 2 {
			break
		}
	}
	c.Assert(got, gc.HasLen, 2)
	c.Assert(got[0].Key, gc.Equals, "machine-1")
	c.Assert(*got[0].Alive, gc.Equals, true)
	c.Assert(got[1].Key, gc.Equals, "machine-1")
	c.Assert(*got[1].Alive, gc.Equals, false)
	from, err := presencereader.ParsePosition(after)
	c.Assert(err, gc.IsNil)
	for _, line := range got {
		pos, err := presencereader.ParsePosition(line.Position)
		c.Assert(err, gc.IsNil)
		c.Assert(pos.View, gc.Equals, from.View)
		c.Assert(pos.Seq > from.Seq, gc.Equals, true, gc.Commentf("%v after %v", pos, from))
	}
	s.assertNoWrites(c)
}

// watchLines reads a /watch stream's lines into a channel until the
// returned function closes the connection.
func watchLines(c *gc.C, url string) (<-chan watchLine, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	c.Assert(err, gc.IsNil)
	resp, err := http.DefaultClient.Do(req)
	c.Assert(err, gc.IsNil)
	c.Assert(resp.StatusCode, gc.Equals, http.StatusOK)
	lines := make(chan watchLine)
	go func() {
		defer close(lines)
		dec := json.NewDecoder(resp.Body)
		for {
			var line watchLine
			if dec.Decode(&line) != nil {
				return
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines, func() {
		cancel()
		resp.Body.Close()
	}
}

func (s *followSuite) TestHealthzFailsWhileTheDatabaseIsAway(c *gc.C) {
	if s.Server.External() {
		c.Skip("cannot pause an external MongoDB")
	}
	cmd := s.start(c, runServe, "--listen", "127.0.0.1:0")
	listening := cmd.lines.wait(c, "presenced serve: following ", time.Minute)
	base := "http://" + strings.Fields(strings.SplitAfter(listening, "http://")[1])[0]
	c.Assert(s.Server.Pause(), gc.IsNil)
	// Reads fail after their deadline (2 s); /healthz says so then.
	var body map[string]any
	agenttest.WaitFor(c, 30*time.Second, "/healthz failing", func() bool {
		resp, err := http.Get(base + "/healthz")
		c.Assert(err, gc.IsNil)
		body = nil
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	c.Assert(body["error"], gc.Matches, "cannot read presence: .*")
	c.Assert(s.Server.Resume(), gc.IsNil)
	cmd.stop(c)
	c.Assert(cmd.stderr.String(), gc.Matches, "(?s).*ERROR .*")
}

// modes are every way presenced can be pointed at a database.
var modes = [][]string{
	{"--listen", "127.0.0.1:0"}, // the demo
	{"watch"},
	{"serve", "--listen", "127.0.0.1:0"},
}

func (*followSuite) TestABadOrUnreachableURIStopsEveryModeWithinTheTimeout(c *gc.C) {
	for _, mode := range modes {
		for _, uri := range []string{"notauri", "mongodb://admin:s3cret@127.0.0.1:1/", "mongodb://admin:s3cret@host:port/"} {
			var stdout, stderr bytes.Buffer
			started := time.Now()
			code := run(append(append([]string(nil), mode...), "--mongo-uri", uri, "--timeout", "1s"), &stdout, &stderr)
			comment := gc.Commentf("%v %s: %s", mode, uri, stderr.String())
			c.Check(code, gc.Equals, exitFailed, comment)
			c.Check(time.Since(started) < 5*time.Second, gc.Equals, true, comment)
			c.Check(strings.Count(stderr.String(), "\n"), gc.Equals, 1, comment)
			c.Check(strings.Contains(stdout.String()+stderr.String(), "s3cret"), gc.Equals, false, comment)
		}
	}
}

func (*followSuite) TestABadFlagIsReportedOnce(c *gc.C) {
	for _, mode := range append(modes, []string{"alive", "machine-0"}) {
		var stdout, stderr bytes.Buffer
		code := run(append(append([]string(nil), mode...), "--no-such-flag"), &stdout, &stderr)
		c.Check(code, gc.Equals, exitBadFlag, gc.Commentf("%v", mode))
		c.Check(strings.Count(stderr.String(), "no-such-flag"), gc.Equals, 1, gc.Commentf("%v: %s", mode, stderr.String()))
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jsonLinesContain checks that a text holds a line equal to a string.
var jsonLinesContain gc.Checker = &linesChecker{}

type linesChecker struct{}

func (*linesChecker) Info() *gc.CheckerInfo {
	return &gc.CheckerInfo{Name: "jsonLinesContain", Params: []string{"text", "line"}}
}

func (*linesChecker) Check(params []any, _ []string) (bool, string) {
	text, _ := params[0].(string)
	line, _ := params[1].(string)
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true, ""
		}
	}
	return false, ""
}

func (s *followSuite) TestADeploymentIsReadyOnceItKnowsTheModels(c *gc.C) {
	defer s.startWriter(c)()
	d, err := newDeployment(deploymentConfig{
		DB: s.DB, Collection: baseCollection, Leases: "leases", Clock: clock.WallClock,
		Period: time.Second, SyncInterval: time.Hour, Refresh: time.Hour,
	})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), d)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.Assert(d.ready(ctx), gc.IsNil)
	c.Assert(d.models(), gc.DeepEquals, []string{queryModel.Id()})
	counts, err := d.counts(queryModel.Id())
	c.Assert(err, gc.IsNil)
	c.Assert(counts, gc.Equals, modelKeys{Model: queryModel.Id(), Alive: 1, Total: 1})
}

func (s *followSuite) TestWatchSaysSoWhenNoModelHasPresence(c *gc.C) {
	cmd := s.start(c, runWatch, "machine-0")
	cmd.lines.wait(c, `{"snapshot_end":true`, time.Minute)
	cmd.stop(c)
	c.Assert(cmd.stderr.String(), gc.Matches, `(?s).*presenced watch: no model has presence in presencetest\S*\.presence yet .*\n`)
	c.Assert(cmd.lines.text(), jsonLinesContain, `{"key":"machine-0","known":false,"snapshot":true}`)
}
