package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/juju/clock"
	"golang.org/x/sys/unix"
)

// The terminal view's limits.
const (
	// viewModels is how many models a frame or a status block lists.
	viewModels = 8
	// viewDetections and viewErrors are how many of the latest
	// detections and error lines a frame shows.
	viewDetections = 6
	viewErrors     = 3
	// maxLinesPerSecond bounds the plain log's detection and error
	// lines, whatever the number of agents; those beyond are counted.
	maxLinesPerSecond = 20
	// defaultWidth is the width of a terminal whose width is unknown.
	defaultWidth = 100
)

// frameHeight is how many lines every frame of the terminal view has:
// the header, the warnings, the models (and a line for those not
// listed), the detections and the errors, each with a title.
const frameHeight = 2 + 1 + viewModels + 1 + 1 + viewDetections + 1 + viewErrors

// terminal shows the demo to a person. On a terminal it redraws one
// frame of fixed height in place, so nothing scrolls; elsewhere (a pipe,
// a file) it writes a plain log, whose detection and error lines are
// bounded to maxLinesPerSecond. It is safe for concurrent use.
type terminal struct {
	out   io.Writer
	clock clock.Clock
	tty   bool
	width int

	mu         sync.Mutex
	detections []string // the latest, oldest first (tty)
	errors     []string // the latest, oldest first (tty)
	drawn      bool     // a frame is on the screen (tty)
	second     time.Time
	printed    int // lines printed in the current second (plain)
	held       int // lines held back since the last status (plain)
}

// newTerminal returns a terminal view writing to out, redrawn in place
// when out is a terminal.
func newTerminal(out io.Writer, clk clock.Clock) *terminal {
	t := &terminal{out: out, clock: clk, width: defaultWidth}
	target := out
	if d, ok := out.(interface{ underlying() io.Writer }); ok {
		target = d.underlying()
	}
	if f, ok := target.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			t.tty = true
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 20 {
				t.width = int(ws.Col)
			}
		}
	}
	return t
}

// line shows one detection or error line: in the next frame on a
// terminal, at once in a plain log; there, beyond maxLinesPerSecond
// detection lines in a second are counted instead (error lines are
// limited per cause by the lineLogger).
func (t *terminal) line(text string, isError bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tty {
		if isError {
			t.errors = latest(t.errors, text, viewErrors)
		} else {
			t.detections = latest(t.detections, text, viewDetections)
		}
		return
	}
	now := t.clock.Now()
	if now.Sub(t.second) >= time.Second {
		t.second, t.printed = now, 0
	}
	if !isError {
		if t.printed >= maxLinesPerSecond {
			t.held++
			return
		}
		t.printed++
	}
	fmt.Fprintln(t.out, text)
}

// Write is for the lineLogger: each line written is an error line.
func (t *terminal) Write(p []byte) (int, error) {
	for _, text := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		t.line(text, true)
	}
	return len(p), nil
}

// status shows st: a new frame on a terminal, a status block in a plain
// log.
func (t *terminal) status(st statusDoc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.tty {
		var b strings.Builder
		for _, l := range strings.SplitAfter(statusText(st), "\n") {
			if l != "" {
				b.WriteString(truncate(strings.TrimSuffix(l, "\n"), t.width) + "\n")
			}
		}
		text := b.String()
		if t.held > 0 {
			text += fmt.Sprintf("   (%d detection lines not shown: more than %d a second)\n", t.held, maxLinesPerSecond)
			t.held = 0
		}
		fmt.Fprint(t.out, text)
		return
	}
	var b strings.Builder
	if t.drawn {
		// Back to the frame's first line, and clear to the end.
		fmt.Fprintf(&b, "\x1b[%dF\x1b[J", frameHeight)
	}
	for _, l := range t.frame(st) {
		b.WriteString(l)
		b.WriteString("\n")
	}
	t.drawn = true
	fmt.Fprint(t.out, b.String())
}

// frame returns the lines of a frame for st: exactly frameHeight, none
// wider than the terminal. t.mu must be held.
func (t *terminal) frame(st statusDoc) []string {
	lines := make([]string, 0, frameHeight)
	add := func(format string, args ...any) {
		lines = append(lines, fmt.Sprintf(format, args...))
	}
	add("presenced demo | up %s | %d models | %d/%d agents alive | db writes %.1f/s (last %gs)",
		time.Duration(st.UptimeSeconds)*time.Second, len(st.Models), st.Alive, st.Agents, st.WritesPerSecond, st.RateWindow)
	add("detections: %s", detectionCounts(st))
	if len(st.Warnings) > 0 {
		add("WARNING: %s", strings.Join(st.Warnings, "; "))
	} else {
		add("")
	}
	for i := 0; i < viewModels; i++ {
		if i < len(st.Models) {
			lines = append(lines, modelLine(i, st.Models[i]))
		} else {
			add("")
		}
	}
	if more := len(st.Models) - viewModels; more > 0 {
		add("   ... and %d more models (GET /status lists all)", more)
	} else {
		add("")
	}
	add("latest detections:")
	for i := 0; i < viewDetections; i++ {
		if i < len(t.detections) {
			add("   %s", t.detections[i])
		} else {
			add("")
		}
	}
	add("latest errors:")
	for i := 0; i < viewErrors; i++ {
		if i < len(t.errors) {
			add("   %s", t.errors[i])
		} else {
			add("")
		}
	}
	for i, l := range lines {
		lines[i] = truncate(l, t.width)
	}
	return lines
}

// statusText renders a status block for a plain log: at most viewModels
// models.
func statusText(st statusDoc) string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- up %s | %d models, %d/%d agents alive | db writes %.1f/s | detections: %s\n",
		time.Duration(st.UptimeSeconds)*time.Second, len(st.Models), st.Alive, st.Agents, st.WritesPerSecond, detectionCounts(st))
	for _, w := range st.Warnings {
		fmt.Fprintf(&b, "   WARNING: %s\n", w)
	}
	for i, m := range st.Models {
		if i == viewModels {
			fmt.Fprintf(&b, "   ... and %d more models\n", len(st.Models)-viewModels)
			break
		}
		b.WriteString(modelLine(i, m))
		b.WriteString("\n")
	}
	return b.String()
}

func detectionCounts(st statusDoc) string {
	var parts []string
	for _, cause := range sortedKeys(st.Detections) {
		name := cause
		if name == "" {
			name = "other"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, st.Detections[cause]))
	}
	return strings.Join(parts, " ")
}

func modelLine(i int, m modelStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "   model %d  alive %d/%d  leaders:", i, m.Alive, m.Agents)
	for _, app := range sortedKeys(m.Leaders) {
		fmt.Fprintf(&b, " %s(fence %d)", m.Leaders[app].Unit, m.Leaders[app].Fence)
	}
	return b.String()
}

// latest appends text to list and keeps the last n.
func latest(list []string, text string, n int) []string {
	list = append(list, text)
	if len(list) > n {
		list = append(list[:0], list[len(list)-n:]...)
	}
	return list
}

// truncate cuts s to width runes, marking a cut with "…".
func truncate(s string, width int) string {
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}
