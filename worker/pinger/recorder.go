package pinger

import (
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// ErrUnknownIdentity is returned by a PingRecorder for an identity it did
// not hand out, or no longer honours (it was released, or the recorder
// retired the writer it belonged to). A pinger that gets it registers
// again.
const ErrUnknownIdentity = errors.ConstError("unknown pinger identity")

// Identity is the name under which a pinger's pings are recorded: an index
// in a writer's bitmaps for one model. A PingRecorder hands it out; the
// pinger passes it back unchanged.
type Identity struct {
	// Model is the model's UUID.
	Model string

	// Writer is the id of the writer that owns the index.
	Writer string

	// Index is the pinger's bit in the writer's bitmaps.
	Index uint32
}

// PingRecorder records pings in memory and writes them later, for many
// pingers at once. *pingbatcher.PingBatcher implements it. Every method
// must be safe for concurrent use and must not block on the database.
type PingRecorder interface {
	// Register returns a fresh identity for key in model, to be used
	// with base. It fails with a NotValid error for bad input, and when
	// base is not the collection the recorder writes to; a nil base
	// means the recorder's own.
	Register(base *mongo.Collection, model names.ModelTag, key string) (Identity, error)

	// Ping records that id was alive in slot. It fails with
	// ErrUnknownIdentity when id is not current.
	Ping(id Identity, slot int64) error

	// Disconnect records that id disconnected in slot: watchers report
	// its key dead unless another identity of the key is alive. It fails
	// with ErrUnknownIdentity when id is not current and the recorder
	// has nothing of it left to mark dead; an identity of a writer the
	// recorder retired lately, whose documents still show the key alive,
	// has its death recorded there.
	Disconnect(id Identity, slot int64) error

	// Release returns id to the recorder; only the same key may reuse
	// its index. Releasing an unknown identity does nothing.
	Release(id Identity)

	// Period is the slot length the recorder's writes are read with:
	// a pinger must ping in the same slots, or watchers would read its
	// key dead.
	Period() time.Duration
}
