package agenttest

import "github.com/presencekit/presence/internal/commands"

// CommandCounter counts the commands a client sends, by name, through the
// driver's command monitor: install it with its Options when making the
// client. It is safe for concurrent use.
type CommandCounter = commands.Counter
