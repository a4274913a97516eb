package pinger_test

import (
	"time"

	"github.com/juju/clock/testclock"
	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pinger"
)

const period = 30 * time.Second

var model = names.NewModelTag("2a4b3c5d-0000-4000-8000-00000000000a")

type pingerSuite struct {
	clock    *testclock.Clock
	recorder *fakeRecorder
	base     *mongo.Collection
}

var _ = gc.Suite(&pingerSuite{})

func (s *pingerSuite) SetUpTest(c *gc.C) {
	s.clock = agenttest.NewClock()
	s.recorder = newFakeRecorder()
	s.recorder.period = period
	// The pinger only passes its base on; it needs no server.
	client, err := mongo.Connect()
	c.Assert(err, gc.IsNil)
	s.base = client.Database("test").Collection("presence")
}

func (s *pingerSuite) config() pinger.Config {
	return pinger.Config{
		Base:     s.base,
		Model:    model,
		Key:      "machine-0",
		Recorder: func() pinger.PingRecorder { return s.recorder },
		Clock:    s.clock,
		Period:   period,
	}
}

func (s *pingerSuite) newPinger(c *gc.C) *pinger.Pinger {
	p, err := pinger.New(s.config())
	c.Assert(err, gc.IsNil)
	return p
}

func (s *pingerSuite) nextPing(c *gc.C) int64 {
	select {
	case slot := <-s.recorder.pinged:
		return slot
	case <-time.After(agenttest.LongWait):
		c.Fatalf("no ping")
	}
	return 0
}

func (s *pingerSuite) TestNewDoesNotPing(c *gc.C) {
	p := s.newPinger(c)
	pings, _, live, _ := s.recorder.snapshot()
	c.Assert(pings, gc.HasLen, 0)
	c.Assert(live, gc.Equals, 0)
	p.Kill()
	c.Assert(p.Wait(), gc.IsNil)
}

func (s *pingerSuite) TestStartFailsWhenPeriodDiffersFromTheRecorders(c *gc.C) {
	config := s.config()
	config.Period = 2 * period
	p, err := pinger.New(config)
	c.Assert(err, gc.IsNil)
	err = p.Start()
	c.Assert(err, gc.ErrorMatches, `.*Period 1m0s for "machine-0": the ping recorder writes 30s slots.*`)
	c.Assert(errors.Is(err, errors.NotValid), gc.Equals, true)
	pings, _, live, _ := s.recorder.snapshot()
	c.Assert(pings, gc.HasLen, 0)
	c.Assert(live, gc.Equals, 0)
}

func (s *pingerSuite) TestZeroPeriodPingsInTheRecordersSlots(c *gc.C) {
	config := s.config()
	config.Period = 0
	p, err := pinger.New(config)
	c.Assert(err, gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	c.Assert(s.nextPing(c), gc.Equals, schema.Slot(s.clock.Now(), period))
}

func (s *pingerSuite) TestStartPingsAtOnceThenTwicePerSlot(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	start := s.clock.Now()
	c.Assert(s.nextPing(c), gc.Equals, schema.Slot(start, period))
	for i := 1; i <= 4; i++ {
		agenttest.WaitAdvance(c, s.clock, schema.PingInterval(period), 1)
		c.Assert(s.nextPing(c), gc.Equals, schema.Slot(start.Add(time.Duration(i)*schema.PingInterval(period)), period))
	}
	// Four pings a Period: two in every slot of half a Period.
	c.Assert(schema.PingInterval(period)*2, gc.Equals, schema.SlotLength(period))
}

func (s *pingerSuite) TestStopReleasesWithoutRecordingDeath(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(p.Stop(), gc.IsNil)
	_, deaths, live, _ := s.recorder.snapshot()
	c.Assert(deaths, gc.HasLen, 0)
	c.Assert(live, gc.Equals, 0)
}

func (s *pingerSuite) TestDisconnectRecordsDeathAndReleases(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(p.Disconnect(), gc.IsNil)
	_, deaths, live, _ := s.recorder.snapshot()
	c.Assert(deaths, gc.DeepEquals, []int64{schema.Slot(s.clock.Now(), period)})
	c.Assert(live, gc.Equals, 0)
	c.Assert(p.Wait(), gc.IsNil)
}

func (s *pingerSuite) TestStartAgainAfterStop(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(p.Stop(), gc.IsNil)
	c.Assert(p.Start(), gc.IsNil)
	c.Assert(p.Stop(), gc.IsNil)
	pings, _, _, registers := s.recorder.snapshot()
	c.Assert(pings, gc.HasLen, 2)
	c.Assert(registers, gc.Equals, 2)
}

func (s *pingerSuite) TestStartTwiceFails(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	c.Assert(p.Start(), gc.ErrorMatches, `pinger for "machine-0" already started`)
}

func (s *pingerSuite) TestStartAfterKillFails(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	p.Kill()
	c.Assert(p.Wait(), gc.IsNil)
	c.Assert(p.Start(), gc.Equals, pinger.ErrKilled)
}

func (s *pingerSuite) TestUnknownIdentityRegistersAgain(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	defer func() { c.Assert(p.Stop(), gc.IsNil) }()
	s.nextPing(c)
	s.recorder.mu.Lock()
	s.recorder.forget = true
	s.recorder.mu.Unlock()
	agenttest.WaitAdvance(c, s.clock, period/2, 1)
	s.nextPing(c)
	_, _, live, registers := s.recorder.snapshot()
	c.Assert(registers, gc.Equals, 2)
	c.Assert(live, gc.Equals, 1)
}

func (s *pingerSuite) TestPingErrorEndsTheRun(c *gc.C) {
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.IsNil)
	s.nextPing(c)
	s.recorder.mu.Lock()
	s.recorder.pingErr = errors.New("batcher gone")
	s.recorder.mu.Unlock()
	agenttest.WaitAdvance(c, s.clock, period/2, 1)
	c.Assert(p.Wait(), gc.ErrorMatches, `cannot ping "machine-0": batcher gone`)
}

func (s *pingerSuite) TestFirstPingErrorFailsStart(c *gc.C) {
	s.recorder.pingErr = errors.New("batcher gone")
	p := s.newPinger(c)
	c.Assert(p.Start(), gc.ErrorMatches, `cannot ping "machine-0": batcher gone`)
	_, _, live, _ := s.recorder.snapshot()
	c.Assert(live, gc.Equals, 0)
}

func (s *pingerSuite) TestConfigValidation(c *gc.C) {
	for i, t := range []struct {
		mutate func(*pinger.Config)
		err    string
	}{
		{func(cfg *pinger.Config) { cfg.Model = names.NewModelTag("bad") }, `model tag "model-bad" not valid`},
		{func(cfg *pinger.Config) { cfg.Key = "" }, "empty key not valid"},
		{func(cfg *pinger.Config) { cfg.Recorder = nil }, "nil Recorder not valid"},
		{func(cfg *pinger.Config) { cfg.Clock = nil }, "nil Clock not valid"},
		{func(cfg *pinger.Config) { cfg.Period = -time.Second }, "negative Period not valid"},
	} {
		c.Logf("case %d", i)
		cfg := s.config()
		t.mutate(&cfg)
		p, err := pinger.New(cfg)
		c.Check(p, gc.IsNil)
		c.Check(err, gc.ErrorMatches, t.err)
		c.Check(errors.Is(err, errors.NotValid), gc.Equals, true)
	}
	pings, _, _, registers := s.recorder.snapshot()
	c.Assert(pings, gc.HasLen, 0)
	c.Assert(registers, gc.Equals, 0)
}
