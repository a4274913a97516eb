package agenttest

import (
	"fmt"
	"sync"
)

// Logger records every message it is given, with its level, and is safe for
// concurrent use. It has the methods of dependency.Logger, so it fits the
// Logger field of every worker's Config.
type Logger struct {
	mu      sync.Mutex
	entries []string
}

// Tracef records a message at TRACE level.
func (l *Logger) Tracef(format string, args ...any) { l.add("TRACE", format, args) }

// Debugf records a message at DEBUG level.
func (l *Logger) Debugf(format string, args ...any) { l.add("DEBUG", format, args) }

// Infof records a message at INFO level.
func (l *Logger) Infof(format string, args ...any) { l.add("INFO", format, args) }

// Warningf records a message at WARNING level.
func (l *Logger) Warningf(format string, args ...any) { l.add("WARNING", format, args) }

// Errorf records a message at ERROR level.
func (l *Logger) Errorf(format string, args ...any) { l.add("ERROR", format, args) }

func (l *Logger) add(level, format string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, level+" "+fmt.Sprintf(format, args...))
}

// Entries returns a copy of the messages recorded so far, each prefixed by
// its level and a space.
func (l *Logger) Entries() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.entries...)
}
