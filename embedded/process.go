package embedded

import (
	"os"
	"runtime/debug"
)

// serverGCPercent is the garbage collector's target of a process that
// runs the server alone. The server allocates a few hundred megabytes a
// second under load (each query's documents decoded, converted and
// encoded again) over a live heap of a few megabytes, so with Go's
// default of 100 it collected about 120 times a second, 8% of the CPU
// time of its two cores, at 100,000 agents over 1,000 models
// (presencebench's scale section). At 800 its heap peaks near 32 MB and
// it collects a fifteenth as often (2 times a second rather than 32 at
// 10,000 agents over 1,000 models).
const serverGCPercent = 800

// TuneServerProcess sets the garbage collector of a process that runs
// nothing but the server (a child process of tests or benchmarks) for the
// server's allocation pattern, unless the GOGC environment variable
// chooses already. It changes the whole process: call it from such a
// process's main, never from a process that does other work.
func TuneServerProcess() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
}
