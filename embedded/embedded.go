// Package embedded runs a MongoDB-wire server (FerretDB v1 on SQLite)
// inside the calling process: what the demo, the tests and a user's own
// programs can stand on when no MongoDB is at hand.
//
// Start it from a main or a test of your own module after `go get
// github.com/presencekit/presence` alone; no tool directive and no build at
// run time is needed:
//
//	srv, err := embedded.Start(embedded.Config{Dir: dir})
//	if err != nil { ... }
//	defer srv.Stop()
//	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()))
//
// It is a test and demo server, not a database for production: it has no
// change streams, no transactions and no TTL indexes, every query scans
// its whole collection, and read-modify-write of one document from two
// connections is not atomic (the presence and lease designs never rely on
// that; see the README). Data lives in a directory on disk, because
// SQLite's in-memory mode hangs on the first update of an existing
// document.
//
// SQLite keeps each database's write-ahead-log index in this process's
// memory (its unix-excl VFS), not in a memory-mapped "-shm" file: with a
// mapped index, a database dropped and created again while a command of
// the old one still ran truncated the index under that command, and the
// whole server died of SIGBUS. The data directory is therefore for one
// server process at a time.
//
// Race-enabled test binaries run it 20 to 40 times slower; package
// agenttest therefore runs it in a process of its own (the command
// github.com/presencekit/presence/agenttest/embeddedmongo, which `go
// install` also gives to users of other languages).
package embedded

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/juju/errors"
)

// Config configures a Server.
type Config struct {
	// Dir holds the SQLite files. It must not be empty; it is created if
	// it does not exist.
	Dir string

	// Listen is the TCP address to listen on. Empty means 127.0.0.1:0, a
	// free port on the loopback interface.
	Listen string

	// Logger receives the server's own logs. Nil means silent.
	Logger *slog.Logger
}

// Validate returns an error if the config cannot be used.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.NotValidf("empty Dir")
	}
	return nil
}

// Server is a running embedded MongoDB-wire server.
type Server struct {
	db     *ferretdb.FerretDB
	front  *front
	cancel context.CancelFunc
	done   chan struct{}
}

// Start starts a server and returns once it accepts connections.
func Start(config Config) (*Server, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if err := os.MkdirAll(config.Dir, 0o700); err != nil {
		return nil, errors.Annotate(err, "cannot create data directory")
	}
	listen := config.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	// Clients connect through a front that Stop can close at once; the
	// server listens on loopback behind it.
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Annotate(err, "cannot pick a port for the embedded server")
	}
	target := inner.Addr().String()
	_ = inner.Close()
	logger := config.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// unix-excl: see the package doc.
	db, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: target},
		Handler:   "sqlite",
		SQLiteURL: "file:" + config.Dir + "/?vfs=unix-excl",
		Logger:    logger,
	})
	if err != nil {
		return nil, errors.Annotate(err, "cannot start embedded server")
	}
	f, err := newFront(listen, target)
	if err != nil {
		return nil, errors.Annotatef(err, "cannot listen on %s", listen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{db: db, front: f, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = db.Run(ctx)
	}()
	return s, nil
}

// URI returns the server's mongodb:// connection string. It blocks until the
// listener is up.
func (s *Server) URI() string {
	uri := s.db.MongoDBURI()
	u, err := url.Parse(uri)
	if err != nil {
		return uri
	}
	u.Host = s.front.Addr()
	return u.String()
}

// Stop closes the listener and every connection at once, connected
// clients' included, and waits until the server has stopped (well within
// half a second). The data directory is kept.
func (s *Server) Stop() {
	s.front.Close()
	s.cancel()
	<-s.done
}
