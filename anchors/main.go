// Command anchors measures presencekit beside etcd leases on one machine
// in one run: issue 28's anchors' table. For agents agents at one period
// (presencekit's Period, etcd's lease TTL; 10 s by default), it gives the
// requests a second that the server handles at rest, the server's CPU,
// and how long an observer takes to see an agent start, leave cleanly and
// die silently (200 events each, at random moments over a period).
//
//	cd anchors && go run .                 # etcd from PATH; about 4 minutes
//	cd anchors && go run . --etcd /usr/bin/etcd --agents 1000
//
// presencekit's side runs first, twice, each time on a fresh embedded
// server (out of process, as agenttest starts it; PRESENCE_TEST_MONGOD
// names a prebuilt binary): one controller the agents ping through
// (batcher, its own reader and the pruner, with the library's defaults)
// and another controller that reads, each on a client whose commands a
// wire proxy of its own counts; both controllers' readers tail the
// notices (push, the default) the first time and only poll
// (presencereader.Config.NoPush) the second. etcd's side runs next, on an etcd
// server started in a temporary directory: a lease per agent kept alive
// by its client's KeepAlive, the agent's key on it, agents spread over
// --clients clients, and an observer client watching the prefix;
// requests are the server's own grpc_server_msg_received_total. A clean
// leave is a Disconnect or a Revoke, a silent death a pinger stopped or a
// keepalive ended without a word.
//
// This is a module of its own so that presencekit's go.mod does not take
// etcd's client and its dependencies.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	etcd    string
	agents  int
	events  int
	clients int
	period  time.Duration
	rest    time.Duration
	only    map[string]bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var only string
	fs := flag.NewFlagSet("anchors", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.etcd, "etcd", "", "the etcd server binary (default: etcd on PATH)")
	fs.IntVar(&o.agents, "agents", 10000, "live agents on each side")
	fs.IntVar(&o.events, "events", 200, "events of each kind (start, clean leave, silent death)")
	fs.IntVar(&o.clients, "clients", 100, "etcd clients the agents are spread over")
	fs.DurationVar(&o.period, "period", 10*time.Second, "presencekit's Period and etcd's lease TTL (whole seconds)")
	fs.DurationVar(&o.rest, "rest", 20*time.Second, "the window over which requests are counted at rest")
	fs.StringVar(&only, "only", "ours,etcd", "the sides to run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.agents < 1, o.events < 1, o.clients < 1:
		return o, fmt.Errorf("--agents, --events and --clients must be positive")
	case o.period < time.Second || o.period%time.Second != 0:
		return o, fmt.Errorf("--period must be whole seconds, at least one")
	case o.rest <= 0:
		return o, fmt.Errorf("--rest must be positive")
	}
	o.only = make(map[string]bool)
	for _, side := range strings.Split(only, ",") {
		if side = strings.TrimSpace(side); side != "ours" && side != "etcd" {
			return o, fmt.Errorf("--only: unknown side %q (have ours, etcd)", side)
		}
		o.only[side] = true
	}
	if o.only["etcd"] && o.etcd == "" {
		path, err := exec.LookPath("etcd")
		if err != nil {
			return o, fmt.Errorf("no etcd on PATH (apt-get install etcd-server, or --etcd PATH, or --only ours)")
		}
		o.etcd = path
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "anchors:", err)
		return 2
	}
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	progress("machine: %s/%s, %d CPUs, %s; load average %s; %d agents, %d events, period/TTL %v",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAverage(), o.agents, o.events, o.period)
	var sides []result
	if o.only["ours"] {
		for _, noPush := range []bool{false, true} {
			res, err := measureOurs(o, noPush, progress)
			if err != nil {
				fmt.Fprintln(stderr, "anchors:", res.name+":", err)
				return 1
			}
			sides = append(sides, res)
		}
	}
	if o.only["etcd"] {
		res, err := measureEtcd(o, progress)
		if err != nil {
			fmt.Fprintln(stderr, "anchors: etcd:", err)
			return 1
		}
		sides = append(sides, res)
	}
	printTable(stdout, sides)
	for _, s := range sides {
		fmt.Fprintf(stdout, "\n%s: %s", s.name, s.breakdown)
	}
	fmt.Fprintln(stdout)
	return 0
}
