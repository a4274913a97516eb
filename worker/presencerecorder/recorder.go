// Package presencerecorder holds the in-memory record of which agent is
// connected to which API server, with the semantics of juju's
// core/presence Recorder, and a worker that hands it to other manifolds.
//
// Unlike juju's flat list, every operation costs O(1), or O(entries it
// returns): connections are indexed by (server, connection id), by server
// and by (model, agent). Connections returns a snapshot in O(models) time
// without copying a single connection; the recorder copies a model's
// entries only when it next changes that model after a snapshot (copy on
// write). The recorder is safe for concurrent use.
package presencerecorder

import (
	"sort"
	"sync"
	"time"

	jujuclock "github.com/juju/clock"
	"github.com/juju/errors"
)

// ErrDisabled is returned by UpdateServer on a disabled recorder.
const ErrDisabled = errors.ConstError("recorder not enabled")

// ErrAmbiguous is returned by AgentStatus on connections that were not
// narrowed to one model first: an agent's tag names different agents in
// different models.
const ErrAmbiguous = errors.ConstError("connections not limited to a model, agent ambiguous")

// Recorder records the presence status of every API server connection of
// the agents.
type Recorder interface {
	// Disable clears every entry and marks the recorder disabled. Every
	// agent has a recorder; only API servers' are enabled.
	Disable()

	// Enable marks the recorder enabled.
	Enable()

	// IsEnabled reports whether the recorder is enabled.
	IsEnabled() bool

	// Connect records a connection: a known (server, id) becomes Alive
	// again with LastSeen now; an unknown one is added as Alive. The
	// server and agent are stringified tags, the model a UUID.
	Connect(server, model, agent string, id uint64, controllerAgent bool, userData string)

	// Disconnect removes the connection.
	Disconnect(server string, id uint64)

	// Activity sets the connection's LastSeen to now.
	Activity(server string, id uint64)

	// ServerDown marks every connection of server Missing, keeping
	// them.
	ServerDown(server string)

	// UpdateServer reconciles server's connections with what the server
	// reports: other servers' entries and this server's Alive ones are
	// kept, its Missing ones dropped, known ids refreshed and new ones
	// added, all Alive with LastSeen now. A value for another server fails
	// the whole call and changes nothing; so does a disabled recorder.
	UpdateServer(server string, connections []Value) error

	// Connections returns a snapshot of every connection.
	Connections() Connections
}

// Connections is a read-only snapshot of connections, which can be
// narrowed along models, servers and agents.
type Connections interface {
	// ForModel returns the connections of the model with this UUID.
	ForModel(model string) Connections

	// ForServer returns the connections to this API server.
	ForServer(server string) Connections

	// ForAgent returns the connections of this agent.
	ForAgent(agent string) Connections

	// Count returns the number of connections.
	Count() int

	// Models returns the UUIDs of the models with connections, sorted.
	Models() []string

	// Servers returns the API servers with connections, sorted.
	Servers() []string

	// Agents returns the agents with connections, sorted.
	Agents() []string

	// AgentStatus returns the best status across agent's connections,
	// ignoring controller agents' connections: Alive over Missing over
	// Unknown (no connection). It fails with ErrAmbiguous unless the
	// connections were narrowed to one model.
	AgentStatus(agent string) (Status, error)

	// Values returns the connections, oldest first.
	Values() []Value
}

// Status is an agent's presence.
type Status int

const (
	// Unknown means the agent has no connection in the collection.
	Unknown Status = iota

	// Missing means the agent was connected, but its server went away
	// and has not come back yet.
	Missing

	// Alive means the connection is active.
	Alive
)

// String returns "unknown", "missing" or "alive".
func (s Status) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Missing:
		return "missing"
	case Alive:
		return "alive"
	}
	return ""
}

// Value is one agent's connection to an API server.
type Value struct {
	// Model is the model UUID.
	Model string

	// Server is the stringified machine tag of the API server.
	Server string

	// Agent is the stringified machine or unit tag of the agent.
	Agent string

	// ControllerAgent is true if the agent is in the controller model.
	ControllerAgent bool

	// ConnectionID is the identifier the API server gave the
	// connection.
	ConnectionID uint64

	// Status is Missing or Alive.
	Status Status

	// UserData is what the agent passed when it logged in.
	UserData string

	// LastSeen is when the connection was made, or last active.
	LastSeen time.Time
}

// Clock gives the recorder the time.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
}

// New returns an empty, disabled Recorder that takes the time from clock.
// A nil clock means the wall clock (juju/clock's WallClock), so that the
// Recorder never fails on a missing one; tests pass a test clock.
func New(clock Clock) Recorder {
	if clock == nil {
		clock = jujuclock.WallClock
	}
	r := &recorder{clock: clock}
	r.clear()
	return r
}

type connKey struct {
	server string
	id     uint64
}

type keySet map[connKey]struct{}

// entry is a Value and the order it was first recorded in.
type entry struct {
	Value
	seq uint64
}

// bucket holds one model's connections. Once a snapshot shares it, it is
// never changed again: the recorder copies it first.
type bucket struct {
	shared   bool
	entries  map[connKey]entry
	byAgent  map[string]keySet
	byServer map[string]keySet
}

func newBucket() *bucket {
	return &bucket{
		entries:  make(map[connKey]entry),
		byAgent:  make(map[string]keySet),
		byServer: make(map[string]keySet),
	}
}

func (b *bucket) clone() *bucket {
	c := &bucket{
		entries:  make(map[connKey]entry, len(b.entries)),
		byAgent:  make(map[string]keySet, len(b.byAgent)),
		byServer: make(map[string]keySet, len(b.byServer)),
	}
	for k, e := range b.entries {
		c.entries[k] = e
	}
	for agent, keys := range b.byAgent {
		c.byAgent[agent] = cloneSet(keys)
	}
	for server, keys := range b.byServer {
		c.byServer[server] = cloneSet(keys)
	}
	return c
}

func cloneSet(s keySet) keySet {
	c := make(keySet, len(s))
	for k := range s {
		c[k] = struct{}{}
	}
	return c
}

func (b *bucket) add(k connKey, e entry) {
	b.entries[k] = e
	addKey(b.byAgent, e.Agent, k)
	addKey(b.byServer, e.Server, k)
}

func (b *bucket) remove(k connKey) {
	e, ok := b.entries[k]
	if !ok {
		return
	}
	delete(b.entries, k)
	removeKey(b.byAgent, e.Agent, k)
	removeKey(b.byServer, e.Server, k)
}

func addKey(index map[string]keySet, name string, k connKey) {
	keys := index[name]
	if keys == nil {
		keys = make(keySet)
		index[name] = keys
	}
	keys[k] = struct{}{}
}

func removeKey(index map[string]keySet, name string, k connKey) {
	if keys := index[name]; keys != nil {
		delete(keys, k)
		if len(keys) == 0 {
			delete(index, name)
		}
	}
}

type recorder struct {
	clock Clock

	// mu guards everything below.
	mu      sync.Mutex
	enabled bool
	seq     uint64
	models  map[string]*bucket
	model   map[connKey]string // connection -> its model
	servers map[string]keySet  // server -> its connections
}

func (r *recorder) clear() {
	r.models = make(map[string]*bucket)
	r.model = make(map[connKey]string)
	r.servers = make(map[string]keySet)
}

// Disable is part of the Recorder interface.
func (r *recorder) Disable() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enabled = false
	r.clear()
}

// Enable is part of the Recorder interface.
func (r *recorder) Enable() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enabled = true
}

// IsEnabled is part of the Recorder interface.
func (r *recorder) IsEnabled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enabled
}

// writable returns model's bucket, ready to change. r.mu must be held.
func (r *recorder) writable(model string) *bucket {
	b := r.models[model]
	switch {
	case b == nil:
		b = newBucket()
		r.models[model] = b
	case b.shared:
		b = b.clone()
		r.models[model] = b
	}
	return b
}

// insert adds or replaces a connection. r.mu must be held.
func (r *recorder) insert(v Value, seq uint64) {
	k := connKey{v.Server, v.ConnectionID}
	r.delete(k)
	r.writable(v.Model).add(k, entry{Value: v, seq: seq})
	r.model[k] = v.Model
	addKey(r.servers, v.Server, k)
}

// delete removes a connection. r.mu must be held.
func (r *recorder) delete(k connKey) {
	model, ok := r.model[k]
	if !ok {
		return
	}
	b := r.writable(model)
	b.remove(k)
	if len(b.entries) == 0 {
		delete(r.models, model)
	}
	delete(r.model, k)
	removeKey(r.servers, k.server, k)
}

// update sets a known connection's status (unless it is Unknown) and
// LastSeen (unless it is zero). r.mu must be held.
func (r *recorder) update(k connKey, status Status, seen time.Time) {
	model, ok := r.model[k]
	if !ok {
		return
	}
	b := r.writable(model)
	e := b.entries[k]
	if status != Unknown {
		e.Status = status
	}
	if !seen.IsZero() {
		e.LastSeen = seen
	}
	b.entries[k] = e
}

func (r *recorder) nextSeq() uint64 {
	r.seq++
	return r.seq
}

// Connect is part of the Recorder interface.
func (r *recorder) Connect(server, model, agent string, id uint64, controllerAgent bool, userData string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.enabled {
		return
	}
	k := connKey{server, id}
	now := r.clock.Now()
	if _, known := r.model[k]; known {
		r.update(k, Alive, now)
		return
	}
	r.insert(Value{
		Model:           model,
		Server:          server,
		Agent:           agent,
		ControllerAgent: controllerAgent,
		ConnectionID:    id,
		Status:          Alive,
		UserData:        userData,
		LastSeen:        now,
	}, r.nextSeq())
}

// Disconnect is part of the Recorder interface.
func (r *recorder) Disconnect(server string, id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.enabled {
		r.delete(connKey{server, id})
	}
}

// Activity is part of the Recorder interface.
func (r *recorder) Activity(server string, id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.enabled {
		return
	}
	r.update(connKey{server, id}, Unknown, r.clock.Now())
}

// ServerDown is part of the Recorder interface. It costs O(server's
// connections).
func (r *recorder) ServerDown(server string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.enabled {
		return
	}
	for k := range r.servers[server] {
		r.update(k, Missing, time.Time{})
	}
}

// UpdateServer is part of the Recorder interface. It costs O(server's
// connections + len(connections)).
func (r *recorder) UpdateServer(server string, connections []Value) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.enabled {
		return ErrDisabled
	}
	for _, v := range connections {
		if v.Server != server {
			return errors.Errorf("connection server mismatch, got %q expected %q", v.Server, server)
		}
	}
	now := r.clock.Now()
	seqs := make(map[uint64]uint64, len(connections))
	for k := range r.servers[server] {
		e := r.models[r.model[k]].entries[k]
		seqs[k.id] = e.seq
		if e.Status == Missing {
			r.delete(k)
		}
	}
	for _, v := range connections {
		seq, known := seqs[v.ConnectionID]
		if !known {
			seq = r.nextSeq()
		}
		v.Status, v.LastSeen = Alive, now
		r.insert(v, seq)
	}
	return nil
}

// Connections is part of the Recorder interface. It costs O(models).
func (r *recorder) Connections() Connections {
	r.mu.Lock()
	defer r.mu.Unlock()
	models := make(map[string]*bucket, len(r.models))
	for name, b := range r.models {
		b.shared = true
		models[name] = b
	}
	return &connections{models: models}
}

// connections is a snapshot: shared buckets, which nobody changes, and
// the filters applied so far.
type connections struct {
	models map[string]*bucket
	model  string
	server string
	agent  string
}

// ForModel is part of the Connections interface.
func (c *connections) ForModel(model string) Connections {
	n := *c
	n.model = model
	n.models = nil
	if b, ok := c.models[model]; ok {
		n.models = map[string]*bucket{model: b}
	}
	return &n
}

// ForServer is part of the Connections interface.
func (c *connections) ForServer(server string) Connections {
	return c.narrow(func(n *connections) { n.server = server }, c.server, server)
}

// ForAgent is part of the Connections interface.
func (c *connections) ForAgent(agent string) Connections {
	return c.narrow(func(n *connections) { n.agent = agent }, c.agent, agent)
}

// narrow returns c with one more filter; a second, different filter on
// the same field matches nothing.
func (c *connections) narrow(set func(*connections), old, value string) Connections {
	n := *c
	if old != "" && old != value {
		n.models = nil
	}
	set(&n)
	return &n
}

// each calls f with every matching entry, using the narrowest index.
func (c *connections) each(f func(entry)) {
	for _, b := range c.models {
		var keys keySet
		switch {
		case c.agent != "":
			keys = b.byAgent[c.agent]
		case c.server != "":
			keys = b.byServer[c.server]
		default:
			for _, e := range b.entries {
				if c.match(e) {
					f(e)
				}
			}
			continue
		}
		for k := range keys {
			if e := b.entries[k]; c.match(e) {
				f(e)
			}
		}
	}
}

func (c *connections) match(e entry) bool {
	return (c.server == "" || e.Server == c.server) && (c.agent == "" || e.Agent == c.agent)
}

// Count is part of the Connections interface.
func (c *connections) Count() int {
	n := 0
	c.each(func(entry) { n++ })
	return n
}

// Models is part of the Connections interface.
func (c *connections) Models() []string {
	return c.distinct(func(e entry) string { return e.Model })
}

// Servers is part of the Connections interface.
func (c *connections) Servers() []string {
	return c.distinct(func(e entry) string { return e.Server })
}

// Agents is part of the Connections interface.
func (c *connections) Agents() []string {
	return c.distinct(func(e entry) string { return e.Agent })
}

func (c *connections) distinct(field func(entry) string) []string {
	seen := make(map[string]bool)
	var out []string
	c.each(func(e entry) {
		if name := field(e); !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	})
	sort.Strings(out)
	return out
}

// AgentStatus is part of the Connections interface. It costs O(agent's
// connections in the model).
func (c *connections) AgentStatus(agent string) (Status, error) {
	if c.model == "" {
		return Unknown, ErrAmbiguous
	}
	n := *c
	n.agent = agent
	if c.agent != "" && c.agent != agent {
		return Unknown, nil
	}
	best := Unknown
	n.each(func(e entry) {
		if !e.ControllerAgent && e.Status > best {
			best = e.Status
		}
	})
	return best, nil
}

// Values is part of the Connections interface.
func (c *connections) Values() []Value {
	var entries []entry
	c.each(func(e entry) { entries = append(entries, e) })
	sort.Slice(entries, func(i, j int) bool { return entries[i].seq < entries[j].seq })
	out := make([]Value, len(entries))
	for i, e := range entries {
		out[i] = e.Value
	}
	return out
}
