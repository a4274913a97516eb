package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/embedded"
	"github.com/presencekit/presence/internal/commands"
	"github.com/presencekit/presence/internal/schema"
	"github.com/presencekit/presence/worker/pingbatcher"
	"github.com/presencekit/presence/worker/pinger"
)

// serverFlag makes the binary run as the embedded server, so that the
// measuring process's CPU time and allocations are its own, and so that
// the stalls section can pause and kill a server of its own.
const serverFlag = "--serve-embedded"

func init() {
	if len(os.Args) == 4 && os.Args[1] == serverFlag {
		os.Exit(serveEmbedded(os.Args[2], os.Args[3]))
	}
}

// serveEmbedded runs the embedded server on dir, listening on listen (any
// free loopback port if empty), until standard input closes.
func serveEmbedded(dir, listen string) int {
	embedded.TuneServerProcess()
	srv, err := embedded.Start(embedded.Config{Dir: dir, Listen: listen})
	if err != nil {
		fmt.Fprintln(os.Stderr, "presencebench server:", err)
		return 1
	}
	fmt.Printf("ready %s\n", srv.URI())
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Stop()
	return 0
}

// child is an embedded server in a child process.
type child struct {
	dir    string
	uri    string
	listen string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
}

// startChild starts a server on dir, listening on listen (a free port if
// empty).
func startChild(dir, listen string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, serverFlag, dir, listen)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	uri, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("embedded server did not start: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	parsed, err := url.Parse(uri)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("embedded server URI %q: %w", uri, err)
	}
	return &child{dir: dir, uri: uri, listen: parsed.Host, cmd: cmd, stdin: stdin}, nil
}

// signal sends sig to the server.
func (c *child) signal(sig syscall.Signal) error {
	return c.cmd.Process.Signal(sig)
}

// kill kills the server at once, as a crash would.
func (c *child) kill() error {
	if err := c.cmd.Process.Kill(); err != nil {
		return err
	}
	_ = c.cmd.Wait()
	return nil
}

// restart starts a killed server again on the same data and address,
// retrying while the port is still taken.
func (c *child) restart() error {
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		var next *child
		if next, err = startChild(c.dir, c.listen); err == nil {
			*c = *next
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// stop stops the server cleanly.
func (c *child) stop() {
	_ = c.signal(syscall.SIGCONT)
	_ = c.stdin.Close()
	_ = c.cmd.Wait()
}

// env is the database the benchmarks run against.
type env struct {
	opts     options
	progress io.Writer
	uri      string
	dir      string
	server   *child
	seq      int
}

func newEnv(o options, progress io.Writer) (*env, error) {
	e := &env{opts: o, progress: progress, uri: o.mongoURI}
	if e.uri != "" {
		return e, nil
	}
	dir, err := os.MkdirTemp("", "presencebench-")
	if err != nil {
		return nil, err
	}
	e.dir = dir
	if e.server, err = startChild(dir, ""); err != nil {
		return nil, err
	}
	e.uri = e.server.uri
	return e, nil
}

func (e *env) describe() string {
	if e.server != nil {
		return "embedded FerretDB v1 on SQLite, in a child process, at " + e.uri
	}
	return e.uri
}

// database returns a fresh database on a client of its own, with extra
// client options (e.g. a command counter), and a function that
// disconnects the client and then drops the database.
func (e *env) database(extra ...*mongooptions.ClientOptions) (*mongo.Database, func(), error) {
	db, disconnect, err := e.connect(e.uri, extra...)
	if err != nil {
		return nil, nil, err
	}
	return db, func() {
		disconnect()
		e.drop(db.Name())
	}, nil
}

// connect returns a fresh database on a new client of uri, and a function
// that disconnects that client.
func (e *env) connect(uri string, extra ...*mongooptions.ClientOptions) (*mongo.Database, func(), error) {
	opts := append([]*mongooptions.ClientOptions{mongooptions.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second)}, extra...)
	client, err := mongo.Connect(opts...)
	if err != nil {
		return nil, nil, err
	}
	// A server that has just been hammered (the naive writes) may drop
	// a first connection: try again for a while before giving up.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for err := client.Ping(ctx, nil); err != nil; err = client.Ping(ctx, nil) {
		if ctx.Err() != nil {
			_ = client.Disconnect(context.Background())
			return nil, nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.seq++
	db := client.Database(fmt.Sprintf("presencebench_%d_%d", os.Getpid(), e.seq))
	return db, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = client.Disconnect(ctx)
	}, nil
}

// drop drops the named database of the env's server on a client of its
// own. Call it only once the clients (and proxies) that used the database
// are gone, so that nothing of theirs still in flight creates it again.
func (e *env) drop(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := mongo.Connect(mongooptions.Client().ApplyURI(e.uri).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return
	}
	_ = client.Database(name).Drop(ctx)
	_ = client.Disconnect(ctx)
}

// counted returns a fresh database whose client counts its commands.
func (e *env) counted() (*mongo.Database, *commands.Counter, func(), error) {
	counter := &commands.Counter{}
	db, done, err := e.database(counter.Options())
	return db, counter, done, err
}

func (e *env) close() {
	if e.server != nil {
		e.server.stop()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.progress, "   "+format+"\n", args...)
}

// batcher returns a fresh database's base collection and a ping batcher
// on it that writes only when asked to (Sync), with n identities
// spread over models models under keys made by key, and a function that stops
// both.
func (e *env) batcher(n, models int, key func(int) string, extra ...*mongooptions.ClientOptions) (*mongo.Collection, *pingbatcher.PingBatcher, []pinger.Identity, func(), error) {
	db, done, err := e.database(extra...)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	base := db.Collection("presence")
	b, err := pingbatcher.New(pingbatcher.Config{Base: base, FlushInterval: time.Hour, Clock: clock.WallClock})
	if err != nil {
		done()
		return nil, nil, nil, nil, err
	}
	stop := func() {
		b.Kill()
		_ = b.Wait()
		done()
	}
	ids := make([]pinger.Identity, n)
	for i := range ids {
		if ids[i], err = b.Register(base, modelTag(i%models), key(i)); err != nil {
			stop()
			return nil, nil, nil, nil, err
		}
	}
	return base, b, ids, stop, nil
}

// writeStates pings, in slot, each of ids for which alive(i) holds and
// disconnects the others, then has b write them all (Sync).
func writeStates(b *pingbatcher.PingBatcher, ids []pinger.Identity, slot int64, alive func(i int) bool) error {
	for i, id := range ids {
		var err error
		if alive(i) {
			err = b.Ping(id, slot)
		} else {
			err = b.Disconnect(id, slot)
		}
		if err != nil {
			return err
		}
	}
	return b.Sync()
}

// allAlive is writeStates' alive for a write that pings every identity.
func allAlive(int) bool { return true }

// currentSlot returns the slot of the wall clock's now at the library's
// default period.
func currentSlot() int64 {
	return schema.Slot(time.Now(), schema.DefaultPeriod)
}
