package robustness_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/robustness"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// controlsSuite holds the positive controls: histories and components
// broken on purpose, which each checker must catch. A checker that passes
// them all could not fail.
type controlsSuite struct{}

var _ = gc.Suite(&controlsSuite{})

const ms = time.Millisecond

var bounds = robustness.LeaseBounds{Skew: 100 * ms, Release: 500 * ms, Trouble: time.Second}

func claim(unit string, call, ret time.Duration, r robustness.Result) robustness.Op {
	return robustness.Op{Kind: robustness.OpClaim, Model: "m", Lease: "app", Unit: unit, Duration: 3 * time.Second, Call: call, Return: ret, Result: r}
}

func leaseOp(kind robustness.Kind, unit string, call, ret time.Duration, r robustness.Result, fence int64) robustness.Op {
	return robustness.Op{Kind: kind, Model: "m", Lease: "app", Unit: unit, Call: call, Return: ret, Result: r, Fence: fence}
}

// legalLeases is a history the lease model accepts: u1 leads, releases,
// u2 leads with a higher fence, lapses, and u1 takes over.
func legalLeases() []robustness.Op {
	return []robustness.Op{
		claim("app/1", 0, 10*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/1", 20*ms, 30*ms, robustness.Ok, 1),
		claim("app/2", 40*ms, 50*ms, robustness.Denied),
		leaseOp(robustness.OpBlock, "app/2", 60*ms, 1020*ms, robustness.Ok, 0),
		leaseOp(robustness.OpRelease, "app/1", 1000*ms, 1010*ms, robustness.Ok, 0),
		claim("app/2", 1030*ms, 1040*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/2", 1050*ms, 1060*ms, robustness.Ok, 2),
		leaseOp(robustness.OpCheck, "app/1", 1050*ms, 1060*ms, robustness.Denied, 0),
		claim("app/1", 5000*ms, 5010*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/1", 5020*ms, 5030*ms, robustness.Ok, 3),
		claim("app/2", 5040*ms, robustness.Pending, robustness.Unknown),
	}
}

func (s *controlsSuite) TestTheLeaseModelAcceptsALegalHistory(c *gc.C) {
	c.Assert(robustness.CheckLeases(legalLeases(), bounds), gc.HasLen, 0)
	c.Assert(robustness.CheckBlocks(legalLeases(), 6*time.Second, bounds), gc.HasLen, 0)
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesTwoHolders(c *gc.C) {
	ops := append(legalLeases(), claim("app/3", 1100*ms, 1110*ms, robustness.Ok))
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAFenceThatGoesBack(c *gc.C) {
	ops := legalLeases()
	ops[6].Fence = 1
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAFenceThatChangesUnderOneHolder(c *gc.C) {
	ops := append(legalLeases(), leaseOp(robustness.OpCheck, "app/2", 1070*ms, 1080*ms, robustness.Ok, 7))
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAYesAfterTheRelease(c *gc.C) {
	ops := append(legalLeases(), leaseOp(robustness.OpCheck, "app/1", 1015*ms, 1025*ms, robustness.Ok, 1))
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesABlockReturnedWhileHeld(c *gc.C) {
	ops := append(legalLeases(), leaseOp(robustness.OpBlock, "app/1", 1100*ms, 1200*ms, robustness.Ok, 0))
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheBlockCheckerCatchesABlockThatNeverReturns(c *gc.C) {
	ops := legalLeases()
	ops[3].Return, ops[3].Result = robustness.Pending, robustness.Unknown
	// Taken again at once, the lease may never have been free at a read.
	c.Assert(robustness.CheckBlocks(ops, 6*time.Second, bounds), gc.HasLen, 0)
	// Left free for longer than the bound, it must have been seen.
	ops[5].Call, ops[5].Return = 3500*ms, 3510*ms
	assertCaught(c, robustness.CheckBlocks(ops, 6*time.Second, bounds), "blocks", "had not returned")
	// A fault in the way extends the bound.
	ops = append(ops, robustness.Op{Kind: robustness.OpFault, Ctrl: -1, Fault: robustness.FaultServerPause, Call: 1000 * ms, Return: 2500 * ms})
	c.Assert(robustness.CheckBlocks(ops, 6*time.Second, bounds), gc.HasLen, 0)
}

var presenceBounds = robustness.PresenceBounds{Up: 300 * ms, Silent: 1500 * ms, Disconnect: 300 * ms, Hold: 4 * time.Second}

func event(reader int, call time.Duration, alive bool, seq uint64) robustness.Op {
	return robustness.Op{Kind: robustness.OpEvent, Ctrl: reader, Model: "m", Key: "machine-0", Stream: "fast", Call: call, Return: call, Result: robustness.Ok, Alive: alive, Seq: seq}
}

// legalPresence: a key comes up, stops silently, comes back and
// disconnects; reader 1 sees each within its bound.
func legalPresence() []robustness.Op {
	op := func(kind robustness.Kind, run int, call time.Duration) robustness.Op {
		return robustness.Op{Kind: kind, Model: "m", Key: "machine-0", Run: run, Call: call, Return: call + ms, Result: robustness.Ok}
	}
	snapshot := event(1, 0, false, 0)
	snapshot.Snapshot = true
	return []robustness.Op{
		snapshot,
		op(robustness.OpStart, 1, 100*ms),
		event(1, 300*ms, true, 1),
		op(robustness.OpStop, 1, 2000*ms),
		event(1, 3200*ms, false, 2),
		op(robustness.OpStart, 2, 4000*ms),
		event(1, 4200*ms, true, 3),
		op(robustness.OpDisconnect, 2, 6000*ms),
		event(1, 6200*ms, false, 4),
	}
}

func (s *controlsSuite) TestThePresenceCheckerAcceptsALegalHistory(c *gc.C) {
	c.Assert(robustness.CheckPresence(legalPresence(), 10*time.Second, presenceBounds), gc.HasLen, 0)
	c.Assert(robustness.CheckStreams(legalPresence()), gc.HasLen, 0)
}

func (s *controlsSuite) TestThePresenceCheckerCatchesAnInjectedFalseDeath(c *gc.C) {
	ops := append(legalPresence(), event(1, 5000*ms, false, 5))
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, presenceBounds), "presence", "false death")
}

func (s *controlsSuite) TestThePresenceCheckerCatchesAKeyThatNeverComesUp(c *gc.C) {
	ops := legalPresence()
	ops[6].Call, ops[6].Return = 5500*ms, 5500*ms
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, presenceBounds), "presence", "false death")
}

func (s *controlsSuite) TestThePresenceCheckerCatchesAStaleLife(c *gc.C) {
	ops := legalPresence()
	ops[4].Call, ops[4].Return = 3800*ms, 3800*ms
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, presenceBounds), "presence", "stale life")
	// Trouble read from the history excuses the hold.
	ops = append(ops, robustness.Op{Kind: robustness.OpFault, Ctrl: -1, Fault: robustness.FaultServerKill, Call: 2500 * ms, Return: 2600 * ms})
	c.Assert(robustness.CheckPresence(ops, 10*time.Second, presenceBounds), gc.HasLen, 0)
}

func (s *controlsSuite) TestTheStreamCheckerCatchesALostChange(c *gc.C) {
	ops := legalPresence()
	ops[6].Seq = 4
	ops[8].Seq = 5
	assertCaught(c, robustness.CheckStreams(ops), "streams", "position 4 where 3 was due")
}

func (s *controlsSuite) TestTheStreamCheckerCatchesStreamsThatDisagree(c *gc.C) {
	slow := event(1, 500*ms, false, 1)
	slow.Stream = "slow"
	slow.Key = "machine-9"
	ops := append(legalPresence(), slow)
	assertCaught(c, robustness.CheckStreams(ops), "streams", "another stream of the view saw")
}

func (s *controlsSuite) TestTheResourceCheckerCatchesGrowth(c *gc.C) {
	sample := robustness.Op{Kind: robustness.OpSample, Ctrl: -1, Call: 5 * time.Second, Return: 5 * time.Second,
		Counts: map[string]int{"pings": 13, "terms m/app": 9}}
	b := robustness.ResourceBounds{Counts: map[string]int{"pings": 12}, TermsBase: 6, Window: 2 * time.Second}
	v := robustness.CheckResources([]robustness.Op{sample}, 10*time.Second, b)
	assertCaught(c, v, "resources", "pings is 13")
	assertCaught(c, v, "resources", "keeps 9 terms")
	// Recent changes allow more terms.
	b.Counts["pings"] = 13
	ops := []robustness.Op{sample, claim("app/1", 4*time.Second, 4*time.Second+ms, robustness.Ok), claim("app/1", 4500*ms, 4501*ms, robustness.Ok)}
	c.Assert(robustness.CheckResources(ops, 10*time.Second, b), gc.HasLen, 0)
}

// grantingClient is a broken lease client: it grants every claim that
// the database refused because another unit holds the lease, as a client
// that skipped its arbiter and its confirming read would. A claim it
// "inserts" for a caller that confirms (InsertClaims) has the term that
// the caller's next read finds, so that the confirmation passes.
type grantingClient struct {
	lease.Client
}

func (g grantingClient) grant(claims []lease.Claim, current map[lease.Key]lease.Info, infos []lease.Info, errs []error, err error) ([]lease.Info, []error, error) {
	for i := range errs {
		if errors.Is(errs[i], lease.ErrHeld) {
			infos[i], errs[i] = lease.Info{Holder: claims[i].Request.Holder, Expiry: time.Now().Add(claims[i].Request.Duration), Term: current[claims[i].Key].Term}, nil
		}
	}
	return infos, errs, err
}

func (g grantingClient) ClaimMany(ctx context.Context, claims []lease.Claim) ([]lease.Info, []error, error) {
	infos, errs, err := g.Client.ClaimMany(ctx, claims)
	return g.grant(claims, nil, infos, errs, err)
}

func (g grantingClient) ClaimManyOn(ctx context.Context, claims []lease.Claim, current map[lease.Key]lease.Info) ([]lease.Info, []error, error) {
	infos, errs, err := g.Client.ClaimManyOn(ctx, claims, current)
	return g.grant(claims, current, infos, errs, err)
}

func (g grantingClient) InsertClaims(ctx context.Context, claims []lease.Claim, current map[lease.Key]lease.Info) ([]lease.Info, []error, error) {
	infos, errs, err := g.Client.InsertClaims(ctx, claims, current)
	return g.grant(claims, current, infos, errs, err)
}

// contendedPlan is a short run where two units on two controllers
// contend for one lease, and few agents come and go.
func contendedPlan() robustness.Plan {
	plan := robustness.NewPlan(7, 8*time.Second, nil)
	plan.Controllers = plan.Controllers[:2]
	plan.Agents = plan.Agents[:min(len(plan.Agents), 4)]
	for i := range plan.Agents {
		plan.Agents[i].Model = 0
		for j := range plan.Agents[i].Actions {
			plan.Agents[i].Actions[j].Ctrl %= 2
		}
	}
	unit := robustness.UnitPlan{Model: 0, App: "app0", Duration: 2 * time.Second, Renew: 600 * ms, Lead: 3 * time.Second, Rest: time.Second, Release: true}
	plan.Units = nil
	for i, name := range []string{"app0/0", "app0/1"} {
		unit.Unit, unit.Ctrl = name, i
		plan.Units = append(plan.Units, unit)
	}
	return plan
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAClientThatGrantsHeldLeases(c *gc.C) {
	out, err := runPlan(contendedPlan(), wiring{leaseClient: func(cl lease.Client) lease.Client { return grantingClient{cl} }}, c.Logf)
	c.Assert(err, gc.IsNil)
	assertCaught(c, out.violations, "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesARecordedHistoryMutatedToTwoHolders(c *gc.C) {
	out, err := runPlan(contendedPlan(), wiring{}, c.Logf)
	c.Assert(err, gc.IsNil)
	c.Assert(out.violations, gc.HasLen, 0)
	// Another unit is granted the lease the moment the first grant
	// returns.
	for _, op := range out.ops {
		if op.Kind == robustness.OpClaim && op.Result == robustness.Ok {
			op.Unit, op.Call = "app0/9", op.Return
			out.ops = append(out.ops, op)
			break
		}
	}
	assertCaught(c, robustness.CheckLeases(out.ops, robustness.LeaseBounds{Skew: time.Second}), "leases", "not linearizable")
}

// droppingRecorder is a broken batcher: once armed, it forgets one key's
// identities behind its pinger's back and drops their pings, as a batcher
// that lost a writer's bits would.
type droppingRecorder struct {
	*pingbatcher.PingBatcher
	victim string
	armed  func() bool

	mu  sync.Mutex
	ids map[pinger.Identity]bool
}

func (d *droppingRecorder) Register(base *mongo.Collection, model names.ModelTag, key string) (pinger.Identity, error) {
	id, err := d.PingBatcher.Register(base, model, key)
	if err == nil && key == d.victim {
		d.mu.Lock()
		d.ids[id] = true
		d.mu.Unlock()
	}
	return id, err
}

func (d *droppingRecorder) Ping(id pinger.Identity, slot int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids[id] && d.armed() {
		d.PingBatcher.Release(id)
		return nil
	}
	return d.PingBatcher.Ping(id, slot)
}

func (s *controlsSuite) TestThePresenceCheckerCatchesABatcherThatDropsPings(c *gc.C) {
	plan := contendedPlan()
	// The victim comes up early and stays up.
	plan.Agents[0].Actions = []robustness.Action{{At: 100 * ms, Kind: robustness.OpStart, Ctrl: 0}}
	start := time.Now()
	wire := wiring{recorder: func(b *pingbatcher.PingBatcher) pinger.PingRecorder {
		return &droppingRecorder{PingBatcher: b, victim: plan.Agents[0].Key, ids: make(map[pinger.Identity]bool),
			armed: func() bool { return time.Since(start) > 3*time.Second }}
	}}
	out, err := runPlan(plan, wire, c.Logf)
	c.Assert(err, gc.IsNil)
	assertCaught(c, out.violations, "presence", "false death: key "+plan.Agents[0].Key+" ")
}

// assertCaught asserts that a violation of checker mentions what.
func assertCaught(c *gc.C, violations []robustness.Violation, checker, what string) {
	for _, v := range violations {
		if v.Checker == checker && strings.Contains(v.What, what) {
			return
		}
	}
	c.Fatalf("no %s violation says %q; got %v", checker, what, violations)
}

func (s *controlsSuite) TestTheFencedWritesCheckerAcceptsRisingFences(c *gc.C) {
	logs := map[string][]robustness.FencedWrite{"m/app": {{"app/1", 1}, {"app/1", 1}, {"app/2", 2}, {"app/1", 5}}}
	c.Assert(robustness.CheckFencedWrites(logs), gc.HasLen, 0)
}

func (s *controlsSuite) TestTheFencedWritesCheckerCatchesADeposedLeadersLateWrite(c *gc.C) {
	logs := map[string][]robustness.FencedWrite{"m/app": {{"app/1", 1}, {"app/2", 2}, {"app/1", 1}}}
	v := robustness.CheckFencedWrites(logs)
	c.Assert(v, gc.HasLen, 1)
	c.Check(v[0].What, gc.Matches, `.*app/1 with fence 1 landed after .* app/2 with fence 2`)
}

func (s *controlsSuite) TestTheFencedWritesCheckerCatchesAFenceOfTwoHolders(c *gc.C) {
	logs := map[string][]robustness.FencedWrite{"m/app": {{"app/1", 3}, {"app/2", 3}}}
	v := robustness.CheckFencedWrites(logs)
	c.Assert(v, gc.HasLen, 1)
	c.Check(v[0].What, gc.Matches, `.*fence 3 written by app/1 and by app/2`)
}

func fault(kind robustness.FaultKind, ctrl int, call, ret time.Duration) robustness.Op {
	return robustness.Op{Kind: robustness.OpFault, Ctrl: ctrl, Fault: kind, Call: call, Return: ret, Result: robustness.Ok}
}

// killedWriter: a key comes up through controller 2, which is killed
// at 2 s; reader 1 reads it alive until 6 s.
func killedWriter() []robustness.Op {
	snapshot := event(1, 0, false, 0)
	snapshot.Snapshot = true
	return []robustness.Op{
		snapshot,
		{Kind: robustness.OpStart, Ctrl: 2, Model: "m", Key: "machine-0", Run: 1, Call: 100 * ms, Return: 101 * ms, Result: robustness.Ok},
		event(1, 300*ms, true, 1),
		event(1, 6000*ms, false, 2),
	}
}

func (s *controlsSuite) TestThePresenceCheckerCatchesAKilledControllersKeyThatLingers(c *gc.C) {
	// Without the kill in the history, the pinger is up to the end.
	c.Assert(robustness.CheckPresence(killedWriter(), 10*time.Second, presenceBounds), gc.HasLen, 1)
	ops := append(killedWriter(), fault(robustness.FaultControllerKill, 2, 2000*ms, 2001*ms))
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, presenceBounds), "presence", "stale life: key machine-0")
	// Read dead within the silent bound of the kill, it is no violation.
	ops[3].Call, ops[3].Return = 3400*ms, 3400*ms
	c.Assert(robustness.CheckPresence(ops, 10*time.Second, presenceBounds), gc.HasLen, 0)
}

func (s *controlsSuite) TestThePresenceCheckerEndsAKilledReadersStreamAtTheKill(c *gc.C) {
	// Reader 1 is killed at 2.5 s, after it read the key alive: its
	// last state does not last to the end, past the key's stop.
	ops := append(legalPresence()[:3], robustness.Op{Kind: robustness.OpStop, Model: "m", Key: "machine-0", Run: 1, Call: 2000 * ms, Return: 2001 * ms, Result: robustness.Ok})
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, presenceBounds), "presence", "stale life")
	ops = append(ops, fault(robustness.FaultControllerKill, 1, 2500*ms, 2501*ms))
	c.Assert(robustness.CheckPresence(ops, 10*time.Second, presenceBounds), gc.HasLen, 0)
}

// flushes returns controller ctrl's flushes of one document every 100 ms
// over [from, to).
func flushes(ctrl int, from, to time.Duration) []robustness.Op {
	var out []robustness.Op
	for t := from; t < to; t += 100 * ms {
		out = append(out, robustness.Op{Kind: robustness.OpFlush, Ctrl: ctrl, Call: t, Return: t + 5*ms, Result: robustness.Ok, Counts: map[string]int{"documents": 1}})
	}
	return out
}

func (s *controlsSuite) TestThePresenceCheckerAllowsADeathOnlyAfterTheWriterWroteNothingForTheWholeBound(c *gc.C) {
	b := presenceBounds
	b.Starved = 1200 * ms
	death := event(1, 5000*ms, false, 5)
	// The writer flushed all along: a false death.
	ops := append(append(legalPresence(), death), flushes(0, 0, 10*time.Second)...)
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, b), "presence", "false death")
	c.Assert(robustness.AllowedDeaths(ops, 10*time.Second, b), gc.HasLen, 0)
	// The writer wrote nothing from 3.7 s: starved, the death is allowed
	// and named.
	ops = append(append(legalPresence(), death), append(flushes(0, 0, 3700*ms), flushes(0, 5500*ms, 10*time.Second)...)...)
	c.Assert(robustness.CheckPresence(ops, 10*time.Second, b), gc.HasLen, 0)
	assertCaught(c, robustness.AllowedDeaths(ops, 10*time.Second, b), "presence", "false death")
}

// loads returns reader's loads every 100 ms over [from, to).
func loads(reader int, from, to time.Duration) []robustness.Op {
	var out []robustness.Op
	for t := from; t < to; t += 100 * ms {
		out = append(out, robustness.Op{Kind: robustness.OpLoad, Ctrl: reader, Call: t, Return: t, Result: robustness.Ok})
	}
	return out
}

func (s *controlsSuite) TestThePresenceCheckerAllowsAStaleLifeOnlyAsLongAsTheReaderStalled(c *gc.C) {
	b := presenceBounds
	b.Stall = 400 * ms
	late := legalPresence()
	late[4].Call, late[4].Return = 3800*ms, 3800*ms // 300 ms past the bound
	// The reader loaded all along: a stale life.
	ops := append(append([]robustness.Op(nil), late...), loads(1, 0, 10*time.Second)...)
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, b), "presence", "stale life")
	// It loaded nothing for 500 ms after the stop: allowed, and named.
	ops = append(append([]robustness.Op(nil), late...), append(loads(1, 0, 2500*ms), loads(1, 3000*ms, 10*time.Second)...)...)
	c.Assert(robustness.CheckPresence(ops, 10*time.Second, b), gc.HasLen, 0)
	assertCaught(c, robustness.AllowedDeaths(ops, 10*time.Second, b), "presence", "the reader stalled")
	// A stall shorter than the lateness does not excuse it.
	ops = append(append([]robustness.Op(nil), late...), append(loads(1, 0, 2500*ms), loads(1, 2600*ms, 10*time.Second)...)...)
	ops = append(ops, robustness.Op{Kind: robustness.OpLoad, Ctrl: 1, Call: 2550 * ms, Return: 2550 * ms, Result: robustness.Ok})
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, b), "presence", "stale life")
}

func hostileTerm(call time.Duration) robustness.Op {
	op := fault(robustness.FaultHostileTerm, -1, call, call+5*ms)
	op.Model, op.Lease = "m", "app"
	return op
}

func (s *controlsSuite) TestTheLeaseModelLetsAHostileTermEndATenure(c *gc.C) {
	// app/1 holds from 0 with fence 1 until 3 s; a hostile term at
	// 20 ms ends its tenure: its check says no, app/2 takes the lease.
	ops := []robustness.Op{
		claim("app/1", 0, 10*ms, robustness.Ok),
		hostileTerm(20 * ms),
		leaseOp(robustness.OpCheck, "app/1", 100*ms, 110*ms, robustness.Denied, 0),
		claim("app/2", 200*ms, 210*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/2", 220*ms, 230*ms, robustness.Ok, 2),
	}
	c.Assert(robustness.CheckLeases(ops, bounds), gc.HasLen, 0)
	// Without the hostile term in the history, that is a lost lease.
	assertCaught(c, robustness.CheckLeases(append(ops[:1:1], ops[2:]...), bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAFenceThatGoesBackAfterAHostileTerm(c *gc.C) {
	ops := []robustness.Op{
		claim("app/1", 0, 10*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/1", 20*ms, 30*ms, robustness.Ok, 5),
		hostileTerm(40 * ms),
		claim("app/2", 200*ms, 210*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/2", 220*ms, 230*ms, robustness.Ok, 1),
	}
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesTwoHoldersAfterAHostileTerm(c *gc.C) {
	ops := []robustness.Op{
		claim("app/1", 0, 10*ms, robustness.Ok),
		hostileTerm(40 * ms),
		claim("app/2", 200*ms, 210*ms, robustness.Ok),
		leaseOp(robustness.OpCheck, "app/1", 220*ms, 230*ms, robustness.Ok, 1),
	}
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
}

func (s *controlsSuite) TestTheBlockCheckerExcusesOnlyABlockOnALeaseAHostileTermHit(c *gc.C) {
	ops := legalLeases()
	ops[3].Return, ops[3].Result = robustness.Pending, robustness.Unknown
	ops[5].Call, ops[5].Return = 3500*ms, 3510*ms
	assertCaught(c, robustness.CheckBlocks(ops, 6*time.Second, bounds), "blocks", "had not returned")
	other := hostileTerm(500 * ms)
	other.Lease = "other"
	assertCaught(c, robustness.CheckBlocks(append(ops, other), 6*time.Second, bounds), "blocks", "had not returned")
	c.Assert(robustness.CheckBlocks(append(ops, hostileTerm(500*ms)), 6*time.Second, bounds), gc.HasLen, 0)
	c.Assert(robustness.FrozenLeases(append(ops, hostileTerm(500*ms))), gc.HasLen, 0) // app/1 claimed it again at 5 s
	c.Assert(robustness.FrozenLeases(append(ops, hostileTerm(5500*ms))), gc.HasLen, 1)
}

func heapSample(at time.Duration, heap, keys int) robustness.Op {
	return robustness.Op{Kind: robustness.OpSample, Ctrl: -1, Call: at, Return: at, Counts: map[string]int{"heap r": heap, "keys c0": keys}}
}

func (s *controlsSuite) TestTheResourceCheckerCatchesHeapGrowth(c *gc.C) {
	b := robustness.ResourceBounds{Heaps: map[string]robustness.HeapBound{"heap r": {Warmup: time.Second, Factor: 1.5, Slack: 1000}}}
	ops := []robustness.Op{heapSample(500*ms, 90_000, 10), heapSample(1500*ms, 10_000, 10), heapSample(1800*ms, 12_000, 10),
		heapSample(3*time.Second, 18_000, 10)}
	c.Assert(robustness.CheckResources(ops, 10*time.Second, b), gc.HasLen, 0)
	grown := append(ops, heapSample(4*time.Second, 20_000, 10))
	assertCaught(c, robustness.CheckResources(grown, 10*time.Second, b), "resources", "heap r grew to 20000 bytes, above its bound 19000")
	// Twice the live keys allow twice the heap.
	live := append(ops, heapSample(4*time.Second, 30_000, 20))
	c.Assert(robustness.CheckResources(live, 10*time.Second, b), gc.HasLen, 0)
}

func (s *controlsSuite) TestTheStreamCheckerCatchesAWatchStreamThatLosesALine(c *gc.C) {
	// The staying /watch stream loses a change.
	var dropped atomic.Bool
	var changes atomic.Int64
	wire := wiring{watchDrop: func(stream string, line watchLine) bool {
		// The second, after a position the first gave: the first change
		// of a model found after snapshot_end has none to follow.
		return stream == "watch" && line.Position != "" && !line.Snapshot && changes.Add(1) == 2 && dropped.CompareAndSwap(false, true)
	}}
	out, err := runPlan(contendedPlan(), wire, c.Logf)
	c.Assert(err, gc.IsNil)
	c.Assert(dropped.Load(), gc.Equals, true)
	assertCaught(c, out.violations, "streams", fmt.Sprintf("c%d event", watchCtrl))
}

func (s *controlsSuite) TestTheReplyLostFaultLosesRepliesOfAppliedWrites(c *gc.C) {
	plan := contendedPlan()
	plan.Injected = []robustness.FaultPlan{{Kind: robustness.FaultReplyLost, At: 500 * ms, For: 6 * time.Second, Ctrl: 0, Share: 0.5}}
	out, err := runPlan(plan, wiring{}, c.Logf)
	c.Assert(err, gc.IsNil)
	// Writes through controller 0 lost their replies (its flushes and
	// lease writes failed), and every checker still passes: a lost
	// reply is not a lost write.
	unknown := 0
	for _, op := range out.ops {
		switch op.Kind {
		case robustness.OpFlush, robustness.OpClaim, robustness.OpRelease, robustness.OpWrite:
			if op.Ctrl == 0 && op.Result == robustness.Unknown {
				unknown++
			}
		}
	}
	c.Check(unknown > 0, gc.Equals, true, gc.Commentf("no write through controller 0 lost its reply"))
	c.Check(out.violations, gc.HasLen, 0)
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAGrantOfALeaseItsHolderPinned(c *gc.C) {
	ops := []robustness.Op{
		claim("app/1", 0, 10*ms, robustness.Ok),
		leaseOp(robustness.OpPin, "app/1", 100*ms, 110*ms, robustness.Ok, 0),
		claim("app/2", 5000*ms, 5010*ms, robustness.Ok),
	}
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
	// Unpinned first, the lease lapsed: legal.
	ops = append(ops, leaseOp(robustness.OpUnpin, "app/1", 4000*ms, 4010*ms, robustness.Ok, 0))
	c.Assert(robustness.CheckLeases(ops, bounds), gc.HasLen, 0)
}

func (s *controlsSuite) TestTheLeaseCheckerCatchesAPinLostAtAChangeOfHolder(c *gc.C) {
	ops := []robustness.Op{
		claim("app/1", 0, 10*ms, robustness.Ok),
		leaseOp(robustness.OpPin, "app/1", 100*ms, 110*ms, robustness.Ok, 0),
		leaseOp(robustness.OpRelease, "app/1", 1000*ms, 1010*ms, robustness.Ok, 0),
		claim("app/2", 1100*ms, 1110*ms, robustness.Ok),
		// app/2's claim would have lapsed by 4.1 s, but app/1's pin
		// holds whoever leads.
		claim("app/3", 5000*ms, 5010*ms, robustness.Ok),
	}
	assertCaught(c, robustness.CheckLeases(ops, bounds), "leases", "not linearizable")
	ops = append(ops, leaseOp(robustness.OpUnpin, "app/1", 2000*ms, 2010*ms, robustness.Ok, 0))
	c.Assert(robustness.CheckLeases(ops, bounds), gc.HasLen, 0)
}

func (s *controlsSuite) TestThePresenceCheckerAllowsAStaleLifeOnlyAfterNoWriterWroteForAPeriod(c *gc.C) {
	b := presenceBounds
	b.AllLate = time.Second
	late := legalPresence()
	late[4].Call, late[4].Return = 3800*ms, 3800*ms // 300 ms past the bound
	// Writers 0 and 5 wrote all along: a stale life.
	ops := append(append(append([]robustness.Op(nil), late...), flushes(0, 0, 2000*ms)...), flushes(5, 0, 10*time.Second)...)
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, b), "presence", "stale life")
	// Neither wrote from 2 s to 3.2 s: every writer was late, and the
	// reader may hold as after trouble.
	ops = append(append(append([]robustness.Op(nil), late...), flushes(0, 0, 2000*ms)...), append(flushes(5, 0, 2000*ms), flushes(5, 3200*ms, 10*time.Second)...)...)
	c.Assert(robustness.CheckPresence(ops, 10*time.Second, b), gc.HasLen, 0)
	assertCaught(c, robustness.AllowedDeaths(ops, 10*time.Second, b), "presence", "no writer wrote for a Period")
}

func (s *controlsSuite) TestThePresenceCheckerEndsARemovedModelsStreamsAtItsRemoval(c *gc.C) {
	// The key stops at 2 s and its model is removed at 2.5 s: its
	// streams end there, before its death was due.
	ops := append(legalPresence()[:3], robustness.Op{Kind: robustness.OpStop, Model: "m", Key: "machine-0", Run: 1, Call: 2000 * ms, Return: 2001 * ms, Result: robustness.Ok})
	assertCaught(c, robustness.CheckPresence(ops, 10*time.Second, presenceBounds), "presence", "stale life")
	remove := fault(robustness.FaultModelRemove, -1, 2500*ms, 2600*ms)
	remove.Model = "m"
	c.Assert(robustness.CheckPresence(append(ops, remove), 10*time.Second, presenceBounds), gc.HasLen, 0)
	// Another model's key is held to its bounds all the same.
	remove.Model = "other"
	assertCaught(c, robustness.CheckPresence(append(ops, remove), 10*time.Second, presenceBounds), "presence", "stale life")
}

func (s *controlsSuite) TestTheResourceCheckerCatchesTermsLeftByARemoval(c *gc.C) {
	remove := fault(robustness.FaultModelRemove, -1, 2000*ms, 2100*ms)
	remove.Model = "m"
	sample := robustness.Op{Kind: robustness.OpSample, Ctrl: -1, Call: 3 * time.Second, Return: 3 * time.Second,
		Counts: map[string]int{"terms m/app": 1, "terms n/app": 1}}
	assertCaught(c, robustness.CheckResources([]robustness.Op{remove, sample}, 10*time.Second, robustness.ResourceBounds{}), "resources", "terms m/app keeps 1 terms after its model's removal")
	// A removal that failed promises nothing.
	remove.Note = "cannot remove"
	c.Assert(robustness.CheckResources([]robustness.Op{remove, sample}, 10*time.Second, robustness.ResourceBounds{}), gc.HasLen, 0)
}
