package agenttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// MongoURIEnv names the environment variable that points every test at an
// external MongoDB instead of the embedded server.
const MongoURIEnv = "PRESENCE_TEST_MONGO_URI"

// MongodBinaryEnv names the environment variable that gives the path of a
// prebuilt embeddedmongo binary. When it is empty the binary is built with
// "go build" once per test process.
const MongodBinaryEnv = "PRESENCE_TEST_MONGOD"

const embeddedPackage = "github.com/presencekit/presence/agenttest/embeddedmongo"

// ErrExternal is returned by Server.Stop and Server.Start when the tests run
// against an external MongoDB, which this package cannot stop.
const ErrExternal = errors.ConstError("external MongoDB cannot be stopped or started")

// Server is a MongoDB-wire server for tests: the embedded one (FerretDB on
// SQLite, run as a process of its own so that race-enabled test binaries
// stay fast) or, when PRESENCE_TEST_MONGO_URI is set, an external MongoDB.
//
// Its methods are safe for concurrent use.
type Server struct {
	mu       sync.Mutex
	external bool
	uri      string
	dir      string
	listen   string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	exited   chan struct{}
}

// NewServer starts the embedded server in a fresh temporary directory, or
// connects to nothing and returns the external URI when
// PRESENCE_TEST_MONGO_URI is set. Call Destroy when done.
func NewServer() (*Server, error) {
	if uri := os.Getenv(MongoURIEnv); uri != "" {
		return &Server{external: true, uri: uri}, nil
	}
	dir, err := os.MkdirTemp("", "presence-mongo-")
	if err != nil {
		return nil, errors.Annotate(err, "cannot create data directory")
	}
	s := &Server{dir: dir, listen: "127.0.0.1:0"}
	if err := s.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, errors.Trace(err)
	}
	return s, nil
}

// External reports whether the server is an external MongoDB.
func (s *Server) External() bool {
	return s.external
}

// URI returns the mongodb:// connection string.
func (s *Server) URI() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uri
}

// Start starts a stopped embedded server on the same data directory and the
// same address, so that clients created before Stop reconnect to it. It does
// nothing to a running server.
func (s *Server) Start() error {
	if s.external {
		return ErrExternal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	binary, err := mongodBinary()
	if err != nil {
		return errors.Trace(err)
	}
	// The port of a server that just stopped can take a moment to free.
	err = Retry(LongWait, func() error { return s.startProcess(binary) })
	return errors.Annotate(err, "cannot start embedded server")
}

func (s *Server) startProcess(binary string) error {
	cmd := exec.Command(binary, "--dir", s.dir, "--listen", s.listen)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return errors.Trace(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return errors.Trace(err)
	}
	if err := cmd.Start(); err != nil {
		return errors.Trace(err)
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case line := <-ready:
		uri, ok := strings.CutPrefix(line, "ready ")
		if !ok {
			_ = cmd.Process.Kill()
			<-exited
			return errors.Errorf("embedded server said %q", line)
		}
		parsed, err := url.Parse(uri)
		if err != nil {
			_ = cmd.Process.Kill()
			<-exited
			return errors.Annotatef(err, "embedded server URI %q", uri)
		}
		s.uri, s.listen = uri, parsed.Host
		s.cmd, s.stdin, s.exited = cmd, stdin, exited
		return nil
	case <-exited:
		return errors.New("embedded server exited at start")
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("embedded server did not start within 30s")
	}
}

// Stop stops the embedded server, keeping its data, so that a test can
// simulate a database outage. Clients see connection errors until Start.
func (s *Server) Stop() error {
	return s.end(func() {
		_ = s.stdin.Close()
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// Kill kills the embedded server at once (SIGKILL), keeping its data, as a
// crash would: nothing is flushed or closed. Start brings it back.
func (s *Server) Kill() error {
	return s.end(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// end ends a running embedded server with stop, after resuming it in case
// it was paused, and forgets its process.
func (s *Server) end(stop func()) error {
	if s.external {
		return ErrExternal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	stop()
	s.cmd = nil
	return nil
}

// Pause stops the embedded server's process (SIGSTOP) without closing
// anything: connections stay open and every call hangs, as with a hung or
// partitioned server, until Resume. It returns once the process is
// stopped, where the system says so (Linux's /proc): a signal is only
// sent when kill returns, and on a busy machine the server could answer
// one more call meanwhile.
func (s *Server) Pause() error {
	if err := s.signal(syscall.SIGSTOP); err != nil {
		return errors.Trace(err)
	}
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("embedded server stopped while pausing it")
	}
	pid := cmd.Process.Pid
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	return Retry(LongWait, func() error {
		b, err := os.ReadFile(stat)
		if err != nil {
			return nil // no /proc: trust the signal
		}
		// The state follows the parenthesised command name.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
			return nil
		}
		return errors.Errorf("embedded server (pid %d) not stopped", pid)
	})
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() error {
	return s.signal(syscall.SIGCONT)
}

func (s *Server) signal(sig syscall.Signal) error {
	if s.external {
		return ErrExternal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("embedded server not running")
	}
	return errors.Trace(s.cmd.Process.Signal(sig))
}

// Destroy stops the server and removes its data. It does nothing to an
// external server.
func (s *Server) Destroy() error {
	if s.external {
		return nil
	}
	if err := s.Stop(); err != nil {
		return errors.Trace(err)
	}
	return errors.Trace(os.RemoveAll(s.dir))
}

// NewClient connects a new client to the server. Each client has its own
// connection pool, as separate controllers would. Options given are
// applied after the defaults (5s server-selection and connect timeouts),
// e.g. a command monitor.
func (s *Server) NewClient(extra ...*options.ClientOptions) (*mongo.Client, error) {
	opts := options.Client().ApplyURI(s.URI()).
		SetServerSelectionTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second)
	client, err := mongo.Connect(append([]*options.ClientOptions{opts}, extra...)...)
	if err != nil {
		return nil, errors.Annotate(err, "cannot connect to test server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Ping(ctx, nil); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, errors.Annotate(err, "cannot reach test server")
	}
	return client, nil
}

var (
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

// mongodBinary returns the path of the embeddedmongo binary, building it
// once per process unless PRESENCE_TEST_MONGOD names one.
//
// The build runs in this module's own source directory (found from this
// file's compiled-in path: the module cache, a replace directory or a
// checkout), with that module's go.mod and go.sum and no workspace, so it
// works from any working directory and in a user's module that has
// nothing but a requirement on ours. It needs the go command, as "go test"
// does. It goes to one path in the user's cache directory, replaced
// atomically, so repeated runs neither leak binaries nor disturb a binary
// another process runs.
func mongodBinary() (string, error) {
	if path := os.Getenv(MongodBinaryEnv); path != "" {
		return path, nil
	}
	buildOnce.Do(func() {
		builtBinary, buildErr = buildMongod()
	})
	return builtBinary, buildErr
}

func buildMongod() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", errors.Trace(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "presencekit")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", errors.Annotate(err, "cannot create build directory")
	}
	tmp := filepath.Join(dir, fmt.Sprintf("embeddedmongo.%d", os.Getpid()))
	cmd := exec.Command("go", "build", "-o", tmp, "./agenttest/embeddedmongo")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.Annotatef(err, "cannot build %s in %s (set %s to a prebuilt binary, e.g. from go install %s): %s",
			embeddedPackage, root, MongodBinaryEnv, embeddedPackage, out)
	}
	binary := filepath.Join(dir, "embeddedmongo")
	if err := os.Rename(tmp, binary); err != nil {
		return "", errors.Annotate(err, "cannot install embeddedmongo")
	}
	return binary, nil
}

// moduleRoot returns the source directory of this module, the parent of
// this file's package directory.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot find the source of package agenttest")
	}
	root := filepath.Dir(filepath.Dir(file))
	if _, err := os.Stat(filepath.Join(root, "agenttest", "embeddedmongo")); err != nil {
		return "", errors.Annotatef(err, "no source of %s beside this binary's agenttest (built with -trimpath?); set %s", embeddedPackage, MongodBinaryEnv)
	}
	return root, nil
}

// uniqueName returns a database name that no other test in any process
// uses.
func uniqueName(prefix string) string {
	nameMu.Lock()
	defer nameMu.Unlock()
	nameSeq++
	return fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), nameSeq)
}

var (
	nameMu  sync.Mutex
	nameSeq int
)
