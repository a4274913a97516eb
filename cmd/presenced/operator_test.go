package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// operatorSuite checks issue 27's points against a database that the
// library's own workers write, beside documents a foreign client wrote:
// every operator command answers, and says so when it cannot.
type operatorSuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&operatorSuite{})

// run runs presenced with args, pointed at the suite's database, and
// returns its exit code, standard output and standard error.
func (s *operatorSuite) run(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	args = append(args, "--mongo-uri", s.Server.URI())
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// start runs a long-running subcommand on the suite's database, reading
// every 100 ms, until stopped.
func (s *operatorSuite) start(run func(context.Context, []string, io.Writer, io.Writer) int, args ...string) *command {
	return startCommand(run, append(args, "--mongo-uri", s.Server.URI(), "--database", s.DB.Name(), "--sync", "100ms")...)
}

// insert writes raw documents into collection as a foreign client.
func (s *operatorSuite) insert(c *gc.C, collection string, docs ...bson.D) {
	for _, doc := range docs {
		_, err := s.DB.Collection(collection).InsertOne(context.Background(), doc)
		c.Assert(err, gc.IsNil)
	}
}

// lyingEntries is a beings document's entries that claim a million
// models in a few bytes.
func lyingEntries() bson.Binary {
	data := binary.AppendUvarint([]byte{1}, 1<<20)
	return bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: data}
}

// Point 1: one bad beings document blinded every operator command (on
// main: status and explain exit 2, serve's /status 503, watch calls a
// live key known:false).
func (s *operatorSuite) TestABadBeingsDocumentBlindsNoCommand(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	s.insert(c, "presence.beings",
		bson.D{{Key: "_id", Value: "intwriter:0"}, {Key: "writer", Value: 42}, {Key: "chunk", Value: 0}},
		bson.D{{Key: "_id", Value: "liar:0"}, {Key: "writer", Value: "liar"}, {Key: "chunk", Value: 0}, {Key: "entries", Value: lyingEntries()}},
	)
	db := []string{"--database", s.DB.Name()}

	code, out, errs := s.run(append([]string{"status", "--json"}, db...)...)
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	var st deploymentStatus
	c.Assert(json.Unmarshal([]byte(out), &st), gc.IsNil)
	c.Assert(st.Models, gc.DeepEquals, []modelKeys{{Model: queryModel.Id(), Alive: 1, Total: 1}})
	c.Assert(st.Skipped, gc.Equals, 2)
	c.Assert(st.SkippedDocuments, gc.HasLen, 2)
	ids := []string{st.SkippedDocuments[0].ID, st.SkippedDocuments[1].ID}
	c.Assert(ids, gc.DeepEquals, []string{"intwriter:0", "liar:0"})
	c.Assert(st.SkippedDocuments[0].Kind, gc.Equals, "presence.beings")
	c.Assert(st.SkippedDocuments[0].Reason, gc.Not(gc.Equals), "")

	code, out, errs = s.run(append([]string{"explain"}, db...)...)
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(out, gc.Matches, `(?s).*alive in model `+queryModel.Id()+` \(1\): machine-0\n.*`)
	c.Assert(strings.Count(out, "presence.beings intwriter:0: SKIPPED"), gc.Equals, 1)
	c.Assert(strings.Count(out, "presence.beings liar:0: SKIPPED"), gc.Equals, 1)

	code, out, errs = s.run(append([]string{"alive", "machine-0", "--model", queryModel.Id()}, db...)...)
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(out, gc.Equals, "machine-0 alive\n")
	c.Assert(strings.Count(errs, "skipped presence.beings"), gc.Equals, 2, gc.Commentf("%s", errs))

	// serve's /status answers, and watch knows the key.
	serve := s.start(runServe, "--listen", "127.0.0.1:0")
	listening := serve.lines.wait(c, "presenced serve: following ", time.Minute)
	base := "http://" + strings.Fields(strings.SplitAfter(listening, "http://")[1])[0]
	var sst serveStatusDoc
	getJSON(c, base+"/status", &sst)
	c.Assert(sst.Models, gc.DeepEquals, []modelKeys{{Model: queryModel.Id(), Alive: 1, Total: 1}})
	c.Assert(sst.Skipped, gc.Equals, 2)
	serve.stop(c)

	watch := s.start(runWatch, "machine-0")
	watch.lines.wait(c, `{"snapshot_end":true`, time.Minute)
	watch.stop(c)
	c.Assert(watch.lines.text(), jsonLinesContain, `{"model":"`+queryModel.Id()+`","key":"machine-0","known":true,"alive":true,"snapshot":true}`)
}

// Point 2: explain expanded a 15 MB bitmap (9.8 GB RSS in 48 s on main)
// and exited 2 on a ping document whose slot is a string.
func (s *operatorSuite) TestExplainBoundsEachDocumentAndSkipsWhatDoesNotDecode(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	slot := schema.Slot(time.Now(), schema.DefaultPeriod)
	s.insert(c, "presence.pings",
		bson.D{{Key: "_id", Value: fmt.Sprintf("%d:huge", slot)}, {Key: "slot", Value: slot}, {Key: "writer", Value: "huge"},
			{Key: "period", Value: int64(schema.DefaultPeriod)}, {Key: "at", Value: time.Now().UnixNano()},
			{Key: "alive", Value: bson.Binary{Data: bytes.Repeat([]byte{0xff}, 15<<20)}}},
		bson.D{{Key: "_id", Value: "stringslot"}, {Key: "slot", Value: "x"}, {Key: "writer", Value: "w"},
			{Key: "period", Value: int64(schema.DefaultPeriod)}},
	)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	started := time.Now()
	code, out, errs := s.run("explain", "--json", "--database", s.DB.Name())
	took := time.Since(started)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	c.Logf("explain took %v and allocated %d MB", took, allocated>>20)
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(allocated < 256<<20, gc.Equals, true, gc.Commentf("%d MB", allocated>>20))
	var ex explained
	c.Assert(json.Unmarshal([]byte(out), &ex), gc.IsNil, gc.Commentf("%.2000s", out))
	c.Assert(ex.Skipped, gc.Equals, 2)
	reasons := map[string]string{}
	for _, doc := range ex.SkippedDocuments {
		reasons[doc.ID] = doc.Reason
	}
	c.Assert(reasons[fmt.Sprintf("%d:huge", slot)], gc.Matches, "alive bitmap of 15728640 bytes .*")
	c.Assert(reasons["stringslot"], gc.Not(gc.Equals), "")
	alive := false
	for _, p := range ex.Pings {
		alive = alive || len(p.Alive[queryModel.Id()]) == 1
	}
	c.Assert(alive, gc.Equals, true, gc.Commentf("%.2000s", out))
}

// Point 3: answers that misled.
func (s *operatorSuite) TestAliveChecksThePeriodItReadsFromTheDocuments(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	args := []string{"alive", "machine-0", "--model", queryModel.Id(), "--database", s.DB.Name()}
	code, out, errs := s.run(append(args, "--period", "2s")...)
	c.Assert(code, gc.Equals, exitError, gc.Commentf("%s", out))
	c.Assert(out, gc.Equals, "")
	c.Assert(errs, gc.Matches, `presenced alive: no presence documents at period 2s in `+s.DB.Name()+`\.presence: found 1 at 10s\n`)
	// Without --period, or with the right one, it answers.
	for _, extra := range [][]string{nil, {"--period", "10s"}} {
		code, out, errs = s.run(append(args, extra...)...)
		c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
		c.Assert(out, gc.Equals, "machine-0 alive\n")
	}
}

func (s *operatorSuite) TestADatabaseWithoutPresenceIsNoAnswer(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	for _, command := range []string{"status", "explain"} {
		code, out, errs := s.run(command, "--database", "no_such_db")
		c.Check(code, gc.Equals, exitError, gc.Commentf("%s", out))
		c.Check(errs, gc.Matches, `presenced `+command+`: no presence documents in no_such_db\.presence; databases with presence documents: .*`+s.DB.Name()+`.*\n`)
	}
}

func (s *operatorSuite) TestAliveCallsAKeyNoModelKnowsUnknown(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	code, out, errs := s.run("alive", "machine-0", "ghost", "--model", queryModel.Id(), "--database", s.DB.Name())
	c.Assert(code, gc.Equals, exitUnknown, gc.Commentf("%s", errs))
	c.Assert(out, gc.Equals, "machine-0 alive\nghost unknown\n")
}

func (s *operatorSuite) TestBadNamesAreNotValid(c *gc.C) {
	for _, args := range [][]string{
		{"leader", strings.Repeat("a", 300)},
		{"leader", "Not_An_App"},
		{"alive", strings.Repeat("k", schema.MaxKeyLength+1)},
	} {
		code, out, errs := s.run(append(args, "--model", queryModel.Id())...)
		c.Check(code, gc.Equals, exitError, gc.Commentf("%v", args[0]))
		c.Check(out, gc.Equals, "")
		c.Check(errs, gc.Matches, `presenced \w+: .* not valid \(see presenced \w+ --help\)\n`)
	}
}

func (s *operatorSuite) TestStatusPrintsAlignedTables(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0")()
	code, out, errs := s.run("status", "--database", s.DB.Name())
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(strings.Contains(out, "map["), gc.Equals, false, gc.Commentf("%s", out))
	c.Assert(out, gc.Matches, `(?s).*\nCOLLECTION +DOCUMENTS\nleases +0\npresence\.beings +\d+\npresence\.pings +\d+\n.*`)
	// Each table's columns line up: a cell starts where its header does.
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "MODEL ") && strings.Contains(line, "ALIVE") {
			c.Assert(strings.Index(lines[i+1], " 1 "), gc.Equals, strings.Index(line, "ALIVE")-1, gc.Commentf("%s", out))
		}
	}
}

func (s *operatorSuite) TestEveryMissingRequiredFlagIsNamed(c *gc.C) {
	for args, want := range map[string]string{
		"alive machine-0":                       "presenced alive: --model and --mongo-uri are required (see presenced alive --help)\n",
		"alive machine-0 --mongo-uri mongodb:/": "presenced alive: --model is required (see presenced alive --help)\n",
		"status":                                "presenced status: --mongo-uri is required (see presenced status --help)\n",
	} {
		var stdout, stderr bytes.Buffer
		c.Check(run(strings.Fields(args), &stdout, &stderr), gc.Equals, exitError)
		c.Check(stderr.String(), gc.Equals, want)
	}
}

func (s *operatorSuite) TestARestartedReaderDoesNotBlameItsKilledPredecessorsClock(c *gc.C) {
	// A killed predecessor's last ping document, written 1.5 s ago,
	// and a live controller whose clock is 1.5 s ahead: only the
	// second is a clock to warn of.
	period := 2 * time.Second
	now := time.Now()
	predecessor := "0123456789abcdef01234567"
	slot := schema.Slot(now, period)
	s.insert(c, "presence.pings", bson.D{{Key: "_id", Value: schema.PingID(slot, predecessor)}, {Key: "slot", Value: slot},
		{Key: "writer", Value: predecessor}, {Key: "period", Value: int64(period)}, {Key: "at", Value: now.Add(-1500 * time.Millisecond).UnixNano()},
		{Key: "alive", Value: bson.Binary{Data: []byte{1}}}})
	base := s.DB.Collection(baseCollection)
	skewed := skewedClock{Clock: clock.WallClock, offset: 1500 * time.Millisecond}
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: skewed, FlushInterval: 100 * time.Millisecond, Period: period})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	p, err := pinger.New(pinger.Config{Base: base, Model: queryModel, Key: "machine-0", Clock: skewed, Period: period,
		Recorder: func() pinger.PingRecorder { return b }})
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	defer func() { p.Kill(); _ = p.Wait() }()
	c.Assert(b.Sync(), gc.IsNil)

	serve := s.start(runServe, "--listen", "127.0.0.1:0")
	serve.lines.wait(c, "presenced serve: following ", time.Minute)
	agenttest.WaitFor(c, agenttest.LongWait, "the live controller's clock warned of", func() bool {
		return strings.Contains(serve.stderr.String(), "'s clock is at least")
	})
	serve.stop(c)
	errs := serve.stderr.String()
	c.Assert(errs, gc.Matches, `(?s).*writer [0-9a-f]{24}'s clock is at least 1\.\d+s ahead.*`)
	c.Assert(strings.Contains(errs, predecessor), gc.Equals, false, gc.Commentf("%s", errs))
}

// skewedClock is the wall clock off by offset: another controller's.
type skewedClock struct {
	clock.Clock
	offset time.Duration
}

// Now is part of the clock.Clock interface.
func (s skewedClock) Now() time.Time {
	return s.Clock.Now().Add(s.offset)
}

// Point 4: malformed query strings widened /watch to every key (200).
func (s *operatorSuite) TestEveryEndpointRejectsAQueryThatDoesNotParse(c *gc.C) {
	defer startPinger(c, s.DB, "machine-0", "machine-1")()
	serve := s.start(runServe, "--listen", "127.0.0.1:0")
	defer serve.stop(c)
	listening := serve.lines.wait(c, "presenced serve: following ", time.Minute)
	addr := strings.TrimPrefix(strings.Fields(strings.SplitAfter(listening, "http://")[1])[0], "")
	for _, target := range []string{
		"/watch?key=machine-0;key=machine-1", "/watch?%zz=1", "/watch?key=%zz",
		"/status?x=1", "/status?%zz", "/healthz?a;b", "/metrics?x=1",
	} {
		status, body := rawGet(c, addr, target)
		c.Check(status, gc.Equals, http.StatusBadRequest, gc.Commentf("%s: %s", target, body))
		c.Check(body, gc.Matches, `\{"error":".+"\}\n`, gc.Commentf("%s", target))
	}
	// The same requests well formed are answered.
	for _, target := range []string{"/status", "/healthz", "/metrics"} {
		status, _ := rawGet(c, addr, target)
		c.Check(status, gc.Equals, http.StatusOK, gc.Commentf("%s", target))
	}
}

// rawGet sends a GET of target, as written (no client's escaping), and
// returns the status and the body (read until the connection closes or
// for a second).
func rawGet(c *gc.C, addr, target string) (int, string) {
	conn, err := net.Dial("tcp", addr)
	c.Assert(err, gc.IsNil)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", target)
	c.Assert(err, gc.IsNil)
	c.Assert(conn.SetReadDeadline(time.Now().Add(5*time.Second)), gc.IsNil)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	c.Assert(err, gc.IsNil)
	defer resp.Body.Close()
	c.Assert(conn.SetReadDeadline(time.Now().Add(time.Second)), gc.IsNil)
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	return resp.StatusCode, body.String()
}
