package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/presencekit/presence/internal/benchkit"
)

// etcdServer is an etcd server run out of process on loopback, with its
// data in a temporary directory of its own.
type etcdServer struct {
	cmd     *exec.Cmd
	dir     string
	url     string
	version string
	exited  chan struct{}
}

// startEtcd starts the etcd binary at path on two free loopback ports and
// waits until it says it is healthy.
func startEtcd(path string) (*etcdServer, error) {
	version, err := exec.Command(path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "anchors-etcd-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(path,
		"--name", "anchor", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "anchor="+peerURL, "--logger", "zap", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s := &etcdServer{cmd: cmd, dir: dir, url: clientURL, version: firstLine(string(version)), exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !s.healthy() {
		select {
		case <-s.exited:
			s.stop()
			return nil, fmt.Errorf("etcd exited at start (see %s)", logFile.Name())
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("etcd not healthy within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s, nil
}

// httpClient asks the etcd server for its health and metrics, bounded
// in time so that a hung server fails the run rather than hanging it.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// healthy reports whether the server's /health says so.
func (s *etcdServer) healthy() bool {
	resp, err := httpClient.Get(s.url + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
}

// requests returns how many gRPC messages the server has received, by
// method (a unary call is one; a keepalive stream counts each
// keepalive), from its own /metrics.
func (s *etcdServer) requests() (map[string]int, error) {
	resp, err := httpClient.Get(s.url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	byMethod, err := metricByLabel(resp.Body, "grpc_server_msg_received_total", "grpc_method")
	if err != nil {
		return nil, err
	}
	if len(byMethod) == 0 {
		return nil, fmt.Errorf("no grpc_server_msg_received_total in etcd's /metrics")
	}
	out := make(map[string]int, len(byMethod))
	for method, n := range byMethod {
		out[method] = int(n)
	}
	return out, nil
}

// stop stops the server and removes its data.
func (s *etcdServer) stop() {
	_ = s.cmd.Process.Kill()
	<-s.exited
	_ = os.RemoveAll(s.dir)
}

// freePorts returns n distinct loopback ports that were free a moment
// ago: each listener stays open until all are chosen.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		defer l.Close()
	}
	return ports, nil
}

// firstLine returns the first line of s.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// etcdPrefix starts every agent's key.
const etcdPrefix = "/agents/"

// etcdAgent is one agent's lease and the keepalive that holds it.
type etcdAgent struct {
	client *clientv3.Client
	lease  clientv3.LeaseID
	stop   context.CancelFunc
}

// etcdFleet is the etcd side: agents spread over clients, and an
// observer client that watches their prefix.
type etcdFleet struct {
	ttl      time.Duration
	clients  []*clientv3.Client
	observer *clientv3.Client
	seen     *benchkit.Sightings
	cancel   context.CancelFunc
	watching sync.WaitGroup
}

// newEtcdFleet connects clients clients and an observer to url, and
// starts the observer's watch of the agents' prefix.
func newEtcdFleet(url string, clients int, ttl time.Duration) (*etcdFleet, error) {
	f := &etcdFleet{ttl: ttl, seen: benchkit.NewSightings(context.Background())}
	connect := func() (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	}
	for range clients {
		c, err := connect()
		if err != nil {
			f.close()
			return nil, err
		}
		f.clients = append(f.clients, c)
	}
	var err error
	if f.observer, err = connect(); err != nil {
		f.close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	watch := f.observer.Watch(ctx, etcdPrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case resp := <-watch:
		if !resp.Created {
			f.close()
			return nil, fmt.Errorf("etcd watch not created: %v", resp.Err())
		}
	case <-time.After(10 * time.Second):
		f.close()
		return nil, fmt.Errorf("etcd watch not created within 10s")
	}
	f.watching.Add(1)
	go f.follow(watch)
	return f, nil
}

// follow records every event of the watch until it closes.
func (f *etcdFleet) follow(watch clientv3.WatchChan) {
	defer f.watching.Done()
	for resp := range watch {
		now := time.Now()
		for _, ev := range resp.Events {
			key := strings.TrimPrefix(string(ev.Kv.Key), etcdPrefix)
			f.seen.Saw(key, ev.Type == clientv3.EventTypePut, now)
		}
	}
}

// join grants agent key a lease of the fleet's TTL on the i-th client,
// puts its key on it and keeps the lease alive with the client's
// KeepAlive, as an etcd user would.
func (f *etcdFleet) join(i int, key string) (*etcdAgent, error) {
	c := f.clients[i%len(f.clients)]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	grant, err := c.Grant(ctx, int64(f.ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	if _, err := c.Put(ctx, etcdPrefix+key, "", clientv3.WithLease(grant.ID)); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	kctx, stop := context.WithCancel(context.Background())
	acks, err := c.KeepAlive(kctx, grant.ID)
	if err != nil {
		stop()
		return nil, fmt.Errorf("keepalive: %w", err)
	}
	go func() {
		for range acks {
		}
	}()
	return &etcdAgent{client: c, lease: grant.ID, stop: stop}, nil
}

// leave revokes the agent's lease, as an agent that leaves cleanly does,
// and then ends its keepalive.
func (a *etcdAgent) leave() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := a.client.Revoke(ctx, a.lease)
	a.stop()
	return err
}

// joinAll joins the agents named keys, parallel at most parallel at a
// time, and returns them in keys' order.
func (f *etcdFleet) joinAll(keys []string, parallel int) ([]*etcdAgent, error) {
	agents := make([]*etcdAgent, len(keys))
	errs := make(chan error, len(keys))
	next := make(chan int)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				a, err := f.join(i, keys[i])
				if err != nil {
					errs <- err
					continue
				}
				agents[i] = a
			}
		}()
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return agents, nil
}

// close ends every keepalive, the watch, and the clients.
func (f *etcdFleet) close() {
	if f.cancel != nil {
		f.cancel()
	}
	if f.observer != nil {
		_ = f.observer.Close()
		f.watching.Wait()
	}
	for _, c := range f.clients {
		_ = c.Close()
	}
}

// measureEtcd runs the etcd side: agents agents with a lease each kept
// alive, then events agents that join, leave cleanly (revoke), join
// again and die silently (their keepalive stops), each at random moments
// over a TTL, as the observer's watch sees them; requests are counted by
// the server over a rest window.
func measureEtcd(o options, progress func(string, ...any)) (result, error) {
	res := result{name: "etcd leases", cpu: -1}
	srv, err := startEtcd(o.etcd)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	res.name = "etcd " + strings.TrimPrefix(srv.version, "etcd Version: ") + " leases"
	progress("etcd: %s at %s (pid %d)", srv.version, srv.url, srv.cmd.Process.Pid)
	f, err := newEtcdFleet(srv.url, o.clients, o.period)
	if err != nil {
		return res, err
	}
	defer f.close()
	began := time.Now()
	live := make([]string, o.agents)
	for i := range live {
		live[i] = fmt.Sprintf("live-%d", i)
	}
	agents, err := f.joinAll(live, 64)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, a := range agents {
			a.stop()
		}
	}()
	causes := make([]time.Time, len(live))
	for i := range causes {
		causes[i] = began
	}
	if d := detect(f.seen, live, causes, true, time.Minute); len(d.got) != len(live) {
		return res, fmt.Errorf("the observer saw %d of %d agents join", len(d.got), len(live))
	}
	progress("etcd: %d agents joined in %.1fs over %d clients; resting %v", len(agents), time.Since(began).Seconds(), o.clients, o.rest)
	// Let the keepalives settle into their TTL/3 rhythm first.
	time.Sleep(o.period)
	before, err := srv.requests()
	if err != nil {
		return res, err
	}
	res.load = load1() + " at rest"
	cpu := startCPU(srv.cmd.Process.Pid)
	time.Sleep(o.rest)
	after, err := srv.requests()
	if err != nil {
		return res, err
	}
	res.cpu = cpu.share()
	window := time.Since(cpu.at)
	delta := countsSince(before, after)
	total, writes := commandTotals(delta)
	res.requests, res.writes, res.hasRequests = float64(total)/window.Seconds(), float64(writes)/window.Seconds(), true
	res.breakdown = fmt.Sprintf("in %v the server received %s (grpc_server_msg_received_total by grpc_method)", window.Round(time.Millisecond), describeCounts(delta))
	progress("etcd: %.1f requests/s, server CPU %s: %s", res.requests, percent(res.cpu), res.breakdown)

	keys := eventKeys(o.events)
	rng := rand.New(rand.NewPCG(uint64(o.agents), uint64(o.events)))
	events := make([]*etcdAgent, len(keys))
	var joinErr error
	joined := benchkit.Staggered(len(keys), o.period, rng, func(i int) {
		a, err := f.join(i, keys[i])
		if err != nil && joinErr == nil {
			joinErr = err
		}
		events[i] = a
	})
	if joinErr != nil {
		return res, joinErr
	}
	res.start = detect(f.seen, keys, joined, true, 2*o.period)
	left := benchkit.Staggered(len(keys), o.period, rng, func(i int) { _ = events[i].leave() })
	res.leave = detect(f.seen, keys, left, false, 2*o.period)
	f.seen.Forget(keys)
	if events, err = f.joinAll(keys, 16); err != nil {
		return res, err
	}
	// A long-lived agent has had keepalives answered before it dies.
	time.Sleep(o.period)
	silenced := benchkit.Staggered(len(keys), o.period, rng, func(i int) { events[i].stop() })
	res.silent = detect(f.seen, keys, silenced, false, 3*o.period)
	res.load += ", " + load1() + " at the end"
	res.falseDeaths = f.seen.Unexpected()
	return res, nil
}
