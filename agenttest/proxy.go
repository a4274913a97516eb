package agenttest

import (
	"net/url"

	"github.com/juju/errors"

	"github.com/presencekit/presence/internal/wireproxy"
)

// Proxy is a MongoDB wire proxy on loopback: it counts the commands of
// every client connected through it, at the server's side, and can delay
// the server's replies (SetDelay) to make the database slow without
// stopping it. Close it when done.
type Proxy = wireproxy.Proxy

// NewProxy starts a Proxy in front of the server and returns it with the
// connection string that goes through it. Through an external MongoDB's
// URI the proxy reaches its first host only, so a replica set is not
// proxied.
func (s *Server) NewProxy() (*Proxy, string, error) {
	parsed, err := url.Parse(s.URI())
	if err != nil {
		return nil, "", errors.Annotate(err, "cannot parse the server's URI")
	}
	p, err := wireproxy.New(parsed.Host)
	if err != nil {
		return nil, "", errors.Trace(err)
	}
	parsed.Host = p.Addr()
	q := parsed.Query()
	q.Set("directConnection", "true")
	parsed.RawQuery = q.Encode()
	return p, parsed.String(), nil
}
