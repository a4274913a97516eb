// Package agenttest holds what the tests of presencekit's users, and our
// own, need: a MongoDB-wire server (the embedded FerretDB, or an external
// MongoDB named by PRESENCE_TEST_MONGO_URI), a check.v1 fixture that gives
// every test a fresh database, the adapter that lets
// github.com/juju/worker/v4/workertest take a *check.C, helpers for
// github.com/juju/clock/testclock, and helpers for manifold tests built on
// dependency/testing.StubGetter.
//
// The embedded server runs as a separate process (the embeddedmongo command
// in this module, built on first use with "go build") so that a race-enabled
// test binary does not carry an instrumented database server. Set
// PRESENCE_TEST_MONGOD to a prebuilt binary to skip the build.
package agenttest
