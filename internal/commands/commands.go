// Package commands counts the commands a MongoDB client sends, through the
// driver's command monitor, for tests and load commands.
package commands

import (
	"context"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Counter counts the commands a client sends, by name, through the
// driver's command monitor. It is safe for concurrent use.
type Counter struct {
	mu     sync.Mutex
	counts map[string]int
}

// Options returns client options that install the counter.
func (cc *Counter) Options() *options.ClientOptions {
	return options.Client().SetMonitor(&event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			if cc.counts == nil {
				cc.counts = make(map[string]int)
			}
			cc.counts[e.CommandName]++
			if coll, ok := e.Command.Lookup(e.CommandName).StringValueOK(); ok {
				cc.counts[e.CommandName+" "+coll]++
			}
		},
	})
}

// Writes returns how many insert, update and delete commands were sent.
func (cc *Counter) Writes() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts["insert"] + cc.counts["update"] + cc.counts["delete"]
}

// Reads returns how many find, getMore, aggregate, count and distinct
// commands were sent.
func (cc *Counter) Reads() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts["find"] + cc.counts["getMore"] + cc.counts["aggregate"] + cc.counts["count"] + cc.counts["distinct"]
}

// Total returns how many commands were sent, of any name.
func (cc *Counter) Total() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	n := 0
	for name, count := range cc.counts {
		if !strings.Contains(name, " ") {
			n += count
		}
	}
	return n
}

// CountOn returns how many commands named name were sent to the
// collection coll.
func (cc *Counter) CountOn(name, coll string) int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts[name+" "+coll]
}

// Count returns how many commands named name were sent.
func (cc *Counter) Count(name string) int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts[name]
}

// Reset zeroes every count.
func (cc *Counter) Reset() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.counts = nil
}
