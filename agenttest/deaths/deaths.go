// Package deaths follows a watcher subscription for tests and keeps the
// keys it reports dead. It is a package of its own, apart from agenttest,
// because it imports the watcher, which the reader's internal tests (that
// use agenttest) must not.
package deaths

import (
	"context"
	"sync"

	"github.com/presencekit/presence/worker/watcher"
)

// Recorder follows a watcher subscription and keeps the keys it reports
// dead, in order: what a stress test that asserts "no false death" reads,
// beside the death it causes on purpose. Its methods are safe for
// concurrent use.
type Recorder struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	dead []string
}

// Follow takes sub's snapshot, so that only later changes count,
// and then collects the deaths sub reports until Stop. It closes sub on
// Stop. It fails with sub's error if the snapshot does not come.
func Follow(sub watcher.Subscription) (*Recorder, error) {
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := sub.Next(ctx); err != nil {
		cancel()
		sub.Close()
		return nil, err
	}
	d := &Recorder{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		defer sub.Close()
		for {
			changes, err := sub.Next(ctx)
			if err != nil {
				return
			}
			d.mu.Lock()
			for _, change := range changes {
				if !change.Alive {
					d.dead = append(d.dead, change.Key)
				}
			}
			d.mu.Unlock()
		}
	}()
	return d, nil
}

// Keys returns the keys reported dead so far, in the order reported.
func (d *Recorder) Keys() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dead...)
}

// Stop stops following and closes the subscription, and returns once
// nothing more is collected.
func (d *Recorder) Stop() {
	d.cancel()
	<-d.done
}
