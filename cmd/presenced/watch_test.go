package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/worker/presencereader"
)

// watchSuite tests the /watch stream over a fake source, on a fake clock.
type watchSuite struct{}

var _ = gc.Suite(&watchSuite{})

const (
	modelA = "00000000-0000-4000-8000-00000000000a"
	modelB = "00000000-0000-4000-8000-00000000000b"
)

// fakeSource is a source of fixed models whose subscriptions a test
// feeds. Model X's change log is named "vX" after its UUID's last
// character; its first push is a snapshot at position vX.0, later pushes
// are changes numbered from there.
type fakeSource struct {
	mu      sync.Mutex
	subs    map[string]*fakeSubscription
	list    []string
	configs map[string]presencereader.SubscribeConfig
}

func newFakeSource(models ...string) *fakeSource {
	s := &fakeSource{subs: make(map[string]*fakeSubscription), list: models, configs: make(map[string]presencereader.SubscribeConfig)}
	for _, m := range models {
		s.subs[m] = &fakeSubscription{batches: make(chan presencereader.Batch, 10), closed: make(chan struct{})}
	}
	return s
}

// logOf returns the name of model's fake change log.
func logOf(model string) string {
	return "v" + model[len(model)-1:]
}

func (s *fakeSource) models() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.list...)
}

func (s *fakeSource) model(id string) (string, error) {
	return validModel(id)
}

func (s *fakeSource) subscribe(model string, config presencereader.SubscribeConfig) (subscription, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configs[model] = config
	return s.subs[model], nil
}

func (s *fakeSource) position(model string) presencereader.Position {
	return presencereader.Position{View: logOf(model), Seq: 100}
}

// config returns what model was last subscribed with.
func (s *fakeSource) config(model string) presencereader.SubscribeConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configs[model]
}

// push hands model's subscription its next answer: a snapshot the first
// time, changes after that.
func (s *fakeSource) push(model string, changes ...presencereader.Change) {
	s.mu.Lock()
	sub := s.subs[model]
	s.mu.Unlock()
	batch := presencereader.Batch{Snapshot: sub.seq == 0 && !sub.resumed}
	for _, change := range changes {
		e := presencereader.Event{Change: change}
		if !batch.Snapshot {
			sub.seq++
			e.Position = presencereader.Position{View: logOf(model), Seq: sub.seq}
		}
		batch.Events = append(batch.Events, e)
	}
	batch.End = presencereader.Position{View: logOf(model), Seq: sub.seq}
	sub.resumed = true
	sub.batches <- batch
}

// pushBatch hands model's subscription batch as it is.
func (s *fakeSource) pushBatch(model string, batch presencereader.Batch) {
	s.mu.Lock()
	sub := s.subs[model]
	s.mu.Unlock()
	sub.resumed = true
	sub.batches <- batch
}

type fakeSubscription struct {
	batches chan presencereader.Batch
	seq     uint64
	resumed bool // the first batch is pushed
	once    sync.Once
	closed  chan struct{}
}

func (s *fakeSubscription) NextBatch(ctx context.Context) (presencereader.Batch, error) {
	select {
	case b := <-s.batches:
		return b, nil
	case <-s.closed:
		return presencereader.Batch{}, presencereader.ErrSubscriptionClosed
	case <-ctx.Done():
		return presencereader.Batch{}, ctx.Err()
	}
}

func (s *fakeSubscription) Close() { s.once.Do(func() { close(s.closed) }) }

// lineStream runs streamWatch and hands its lines over a channel.
type lineStream struct {
	lines  chan watchLine
	cancel context.CancelFunc
	done   chan error
}

func startStream(src source, req watchRequest, clk *testclock.Clock) *lineStream {
	ctx, cancel := context.WithCancel(context.Background())
	ls := &lineStream{lines: make(chan watchLine, 100), cancel: cancel, done: make(chan error, 1)}
	go func() {
		ls.done <- streamWatch(ctx, src, req, sendFunc(func(l watchLine) bool {
			ls.lines <- l
			return true
		}), clk, time.Second)
	}()
	return ls
}

func (ls *lineStream) next(c *gc.C) watchLine {
	select {
	case l := <-ls.lines:
		return l
	case <-time.After(10 * time.Second):
		c.Fatalf("no line within 10s")
	}
	panic("unreachable")
}

func (ls *lineStream) stop(c *gc.C) {
	ls.cancel()
	c.Assert(<-ls.done, gc.IsNil)
}

func keyLine(model, key string, alive, snapshot bool) watchLine {
	return watchLine{Model: model, Key: key, Known: ptr(true), Alive: ptr(alive), Snapshot: snapshot}
}

func changeLine(model, key string, alive bool, seq int) watchLine {
	line := keyLine(model, key, alive, false)
	line.Position = fmt.Sprintf("%s.%d", logOf(model), seq)
	return line
}

func (*watchSuite) TestKeysAreSearchedInEveryModelAndUnknownKeysAreNotDead(c *gc.C) {
	src := newFakeSource(modelA, modelB)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{keys: []string{"machine-2", "ghost"}}, clk)
	defer ls.stop(c)
	src.push(modelA, presencereader.Change{Key: "machine-1", Alive: true})
	src.push(modelB, presencereader.Change{Key: "machine-2", Alive: true}, presencereader.Change{Key: "machine-3"})

	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelB, "machine-2", true, true))
	c.Assert(ls.next(c), gc.DeepEquals, watchLine{Key: "ghost", Known: ptr(false), Snapshot: true})
	end := ls.next(c)
	c.Assert(end.SnapshotEnd, gc.Equals, true)
	c.Assert(end.Time, gc.Equals, "1970-01-01T00:00:00Z")
}

func (*watchSuite) TestChangesAfterTheSnapshotCarryTheirModel(c *gc.C) {
	src := newFakeSource(modelA, modelB)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{}, clk)
	defer ls.stop(c)
	src.push(modelA, presencereader.Change{Key: "machine-1", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelA, "machine-1", true, true))
	src.push(modelB)
	c.Assert(ls.next(c).SnapshotEnd, gc.Equals, true)

	src.push(modelB, presencereader.Change{Key: "machine-1", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, changeLine(modelB, "machine-1", true, 1))
	src.push(modelA, presencereader.Change{Key: "machine-1", Alive: false})
	c.Assert(ls.next(c), gc.DeepEquals, changeLine(modelA, "machine-1", false, 1))
}

func (*watchSuite) TestModelNarrowsTheSearch(c *gc.C) {
	src := newFakeSource(modelA, modelB)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{model: modelA, keys: []string{"machine-2"}}, clk)
	defer ls.stop(c)
	src.push(modelB, presencereader.Change{Key: "machine-2", Alive: true})
	src.push(modelA)
	c.Assert(ls.next(c), gc.DeepEquals, watchLine{Key: "machine-2", Known: ptr(false), Snapshot: true})
	c.Assert(ls.next(c).SnapshotEnd, gc.Equals, true)
}

func (*watchSuite) TestKeepalivesFlowWhileNothingChanges(c *gc.C) {
	src := newFakeSource(modelA)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{}, clk)
	defer ls.stop(c)
	src.push(modelA)
	c.Assert(ls.next(c).SnapshotEnd, gc.Equals, true)
	for i := 1; i <= 3; i++ {
		c.Assert(clk.WaitAdvance(time.Second, 10*time.Second, 1), gc.IsNil)
		c.Assert(ls.next(c), gc.DeepEquals, watchLine{Keepalive: true, Time: time.Unix(int64(i), 0).UTC().Format(time.RFC3339)})
	}
}

func (*watchSuite) TestKeepalivesFlowBeforeTheSnapshotToo(c *gc.C) {
	src := newFakeSource(modelA)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{}, clk)
	defer ls.stop(c)
	c.Assert(clk.WaitAdvance(time.Second, 10*time.Second, 1), gc.IsNil)
	c.Assert(ls.next(c).Keepalive, gc.Equals, true)
}

func (*watchSuite) TestStreamEndsWithTheErrorOfASubscriptionThatCannotBeReplaced(c *gc.C) {
	src := newFakeSource(modelA)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{}, clk)
	src.subs[modelA].Close()
	select {
	case err := <-ls.done:
		c.Assert(err, gc.ErrorMatches, "cannot follow model "+modelA+": subscription closed")
	case <-time.After(10 * time.Second):
		c.Fatalf("stream did not end")
	}
	ls.cancel()
}

func (*watchSuite) TestBadParametersGet400WithAJSONError(c *gc.C) {
	srv := httptest.NewServer(watchHandler(newFakeSource(modelA), testclock.NewClock(time.Unix(0, 0)), testLimits(time.Second), newStreamGate(10)))
	defer srv.Close()
	for _, query := range []string{
		"key=",
		"key=" + strings.Repeat("k", 10*1024),
		"key=%ff",
		"model=abc",
		"model=" + modelA + "&model=" + modelB,
		"keys=machine-0",
		"key=k" + strings.Repeat("&key=k", maxWatchKeys),
	} {
		resp, err := http.Get(srv.URL + "/watch?" + query)
		c.Assert(err, gc.IsNil)
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		comment := gc.Commentf("%.60s", query)
		c.Check(resp.StatusCode, gc.Equals, http.StatusBadRequest, comment)
		c.Check(resp.Header.Get("Content-Type"), gc.Equals, "application/json", comment)
		c.Check(err, gc.IsNil, comment)
		c.Check(body["error"], gc.Not(gc.Equals), "", comment)
	}
}

func (*watchSuite) TestAModelTheDemoDoesNotHostIsNotFound(c *gc.C) {
	_, err := parseWatchQuery(demoSource{reg: newRegistry(nil)}, url.Values{"model": {modelA}})
	c.Assert(errors.Is(err, errors.NotFound), gc.Equals, true, gc.Commentf("%v", err))
	_, err = parseWatchQuery(demoSource{reg: newRegistry(nil)}, url.Values{"model": {"abc"}})
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v", err))
}

func (*watchSuite) TestHeadersComeBeforeTheSnapshot(c *gc.C) {
	// The source never answers: the client still gets its status line
	// and headers at once.
	srv := httptest.NewServer(watchHandler(newFakeSource(modelA), testclock.NewClock(time.Unix(0, 0)), testLimits(time.Hour), newStreamGate(10)))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/watch?key=machine-0", nil)
	c.Assert(err, gc.IsNil)
	resp, err := http.DefaultClient.Do(req)
	c.Assert(err, gc.IsNil)
	defer resp.Body.Close()
	c.Assert(resp.StatusCode, gc.Equals, http.StatusOK)
	c.Assert(resp.Header.Get("Content-Type"), gc.Equals, "application/x-ndjson")
}

func (*watchSuite) TestTheHandlerStreamsOneJSONObjectPerLine(c *gc.C) {
	src := newFakeSource(modelA)
	srv := httptest.NewServer(watchHandler(src, testclock.NewClock(time.Unix(0, 0)), testLimits(time.Hour), newStreamGate(10)))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/watch?model=" + modelA)
	c.Assert(err, gc.IsNil)
	defer resp.Body.Close()
	src.push(modelA, presencereader.Change{Key: "machine-0", Alive: true})
	scanner := bufio.NewScanner(resp.Body)
	var lines []string
	for len(lines) < 2 && scanner.Scan() {
		lines = append(lines, scanner.Text())
	}
	c.Assert(lines, gc.HasLen, 2)
	c.Assert(lines[0], gc.Equals, `{"model":"`+modelA+`","key":"machine-0","known":true,"alive":true,"snapshot":true}`)
	c.Assert(lines[1], gc.Equals, `{"snapshot_end":true,"positions":{"`+modelA+`":"va.0"},"time":"1970-01-01T00:00:00Z"}`)
}

func (*watchSuite) TestAModelResumesAfterItsPositionWithEveryChangeItMissed(c *gc.C) {
	src := newFakeSource(modelA, modelB)
	clk := testclock.NewClock(time.Unix(0, 0))
	after := presencereader.Position{View: logOf(modelA), Seq: 7}
	// machine-3 did not change in the gap: the client knows it from
	// before, so it is not reported unknown.
	ls := startStream(src, watchRequest{keys: []string{"machine-1", "machine-2", "machine-3"}, after: []presencereader.Position{after}}, clk)
	defer ls.stop(c)
	// Model A resumes: its subscription starts after the position, and
	// a key that flapped in the gap is reported with each transition.
	src.subs[modelA].seq = 7
	src.push(modelA,
		presencereader.Change{Key: "machine-1", Alive: false},
		presencereader.Change{Key: "machine-1", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, changeLine(modelA, "machine-1", false, 8))
	c.Assert(ls.next(c), gc.DeepEquals, changeLine(modelA, "machine-1", true, 9))
	// Model B, with no position, sends a snapshot.
	src.push(modelB, presencereader.Change{Key: "machine-2", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelB, "machine-2", true, true))
	end := ls.next(c)
	c.Assert(end.SnapshotEnd, gc.Equals, true)
	c.Assert(end.Positions, gc.DeepEquals, map[string]string{modelA: "va.9", modelB: "vb.0"})
	c.Assert(src.config(modelA), gc.DeepEquals, presencereader.SubscribeConfig{After: after})
	c.Assert(src.config(modelB), gc.DeepEquals, presencereader.SubscribeConfig{})
}

func (*watchSuite) TestAPositionNoModelKnowsGetsAResetLine(c *gc.C) {
	src := newFakeSource(modelA)
	clk := testclock.NewClock(time.Unix(0, 0))
	stale := presencereader.Position{View: "earlierrun", Seq: 3}
	ls := startStream(src, watchRequest{after: []presencereader.Position{stale}, coalesce: true}, clk)
	defer ls.stop(c)
	c.Assert(ls.next(c), gc.DeepEquals, watchLine{Reset: true, After: "earlierrun.3"})
	src.push(modelA, presencereader.Change{Key: "machine-1", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelA, "machine-1", true, true))
	c.Assert(ls.next(c).SnapshotEnd, gc.Equals, true)
	c.Assert(src.config(modelA), gc.DeepEquals, presencereader.SubscribeConfig{Coalesce: true})
}

func (*watchSuite) TestAResetReplacesWhatTheClientKnewOfItsModel(c *gc.C) {
	src := newFakeSource(modelA)
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{}, clk)
	defer ls.stop(c)
	src.push(modelA, presencereader.Change{Key: "machine-1", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelA, "machine-1", true, true))
	c.Assert(ls.next(c).SnapshotEnd, gc.Equals, true)
	// The subscriber fell off the log: a reset and the whole state, the
	// unchanged key included.
	src.pushBatch(modelA, presencereader.Batch{
		Snapshot: true, Reset: true,
		Events: []presencereader.Event{{Change: presencereader.Change{Key: "machine-1", Alive: true}}},
		End:    presencereader.Position{View: logOf(modelA), Seq: 40},
	})
	c.Assert(ls.next(c), gc.DeepEquals, watchLine{Model: modelA, Reset: true})
	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelA, "machine-1", true, true))
}

func (*watchSuite) TestAfterAndCoalesceAreParsed(c *gc.C) {
	src := newFakeSource(modelA)
	req, err := parseWatchQuery(src, url.Values{"after": {"va.3", "vb.4"}, "coalesce": {"true"}})
	c.Assert(err, gc.IsNil)
	c.Assert(req.after, gc.DeepEquals, []presencereader.Position{{View: "va", Seq: 3}, {View: "vb", Seq: 4}})
	c.Assert(req.coalesce, gc.Equals, true)
	for _, bad := range []url.Values{
		{"after": {"va"}},
		{"after": {"VA.1"}},
		{"after": {"va.-1"}},
		{"coalesce": {"maybe"}},
	} {
		_, err := parseWatchQuery(src, bad)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true, gc.Commentf("%v: %v", bad, err))
	}
}

func (*watchSuite) TestAPositionAnsweredWithAResetIsNotResumedByAModelFoundLater(c *gc.C) {
	src := newFakeSource(modelA, modelB)
	src.list = []string{modelA}
	clk := testclock.NewClock(time.Unix(0, 0))
	after := presencereader.Position{View: logOf(modelB), Seq: 5}
	ls := startStream(src, watchRequest{after: []presencereader.Position{after}}, clk)
	defer ls.stop(c)
	c.Assert(ls.next(c), gc.DeepEquals, watchLine{Reset: true, After: "vb.5"})
	src.push(modelA)
	c.Assert(ls.next(c).SnapshotEnd, gc.Equals, true)
	// Model B appears: the stream pulls it at the next keepalive, from
	// its snapshot, since the client was told to forget vb.5.
	modelBAppears(c, src, clk, ls)
	c.Assert(src.config(modelB), gc.DeepEquals, presencereader.SubscribeConfig{})
}

// modelBAppears adds model B to src's models, has the stream pull it at
// its next keepalive, and checks the snapshot of B's machine-2, alive.
func modelBAppears(c *gc.C, src *fakeSource, clk *testclock.Clock, ls *lineStream) {
	src.mu.Lock()
	src.list = []string{modelA, modelB}
	src.mu.Unlock()
	c.Assert(clk.WaitAdvance(time.Second, 10*time.Second, 1), gc.IsNil)
	c.Assert(ls.next(c).Keepalive, gc.Equals, true)
	src.push(modelB, presencereader.Change{Key: "machine-2", Alive: true})
	c.Assert(ls.next(c), gc.DeepEquals, keyLine(modelB, "machine-2", true, true))
}

func (*watchSuite) TestAModelFoundAfterTheSnapshotEndsItsOwnSnapshotWithItsPosition(c *gc.C) {
	src := newFakeSource(modelA, modelB)
	src.list = []string{modelA}
	clk := testclock.NewClock(time.Unix(0, 0))
	ls := startStream(src, watchRequest{}, clk)
	defer ls.stop(c)
	src.push(modelA)
	c.Assert(ls.next(c).Positions, gc.DeepEquals, map[string]string{modelA: "va.0"})
	modelBAppears(c, src, clk, ls)
	c.Assert(ls.next(c), gc.DeepEquals, watchLine{
		Model: modelB, SnapshotEnd: true, Positions: map[string]string{modelB: "vb.0"}, Time: "1970-01-01T00:00:01Z",
	})
	// What follows carries positions after it, so a client that resumes
	// after vb.0 misses nothing.
	src.push(modelB, presencereader.Change{Key: "machine-2"})
	c.Assert(ls.next(c), gc.DeepEquals, changeLine(modelB, "machine-2", false, 1))
}

// testLimits are stream limits with the keepalive given and room for the
// tests' streams.
func testLimits(keepalive time.Duration) streamLimits {
	return streamLimits{keepalive: keepalive, maxStreams: 10, writeTimeout: 10 * time.Second}
}
