// Package lease holds leases (for example, application leadership) in
// MongoDB, safely across any number of writers.
//
// Safety model. A lease is a chain of terms. Every change to a lease (a
// claim, an extension, a release, an expiry, a pin or an unpin) inserts the
// next term as a new document whose _id is the lease's key plus the term
// number. The database's unique _id index is the only arbiter: of two
// writers that read term N and race to write term N+1, exactly one insert
// succeeds and the other fails with E11000, which the client reports as
// ErrInvalid ("re-read and try again"). Nothing is ever updated in place,
// so this holds on MongoDB and on servers whose conditional updates are not
// atomic across connections. There are no transactions. Readers take the
// highest term of a lease as its state.
//
// Why a stall cannot reopen a term. Prune removes a term only when a
// higher term of its lease exists, and never the highest. So once any term
// above N has been written, some term above N exists for good. A claim
// may stall for any time between its read of term N and its insert of
// N+1, long enough for the lease to move on and for Prune to free the _id
// of term N+1 again; its insert then succeeds, but the term above it
// remains. That is why every claim and extension reads its leases once
// more after its insert and is granted only if the term it inserted is
// then the latest: a latest term was never pruned, so its insert reused no
// _id, and its predecessor was the lease's real state. ClaimMany makes
// that read itself; a caller of InsertClaims makes it (any read of the
// lease that begins after the insert returned will do, one for many
// inserts) and asks Confirm. A lost reply is
// safe too: the insert either happened (a retry fails on its _id, or finds
// the term already its own) or not. Releases, expiries and pins are not
// confirmed: a stale one inserts a term below the latest, which every
// reader ignores and the next Prune removes.
//
// Concerns. The client forces write concern majority (journaled), read
// concern majority and primary reads on its collection, whatever the
// connection string says: a granted term is never rolled back by a
// failover, and no check sees a term that could be.
//
// Time. A term's expiry is computed from the claimant's clock at the start
// of the call, so a granted claim is valid for at least its duration from
// the moment the call began. Another client treats a lease as free only
// once its own clock passes expiry + ClockSkew; if the clocks of all
// clients differ by at most ClockSkew, at most one holder holds a lease at
// any instant. Beyond that bound two holders may overlap by the excess.
// Every term carries a fence number that rises whenever the holder
// changes: a holder may rely on its lease until its expiry by its own
// clock, and should store the fence beside its writes so that a resource
// can refuse a deposed holder's late writes.
//
// Input. A term's _id alone says which lease and which term it is
// (namespace#model#lease#number): reads select terms by _id range, and
// the latest term of a lease is the one whose _id names the highest
// number, whatever else is wrong with it. So no _id is ever written twice,
// even above documents that another client wrote or damaged. A latest
// term that this package did not write (a field missing, of another
// type, or not what its _id says) is Foreign: nobody holds it, but the
// holder it names, if any, keeps others out until its expiry, and the
// next holder's fence is above every fence that any term of the lease
// carries (HighestFence), so a fence never repeats nor goes back. The
// chain then goes on above it: one such term costs at most one claim.
// A document whose _id names no lease (not four parts without #) can
// collide with no term and is skipped.
//
// Frozen leases. Where the chain cannot go on safely, the lease is frozen
// (Info.Invalid): neither free nor granted to anyone, every change failing
// with ErrCorrupt, logged at error once with its reason. That is when a
// term _id of the lease names no number, when a term or fence number has
// reached its limit (the next would be 2^62), and when the latest term's
// holder, expiry or pins cannot be read or its expiry lies further ahead
// than MaxDuration (so every client sharing a collection must use the
// same MaxDuration). A holder whose valid term froze the lease still
// holds it until its expiry. An operator ends a freeze with Reset, which
// writes a free term above every number below the limit and removes the
// lease's other terms.
//
// Numbers. No term or fence number at or above 2^62 is ever written: a
// claim, extension, pin or release that would write one is refused
// before anything is written (ErrCorrupt), and one that is written reads
// back as written.
//
// Pins. A pin lasts until its entity unpins it, through every change of
// holder: a pinned lease never lapses, whoever holds it.
//
// Storage. Superseded terms are removed by Prune (the lease store calls
// it), which keeps the latest term of each lease, so the fence number
// never goes back.
package lease

import (
	"context"
	"time"

	"github.com/juju/errors"
)

// Errors, by when they occur.
const (
	// ErrInvalid means another writer changed the lease between this
	// client's read and its write: re-read and try again.
	ErrInvalid = errors.ConstError("lease changed by another writer; re-read")

	// ErrHeld is returned by a claim of a lease that another holder
	// holds (or that is pinned).
	ErrHeld = errors.ConstError("lease held by another holder")

	// ErrNotHeld is returned by Extend and Release when the lease is not
	// held by the given holder.
	ErrNotHeld = errors.ConstError("lease not held")

	// ErrCorrupt is returned by every change of a frozen lease (see
	// Info.Invalid), until an operator resets it, and by a change that
	// would write a term or fence number at its limit.
	ErrCorrupt = errors.ConstError("lease is frozen")
)

// Key names a lease.
type Key struct {
	// Namespace separates kinds of lease, e.g. "application-leadership".
	Namespace string
	// Model is the model's UUID.
	Model string
	// Lease is the lease's name, e.g. an application name.
	Lease string
}

// Info is a lease's current (latest) term.
type Info struct {
	// Holder holds the lease; empty when it was released or expired.
	Holder string
	// Expiry is when the holder's claim ends, by the claimant's clock.
	Expiry time.Time
	// Term is the term number; every change adds one.
	Term int64
	// Fence rises whenever the holder changes. For a Foreign term it is
	// HighestFence.
	Fence int64
	// HighestFence is the highest fence that any term of the lease
	// carries: the next holder's fence is above it.
	HighestFence int64
	// Pins lists the entities that pinned the lease; a pinned lease does
	// not expire.
	Pins []string
	// FreeAt is when others may claim the lease unless it is pinned:
	// Expiry plus the client's ClockSkew.
	FreeAt time.Time
	// Invalid, when not empty, says why the lease is frozen (see the
	// package doc): it is not free, and nobody is granted it until an
	// operator resets it.
	Invalid string
	// Foreign, when not empty, says why the latest term is not one this
	// package wrote: nobody holds it, but the holder it names keeps
	// others out until FreeAt.
	Foreign string
}

// Free reports whether others may claim the lease at now: nobody holds
// it, or the holder's claim ended at least ClockSkew ago and nobody
// pinned it.
func (i Info) Free(now time.Time) bool {
	return i.Invalid == "" && (i.Holder == "" || (!i.Pinned() && !now.Before(i.FreeAt)))
}

// Pinned reports whether anyone pinned the lease.
func (i Info) Pinned() bool {
	return len(i.Pins) > 0
}

// HeldBy reports whether holder holds the lease at now: its term, one
// this package wrote, names the holder and has not expired, or is pinned.
func (i Info) HeldBy(holder string, now time.Time) bool {
	return i.Foreign == "" && holder != "" && i.Holder == holder && (i.Pinned() || now.Before(i.Expiry))
}

// Request is a claim or an extension.
type Request struct {
	// Holder is who claims. It must not be empty.
	Holder string
	// Duration is how long the claim lasts from the start of the call.
	// It must be positive.
	Duration time.Duration
}

// Claim is one lease of a batch claim.
type Claim struct {
	Key     Key
	Request Request
	// ExtendOnly makes the claim fail with ErrNotHeld unless Holder
	// holds the lease already.
	ExtendOnly bool
}

// Client reads and changes leases. Every method is safe for concurrent
// use; none keeps state between calls.
type Client interface {
	// ClaimMany claims or extends each lease with one read, one
	// unordered insert and one confirming read, whatever their number
	// (see the package doc for why the confirmation). It returns the resulting
	// term of each claim, or its error: ErrHeld, ErrNotHeld (ExtendOnly)
	// or ErrInvalid. The second result is a database error that failed
	// the whole batch.
	ClaimMany(ctx context.Context, claims []Claim) ([]Info, []error, error)

	// ClaimManyOn is ClaimMany on current, the latest terms as the
	// caller last read them (a key absent from it has no term), instead
	// of a read of its own: one insert and one confirming read. A stale
	// current is safe: a claim based on a superseded term loses its
	// insert or its confirmation and fails with ErrInvalid.
	ClaimManyOn(ctx context.Context, claims []Claim, current map[Key]Info) ([]Info, []error, error)

	// InsertClaims is ClaimManyOn without its confirming read: one
	// insert. A term it returns is NOT granted yet: the caller must
	// read the lease in a read that begins after InsertClaims returned
	// and pass the term and what that read found to Confirm, and may
	// rely on the term only if Confirm returns nil. So one read can
	// confirm the claims of many inserts, and serve as a caller's
	// periodic read besides. Its errors are ClaimManyOn's, ErrInvalid
	// meaning a lost insert.
	InsertClaims(ctx context.Context, claims []Claim, current map[Key]Info) ([]Info, []error, error)

	// Claim claims key for req.Holder, or extends it if the holder
	// holds it already. It fails with ErrHeld or ErrInvalid.
	Claim(ctx context.Context, key Key, req Request) (Info, error)

	// Extend extends key, which req.Holder must hold. It fails with
	// ErrNotHeld or ErrInvalid.
	Extend(ctx context.Context, key Key, req Request) (Info, error)

	// Release ends holder's claim at once. It fails with ErrNotHeld or
	// ErrInvalid.
	Release(ctx context.Context, key Key, holder string) error

	// ReleaseTerm releases key only if its latest term is still the one
	// described by term, as a claim or extension returned it (the same
	// term number, holder and expiry): a lease extended or changed since,
	// through another client say, is left alone and ErrNotHeld returned.
	ReleaseTerm(ctx context.Context, key Key, term Info) error

	// Expire records that an expired, unpinned lease is free. It fails
	// with ErrHeld if the lease has not expired or is pinned, and with
	// ErrInvalid.
	Expire(ctx context.Context, key Key) error

	// ExpireMany is Expire for many leases, of any models, with one read
	// and one unordered insert whatever their number. It returns each
	// key's error (nil when the lease is free now, ErrHeld, ErrInvalid or
	// a NotValid error for a bad key); the second result is a database
	// error that failed the whole batch.
	ExpireMany(ctx context.Context, keys []Key) ([]error, error)

	// ExpireManyOn is ExpireMany on current, the latest terms as the
	// caller last read them, instead of a read of its own: one insert. A
	// stale current is safe: an expiry based on a superseded term loses
	// its insert, or lands below the latest term where nobody reads it.
	ExpireManyOn(ctx context.Context, keys []Key, current map[Key]Info) ([]error, error)

	// Pin stops key from expiring until every entity that pinned it has
	// unpinned it. Pinning twice is harmless.
	Pin(ctx context.Context, key Key, entity string) error

	// Unpin removes entity's pin. Unpinning an unpinned lease does
	// nothing.
	Unpin(ctx context.Context, key Key, entity string) error

	// Leases returns the latest term of each lease of namespace and
	// model, or of the named ones only, in one read. An empty model
	// means every model: the leases of a whole controller in one read.
	Leases(ctx context.Context, namespace, model string, leases ...string) (map[Key]Info, error)

	// ReadMany returns the latest term of each of keys that has one, in
	// one read whatever their number, namespaces and models: what many
	// leadership checks made at once cost together.
	ReadMany(ctx context.Context, keys []Key) (map[Key]Info, error)

	// Snapshot is Leases of a whole namespace, or of one model of it,
	// that also names the superseded terms, for PruneOn: one read.
	Snapshot(ctx context.Context, namespace, model string) (Snapshot, error)

	// Prune removes every superseded term of namespace and model's
	// leases, keeping the latest of each, and returns how many went. An
	// empty model means every model. It costs one read and one delete
	// per MaxPruneBatch superseded terms, whatever the number of models.
	Prune(ctx context.Context, namespace, model string) (int, error)

	// PruneOn is Prune of the terms that snap found superseded, without
	// a read: a term below its lease's latest stays superseded for good.
	PruneOn(ctx context.Context, snap Snapshot) (int, error)

	// Reset ends the freeze of a frozen lease, for an operator: it writes
	// a free term numbered above every term number, with the highest
	// fence, below their limit, then removes the lease's other terms
	// (those that froze it included). Pins are dropped with them. It
	// returns the new term, or fails with ErrNotFrozen, ErrInvalid
	// (another writer got in first: read and try again) or the
	// database's error.
	Reset(ctx context.Context, key Key) (Info, error)
}
