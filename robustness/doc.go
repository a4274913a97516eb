// Package robustness checks presence and leadership the way etcd's
// robustness tests check etcd: scenarios generated from a seed run real
// controllers (each with its own client, its own wire proxy and its own
// skewed clock) against the real out-of-process embedded server while
// faults are injected; every operation and every event is recorded with
// its start and end on the harness's one clock; and the recorded history
// is checked against models:
//
//   - leases (CheckLeases): the claims, checks, releases and returned
//     blocks of every lease are linearizable, by Porcupine, against a
//     sequential fenced lease that may lapse once its duration has passed:
//     at most one holder, a fence that rises on every change of holder, a
//     check that says yes was true at some instant inside the call;
//   - blocks (CheckBlocks): a BlockUntilLeadershipReleased returns within
//     its bound once the lease was released and left free;
//   - presence (CheckPresence): no key reads dead while one of its pingers
//     was up and its controller making progress, none reads alive past
//     Period + flush + sync after its last pinger stopped or its
//     controller was killed, allowing the documented holds after any
//     trouble the history records (faults, and the batchers' flushes, the
//     pingers' pings and the readers' loads, which tell a starved writer
//     or reader: AllowedDeaths);
//   - streams (CheckStreams): every subscription and /watch stream sees
//     its view's changes in order, none lost, and a resumed one continues
//     exactly after the position it gave;
//   - resources (CheckResources): documents, view entries and heaps stay
//     within bounds derived from what is live.
//
// The checkers are plain functions of a History, so that deliberately
// broken histories (the positive controls in this package's tests) prove
// that each can fail. The scenario generator (NewPlan) decides everything
// from a seed; the fault kinds it may use are listed in one place,
// CIFaults, and those that expose defects not fixed yet in
// KnownDefectFaults, which is empty now: every kind runs in CI, clock
// steps of a whole controller or of one presence worker's clock included.
// ROBUSTNESS.md says how to run it and what it found.
package robustness
