// Package wireproxy is a MongoDB wire-protocol proxy on loopback for tests
// and load commands: it counts the commands that every client sends to
// the server behind it, whatever the client, and can delay the server's
// replies, or the clients' requests, to make a database slow without
// stopping it.
package wireproxy

import (
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
)

const (
	opMsg      = 2013
	opQuery    = 2004
	headerSize = 16
	// maxMessage is the largest message the proxy parses; the server's
	// own limit is 48 MB.
	maxMessage = 64 << 20
)

// Proxy forwards connections to a server and counts the commands that
// cross it. Its methods are safe for concurrent use.
type Proxy struct {
	listener net.Listener
	target   string
	delay    atomic.Int64
	hold     atomic.Int64

	mu     sync.Mutex
	counts map[string]int
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// New starts a proxy on 127.0.0.1 in front of target, a host:port.
func New(target string) (*Proxy, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Annotate(err, "cannot listen")
	}
	p := &Proxy{listener: listener, target: target, counts: make(map[string]int), conns: make(map[net.Conn]bool)}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// NewFor starts a proxy in front of the first host of the mongodb://
// connection string uri, and returns it with the connection string that
// goes through it (with directConnection, as a proxy hides a replica
// set).
func NewFor(uri string) (*Proxy, string, error) {
	parsed, err := url.Parse(uri)
	if err != nil {
		return nil, "", errors.Annotate(err, "cannot parse the server's URI")
	}
	host, _, _ := strings.Cut(parsed.Host, ",")
	p, err := New(host)
	if err != nil {
		return nil, "", errors.Trace(err)
	}
	parsed.Host = p.Addr()
	q := parsed.Query()
	q.Set("directConnection", "true")
	parsed.RawQuery = q.Encode()
	return p, parsed.String(), nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string {
	return p.listener.Addr().String()
}

// SetDelay makes every later reply of the server wait d before it is
// passed on; zero passes replies at once.
func (p *Proxy) SetDelay(d time.Duration) {
	p.delay.Store(int64(d))
}

// SetHold makes every request wait until d after it arrived before it
// reaches the server, so that commands, writes included, take effect late
// (as a write waiting for a replica set's majority would) even when the
// client has given up on them. Lifting the hold (zero) lets every waiting
// request through at once, as when a partition heals.
func (p *Proxy) SetHold(d time.Duration) {
	p.hold.Store(int64(d))
}

// waitHold waits until a request that arrived at arrived may pass: hold
// after its arrival, or as soon as the hold is lifted or shortened, as
// queued traffic flows at once when a partition heals.
func (p *Proxy) waitHold(arrived time.Time) {
	for {
		left := time.Until(arrived.Add(time.Duration(p.hold.Load())))
		if left <= 0 {
			return
		}
		time.Sleep(min(left, 10*time.Millisecond))
	}
}

// Counts returns how many commands of each name were sent since the last
// Reset, and under "name collection" how many of them named that
// collection. Handshakes and heartbeats (hello, isMaster) are counted too.
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for name, n := range p.counts {
		out[name] = n
	}
	return out
}

// Reset zeroes the counts.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.counts)
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for conn := range p.conns {
		_ = conn.Close()
	}
	p.mu.Unlock()
	err := p.listener.Close()
	p.wg.Wait()
	return errors.Trace(err)
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range conns {
		p.conns[c] = true
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
		_ = c.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client, server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.requests(client, server)
			p.untrack(client, server)
		}()
		go func() {
			defer p.wg.Done()
			p.replies(server, client)
			p.untrack(client, server)
		}()
	}
}

// requests passes the client's messages on, counting each command.
func (p *Proxy) requests(client, server net.Conn) {
	header := make([]byte, headerSize)
	for {
		if _, err := io.ReadFull(client, header); err != nil {
			return
		}
		size := int(int32(binary.LittleEndian.Uint32(header)))
		if size < headerSize || size > maxMessage {
			return
		}
		msg := make([]byte, size)
		copy(msg, header)
		if _, err := io.ReadFull(client, msg[headerSize:]); err != nil {
			return
		}
		p.count(msg)
		p.waitHold(time.Now())
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

// count records the command in msg, a whole wire message, under its name
// and, when it names a collection, under "name collection" too.
func (p *Proxy) count(msg []byte) {
	name, coll := "unknown", ""
	switch binary.LittleEndian.Uint32(msg[12:]) {
	case opMsg:
		// flagBits, then a kind-0 section holding the command.
		body := msg[headerSize+4:]
		if len(body) > 5 && body[0] == 0 {
			doc := body[1:]
			if n := int(int32(binary.LittleEndian.Uint32(doc))); n >= 5 && n <= len(doc) {
				if elems, err := bson.Raw(doc[:n]).Elements(); err == nil && len(elems) > 0 {
					name = elems[0].Key()
					coll, _ = elems[0].Value().StringValueOK()
				}
			}
		}
	case opQuery:
		name = "legacy query"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[name]++
	if coll != "" {
		p.counts[name+" "+coll]++
	}
}

// replies passes the server's replies on, each after the current delay.
func (p *Proxy) replies(server, client net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
