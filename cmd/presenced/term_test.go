package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/juju/clock/testclock"
	"golang.org/x/sys/unix"
	gc "gopkg.in/check.v1"

	"github.com/presencekit/presence/agenttest"
)

type termSuite struct{}

var _ = gc.Suite(&termSuite{})

// demoStatus returns a status of n models with long lines.
func demoStatus(n int) statusDoc {
	st := statusDoc{UptimeSeconds: 61, Agents: 10 * n, Alive: 9 * n, Detections: map[string]int{"crash": 3}, RateWindow: 10}
	for i := range n {
		leaders := map[string]leader{}
		for a := range 20 {
			leaders[fmt.Sprintf("application-%d", a)] = leader{Unit: fmt.Sprintf("application-%d/0", a), Fence: 7}
		}
		st.Models = append(st.Models, modelStatus{Model: modelID(i), Agents: 10, Alive: 9, Leaders: leaders})
	}
	st.Warnings = []string{"falling behind: 3 keys held alive without a live ping (a controller is late)"}
	return st
}

func (*termSuite) TestFramesHaveAFixedHeightAndFitTheWidth(c *gc.C) {
	var out bytes.Buffer
	t := &terminal{out: &out, clock: testclock.NewClock(time.Unix(0, 0)), tty: true, width: 80}
	t.status(demoStatus(2))
	first := out.String()
	c.Assert(strings.Count(first, "\n"), gc.Equals, frameHeight)
	for range 500 {
		t.line("DEAD  machine-1  model 0  1.20s after crash", false)
	}
	t.line("ERROR \"ping-batcher\" manifold worker returned unexpected error: "+strings.Repeat("x", 200), true)
	out.Reset()
	t.status(demoStatus(30))
	redraw := out.String()
	prefix := fmt.Sprintf("\x1b[%dF\x1b[J", frameHeight)
	c.Assert(strings.HasPrefix(redraw, prefix), gc.Equals, true, gc.Commentf("%q", redraw))
	lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(redraw, prefix), "\n"), "\n")
	c.Assert(lines, gc.HasLen, frameHeight)
	for _, l := range lines {
		c.Check(utf8.RuneCountInString(l) <= 80, gc.Equals, true, gc.Commentf("%q", l))
	}
	c.Assert(redraw, gc.Matches, `(?s).*WARNING: falling behind.*\.\.\. and 22 more models.*machine-1.*ping-batcher.*`)
}

func (*termSuite) TestThePlainLogBoundsDetectionLinesPerSecond(c *gc.C) {
	var out bytes.Buffer
	clk := testclock.NewClock(time.Unix(0, 0))
	t := &terminal{out: &out, clock: clk, width: 100}
	for range 3000 {
		t.line("DEAD  machine-1  model 0  1.20s after crash", false)
	}
	t.line("ERROR reader: cannot read", true)
	c.Assert(strings.Count(out.String(), "DEAD"), gc.Equals, maxLinesPerSecond)
	c.Assert(strings.Count(out.String(), "ERROR"), gc.Equals, 1)
	t.status(demoStatus(30))
	c.Assert(out.String(), gc.Matches, fmt.Sprintf(`(?s).*\(%d detection lines not shown: more than %d a second\).*`, 3000-maxLinesPerSecond, maxLinesPerSecond))
	c.Assert(strings.Count(out.String(), "   model "), gc.Equals, viewModels)
	clk.Advance(time.Second)
	out.Reset()
	t.line("DEAD  machine-2  model 0  1.20s after crash", false)
	c.Assert(out.String(), gc.Equals, "DEAD  machine-2  model 0  1.20s after crash\n")
}

// openPTY returns the two ends of a new pseudo-terminal of 80 columns.
func openPTY(c *gc.C) (master, slave *os.File) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		c.Skip(fmt.Sprintf("no pseudo-terminals here: %v", err))
	}
	fd := int(master.Fd())
	c.Assert(unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0), gc.IsNil)
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	c.Assert(err, gc.IsNil)
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	c.Assert(err, gc.IsNil)
	c.Assert(unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 80}), gc.IsNil)
	return master, slave
}

func (*termSuite) TestOnATerminalTheDemoRedrawsOneFrameInPlace(c *gc.C) {
	master, slave := openPTY(c)
	defer master.Close()
	cmd := exec.Command(build(c), "--listen", "127.0.0.1:0", "--agents", "40", "--models", "10",
		"--period", "1s", "--flush", "100ms", "--sync", "100ms", "--churn", "20ms", "--display", "200ms")
	cmd.Stdout, cmd.Stderr = slave, os.Stderr
	c.Assert(cmd.Start(), gc.IsNil)
	defer func() { _ = cmd.Process.Kill() }()
	slave.Close()

	var screen syncBuffer
	copied := make(chan struct{})
	go func() {
		// Ends with EIO once the demo exits: nobody holds the other end.
		_, _ = io.Copy(&screen, master)
		close(copied)
	}()
	redraw := fmt.Sprintf("\x1b[%dF\x1b[J", frameHeight)
	c.Assert(agenttest.Retry(time.Minute, func() error {
		if text := screen.String(); strings.Count(text, redraw) < 4 {
			return fmt.Errorf("fewer than four frames: %q", text)
		}
		return nil
	}), gc.IsNil)
	c.Assert(cmd.Process.Signal(syscall.SIGINT), gc.IsNil)
	c.Assert(cmd.Wait(), gc.IsNil)
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		c.Fatalf("the terminal did not close")
	}

	text := strings.ReplaceAll(screen.String(), "\r\n", "\n")
	chunks := strings.Split(text, redraw)
	// Between two redraws: exactly one frame, nothing scrolled in.
	for _, frame := range chunks[1 : len(chunks)-1] {
		lines := strings.Split(strings.TrimSuffix(frame, "\n"), "\n")
		c.Assert(lines, gc.HasLen, frameHeight, gc.Commentf("%q", frame))
		for _, l := range lines {
			c.Check(utf8.RuneCountInString(l) <= 80, gc.Equals, true, gc.Commentf("%q", l))
		}
		c.Assert(lines[0], gc.Matches, `presenced demo \| up .* \| 10 models \| .*`)
	}
	c.Assert(chunks[len(chunks)-1], gc.Matches, `(?s).*stopped cleanly.*`)
}
