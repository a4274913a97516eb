package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/juju/clock"
	"github.com/juju/names/v5"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// querySuite runs the one-shot queries against a database that the
// library's own workers wrote.
type querySuite struct {
	agenttest.MongoSuite
}

var _ = gc.Suite(&querySuite{})

var queryModel = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")

// query runs presenced with args and the suite's database, and returns
// its exit code, standard output and standard error.
func (s *querySuite) query(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	args = append(args, "--model", queryModel.Id(), "--mongo-uri", s.Server.URI(), "--database", s.DB.Name())
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// pingOne starts a batcher on base and a pinger of queryModel's
// machine-0 through it, flushed once, and returns what stops them.
func (s *querySuite) pingOne(c *gc.C, base *mongo.Collection) func() {
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	p, err := pinger.New(pinger.Config{
		Base: base, Model: queryModel, Key: "machine-0", Clock: clock.WallClock,
		Recorder: func() pinger.PingRecorder { return b },
	})
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	return func() {
		p.Kill()
		_ = p.Wait()
		workertest.CleanKill(agenttest.C(c), b)
	}
}

func (s *querySuite) TestAliveAnswersPerKeyWithAnExitCode(c *gc.C) {
	base := s.DB.Collection(baseCollection)
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	p, err := pinger.New(pinger.Config{
		Base: base, Model: queryModel, Key: "machine-0", Clock: clock.WallClock,
		Recorder: func() pinger.PingRecorder { return b },
	})
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	defer func() { p.Kill(); _ = p.Wait() }()
	c.Assert(b.Sync(), gc.IsNil)

	code, out, errs := s.query("alive", "machine-0")
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(out, gc.Equals, "machine-0 alive\n")

	gone, err := pinger.New(pinger.Config{
		Base: base, Model: queryModel, Key: "machine-1", Clock: clock.WallClock,
		Recorder: func() pinger.PingRecorder { return b },
	})
	c.Assert(err, gc.IsNil)
	c.Assert(gone.Start(), gc.IsNil)
	c.Assert(gone.Disconnect(), gc.IsNil)
	c.Assert(b.Sync(), gc.IsNil)
	code, out, errs = s.query("alive", "machine-0", "machine-1")
	c.Assert(code, gc.Equals, exitNo, gc.Commentf("%s", errs))
	c.Assert(out, gc.Equals, "machine-0 alive\nmachine-1 dead\n")
}

func (s *querySuite) TestLeaderAnswersPerApplicationWithAnExitCode(c *gc.C) {
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: queryModel.Id(), Lease: "mysql"}
	_, err = client.Claim(context.Background(), key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)

	code, out, errs := s.query("leader", "mysql")
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(out, gc.Matches, `mysql mysql/0 fence 1 until 20\d\d-\d\d-\d\dT[0-9:.]+Z\n`)

	code, out, _ = s.query("leader", "mysql", "wordpress")
	c.Assert(code, gc.Equals, exitNo)
	c.Assert(strings.HasSuffix(out, "wordpress none\n"), gc.Equals, true, gc.Commentf("%s", out))
}

func (s *querySuite) TestQueriesWriteNothing(c *gc.C) {
	// The queries' own client cannot be counted from here, so count
	// what reaches the server through a proxy.
	defer startPinger(c, s.DB, "machine-0")()
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	for _, args := range [][]string{{"alive", "machine-0"}, {"leader", "mysql"}, {"status"}, {"explain"}} {
		var stdout, stderr bytes.Buffer
		run(append(args, "--model", queryModel.Id(), "--mongo-uri", uri, "--database", s.DB.Name()), &stdout, &stderr)
		c.Check(stderr.String(), gc.Equals, "")
	}
	counts := proxy.Counts()
	for _, write := range []string{"insert", "update", "delete", "createIndexes", "findAndModify", "drop"} {
		c.Check(counts[write], gc.Equals, 0, gc.Commentf("%s: %v", write, counts))
	}
	c.Check(counts["find"] > 0, gc.Equals, true, gc.Commentf("%v", counts))
}

func (s *querySuite) TestStatusReportsModelsWritersAndLeasesAsJSON(c *gc.C) {
	stop := s.pingOne(c, s.DB.Collection(baseCollection))
	defer stop()
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: queryModel.Id(), Lease: "mysql"}
	_, err = client.Claim(context.Background(), key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)

	var stdout, stderr bytes.Buffer
	code := run([]string{"status", "--json", "--mongo-uri", s.Server.URI(), "--database", s.DB.Name()}, &stdout, &stderr)
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", stderr.String()))
	var st deploymentStatus
	c.Assert(json.Unmarshal(stdout.Bytes(), &st), gc.IsNil, gc.Commentf("%s", stdout.String()))
	c.Assert(st.Models, gc.DeepEquals, []modelKeys{{Model: queryModel.Id(), Alive: 1, Dead: 0, Total: 1}})
	c.Assert(st.Writers, gc.HasLen, 1)
	c.Assert(st.Leases, gc.HasLen, 1)
	c.Assert(st.Leases[0].Holder, gc.Equals, "mysql/0")
	c.Assert(st.Leases[0].Fence, gc.Equals, int64(1))
	_, err = time.Parse(time.RFC3339Nano, st.Leases[0].Expiry)
	c.Assert(err, gc.IsNil)
	c.Assert(st.Documents["leases"], gc.Equals, 1)

	// The table for people says the same.
	stdout.Reset()
	code = run([]string{"status", "--mongo-uri", s.Server.URI(), "--database", s.DB.Name()}, &stdout, &stderr)
	c.Assert(code, gc.Equals, exitYes)
	c.Assert(stdout.String(), gc.Matches, `(?s)PERIOD +10s .*\nMODEL +ALIVE +DEAD +TOTAL\n`+queryModel.Id()+` +1 +0 +1\n.*mysql +mysql/0 +1 .*`)
}

func (s *querySuite) TestStatusSaysWhetherReadersTailTheNoticesOrPoll(c *gc.C) {
	base := s.DB.Collection(baseCollection)
	stop := s.pingOne(c, base)
	defer stop()
	status := func() string {
		var stdout, stderr bytes.Buffer
		code := run([]string{"status", "--mongo-uri", s.Server.URI(), "--database", s.DB.Name()}, &stdout, &stderr)
		c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", stderr.String()))
		return stdout.String()
	}
	notices := schema.Notices(base)
	c.Assert(status(), gc.Matches, `(?s).*\nPUSH +notices: readers tail `+notices.Name()+`\n.*`)

	// A notices collection that is not capped cannot be tailed.
	c.Assert(notices.Drop(context.Background()), gc.IsNil)
	c.Assert(s.DB.CreateCollection(context.Background(), notices.Name()), gc.IsNil)
	c.Assert(status(), gc.Matches, `(?s).*\nPUSH +polling: `+notices.Name()+` is not capped, so readers cannot tail it\n.*`)
}

func (s *querySuite) TestABadOrUnreachableURIFailsFastWithoutItsPassword(c *gc.C) {
	for _, uri := range []string{"notauri", "mongodb://admin:s3cret@127.0.0.1:1/"} {
		var stdout, stderr bytes.Buffer
		started := time.Now()
		code := run([]string{"leader", "mysql", "--model", queryModel.Id(), "--mongo-uri", uri, "--timeout", "1s"}, &stdout, &stderr)
		c.Check(code, gc.Equals, exitError, gc.Commentf("%s", uri))
		c.Check(time.Since(started) < 5*time.Second, gc.Equals, true, gc.Commentf("%s took %v", uri, time.Since(started)))
		c.Check(stderr.String(), gc.Not(gc.Equals), "")
		c.Check(strings.Contains(stderr.String(), "s3cret"), gc.Equals, false, gc.Commentf("%s", stderr.String()))
	}
}

func (s *querySuite) TestBadQueryFlagsExitWithTwo(c *gc.C) {
	for _, args := range [][]string{
		{"alive", "machine-0", "--mongo-uri", "mongodb://127.0.0.1:1"},                            // no model
		{"alive", "--model", queryModel.Id(), "--mongo-uri", "mongodb://127.0.0.1:1"},             // no key
		{"leader", "mysql", "--model", "abc", "--mongo-uri", "mongodb://127.0.0.1:1"},             // bad model
		{"leader", "mysql", "--model", queryModel.Id()},                                           // no URI
		{"alive", "machine-0", "--model", queryModel.Id(), "--mongo-uri", "x", "--period", "-1s"}, // bad period
	} {
		var stdout, stderr bytes.Buffer
		c.Check(run(args, &stdout, &stderr), gc.Equals, exitError, gc.Commentf("%v", args))
		c.Check(stderr.String(), gc.Not(gc.Equals), "", gc.Commentf("%v", args))
	}
}

// explained is what `presenced explain --json` prints.
type explained struct {
	Beings           []explainedBeings `json:"beings"`
	Pings            []explainedPing   `json:"pings"`
	Skipped          int               `json:"skipped"`
	SkippedDocuments []skippedDoc      `json:"skipped_documents"`
}

func (s *querySuite) TestExplainNamesTheKeysBehindEveryBit(c *gc.C) {
	base := s.DB.Collection(baseCollection)
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	defer workertest.CleanKill(agenttest.C(c), b)
	for _, key := range []string{"machine-0", "machine-1"} {
		p, err := pinger.New(pinger.Config{
			Base: base, Model: queryModel, Key: key, Clock: clock.WallClock,
			Recorder: func() pinger.PingRecorder { return b },
		})
		c.Assert(err, gc.IsNil)
		c.Assert(p.Start(), gc.IsNil)
		defer func() { p.Kill(); _ = p.Wait() }()
		if key == "machine-1" {
			c.Assert(p.Disconnect(), gc.IsNil)
		}
	}
	c.Assert(b.Sync(), gc.IsNil)

	code, out, errs := s.query("explain", "--json")
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	var ex explained
	c.Assert(json.Unmarshal([]byte(out), &ex), gc.IsNil, gc.Commentf("%s", out))
	c.Assert(ex.Beings, gc.Not(gc.HasLen), 0)
	c.Assert(ex.Pings, gc.Not(gc.HasLen), 0)
	alive, dead := map[string]bool{}, map[string]bool{}
	for _, p := range ex.Pings {
		c.Check(p.Invalid, gc.Equals, "")
		_, err := time.Parse(time.RFC3339Nano, p.Written)
		c.Check(err, gc.IsNil)
		for _, key := range p.Alive[queryModel.Id()] {
			alive[key] = true
		}
		for _, key := range p.Dead[queryModel.Id()] {
			dead[key] = true
		}
	}
	c.Assert(alive["machine-0"], gc.Equals, true, gc.Commentf("%s", out))
	c.Assert(dead["machine-1"], gc.Equals, true, gc.Commentf("%s", out))
	c.Assert(dead["machine-0"], gc.Equals, false, gc.Commentf("%s", out))

	code, out, _ = s.query("explain")
	c.Assert(code, gc.Equals, exitYes)
	c.Assert(out, gc.Matches, `(?s)presence\.beings .*keys in model `+queryModel.Id()+` \(2\): machine-0 machine-1\n.*`+
		`presence\.pings .*alive in model `+queryModel.Id()+` \(\d\): machine-0.*`)
}

func (*querySuite) TestURIsArePrintedWithoutTheirPassword(c *gc.C) {
	for uri, want := range map[string]string{
		"mongodb://admin:s3cret@127.0.0.1:1/":                        "mongodb://admin:xxxxx@127.0.0.1:1/",
		"mongodb+srv://u:p%40ss@cluster.example/db?w=majority":       "mongodb+srv://u:xxxxx@cluster.example/db?w=majority",
		"mongodb://u:pw@a:1,b:2/?replicaSet=rs0":                     "mongodb://u:xxxxx@a:1,b:2/?replicaSet=rs0",
		"mongodb://u:pw@host:notaport/":                              "mongodb://u:xxxxx@host:notaport/",
		"mongodb://127.0.0.1:27017/":                                 "mongodb://127.0.0.1:27017/",
		"mongodb://user@127.0.0.1:27017/?authMechanism=MONGODB-X509": "mongodb://user@127.0.0.1:27017/?authMechanism=MONGODB-X509",
	} {
		c.Check(redactURI(uri), gc.Equals, want)
		c.Check(redact("cannot use "+uri+": refused", uri), gc.Equals, "cannot use "+want+": refused")
	}
	c.Check(redact("auth failed for p@ss", "mongodb://u:p%40ss@h/"), gc.Equals, "auth failed for xxxxx")
}

func (s *querySuite) TestStatusShowsAFrozenLeaseAndLeaseResetSupersedesItOnlyWhenConfirmed(c *gc.C) {
	// status answers only for a deployment with presence documents.
	defer startPinger(c, s.DB, "machine-0")()
	client, err := lease.NewClient(lease.ClientConfig{Collection: s.DB.Collection("leases"), Clock: clock.WallClock})
	c.Assert(err, gc.IsNil)
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: queryModel.Id(), Lease: "mysql"}
	held, err := client.Claim(context.Background(), key, lease.Request{Holder: "mysql/0", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	// Another client's term whose _id names no number.
	_, err = s.DB.Collection("leases").InsertOne(context.Background(),
		bson.D{{Key: "_id", Value: fmt.Sprintf("%s#%s#mysql#one", key.Namespace, key.Model)}})
	c.Assert(err, gc.IsNil)

	frozen := func() string {
		code, out, errs := s.query("status", "--json")
		c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
		var st deploymentStatus
		c.Assert(json.Unmarshal([]byte(out), &st), gc.IsNil, gc.Commentf("%s", out))
		c.Assert(st.Leases, gc.HasLen, 1)
		return st.Leases[0].Invalid
	}
	c.Assert(frozen(), gc.Matches, `term _id ".*#mysql#one" names no term number`)
	_, out, _ := s.query("status")
	c.Assert(out, gc.Matches, `(?s).*mysql\s+mysql/0 FROZEN: term _id .*`)

	code, out, errs := s.query("lease", "reset", "mysql")
	c.Assert(code, gc.Equals, exitNo, gc.Commentf("%s", errs))
	c.Assert(out, gc.Matches, `(?s)mysql is frozen: .*--yes.*`)
	c.Assert(frozen(), gc.Not(gc.Equals), "")

	code, out, errs = s.query("lease", "reset", "mysql", "--yes")
	c.Assert(code, gc.Equals, exitYes, gc.Commentf("%s", errs))
	c.Assert(out, gc.Matches, `mysql reset: term 2, fence 1, free \(was frozen: .*\)\n`)
	c.Assert(frozen(), gc.Equals, "")
	got, err := client.Claim(context.Background(), key, lease.Request{Holder: "mysql/1", Duration: time.Minute})
	c.Assert(err, gc.IsNil)
	c.Assert(got.Fence > held.Fence, gc.Equals, true)

	code, out, _ = s.query("lease", "reset", "mysql", "--yes")
	c.Assert(code, gc.Equals, exitNo)
	c.Assert(out, gc.Equals, "mysql is not frozen: nothing to do\n")
}
