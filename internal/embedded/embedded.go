// Package embedded runs FerretDB, a MongoDB-wire server on SQLite, inside the
// calling process.
//
// It backs the demo (cmd/presenced) and the out-of-process test server that
// package agenttest starts. Data lives in a directory on disk: SQLite's
// in-memory mode hangs on the first update of an existing document, so a
// directory is required.
package embedded

import (
	"context"
	"io"
	"log/slog"
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
	logger := config.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	db, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + config.Dir + "/",
		Logger:    logger,
	})
	if err != nil {
		return nil, errors.Annotate(err, "cannot start embedded server")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{db: db, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = db.Run(ctx)
	}()
	return s, nil
}

// URI returns the server's mongodb:// connection string. It blocks until the
// listener is up.
func (s *Server) URI() string {
	return s.db.MongoDBURI()
}

// Stop closes the listener and every connection, and waits until the
// server has stopped. The data directory is kept.
func (s *Server) Stop() {
	s.cancel()
	<-s.done
}
