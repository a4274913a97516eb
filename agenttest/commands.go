package agenttest

import (
	"context"
	"sync"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// CommandCounter counts the commands a client sends, by name, through the
// driver's command monitor. It is safe for concurrent use.
type CommandCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

// Options returns client options that install the counter.
func (cc *CommandCounter) Options() *options.ClientOptions {
	return options.Client().SetMonitor(&event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			if cc.counts == nil {
				cc.counts = make(map[string]int)
			}
			cc.counts[e.CommandName]++
		},
	})
}

// Writes returns how many insert, update and delete commands were sent.
func (cc *CommandCounter) Writes() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts["insert"] + cc.counts["update"] + cc.counts["delete"]
}

// Count returns how many commands named name were sent.
func (cc *CommandCounter) Count(name string) int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts[name]
}

// Reset zeroes every count.
func (cc *CommandCounter) Reset() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.counts = nil
}
