// Command embeddedmongo runs the embedded MongoDB-wire server (FerretDB on
// SQLite) as a process of its own, for tests.
//
// Package agenttest builds and starts it so that race-enabled test binaries
// do not carry an instrumented database server, which runs 20-40 times
// slower. It prints "ready URI" on standard output once it accepts
// connections, and exits when standard input closes or on SIGTERM/SIGINT.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/presencekit/presence/embedded"
)

func main() {
	dir := flag.String("dir", "", "directory for the SQLite files (required)")
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on")
	flag.Parse()
	embedded.TuneServerProcess()

	srv, err := embedded.Start(embedded.Config{Dir: *dir, Listen: *listen})
	if err != nil {
		fmt.Fprintln(os.Stderr, "embeddedmongo:", err)
		os.Exit(2)
	}
	fmt.Printf("ready %s\n", srv.URI())

	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stdinClosed:
	case <-signals:
	}
	srv.Stop()
}
