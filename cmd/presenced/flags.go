package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Every command's flags are checked against the ranges below before
// anything is allocated or connected to; each range is in --help. A bad
// flag is one line on standard error, with a pointer to --help, and exit
// code 2; --help prints the whole usage and exits 0.

// durationRange and intRange are a flag's sane values, inclusive.
type durationRange struct{ min, max time.Duration }
type intRange struct{ min, max int }

// String returns the range as --help shows it.
func (r durationRange) String() string { return fmt.Sprintf("%v to %v", r.min, r.max) }

// String returns the range as --help shows it.
func (r intRange) String() string { return fmt.Sprintf("%d to %d", r.min, r.max) }

// The ranges of the flags.
var (
	rangeAgents       = intRange{1, 100_000}
	rangeModels       = intRange{1, 1_000}
	rangeApps         = intRange{0, 100}
	rangeUnits        = intRange{1, 100}
	rangeStreams      = intRange{1, 10_000}
	rangePeriod       = durationRange{100 * time.Millisecond, time.Hour}
	rangeFlush        = durationRange{10 * time.Millisecond, time.Minute}
	rangeSync         = durationRange{10 * time.Millisecond, time.Minute}
	rangeChurn        = durationRange{time.Millisecond, time.Hour}
	rangeDisplay      = durationRange{100 * time.Millisecond, time.Hour}
	rangeKeepalive    = durationRange{100 * time.Millisecond, time.Hour}
	rangeTimeout      = durationRange{100 * time.Millisecond, 10 * time.Minute}
	rangeWriteTimeout = durationRange{100 * time.Millisecond, 10 * time.Minute}
	rangeRefresh      = durationRange{100 * time.Millisecond, time.Hour}
	rangeDuration     = durationRange{0, 365 * 24 * time.Hour}
)

// maxUnits is the most units the demo runs, over every model and
// application: each claims leadership every Period.
const maxUnits = 10_000

// commandFlags is a command's flag set and what it needs to check them.
type commandFlags struct {
	*flag.FlagSet
	command string // "presenced", "presenced status", ...
	usage   string // the synopsis line
	stderr  io.Writer
	checks  []func() error
}

// newCommandFlags returns an empty flag set for command, whose --help
// prints usage (a synopsis) and every flag.
func newCommandFlags(command, usage string, stderr io.Writer) *commandFlags {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	// The flag package prints nothing itself: a bad flag is one line,
	// printed by flagError, and --help the usage, printed by parse.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &commandFlags{FlagSet: fs, command: command, usage: usage, stderr: stderr}
}

// durationIn defines a duration flag whose value must lie in r; its help
// says so.
func (f *commandFlags) durationIn(p *time.Duration, name string, value time.Duration, r durationRange, help string) {
	f.DurationVar(p, name, value, fmt.Sprintf("%s (%v)", help, r))
	f.checks = append(f.checks, func() error {
		if *p < r.min || *p > r.max {
			return fmt.Errorf("--%s %v is out of range (%v)", name, *p, r)
		}
		return nil
	})
}

// intIn defines an int flag whose value must lie in r; its help says so.
func (f *commandFlags) intIn(p *int, name string, value int, r intRange, help string) {
	f.IntVar(p, name, value, fmt.Sprintf("%s (%v)", help, r))
	f.checks = append(f.checks, func() error {
		if *p < r.min || *p > r.max {
			return fmt.Errorf("--%s %d is out of range (%v)", name, *p, r)
		}
		return nil
	})
}

// parse parses args, flags and arguments in any order if interleaved,
// checks every flag's range and returns the arguments. On --help it
// prints the usage and returns flag.ErrHelp; any other error is a
// usageError, one line.
func (f *commandFlags) parse(args []string, interleaved bool) ([]string, error) {
	var out []string
	rest := args
	for {
		if err := f.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.printUsage()
				return nil, err
			}
			return nil, f.bad(err)
		}
		rest = f.Args()
		if !interleaved || len(rest) == 0 {
			out = append(out, rest...)
			break
		}
		out = append(out, rest[0])
		rest = rest[1:]
	}
	for _, check := range f.checks {
		if err := check(); err != nil {
			return nil, f.bad(err)
		}
	}
	return out, nil
}

// printUsage prints the synopsis and every flag with its default and
// range.
func (f *commandFlags) printUsage() {
	fmt.Fprintf(f.stderr, "usage: %s\n", f.usage)
	f.SetOutput(f.stderr)
	f.PrintDefaults()
	f.SetOutput(io.Discard)
}

// bad returns err as the command's usage error.
func (f *commandFlags) bad(err error) error {
	return usageError{command: f.command, err: err}
}

// required returns a usage error naming every one of the flags whose
// value is empty, or nil.
func (f *commandFlags) required(flags map[string]string) error {
	var missing []string
	f.VisitAll(func(fl *flag.Flag) {
		if value, ok := flags[fl.Name]; ok && value == "" {
			missing = append(missing, "--"+fl.Name)
		}
	})
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return f.bad(fmt.Errorf("%s is required", missing[0]))
	}
	return f.bad(fmt.Errorf("%s and %s are required", strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1]))
}

// given reports whether the flag name was set on the command line.
func (f *commandFlags) given(name string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// usageError is a bad command line: printed as one line with a pointer
// to --help.
type usageError struct {
	command string
	err     error
}

// Error returns "command: reason (see command --help)".
func (e usageError) Error() string {
	return fmt.Sprintf("%s: %v (see %s --help)", e.command, e.err, e.command)
}

// flagError prints err, one line, and returns the exit code for bad flags
// (0 for --help, whose usage is already printed).
func flagError(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var usage usageError
	if !errors.As(err, &usage) {
		err = usageError{command: "presenced", err: err}
	}
	fmt.Fprintln(stderr, err)
	return exitBadFlag
}
