// Package presence is presencekit's root: the manifolds that put presence
// (who is alive) and leadership (who leads) into a juju/worker/v4
// dependency engine, the Agent interface that a user's agent types
// implement, a ready implementation of it over a pinger and a watcher, and
// model-wide housekeeping.
//
// # The controller set
//
// ControllerManifolds returns the set a controller process installs once,
// whatever the number of models it hosts. Its manifolds, by name:
//
//   - ClockName: the clock every worker reads (absent when the config
//     names the engine's own clock).
//   - PingBatcherName: worker/pingbatcher, which gathers the pings of
//     every model's pingers in memory and writes them in one document per
//     flush.
//   - ReaderName: worker/presencereader, which loads every model's pings
//     in a constant number of queries per sync and feeds the model sets'
//     watchers.
//   - PrunerName: worker/pruner, which removes the ping documents and
//     identity records that no reader can need any more.
//   - LeaseStoreName: worker/leasestore, which reads every model's leases
//     once a tick and batches the claims of every model's lease manager.
//
// # The model set
//
// ModelManifolds returns one model's set, installed once per model beside
// the controller set, in the same engine or in a nested engine per model
// that offers the controller set's outputs (ControllerOutputs.Manifolds):
//
//   - WatcherName: worker/watcher, the model's view of the reader: who is
//     alive, Watch, Subscribe.
//   - LeaseManagerName: worker/leaseexpiry, the model's leadership:
//     claims, checks with fenced tokens, blocking until a lease is
//     released.
//   - PresenceRecorderName: worker/presencerecorder, the record of agent
//     connections per API server.
//   - PingerName and AgentName, with ModelManifoldsConfig.AgentKey:
//     worker/pinger, which keeps that key alive through the controller's
//     batcher, and the Agent built over it and the watcher (see
//     AgentManifold).
//
// # The model host
//
// ModelHostManifold is juju's model worker manager for these sets: on the
// controller set's outputs it runs one nested engine per model that a
// ModelSource names (ModelList, or a source of your own), with the
// model's set and your own manifolds for it, starting and stopping
// engines as models come and go. It owns the order of a stop: the
// controller's workers outlive the model engines that use them, so a
// clean stop logs no error.
//
// Manifolds puts both sets in one engine for a process that serves a
// single model.
//
// # Storage
//
// A controller writes one ping document per flush whatever the number of
// models and agents; every write is idempotent; and the only thing writers
// race for (an identity, a lease term) is decided by a unique-_id insert,
// which makes the design correct on MongoDB and on MongoDB-compatible
// servers alike. The README describes the documents and what each worker
// reads and writes.
package presence
