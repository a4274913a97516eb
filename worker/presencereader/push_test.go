package presencereader_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"github.com/juju/worker/v4/workertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
	"github.com/presencekit/presence/worker/presencereader"
	"github.com/presencekit/presence/worker/watcher"
)

// pushSuite runs controllers on the wall clock, each on clients of its
// own, and checks that one hears another's changes by push rather than
// by polling. Its long Period puts a reader's own reads seconds apart
// while push works, so a change seen within pushWait came by push.
type pushSuite struct {
	agenttest.MongoSuite
	logger *agenttest.Logger
}

var _ = gc.Suite(&pushSuite{})

func (s *pushSuite) SetUpTest(c *gc.C) {
	s.MongoSuite.SetUpTest(c)
	s.logger = &agenttest.Logger{}
}

const (
	// pushPeriod makes a reader with push read every 7.5 s at rest.
	pushPeriod = time.Minute
	// pushWait is how soon another pushController must hear a change: well
	// under a reader's rest interval (a quarter of a slot), and well over
	// what a notice takes on a loaded embedded server.
	pushWait = 3 * time.Second
)

// pushController is one controller's batcher and reader, each on a client
// of its own, and a watcher of stressModel over the reader.
type pushController struct {
	b     *pingbatcher.PingBatcher
	r     *presencereader.Reader
	w     *watcher.Watcher
	base  *mongo.Collection
	mu    sync.Mutex
	stats presencereader.LoadStats
}

// newController starts a pushController whose reader reads through the
// server at readerURI, with push unless noPush is set, wired as
// ControllerManifolds wires them.
func (s *pushSuite) newController(c *gc.C, readerURI string, period time.Duration, noPush bool) *pushController {
	base := func(uri string) *mongo.Collection {
		return s.NewClient(c, options.Client().ApplyURI(uri)).Database(s.DB.Name()).Collection("presence")
	}
	ctl := &pushController{base: base(s.Server.URI())}
	wake := make(chan struct{}, 1)
	self := &pingbatcher.Self{}
	var err error
	ctl.b, err = pingbatcher.New(pingbatcher.Config{
		Base: ctl.base, Clock: clock.WallClock, Period: period, FlushInterval: 100 * time.Millisecond,
		Logger: s.logger, OnFlush: pingbatcher.WakeOnPrompt(wake, self.OnFlush(nil)),
	})
	c.Assert(err, gc.IsNil)
	ctl.r, err = presencereader.New(presencereader.Config{
		Base: base(readerURI), Clock: clock.WallClock, Period: period, SyncInterval: 100 * time.Millisecond,
		Logger: s.logger, Wake: wake, Self: self.Writer, NoPush: noPush,
		OnLoad: func(stats presencereader.LoadStats) {
			ctl.mu.Lock()
			defer ctl.mu.Unlock()
			ctl.stats = stats
		},
	})
	c.Assert(err, gc.IsNil)
	ctl.w, err = watcher.New(watcher.Config{Reader: ctl.r, Model: stressModel})
	c.Assert(err, gc.IsNil)
	return ctl
}

// tailing starts two pushControllers, a and b, with push, and a key
// through a, whose notice creates the collection that b then tails; it
// returns once b tails it, with what stops them all.
func (s *pushSuite) tailing(c *gc.C) (a, b *pushController, stop func()) {
	a = s.newController(c, s.Server.URI(), pushPeriod, false)
	b = s.newController(c, s.Server.URI(), pushPeriod, false)
	first := a.start(c, "first", pushPeriod)
	stop = func() {
		_ = first.Stop()
		b.stop(c)
		a.stop(c)
	}
	b.waitPush(c, 0)
	return a, b, stop
}

// stop stops the pushController's workers.
func (ctl *pushController) stop(c *gc.C) {
	workertest.CleanKill(agenttest.C(c), ctl.w)
	workertest.CleanKill(agenttest.C(c), ctl.r)
	workertest.CleanKill(agenttest.C(c), ctl.b)
}

// load returns the figures of the pushController's reader's latest load.
func (ctl *pushController) load() presencereader.LoadStats {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return ctl.stats
}

// waitPush waits until the pushController's reader tails the notices with at
// least breaks breaks behind it.
func (ctl *pushController) waitPush(c *gc.C, breaks int) {
	agenttest.WaitFor(c, agenttest.LongWait, fmt.Sprintf("push working after %d breaks", breaks), func() bool {
		l := ctl.load()
		return l.Push && l.PushBreaks >= breaks
	})
}

// start starts a pinger of key through the pushController's batcher.
func (ctl *pushController) start(c *gc.C, key string, period time.Duration) *pinger.Pinger {
	p, err := pinger.New(pinger.Config{
		Base: ctl.base, Model: stressModel, Key: key, Clock: clock.WallClock,
		Period: period, Recorder: func() pinger.PingRecorder { return ctl.b },
	})
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	return p
}

// heard returns how long after now the watcher reported key as alive,
// failing the test if it took longer than within.
func heard(c *gc.C, w *watcher.Watcher, key string, alive bool, since time.Time, within time.Duration) time.Duration {
	agenttest.WaitFor(c, within, fmt.Sprintf("%s alive=%v heard", key, alive), func() bool {
		ok, err := w.Alive(key)
		return err == nil && ok == alive
	})
	return time.Since(since)
}

// countFinds returns how many finds of the ping documents the proxy saw.
func countFinds(proxy *agenttest.Proxy) int {
	return proxy.Counts()["find presence.pings"]
}

func (s *pushSuite) TestAnotherControllerHearsAKeyUpAndADisconnectByPush(c *gc.C) {
	proxy, uri, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer proxy.Close()
	a := s.newController(c, s.Server.URI(), pushPeriod, false)
	defer a.stop(c)
	b := s.newController(c, uri, pushPeriod, false)
	defer b.stop(c)
	// The first notice creates the collection that b then tails.
	first := a.start(c, "first", pushPeriod)
	defer func() { _ = first.Stop() }()
	b.waitPush(c, 0)
	// Wait for b's first loads after its cursor opened, so that the
	// next read it makes on its own is a rest interval away.
	time.Sleep(500 * time.Millisecond)

	before, started := countFinds(proxy), time.Now()
	p := a.start(c, "machine-0", pushPeriod)
	defer func() { _ = p.Stop() }()
	up := heard(c, b.w, "machine-0", true, started, pushWait)
	disconnected := time.Now()
	c.Assert(p.Disconnect(), gc.IsNil)
	down := heard(c, b.w, "machine-0", false, disconnected, pushWait)
	reads := countFinds(proxy) - before
	c.Logf("another controller heard the key up in %v, its Disconnect in %v, with %d reads", up, down, reads)
	// A few reads for a few notices (a new key costs its beings and
	// its first slot), never a poll's 10 a second.
	c.Assert(reads <= 8, gc.Equals, true, gc.Commentf("%d reads", reads))
}

func (s *pushSuite) TestReportNamesTheNewestNoticeTakenFromTheLoadAfterIt(c *gc.C) {
	a, b, stop := s.tailing(c)
	defer stop()
	p := a.start(c, "machine-0", pushPeriod)
	defer func() { _ = p.Stop() }()
	heard(c, b.w, "machine-0", true, time.Now(), pushWait)
	newest := agenttest.NewestNotice(c, s.DB.Collection("presence"))
	c.Assert(newest, gc.Not(gc.Equals), "")
	agenttest.WaitFor(c, agenttest.LongWait, "the newest notice reported", func() bool {
		return b.r.Report()["last-notice"] == newest
	})
}

func (s *pushSuite) TestAReaderTailsOnWithoutABreakWhileTheNoticesAreTrimmed(c *gc.C) {
	ctx := context.Background()
	base := s.DB.Collection("presence")
	c.Assert(schema.EnsureNotices(ctx, base), gc.IsNil)
	// Notices beyond the bound, as the embedded server keeps them until
	// they are trimmed: the reader opens its cursor among them.
	appendNotices := func(n int) {
		for i := 0; i < n; i++ {
			_, err := schema.Notices(base).InsertOne(ctx, schema.NoticeDoc{Writer: "someone-else", Slot: 1})
			c.Assert(err, gc.IsNil)
		}
	}
	appendNotices(3 * schema.NoticesMaxDocuments)
	ctl := s.newController(c, s.Server.URI(), pushPeriod, false)
	defer ctl.stop(c)
	ctl.waitPush(c, 0)

	for round := 0; round < 10; round++ {
		appendNotices(2)
		_, err := schema.TrimNotices(ctx, base)
		c.Assert(err, gc.IsNil)
		newest := agenttest.NewestNotice(c, base)
		agenttest.WaitFor(c, agenttest.LongWait, fmt.Sprintf("round %d's newest notice taken", round), func() bool {
			return ctl.r.Report()["last-notice"] == newest
		})
	}
	ids, err := schema.NoticeIDs(ctx, base)
	c.Assert(err, gc.IsNil)
	c.Assert(ids, gc.HasLen, schema.NoticesKept)
	c.Assert(ctl.r.Report()["push-breaks"], gc.Equals, 0, gc.Commentf("%v", ctl.r.Report()["push-last-break"]))
}

func (s *pushSuite) TestAReaderAtRestReadsAtMostTwiceASecondWhereAPollingOneReadsTenTimes(c *gc.C) {
	const period = 10 * time.Second
	pushProxy, pushURI, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer pushProxy.Close()
	pollProxy, pollURI, err := s.Server.NewProxy()
	c.Assert(err, gc.IsNil)
	defer pollProxy.Close()
	a := s.newController(c, s.Server.URI(), period, false)
	defer a.stop(c)
	for i := 0; i < 10; i++ {
		p := a.start(c, fmt.Sprintf("machine-%d", i), period)
		defer func() { _ = p.Stop() }()
	}
	pushing := s.newController(c, pushURI, period, false)
	defer pushing.stop(c)
	polling := s.newController(c, pollURI, period, true)
	defer polling.stop(c)
	pushing.waitPush(c, 0)
	for _, ctl := range []*pushController{pushing, polling} {
		heard(c, ctl.w, "machine-9", true, time.Now(), agenttest.LongWait)
	}

	const rest = 6 * time.Second
	pushBefore, pollBefore := countFinds(pushProxy), countFinds(pollProxy)
	time.Sleep(rest)
	pushRate := float64(countFinds(pushProxy)-pushBefore) / rest.Seconds()
	pollRate := float64(countFinds(pollProxy)-pollBefore) / rest.Seconds()
	c.Logf("reads a second at rest: %.1f with push, %.1f polling", pushRate, pollRate)
	c.Assert(pushRate <= 2, gc.Equals, true, gc.Commentf("%.1f reads a second", pushRate))
	// The control: the same count shows the poll's pace.
	c.Assert(pollRate >= 5, gc.Equals, true, gc.Commentf("%.1f reads a second", pollRate))
}

// breakCase is one way to break a reader's cursor on the notices.
type breakCase struct {
	name string
	// counted says whether the reader must see a break, and mayBreak
	// that it may: a capped collection rolls past a cursor only if the
	// reader had not already stepped on to the newest notice when the
	// oldest went (by the cap, or by a batcher's trim on the embedded
	// server), which is a race between the reader and the server.
	counted, mayBreak bool
	breakIt           func(c *gc.C)
}

func (s *pushSuite) TestEachBreakOfTheCursorIsCountedAndRecoveredFrom(c *gc.C) {
	notices := s.DB.Collection("presence.notices")
	cases := []breakCase{{
		name: "collection dropped", counted: true,
		breakIt: func(c *gc.C) { c.Assert(notices.Drop(context.Background()), gc.IsNil) },
	}, {
		name: "capped collection rolled past the cursor", mayBreak: true,
		breakIt: func(c *gc.C) {
			docs := make([]any, 2*schema.NoticesMaxDocuments)
			for i := range docs {
				docs[i] = schema.NoticeDoc{Writer: "someone-else", Slot: int64(i + 1)}
			}
			_, err := notices.InsertMany(context.Background(), docs)
			c.Assert(err, gc.IsNil)
		},
	}}
	if !s.Server.External() {
		cases = append(cases, breakCase{
			name: "server killed and restarted", counted: true,
			breakIt: func(c *gc.C) {
				c.Assert(s.Server.Kill(), gc.IsNil)
				time.Sleep(time.Second)
				c.Assert(s.Server.Start(), gc.IsNil)
			},
		})
	}
	a, b, stop := s.tailing(c)
	defer stop()
	breaks := 0
	for i, bc := range cases {
		bc.breakIt(c)
		if bc.counted {
			breaks++
		}
		// The reader writes nothing: a dropped collection comes back
		// with the next notice a batcher appends.
		wake := a.start(c, fmt.Sprintf("wake-%d", i), pushPeriod)
		if bc.mayBreak {
			// Tailing again, and caught up, whether or not it broke.
			agenttest.WaitFor(c, agenttest.LongWait, "the newest notice taken by push", func() bool {
				report := b.r.Report()
				return report["push"] == "notices" && report["last-notice"] == agenttest.NewestNotice(c, s.DB.Collection("presence"))
			})
			if got := b.load().PushBreaks; got == breaks+1 {
				breaks = got
			}
		}
		b.waitPush(c, breaks)
		c.Assert(wake.Stop(), gc.IsNil)
		// A key that comes up after the recovery is heard by push.
		key := fmt.Sprintf("machine-%d", i)
		p := a.start(c, key, pushPeriod)
		took := heard(c, b.w, key, true, time.Now(), pushWait)
		c.Logf("%s: heard a key up %v after", bc.name, took)
		c.Assert(p.Stop(), gc.IsNil)
		c.Assert(b.load().PushBreaks, gc.Equals, breaks, gc.Commentf("%s", bc.name))
	}
	// Breaks are logged, never more than once each (a's reader breaks
	// too, and a reader holds back a line like one it logged moments
	// before, to count it in the next).
	logged := 0
	for _, line := range s.logger.Entries() {
		if strings.Contains(line, "no push") {
			logged++
		}
	}
	c.Assert(logged >= 1 && logged <= 2*breaks, gc.Equals, true, gc.Commentf("%d lines for %d breaks", logged, breaks))
}

func (s *pushSuite) TestWithoutACappedCollectionTheReaderSaysSoOnceAndPolls(c *gc.C) {
	// A collection of the notices' name that is not capped cannot be
	// tailed, as on a server without capped collections.
	_, err := s.DB.Collection("presence.notices").InsertOne(context.Background(), bson.D{{Key: "writer", Value: "x"}})
	c.Assert(err, gc.IsNil)
	a := s.newController(c, s.Server.URI(), pushPeriod, false)
	defer a.stop(c)
	b := s.newController(c, s.Server.URI(), pushPeriod, false)
	defer b.stop(c)
	agenttest.WaitFor(c, agenttest.LongWait, "the break counted", func() bool {
		return b.load().PushBreaks == 1
	})
	p := a.start(c, "machine-0", pushPeriod)
	defer func() { _ = p.Stop() }()
	// Polling every SyncInterval hears it as soon as push would have.
	took := heard(c, b.w, "machine-0", true, time.Now(), pushWait)
	c.Logf("heard by polling %v after", took)
	time.Sleep(2 * time.Second)
	l := b.load()
	c.Assert(l.Push, gc.Equals, false)
	c.Assert(l.PushBreaks, gc.Equals, 1)
	c.Assert(b.r.Report()["push"], gc.Equals, "polling")
	logged := 0
	for _, line := range s.logger.Entries() {
		if strings.Contains(line, "no push") {
			logged++
		}
	}
	// Once for each reader, however often they retried.
	c.Assert(logged, gc.Equals, 2, gc.Commentf("%s", strings.Join(s.logger.Entries(), "\n")))
}

func (s *stressSuite) TestNoFalseDeathWhenThePushPathBreaksAndComesBack(c *gc.C) {
	run, stop := s.live(c, s.Server.URI())
	defer stop()
	notices := s.DB.Collection("presence.notices")
	for i := 0; i < 4; i++ {
		c.Assert(notices.Drop(context.Background()), gc.IsNil)
		time.Sleep(stressPeriod)
	}
	if !s.Server.External() {
		c.Assert(s.Server.Kill(), gc.IsNil)
		time.Sleep(stressPeriod / 2)
		c.Assert(s.Server.Start(), gc.IsNil)
	}
	settle()
	if !strings.Contains(strings.Join(s.logger.Entries(), "\n"), "no push") {
		c.Fatalf("the push path never broke: %s", errors.New(strings.Join(s.logger.Entries(), "\n")))
	}
	s.checkOnlyTheDeliberateDeath(c, run, (*pinger.Pinger).Stop)
}

// noticeOf appends a notice of writer carrying changes, as a batcher in
// another process would after a flush.
func (s *pushSuite) noticeOf(c *gc.C, writer string, changes ...schema.NoticeChange) {
	_, err := schema.Notices(s.DB.Collection("presence")).InsertOne(context.Background(),
		schema.NoticeDoc{Writer: writer, Slot: 1, Prompt: true, Changes: changes})
	c.Assert(err, gc.IsNil)
}

// nextChange returns the next change on ch, failing the test if none
// comes within agenttest.LongWait.
func nextChange(c *gc.C, ch <-chan watcher.Change) watcher.Change {
	select {
	case change := <-ch:
		return change
	case <-time.After(agenttest.LongWait):
		c.Fatalf("no change within %v", agenttest.LongWait)
		return watcher.Change{}
	}
}

func (s *pushSuite) TestAChangeANoticeCarriesIsReportedBeforeTheLoadThatConfirmsIt(c *gc.C) {
	_, b, stop := s.tailing(c)
	defer stop()
	ch := make(chan watcher.Change, 4)
	b.w.Watch("ghost", ch)
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "ghost"})

	// A notice says that another writer's flush brought "ghost" up; no
	// document of that writer does. The reader reports it alive at
	// once, and then dead again from the load the notice asked for:
	// what the documents say decides.
	s.noticeOf(c, "someone-else", schema.NoticeChange{Model: stressModel.Id(), Key: "ghost", Up: true})
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "ghost", Alive: true})
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "ghost"})
	c.Assert(b.r.Report()["notice-changes"], gc.Equals, 1)
}

func (s *pushSuite) TestADisconnectANoticeCarriesLeavesAKeyAnotherControllerKeepsAlive(c *gc.C) {
	a, b, stop := s.tailing(c)
	defer stop()
	other := s.newController(c, s.Server.URI(), pushPeriod, false)
	defer other.stop(c)
	s.secondPingerKeepsTheKey(c, b, a, other)
}

func (s *pushSuite) TestADisconnectLeavesAKeyItsAgentReconnectedThroughTheSameController(c *gc.C) {
	a, b, stop := s.tailing(c)
	defer stop()
	s.secondPingerKeepsTheKey(c, b, a, a)
}

// secondPingerKeepsTheKey starts two pingers of machine-0, through first
// and then second, and checks that b's watcher never reports the key
// dead when the first disconnects, and does once the second does too.
func (s *pushSuite) secondPingerKeepsTheKey(c *gc.C, b, first, second *pushController) {
	p1 := first.start(c, "machine-0", pushPeriod)
	p2 := second.start(c, "machine-0", pushPeriod)
	defer func() { _ = p2.Stop() }()
	c.Assert(first.b.Sync(), gc.IsNil)
	c.Assert(second.b.Sync(), gc.IsNil)
	s.noticesTaken(c, b)
	b.w.Sync()
	ch := make(chan watcher.Change, 4)
	b.w.Watch("machine-0", ch)
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "machine-0", Alive: true})

	// The first pinger's Disconnect: the key stays alive, through the
	// second, by hint and by load.
	c.Assert(p1.Disconnect(), gc.IsNil)
	c.Assert(first.b.Sync(), gc.IsNil)
	s.noticesTaken(c, b)
	b.w.Sync()
	c.Assert(drain(ch), gc.HasLen, 0)
	// The control: the second's Disconnect makes it dead.
	c.Assert(p2.Disconnect(), gc.IsNil)
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "machine-0"})
}

// noticesTaken waits until ctl's reader has taken the newest notice.
func (s *pushSuite) noticesTaken(c *gc.C, ctl *pushController) {
	newest := agenttest.NewestNotice(c, s.DB.Collection("presence"))
	agenttest.WaitFor(c, agenttest.LongWait, "the newest notice taken", func() bool {
		return ctl.r.Report()["last-notice"] == newest
	})
}

// drain returns the changes waiting on ch.
func drain(ch <-chan watcher.Change) []watcher.Change {
	var out []watcher.Change
	for {
		select {
		case change := <-ch:
			out = append(out, change)
		default:
			return out
		}
	}
}

func (s *pushSuite) TestANoticeWhoseChangesDoNotValidateIsNamedAndStillRead(c *gc.C) {
	_, b, stop := s.tailing(c)
	defer stop()
	ch := make(chan watcher.Change, 4)
	b.w.Watch("ghost", ch)
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "ghost"})
	s.noticeOf(c, "someone-else", schema.NoticeChange{Model: "not-a-model", Key: "ghost", Up: true})
	agenttest.WaitFor(c, agenttest.LongWait, "the notice refused", func() bool {
		return b.r.Report()["notices-refused"] == 1
	})
	c.Assert(strings.Join(s.logger.Entries(), "\n"), gc.Matches, `(?s).*skipping a notice's changes.*someone-else.*model "not-a-model" not valid.*`)
	// The control: a valid one is applied.
	s.noticeOf(c, "someone-else", schema.NoticeChange{Model: stressModel.Id(), Key: "ghost", Up: true})
	c.Assert(nextChange(c, ch), gc.Equals, watcher.Change{Key: "ghost", Alive: true})
}
