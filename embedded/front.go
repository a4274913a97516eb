package embedded

import (
	"io"
	"net"
	"sync"
)

// front is a byte-for-byte TCP forwarder in front of the server, so that
// Stop can close every client connection at once: the server itself gives
// connected clients a few seconds to leave before it stops. Its methods
// are safe for concurrent use.
type front struct {
	listener net.Listener
	target   string

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// newFront listens on listen and forwards each connection to target.
func newFront(listen, target string) (*front, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	f := &front{listener: l, target: target, conns: make(map[net.Conn]bool)}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr returns the host:port clients connect to.
func (f *front) Addr() string {
	return f.listener.Addr().String()
}

func (f *front) accept() {
	defer f.wg.Done()
	for {
		client, err := f.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !f.track(client, server) {
			return
		}
		f.wg.Add(2)
		go f.pipe(client, server)
		go f.pipe(server, client)
	}
}

// track records conns, or closes them and reports false once the front
// is closed.
func (f *front) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = true
	}
	return true
}

// pipe copies from src to dst until either fails, then closes both.
func (f *front) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	f.mu.Lock()
	delete(f.conns, dst)
	delete(f.conns, src)
	f.mu.Unlock()
}

// Close stops accepting, closes every connection, both sides, and waits
// for the forwarding goroutines.
func (f *front) Close() {
	f.mu.Lock()
	f.closed = true
	_ = f.listener.Close()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
