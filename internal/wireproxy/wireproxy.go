// Package wireproxy is a MongoDB wire-protocol proxy on loopback for tests
// and load commands: it counts the commands that every client sends to
// the server behind it, whatever the client, and can delay the server's
// replies, or the clients' requests, to make a database slow without
// stopping it, or inject faults: random delays, and replies lost after
// the server applied a write.
package wireproxy

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
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
	faults   injector

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

// Faults are the failures a Proxy injects, decided command by command at
// random.
type Faults struct {
	// Delay is the share of commands, of any kind, that wait before
	// they reach the server, each for a random time from MinDelay up to
	// MaxDelay: the read and the write of one operation drift apart.
	Delay              float64
	MinDelay, MaxDelay time.Duration

	// Drop is the share of write commands (insert, update, delete)
	// whose reply is lost: the server applies the command, and the
	// proxy then closes the client's connection instead of passing the
	// reply on.
	Drop float64

	// Collection, if not empty, limits the faults to the commands that
	// name that collection.
	Collection string

	// Seed seeds the choices.
	Seed uint64
}

// SetFaults injects f into every later command; the zero Faults injects
// none.
func (p *Proxy) SetFaults(f Faults) {
	p.faults.set(f)
}

// injector draws the faults of each command.
type injector struct {
	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
}

func (in *injector) set(f Faults) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.faults = f
	in.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
}

// decide returns how long the command called name, on collection coll,
// waits and whether its reply is lost.
func (in *injector) decide(name, coll string) (time.Duration, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.rng == nil || (in.faults.Collection != "" && in.faults.Collection != coll) {
		return 0, false
	}
	var delay time.Duration
	if in.faults.MaxDelay > 0 && in.rng.Float64() < in.faults.Delay {
		delay = in.faults.MinDelay + time.Duration(in.rng.Int64N(int64(max(in.faults.MaxDelay-in.faults.MinDelay, 1))))
	}
	write := name == "insert" || name == "update" || name == "delete"
	return delay, write && in.rng.Float64() < in.faults.Drop
}

// waitHold waits until a request that arrived at arrived may pass: hold
// after its arrival, or as soon as the hold is lifted or shortened, as
// queued traffic flows at once when a partition heals.
func (p *Proxy) waitHold(arrived time.Time) {
	for {
		left := time.Until(arrived.Add(time.Duration(p.hold.Load())))
		if left <= 0 || p.isClosed() {
			return
		}
		time.Sleep(min(left, 10*time.Millisecond))
	}
}

// isClosed reports whether Close was called.
func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
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
		var drop atomic.Bool
		go func() {
			defer p.wg.Done()
			p.requests(client, server, &drop)
			p.untrack(client, server)
		}()
		go func() {
			defer p.wg.Done()
			p.replies(server, client, &drop)
			p.untrack(client, server)
		}()
	}
}

// readMessage reads one whole wire message from r.
func readMessage(r io.Reader) ([]byte, error) {
	header := make([]byte, headerSize)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	size := int(int32(binary.LittleEndian.Uint32(header)))
	if size < headerSize || size > maxMessage {
		return nil, errors.Errorf("wire message of %d bytes", size)
	}
	msg := make([]byte, size)
	copy(msg, header)
	if _, err := io.ReadFull(r, msg[headerSize:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// requests passes the client's messages on, counting each command, and
// marks in drop the replies to lose.
func (p *Proxy) requests(client, server net.Conn, drop *atomic.Bool) {
	for {
		msg, err := readMessage(client)
		if err != nil {
			return
		}
		name, coll := p.count(msg)
		p.waitHold(time.Now())
		delay, lose := p.faults.decide(name, coll)
		time.Sleep(delay)
		drop.Store(lose)
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

// count records the command in msg, a whole wire message, under its name
// and, when it names a collection, under "name collection" too, and
// returns its name and collection.
func (p *Proxy) count(msg []byte) (string, string) {
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
	return name, coll
}

// replies passes the server's replies on, each after the current delay;
// a reply marked in drop is read (the server has applied its command) and
// then lost with the client's connection.
func (p *Proxy) replies(server, client net.Conn, drop *atomic.Bool) {
	for {
		msg, err := readMessage(server)
		if err != nil {
			return
		}
		if drop.Load() {
			return
		}
		if d := time.Duration(p.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		if _, err := client.Write(msg); err != nil {
			return
		}
	}
}
