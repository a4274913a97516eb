package lease

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/juju/clock"
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// DefaultClockSkew is the clock difference tolerated between clients when
// ClockSkew is zero.
const DefaultClockSkew = time.Second

// DefaultMaxDuration is ClientConfig.MaxDuration's default.
const DefaultMaxDuration = time.Hour

// maxMaxDuration bounds MaxDuration so that no expiry it allows can
// overflow: about 290 years fit in an int64 of nanoseconds from 1970.
const maxMaxDuration = 100 * 365 * 24 * time.Hour

// MaxPruneBatch is the most superseded terms one delete of Prune removes:
// pruning every ten ticks, a controller renews far fewer leases than this
// between prunes, so a prune is one read and one delete.
const MaxPruneBatch = 10000

// readBatch is the batch size of lease reads, large enough for every term
// of a model's leases to come back in one reply.
const readBatch = 100000

// Logger is the logging a client needs; dependency.Logger fits.
type Logger interface {
	Debugf(string, ...any)
	Errorf(string, ...any)
}

// ClientConfig holds what NewClient needs.
type ClientConfig struct {
	// Collection holds the lease terms. It must not be nil.
	Collection *mongo.Collection

	// Clock gives the time for expiries. It must not be nil.
	Clock clock.Clock

	// Logger is optional; nil means silent.
	Logger Logger

	// MaxDuration is the longest claim the client accepts, and the
	// furthest in the future, from the time of a read, that an expiry
	// it reads may lie: a term beyond it was not written by a client of
	// this package and is skipped. Zero means DefaultMaxDuration; it
	// must not be negative.
	MaxDuration time.Duration

	// ClockSkew is the most that the clocks of the clients sharing the
	// collection may differ by: a lease is free to others only once
	// their clock passes its expiry plus ClockSkew. Zero means
	// DefaultClockSkew; it must not be negative.
	ClockSkew time.Duration
}

// Validate returns a NotValid error naming the first bad field.
func (config ClientConfig) Validate() error {
	if config.Collection == nil {
		return errors.NotValidf("nil Collection")
	}
	if config.Clock == nil {
		return errors.NotValidf("nil Clock")
	}
	if config.ClockSkew < 0 {
		return errors.NotValidf("negative ClockSkew")
	}
	if config.MaxDuration < 0 || config.MaxDuration > maxMaxDuration {
		return errors.NotValidf("MaxDuration %v (must be in [0, %v])", config.MaxDuration, maxMaxDuration)
	}
	return nil
}

// NewClient returns a Client over a MongoDB collection.
func NewClient(config ClientConfig) (Client, error) {
	if err := config.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	if config.ClockSkew == 0 {
		config.ClockSkew = DefaultClockSkew
	}
	if config.MaxDuration == 0 {
		config.MaxDuration = DefaultMaxDuration
	}
	config.Collection = safeCollection(config.Collection)
	return &client{config: config}, nil
}

// safeCollection returns coll with what lease safety needs, whatever the
// connection string or the collection's own options say: writes
// acknowledged by a majority of a replica set, journaled, so that a
// granted term cannot be rolled back when a primary steps down; reads of
// majority-committed data only, so that a check never sees a term that
// is rolled back later; and reads from the primary, so that a check
// never reads a secondary that has not seen a release. On a single
// server these cost nothing. The presence collections keep the
// connection's defaults: a ping lost in a failover is rewritten within a
// flush, and a late read only slows detection.
func safeCollection(coll *mongo.Collection) *mongo.Collection {
	journaled := true
	wc := writeconcern.Majority()
	wc.Journal = &journaled
	return coll.Database().Collection(coll.Name(), options.Collection().
		SetWriteConcern(wc).
		SetReadConcern(readconcern.Majority()).
		SetReadPreference(readpref.Primary()))
}

type client struct {
	config ClientConfig

	// reported holds every frozen lease, foreign term and nobody's
	// term already logged, with its reason.
	reported sync.Map
}

// termDoc is one term of a lease.
type termDoc struct {
	ID        string   `bson:"_id"`
	Namespace string   `bson:"ns"`
	Model     string   `bson:"model"`
	Lease     string   `bson:"lease"`
	Term      int64    `bson:"term"`
	Holder    string   `bson:"holder"`
	Expiry    int64    `bson:"expiry"`
	Fence     int64    `bson:"fence"`
	Pins      []string `bson:"pins"`
}

func (d termDoc) key() Key {
	return Key{Namespace: d.Namespace, Model: d.Model, Lease: d.Lease}
}

func (d termDoc) info(skew time.Duration) Info {
	expiry := time.Unix(0, d.Expiry)
	return Info{Holder: d.Holder, Expiry: expiry, Term: d.Term, Fence: d.Fence, HighestFence: d.Fence, Pins: d.Pins, FreeAt: expiry.Add(skew)}
}

// next returns the document of the term after info's: the same holder,
// expiry, fence and pins.
func next(key Key, info Info) termDoc {
	term := info.Term + 1
	return termDoc{
		ID:        termID(key, term),
		Namespace: key.Namespace,
		Model:     key.Model,
		Lease:     key.Lease,
		Term:      term,
		Holder:    info.Holder,
		Expiry:    info.Expiry.UnixNano(),
		Fence:     info.Fence,
		Pins:      slices.Clone(info.Pins),
	}
}

// writable returns an error unless doc's numbers are below limit, so that
// every term written reads back as what it is: checked before anything is
// written.
func writable(doc termDoc) error {
	if doc.Term >= limit || doc.Fence >= limit {
		return errors.Annotatef(ErrCorrupt, "%s: term %d, fence %d: numbers exhausted", doc.Lease, doc.Term, doc.Fence)
	}
	return nil
}

// termRecord is a term as it is written: the term and, for people reading
// the collection, its expiry as a date. Nothing reads ExpiresAt back: the
// algorithm uses Expiry, in nanoseconds.
type termRecord struct {
	Doc       termDoc   `bson:",inline"`
	ExpiresAt time.Time `bson:"expiresAt"`
}

func (d termDoc) record() termRecord {
	if d.Pins == nil {
		// An empty list, not null, for whoever reads the document.
		d.Pins = []string{}
	}
	return termRecord{Doc: d, ExpiresAt: time.Unix(0, d.Expiry).UTC()}
}

func validateKey(key Key) error {
	for _, part := range []struct{ name, value string }{
		{"namespace", key.Namespace}, {"model", key.Model}, {"lease", key.Lease},
	} {
		if err := validatePart(part.name, part.value); err != nil {
			return err
		}
	}
	return nil
}

func (c *client) validateRequest(req Request) error {
	if req.Holder == "" {
		return errors.NotValidf("empty holder")
	}
	if req.Duration <= 0 || req.Duration > c.config.MaxDuration {
		return errors.NotValidf("duration %v (must be in (0, %v])", req.Duration, c.config.MaxDuration)
	}
	return nil
}

// ClaimMany is part of the Client interface.
func (c *client) ClaimMany(ctx context.Context, claims []Claim) ([]Info, []error, error) {
	return c.claimMany(ctx, claims, nil)
}

// ClaimManyOn is part of the Client interface.
func (c *client) ClaimManyOn(ctx context.Context, claims []Claim, current map[Key]Info) ([]Info, []error, error) {
	return c.claimMany(ctx, claims, given(current))
}

// InsertClaims is part of the Client interface.
func (c *client) InsertClaims(ctx context.Context, claims []Claim, current map[Key]Info) ([]Info, []error, error) {
	return c.insertClaims(ctx, claims, given(current))
}

// given returns current, or an empty map (no lease has a term) when it
// is nil, so that a method "On" a caller's view never reads.
func given(current map[Key]Info) map[Key]Info {
	if current == nil {
		return map[Key]Info{}
	}
	return current
}

// claimMany claims on current, or on a fresh read when current is nil,
// and confirms the terms it inserted with a read of its own.
func (c *client) claimMany(ctx context.Context, claims []Claim, current map[Key]Info) ([]Info, []error, error) {
	infos, errs, err := c.insertClaims(ctx, claims, current)
	if err != nil {
		return nil, nil, errors.Trace(err)
	}
	if err := c.confirm(ctx, claims, infos, errs); err != nil {
		return nil, nil, errors.Trace(err)
	}
	return infos, errs, nil
}

// insertClaims decides each claim on current, or on a fresh read when
// current is nil, and inserts the terms of those it would grant, without
// confirming them.
func (c *client) insertClaims(ctx context.Context, claims []Claim, current map[Key]Info) ([]Info, []error, error) {
	now := c.config.Clock.Now()
	infos := make([]Info, len(claims))
	errs := make([]error, len(claims))
	var keys []Key
	for i, cl := range claims {
		if err := validateKey(cl.Key); err != nil {
			errs[i] = errors.Trace(err)
		} else if err := c.validateRequest(cl.Request); err != nil {
			errs[i] = errors.Trace(err)
		} else {
			keys = append(keys, cl.Key)
		}
	}
	if current == nil {
		var err error
		if current, err = c.read(ctx, keys); err != nil {
			return nil, nil, errors.Trace(err)
		}
	}
	var docs []termDoc
	var docIndex []int
	for i, cl := range claims {
		if errs[i] != nil {
			continue
		}
		cur := current[cl.Key]
		doc := next(cl.Key, cur)
		mine := cur.Holder == cl.Request.Holder
		switch {
		case cur.Invalid != "":
			errs[i] = errors.Annotatef(ErrCorrupt, "%s: %s", cl.Key.Lease, cur.Invalid)
			continue
		case mine && cur.Foreign == "":
			doc.Expiry = max(cur.Expiry.UnixNano(), now.Add(cl.Request.Duration).UnixNano())
		case cl.ExtendOnly:
			errs[i] = errors.Annotatef(ErrNotHeld, "%s by %q", cl.Key.Lease, cl.Request.Holder)
			continue
		case !mine && !cur.Free(now):
			errs[i] = errors.Annotatef(ErrHeld, "%s by %q", cl.Key.Lease, cur.Holder)
			continue
		default:
			// A new holder, or the holder a foreign term names: a
			// new fence, above every fence the lease has carried.
			// The pins stay until unpinned.
			doc.Holder = cl.Request.Holder
			doc.Expiry = now.Add(cl.Request.Duration).UnixNano()
			doc.Fence = max(cur.Fence, cur.HighestFence) + 1
		}
		if err := writable(doc); err != nil {
			errs[i] = err
			continue
		}
		infos[i] = doc.info(c.config.ClockSkew)
		docs = append(docs, doc)
		docIndex = append(docIndex, i)
	}
	if len(docs) == 0 {
		return infos, errs, nil
	}
	lost, err := c.insert(ctx, docs)
	if err != nil {
		return nil, nil, errors.Trace(err)
	}
	for _, n := range lost {
		i := docIndex[n]
		infos[i], errs[i] = Info{}, errors.Annotatef(ErrInvalid, "%s", claims[i].Key.Lease)
	}
	return infos, errs, nil
}

// confirm reads the leases of the claims that won their insert again and
// withdraws every one that Confirm does not confirm on that read.
func (c *client) confirm(ctx context.Context, claims []Claim, infos []Info, errs []error) error {
	var keys []Key
	for i, cl := range claims {
		if errs[i] == nil {
			keys = append(keys, cl.Key)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	latest, err := c.read(ctx, keys)
	if err != nil {
		return errors.Annotate(err, "cannot confirm lease claims")
	}
	for i, cl := range claims {
		if errs[i] == nil {
			if errs[i] = Confirm(cl.Key, infos[i], latest[cl.Key]); errs[i] != nil {
				infos[i] = Info{}
			}
		}
	}
	return nil
}

// Confirm returns nil if inserted, a term of key that InsertClaims
// inserted, is the lease's latest term, latest, as a read found it that
// began after the insert returned; otherwise it returns ErrInvalid and
// the claim is not granted. A term is only ever pruned once a higher one
// exists, and the highest term of a lease is never removed, so an
// inserted term that is the latest afterwards was never pruned before:
// the insert did not reuse the _id of a term that came and went while
// the claim stalled between its read and its write. A term that is not
// the latest is withdrawn even when a later term is a legitimate
// successor: the claim is then over anyway.
func Confirm(key Key, inserted, latest Info) error {
	if latest.Term != inserted.Term {
		return errors.Annotatef(ErrInvalid, "%s (term %d superseded)", key.Lease, inserted.Term)
	}
	return nil
}

// Claim is part of the Client interface.
func (c *client) Claim(ctx context.Context, key Key, req Request) (Info, error) {
	return c.claimOne(ctx, Claim{Key: key, Request: req})
}

// Extend is part of the Client interface.
func (c *client) Extend(ctx context.Context, key Key, req Request) (Info, error) {
	return c.claimOne(ctx, Claim{Key: key, Request: req, ExtendOnly: true})
}

func (c *client) claimOne(ctx context.Context, claim Claim) (Info, error) {
	infos, errs, err := c.ClaimMany(ctx, []Claim{claim})
	if err != nil {
		return Info{}, errors.Trace(err)
	}
	return infos[0], errs[0]
}

// Release is part of the Client interface.
func (c *client) Release(ctx context.Context, key Key, holder string) error {
	return c.change(ctx, key, func(cur Info, now time.Time) (termDoc, bool, error) {
		if holder == "" || cur.Holder != holder {
			return termDoc{}, false, errors.Annotatef(ErrNotHeld, "%s by %q", key.Lease, holder)
		}
		return releasedTerm(key, cur, now), true, nil
	})
}

// releasedTerm returns the term after cur that frees key at now.
func releasedTerm(key Key, cur Info, now time.Time) termDoc {
	doc := next(key, cur)
	doc.Holder, doc.Expiry = "", now.UnixNano()
	return doc
}

// ReleaseTerm is part of the Client interface.
func (c *client) ReleaseTerm(ctx context.Context, key Key, term Info) error {
	return c.change(ctx, key, func(cur Info, now time.Time) (termDoc, bool, error) {
		if term.Holder == "" || cur.Term != term.Term || cur.Holder != term.Holder || !cur.Expiry.Equal(term.Expiry) {
			return termDoc{}, false, errors.Annotatef(ErrNotHeld, "%s by %q until %v", key.Lease, term.Holder, term.Expiry)
		}
		return releasedTerm(key, cur, now), true, nil
	})
}

// Expire is part of the Client interface.
func (c *client) Expire(ctx context.Context, key Key) error {
	return c.change(ctx, key, func(cur Info, now time.Time) (termDoc, bool, error) {
		if cur.Holder == "" {
			return termDoc{}, false, nil
		}
		if !cur.Free(now) {
			return termDoc{}, false, errors.Annotatef(ErrHeld, "%s by %q", key.Lease, cur.Holder)
		}
		doc := next(key, cur)
		doc.Holder = ""
		return doc, true, nil
	})
}

// ExpireMany is part of the Client interface.
func (c *client) ExpireMany(ctx context.Context, keys []Key) ([]error, error) {
	return c.expireMany(ctx, keys, nil)
}

// ExpireManyOn is part of the Client interface.
func (c *client) ExpireManyOn(ctx context.Context, keys []Key, current map[Key]Info) ([]error, error) {
	return c.expireMany(ctx, keys, given(current))
}

// expireMany expires keys on current, or on a fresh read when current is
// nil.
func (c *client) expireMany(ctx context.Context, keys []Key, current map[Key]Info) ([]error, error) {
	now := c.config.Clock.Now()
	errs := make([]error, len(keys))
	first := make(map[Key]int, len(keys))
	var valid []Key
	for i, key := range keys {
		if err := validateKey(key); err != nil {
			errs[i] = errors.Trace(err)
		} else if _, ok := first[key]; !ok {
			first[key] = i
			valid = append(valid, key)
		}
	}
	if current == nil {
		var err error
		if current, err = c.read(ctx, valid); err != nil {
			return nil, errors.Trace(err)
		}
	}
	var docs []termDoc
	var docKeys []Key
	for _, key := range valid {
		switch cur := current[key]; {
		case cur.Invalid != "":
			errs[first[key]] = errors.Annotatef(ErrCorrupt, "%s: %s", key.Lease, cur.Invalid)
		case cur.Holder == "":
		case !cur.Free(now):
			errs[first[key]] = errors.Annotatef(ErrHeld, "%s by %q", key.Lease, cur.Holder)
		default:
			doc := next(key, cur)
			doc.Holder = ""
			if err := writable(doc); err != nil {
				errs[first[key]] = err
				continue
			}
			docs = append(docs, doc)
			docKeys = append(docKeys, key)
		}
	}
	if len(docs) > 0 {
		lost, err := c.insert(ctx, docs)
		if err != nil {
			return nil, errors.Trace(err)
		}
		for _, n := range lost {
			errs[first[docKeys[n]]] = errors.Annotatef(ErrInvalid, "%s", docKeys[n].Lease)
		}
	}
	// A key given twice gets its first occurrence's answer.
	for i, key := range keys {
		if j, ok := first[key]; ok && j != i && errs[i] == nil {
			errs[i] = errs[j]
		}
	}
	return errs, nil
}

// Pin is part of the Client interface.
func (c *client) Pin(ctx context.Context, key Key, entity string) error {
	return c.pin(ctx, key, entity, true)
}

// Unpin is part of the Client interface.
func (c *client) Unpin(ctx context.Context, key Key, entity string) error {
	return c.pin(ctx, key, entity, false)
}

func (c *client) pin(ctx context.Context, key Key, entity string, pinned bool) error {
	if entity == "" {
		return errors.NotValidf("empty pinning entity")
	}
	return c.change(ctx, key, func(cur Info, _ time.Time) (termDoc, bool, error) {
		if cur.Term == 0 {
			return termDoc{}, false, errors.NotFoundf("lease %s", key.Lease)
		}
		if slices.Contains(cur.Pins, entity) == pinned {
			return termDoc{}, false, nil
		}
		doc := next(key, cur)
		if pinned {
			doc.Pins = append(doc.Pins, entity)
		} else {
			doc.Pins = slices.DeleteFunc(doc.Pins, func(e string) bool { return e == entity })
		}
		return doc, true, nil
	})
}

// change reads key, lets f decide the next term, and inserts it.
func (c *client) change(ctx context.Context, key Key, f func(Info, time.Time) (termDoc, bool, error)) error {
	if err := validateKey(key); err != nil {
		return errors.Trace(err)
	}
	now := c.config.Clock.Now()
	current, err := c.read(ctx, []Key{key})
	if err != nil {
		return errors.Trace(err)
	}
	cur := current[key]
	if cur.Invalid != "" {
		return errors.Annotatef(ErrCorrupt, "%s: %s", key.Lease, cur.Invalid)
	}
	doc, write, err := f(cur, now)
	if err != nil || !write {
		return err
	}
	if err := writable(doc); err != nil {
		return err
	}
	lost, err := c.insert(ctx, []termDoc{doc})
	if err != nil {
		return errors.Trace(err)
	}
	if len(lost) > 0 {
		return errors.Annotatef(ErrInvalid, "%s", key.Lease)
	}
	return nil
}

// insert inserts docs in one unordered call and returns the indexes of
// those whose term another writer took first.
func (c *client) insert(ctx context.Context, docs []termDoc) ([]int, error) {
	records := make([]any, len(docs))
	for i, d := range docs {
		records[i] = d.record()
	}
	_, err := c.config.Collection.InsertMany(ctx, records, options.InsertMany().SetOrdered(false))
	if err == nil {
		return nil, nil
	}
	var bulkErr mongo.BulkWriteException
	if !errors.As(err, &bulkErr) || bulkErr.WriteConcernError != nil || len(bulkErr.WriteErrors) == 0 {
		return nil, errors.Annotate(err, "cannot write lease terms")
	}
	var lost []int
	for _, we := range bulkErr.WriteErrors {
		if !mongo.IsDuplicateKeyError(we) {
			return nil, errors.Annotate(err, "cannot write lease terms")
		}
		lost = append(lost, we.Index)
	}
	if c.config.Logger != nil {
		c.config.Logger.Debugf("%d lease terms lost to other writers", len(lost))
	}
	return lost, nil
}
