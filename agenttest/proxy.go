package agenttest

import (
	"github.com/juju/errors"

	"github.com/presencekit/presence/internal/wireproxy"
)

// Proxy is a MongoDB wire proxy on loopback: it counts the commands of
// every client connected through it, at the server's side, and can delay
// the server's replies (SetDelay) to make the database slow without
// stopping it. Close it when done.
type Proxy = wireproxy.Proxy

// Faults are the failures a Proxy injects (Proxy.SetFaults): delays,
// lost replies, for every command or those on one collection.
type Faults = wireproxy.Faults

// NewProxy starts a Proxy in front of the server and returns it with the
// connection string that goes through it. In front of an external MongoDB
// the proxy reaches its first host only, so a replica set is not proxied.
func (s *Server) NewProxy() (*Proxy, string, error) {
	p, uri, err := wireproxy.NewFor(s.URI())
	return p, uri, errors.Trace(err)
}
