package leasestore

import (
	"context"
	"runtime"
	"time"

	"github.com/juju/errors"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/lease"
)

// claimRequest is a claim on its way: to the writer, then to the reader
// to be confirmed (inserted) or to be decided on a read (not inserted),
// and back to the writer when decided.
type claimRequest struct {
	claim lease.Claim
	reply chan claimResult
	// attempts counts the terms of the claim that lost their insert or
	// their confirmation: a claim is tried once more, then refused.
	attempts int
	// decided is set once a read that began after the claim (or after
	// its last attempt) found basis, the lease's latest term: the writer
	// then decides the claim on basis, not on the view.
	decided bool
	basis   lease.Info
	// inserted is set once term, the claim's term, was inserted: the
	// next read that begins confirms it.
	inserted bool
	term     lease.Info
	// failedReads counts the reads the claim waited for that failed: it
	// fails with the second.
	failedReads int
}

// Claim claims or extends a lease as lease.Client.ClaimMany does: its
// term is inserted in the next insert of claims that the store's writer
// makes, and granted by the next read that begins after that insert
// ended, the read that is the store's next tick. Every claim that arrives
// while one insert is in flight goes in the next, and claims that arrive
// together at an idle writer (a burst of renewals) go in one insert,
// after a wait of a few milliseconds at most on the store's clock and
// none on a test's clock that stands still. A claim that the view would
// deny (another holder, or no read yet) waits for the next read and is
// decided on what it finds; a claim that loses a race to another writer
// is tried once more on a read that began after it lost; a claim whose
// read fails waits for the next, and fails with that one's failure. It
// returns the
// lease's new term, or lease.ErrHeld, lease.ErrNotHeld, lease.ErrInvalid,
// lease.ErrCorrupt, a NotValid error for a key outside the store's
// namespace or model, the database's error, ctx's error, or ErrStopped. A
// claim whose caller gave up may still be written.
func (s *Store) Claim(ctx context.Context, claim lease.Claim) (lease.Info, error) {
	if err := s.serves(claim.Key); err != nil {
		return lease.Info{}, errors.Trace(err)
	}
	req := claimRequest{claim: claim, reply: make(chan claimResult, 1)}
	select {
	case s.claims <- req:
	case <-s.catacomb.Dying():
		return lease.Info{}, catacomb.DeathError(&s.catacomb, ErrStopped)
	case <-ctx.Done():
		return lease.Info{}, ctx.Err()
	}
	return s.ask(ctx, req.reply)
}

// writer is the store's helper worker that inserts claims beside the
// reader, so that a claim never waits for a read under way nor a read for
// an insert.
type writer struct {
	store    *Store
	catacomb catacomb.Catacomb
}

func newWriter(s *Store) (*writer, error) {
	w := &writer{store: s}
	if err := catacomb.Invoke(catacomb.Plan{
		Name: "lease store writer",
		Site: &w.catacomb,
		Work: w.loop,
	}); err != nil {
		return nil, errors.Trace(err)
	}
	return w, nil
}

// Kill is part of the worker.Worker interface.
func (w *writer) Kill() {
	w.catacomb.Kill(nil)
}

// Wait is part of the worker.Worker interface.
func (w *writer) Wait() error {
	return w.catacomb.Wait()
}

// loop writes a batch of claims whenever claims arrive or a read hands
// some back.
func (w *writer) loop() error {
	s := w.store
	for {
		var batch []claimRequest
		// A claim that waited for the last insert is behind: it is
		// written with those that waited with it, without a burst's
		// wait, which would only make the writer spin while claims
		// keep coming.
		behind := false
		select {
		case c := <-s.claims:
			batch, behind = append(batch, c), true
		default:
			select {
			case <-w.catacomb.Dying():
				return w.catacomb.ErrDying()
			case c := <-s.claims:
				batch = append(batch, c)
			case <-s.queue.write:
			}
		}
		batch = w.gather(append(batch, s.queue.forWrite()...), behind)
		w.write(batch)
	}
}

// gather adds to batch the claims that arrive until the writer has seen
// none for a quiet time, as the comment on loneQuiet says, a lone claim's
// when behind, and returns it. It must only be called from the writer's
// loop goroutine.
func (w *writer) gather(batch []claimRequest, behind bool) []claimRequest {
	clk := w.store.config.Clock
	start := clk.Now()
	last, seen, still := start, start, 0
	for {
		select {
		case c := <-w.store.claims:
			batch = append(batch, c)
			last = clk.Now()
			continue
		default:
		}
		quiet, looks := loneQuiet, loneLooks
		if len(batch) > 1 && !behind {
			quiet, looks = burstQuiet, burstLooks
		}
		now := clk.Now()
		if now.Equal(seen) {
			still++
		} else {
			seen, still = now, 0
		}
		if now.Sub(last) >= quiet || now.Sub(start) >= maxGather || still >= looks {
			return batch
		}
		runtime.Gosched()
	}
}

// A batch is gathered without a timer, so that a claim on a test's clock
// needs no advancing: between looks for more claims the writer yields its
// processor, so that callers already on their way reach the batch, and it
// stops looking once no claim has arrived for a quiet time on the store's
// clock. A lone claim waits loneQuiet, a few per cent of a round trip.
// Once two or more claims have come together (a burst: a controller's
// units renewing at once, or claiming after a restart) the writer waits
// burstQuiet, so that the burst makes one batch and one insert rather
// than a first few claims alone and the rest in a second insert. Claims
// that keep arriving are written after maxGather at most, and claims that
// waited for the last insert (the writer is behind them) after loneQuiet
// without one more: they were gathered by that insert. On a clock that
// stands still (a test's) the writer stops after loneLooks or burstLooks
// looks in a row that saw the clock unmoved.
const (
	loneQuiet  = 200 * time.Microsecond
	burstQuiet = 5 * time.Millisecond
	maxGather  = 20 * time.Millisecond
	loneLooks  = 64
	burstLooks = 16384
)

// write inserts, with one InsertClaims, the claims of batch that it can
// decide: those decided on a read, and those that the view would grant.
// The others, and those that lost their insert for the first time, wait
// for the next read to be decided on; those inserted wait for it to be
// confirmed. The rest are answered. It must only be called from the
// writer's loop goroutine.
func (w *writer) write(batch []claimRequest) {
	s := w.store
	v := s.current()
	now := s.config.Clock.Now()
	var insert, unread []claimRequest
	current := make(map[lease.Key]lease.Info)
	for _, c := range batch {
		info := c.basis
		if !c.decided {
			info = v.models[c.claim.Key.Model][c.claim.Key.Lease]
			if v.readAt.IsZero() || denies(info, c.claim, now) {
				unread = append(unread, c)
				continue
			}
		}
		if info.Term > current[c.claim.Key].Term {
			current[c.claim.Key] = info
		}
		insert = append(insert, c)
	}
	s.queue.await(unread)
	if len(insert) == 0 {
		return
	}
	claims := make([]lease.Claim, len(insert))
	for i, c := range insert {
		claims[i] = c.claim
	}
	ctx, cancel := catacomb.Call(&w.catacomb, s.config.CallTimeout)
	infos, errs, err := s.config.Client.InsertClaims(ctx, claims, current)
	cancel()
	if err != nil {
		s.stats.batch("claim", len(insert), err)
		err = errors.Annotatef(err, "cannot claim %d leases", len(insert))
		for _, c := range insert {
			c.reply <- claimResult{err: err}
		}
		return
	}
	var written []claimRequest
	for i, c := range insert {
		switch {
		case errs[i] == nil:
			c.inserted, c.term = true, infos[i]
			written = append(written, c)
		case errors.Is(errs[i], lease.ErrInvalid) && c.attempts == 0:
			c.attempts++
			c.decided = false
			written = append(written, c)
		default:
			c.reply <- claimResult{err: errs[i]}
		}
	}
	s.queue.await(written)
	// Counted once its claims wait for the reader.
	s.stats.batch("claim", len(insert), nil)
}

// denies reports whether a claim decided on info, the view's term of its
// lease, would be refused: then it is decided on a read instead, so that
// no claim is refused on a view older than the claim (a release since, or
// the claimant's own claim through another controller).
func denies(info lease.Info, claim lease.Claim, now time.Time) bool {
	mine := info.Holder == claim.Request.Holder && info.Foreign == ""
	return !mine && (claim.ExtendOnly || !info.Free(now))
}
