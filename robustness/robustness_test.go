package robustness_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/juju/errors"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/robustness"
)

var (
	seedsFlag    = flag.String("robustness.seeds", "", "comma-separated seeds to replay instead of the CI leg's")
	faultsFlag   = flag.String("robustness.faults", "ci", "fault kinds to inject: a comma-separated list of kinds, or ci, all, none")
	durationFlag = flag.Duration("robustness.duration", 0, "run random seeds one after another for this long (a long run) instead of the CI leg")
	lengthFlag   = flag.Duration("robustness.scenario", 15*time.Second, "how long each scenario runs")
	recheckFlag  = flag.String("robustness.recheck", "", "check the history a -robustness.dump wrote to FILE (of the one seed of -robustness.seeds, with -robustness.faults and -robustness.scenario as it ran) instead of running")
	dumpFlag     = flag.String("robustness.dump", "", "write the history of every seed that fails to DIR/<seed>.json, one operation per line")
)

// ciSeeds are the CI leg's fixed seeds; it adds ciRandom random ones.
var ciSeeds = []uint64{1, 2, 3}

const ciRandom = 2

type robustnessSuite struct{}

var _ = gc.Suite(&robustnessSuite{})

// seeds returns the seeds to run: those of -robustness.seeds, or the CI
// leg's fixed and random seeds.
func seeds(c *gc.C) []uint64 {
	if *seedsFlag != "" {
		var out []uint64
		for _, s := range strings.Split(*seedsFlag, ",") {
			seed, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
			c.Assert(err, gc.IsNil)
			out = append(out, seed)
		}
		return out
	}
	out := append([]uint64(nil), ciSeeds...)
	for range ciRandom {
		out = append(out, rand.Uint64()%1_000_000)
	}
	return out
}

// runSeed runs one seed's scenario and reports its violations; it says
// how to replay it.
func runSeed(c *gc.C, seed uint64, faults []robustness.FaultKind) bool {
	plan := robustness.NewPlan(seed, *lengthFlag, faults)
	c.Logf("running %s", plan)
	out, err := runPlan(plan, wiring{}, c.Logf)
	c.Assert(err, gc.IsNil)
	writes := map[robustness.Result]int{}
	pins := 0
	for _, op := range out.ops {
		switch {
		case op.Kind == robustness.OpWrite:
			writes[op.Result]++
		case op.Kind == robustness.OpPin && op.Result == robustness.Ok:
			pins++
		}
	}
	c.Logf("seed %d: %d operations and events (%s) in %v (guarded writes: %d applied, %d fenced, %d unknown; %d pins), %d violations, %d deaths allowed",
		seed, len(out.ops), watchedModels(out.ops), out.took.Round(time.Millisecond), writes[robustness.Ok], writes[robustness.Denied], writes[robustness.Unknown], pins, len(out.violations), len(out.allowed))
	for i, v := range out.allowed {
		if i == 5 {
			c.Logf("... and %d more allowed deaths", len(out.allowed)-i)
			break
		}
		c.Logf("allowed (the writer wrote nothing for the whole bound): %s", v)
	}
	for _, op := range out.ops {
		if op.Kind == robustness.OpFault && op.Note != "" && op.Note != "[]" {
			c.Logf("fault: %s", op)
		}
	}
	for _, frozen := range robustness.FrozenLeases(out.ops) {
		c.Logf("frozen lease (allowed): %s", frozen)
	}
	for i, v := range out.violations {
		if i == 10 {
			c.Logf("... and %d more", len(out.violations)-i)
			break
		}
		c.Logf("VIOLATION %s", v)
	}
	if len(out.violations) > 0 && *dumpFlag != "" {
		c.Check(dump(filepath.Join(*dumpFlag, fmt.Sprintf("%d.json", seed)), out.ops), gc.IsNil)
	}
	if len(out.violations) > 0 {
		c.Errorf("seed %d broke %d promises; replay with: go test ./robustness/ -check.f %s -robustness.seeds=%d -robustness.faults=%s -robustness.scenario=%v",
			seed, len(out.violations), "TestGeneratedScenariosKeepEveryPromise", seed, *faultsFlag, *lengthFlag)
		return false
	}
	return true
}

func (s *robustnessSuite) TestGeneratedScenariosKeepEveryPromise(c *gc.C) {
	faults, err := robustness.ParseFaults(*faultsFlag)
	c.Assert(err, gc.IsNil)
	if *recheckFlag != "" {
		s.recheck(c, faults)
		return
	}
	if *durationFlag > 0 {
		s.longRun(c, faults)
		return
	}
	for _, seed := range seeds(c) {
		runSeed(c, seed, faults)
	}
}

// longRun runs random seeds until -robustness.duration has passed and
// sums up what it ran and found.
func (s *robustnessSuite) longRun(c *gc.C, faults []robustness.FaultKind) {
	start := time.Now()
	var ran, failed []string
	for time.Since(start) < *durationFlag {
		seed := rand.Uint64() % 1_000_000
		found := time.Since(start).Round(time.Second)
		if !runSeed(c, seed, faults) {
			failed = append(failed, fmt.Sprintf("%d (after %v)", seed, found))
		}
		ran = append(ran, fmt.Sprint(seed))
	}
	c.Logf("long run: %d seeds in %v with faults %v: %s; failed: %v", len(ran), time.Since(start).Round(time.Second), faults, strings.Join(ran, ","), failed)
}

// dump writes ops to path, one JSON object per line.
func dump(path string, ops []robustness.Op) error {
	f, err := os.Create(path)
	if err != nil {
		return errors.Trace(err)
	}
	enc := json.NewEncoder(f)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			_ = f.Close()
			return errors.Trace(err)
		}
	}
	return errors.Trace(f.Close())
}

// recheck checks the history of -robustness.recheck again, with the
// checkers as they are now.
func (s *robustnessSuite) recheck(c *gc.C, faults []robustness.FaultKind) {
	seeds := seeds(c)
	c.Assert(seeds, gc.HasLen, 1)
	f, err := os.Open(*recheckFlag)
	c.Assert(err, gc.IsNil)
	defer f.Close()
	var ops []robustness.Op
	var end time.Duration
	for dec := json.NewDecoder(f); dec.More(); {
		var op robustness.Op
		c.Assert(dec.Decode(&op), gc.IsNil)
		ops = append(ops, op)
		end = max(end, op.Call, op.Return)
	}
	violations, allowed := check(robustness.NewPlan(seeds[0], *lengthFlag, faults), ops, end)
	for _, v := range allowed {
		c.Logf("allowed: %s", v)
	}
	for _, v := range violations {
		c.Errorf("VIOLATION %s", v)
	}
}
