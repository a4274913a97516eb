// Package presencereader is the presence reader of a controller: one
// worker that loads every model's presence from the database and feeds the
// per-model views that watchers (package worker/watcher) wrap.
//
// A Reader loads with one query for each writer's latest two slots,
// whatever the number of models: every writer (ping batcher) keeps one
// ping document per slot for all of its models, so the query returns
// O(writers) documents.
//
// Push. A Reader loads when it hears that a writer wrote something that
// matters, not every SyncInterval: every batcher appends a notice to a
// small capped collection when it flushes a prompt change (a key coming
// up, a Disconnect) or moves on to a new slot, and the reader tails it
// with a tailable awaitData cursor, which MongoDB (standalone or replica
// set) and the embedded server all have; its own batcher wakes it
// directly (Config.Wake). Besides notices it loads only when time alone
// may change what it reports (a writer's late bound running out), at
// least every quarter of a slot, and every SyncInterval while anything is
// held for time; about one read a second at rest where polling made ten.
// While the cursor is broken (a restart, a drop, a collection rolled past
// it, a server without capped collections) it polls every SyncInterval,
// counts and logs the break once, and when it can tail again it loads at
// once. Where the server has change streams (a replica set) a stream on
// the ping documents wakes it too. Config.NoPush turns push off. Why
// fewer reads make no live writer late is in schedule.go: reading later
// can only make the reader see a writer's progress later, which delays
// its late bound rather than advancing it, and the read that judges a
// writer late is scheduled at the bound itself. Each writer is judged by its own
// latest two slots, and a writer that falls behind by its progress over
// time (see view.apply): a slow writer is not a death.
//
// Clocks. A writer's slots are its own sequence, which never goes back
// whatever its clock does (see schema.Progress and pingbatcher). The
// reader never compares them, or a writer's stamps, with its own time:
// it asks each writer for its documents from the slot before the latest it
// judged (readFilter), believes a slot only if the writer can have
// reached it since the reader saw it move on, at one slot per slot length
// with both clocks within schema.MaxRate of the true rate (others are
// skipped and named once, as is a document whose _id disagrees with its
// fields), and judges a writer late once its sequence has not moved on
// for a Period of the reader's observed time: its clock's readings, never
// going back, in which a gap between loads longer than gapLimit (a paused
// process, a clock stepped forward) is a trouble of the reader's own,
// like a failed load. Only elapsed times on one clock are compared, so
// only the clocks' rates matter; leases, which compare an expiry with
// another process's clock, still assume clocks within their ClockSkew. When a writer names
// indexes the reader does not know, one more query fetches the writer's
// beings documents from the first unknown chunk on; a beings read that
// fails or ends at the deadline keeps what it brought. A key is alive
// while any of its pingers is: an agent that reconnects through another
// controller does not flap dead.
//
// A failed or missing read is never a death. Every load has a deadline
// (see Config.SyncInterval), so a stalled read is a failed one; when a load
// fails the reader keeps its last view, logs the error and tries again
// after a SyncInterval; for one Period after it can read again it reports no
// death that was not recorded by Disconnect, so that batchers have time to
// write the pings they buffered. A load slower than a quarter of a slot
// (a slow database, not a stalled one) is time no writer's silence counts
// (see view.slowed), and a late writer is held as in a stall until another
// writer moves on a slot after it (see view.holdLate): a writer is dead by
// its own silence only when the database took others' writes meanwhile.
// A document that does not decode, names
// impossible indexes or was written with another Period is skipped,
// never applied, and remembered by nobody: LoadStats.Skipped counts
// those of each load. Error lines are bounded by cause and time: one
// line per cause at most every LogEvery, saying how many it stands for
// (LoadStats.LinesHeld counts those held back).
//
// Nothing grows with what has gone. The view holds the keys that writers
// name now, and those they named within the last LogAge: a key that is
// dead and that no writer names any more (its writers were forgotten,
// after 16 loads without them and a Period or MaxStall of silence), or
// that no bit has named for LogAge (its writer released it), is
// forgotten, and so is a model with no key left; a forgotten key reads
// dead, and a writer that names it again has its beings read again.
//
// Delivery never blocks the reader: every channel passed to a View's Watch
// is fed by a goroutine of its own and holds at most one pending change
// per key, and every Subscription is pulled by its reader from the
// model's change log.
//
// The change log of a model numbers every change the model's views
// report (see Position), so that a subscriber that went away can resume
// after the last change it took (see SubscribeConfig.After). It is shared
// by the model's views, lives while any of them does and for LogAge
// after the last one closes (so that a watcher that restarts keeps its
// subscribers' positions), and is bounded by
// count (Config.LogLength, enforced as changes arrive) and by age
// (Config.LogAge, pruned on every load: it adds no timer). A subscriber
// that asks for changes the log no longer holds gets a reset and a
// snapshot, never a silent gap.
package presencereader
