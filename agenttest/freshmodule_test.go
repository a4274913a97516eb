package agenttest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	gc "gopkg.in/check.v1"
)

type freshModuleSuite struct{}

var _ = gc.Suite(&freshModuleSuite{})

// TestAFreshModuleTestsItsConsumersAfterARequirementAlone builds, in a
// module of its own that only requires ours (through a replace), a
// consumer and its tests (one against agenttest/fakes, one against the
// embedded server through MongoSuite), and runs the test binary from a
// directory outside any module, with no prebuilt server: what a new user
// does after go get.
func (s *freshModuleSuite) TestAFreshModuleTestsItsConsumersAfterARequirementAlone(c *gc.C) {
	if _, err := exec.LookPath("go"); err != nil {
		c.Fatalf("the go command is needed: %v", err)
	}
	_, file, _, ok := runtime.Caller(0)
	c.Assert(ok, gc.Equals, true)
	root := filepath.Dir(filepath.Dir(file))
	module := c.MkDir()
	c.Assert(os.CopyFS(module, os.DirFS(filepath.Join(root, "agenttest", "testdata", "freshmodule"))), gc.IsNil)
	template, err := os.ReadFile(filepath.Join(module, "go.mod.in"))
	c.Assert(err, gc.IsNil)
	goMod := strings.ReplaceAll(string(template), "MODULE_ROOT", root)
	c.Assert(os.WriteFile(filepath.Join(module, "go.mod"), []byte(goMod), 0o644), gc.IsNil)

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PRESENCE_TEST_MONGOD=") && !strings.HasPrefix(kv, "GOFLAGS=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOWORK=off", "GOFLAGS=-mod=mod")
	run := func(dir string, name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		c.Assert(err, gc.IsNil, gc.Commentf("%s %s: %s", name, strings.Join(args, " "), out))
		return string(out)
	}
	run(module, "go", "mod", "tidy")
	binary := filepath.Join(module, "consumer.test")
	run(module, "go", "test", "-c", "-o", binary, "./consumer")
	out := run(os.TempDir(), binary, "-check.v")
	c.Check(out, gc.Matches, `(?s).*PASS: .*fakeSuite.TestLeadsOnlyWhileAlive.*`)
	c.Check(out, gc.Matches, `(?s).*PASS: .*serverSuite.TestTheEmbeddedServerStarts.*`)
	c.Check(out, gc.Matches, `(?s).*PASS: .*fakeSuite.TestTheManifoldLeadsOnFakes.*`)
	c.Check(out, gc.Matches, `(?s).*PASS: .*serverSuite.TestAControllerWithThreeModels.*`)
	c.Check(out, gc.Matches, `(?s).*OK: 4 passed.*`)
}
