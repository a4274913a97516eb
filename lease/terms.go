package lease

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// limit bounds term and fence numbers: no term or fence at or above it is
// ever written, and a lease whose numbers reach limit-1 (the next one
// would be limit) is frozen. It would take a change every nanosecond for
// a century to get there; a number that high was not written by this
// package, and counting on from it could overflow.
const limit = 1 << 62

// termID returns the _id of key's term number n. The _id alone says which
// lease and which term a document is: see parseID.
func termID(key Key, n int64) string {
	return fmt.Sprintf("%s#%s#%s#%d", key.Namespace, key.Model, key.Lease, n)
}

// parseID returns the lease an _id names and its term number. named is
// false when it names no lease (not four non-empty parts separated by #:
// no key of this package has a # in it, so no term of this package can
// have that _id); number is 0 when it names a lease but no term number
// in the form termID writes (decimal, positive, no sign or leading
// zero).
func parseID(id string) (key Key, number int64, named bool) {
	parts := strings.Split(id, "#")
	if len(parts) != 4 || slices.Contains(parts[:3], "") {
		return Key{}, 0, false
	}
	key = Key{Namespace: parts[0], Model: parts[1], Lease: parts[2]}
	n, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != parts[3] {
		return key, 0, true
	}
	return key, n, true
}

// idRange selects the _ids that start with the given key parts and a #:
// the terms of a namespace, of a model, or of one lease, whatever their
// other fields hold. On MongoDB it is a range scan of the _id index.
func idRange(parts ...string) bson.D {
	prefix := strings.Join(parts, "#")
	return idSpan(prefix, prefix)
}

// idSpan selects the _ids from those that start with first# to those that
// start with last#: every term of the leases whose key parts, joined by #,
// sort from first to last.
func idSpan(first, last string) bson.D {
	return bson.D{{Key: "_id", Value: bson.D{
		{Key: "$gte", Value: first + "#"},
		// '$' follows '#': every string that starts with last# is
		// below last$.
		{Key: "$lt", Value: last + "$"},
	}}}
}

// anyOf returns the filter matching any of clauses.
func anyOf(clauses []bson.D) bson.D {
	if len(clauses) == 1 {
		return clauses[0]
	}
	return bson.D{{Key: "$or", Value: clauses}}
}

// readTerm is a document whose _id names a lease: the lease, the term
// number (0 when the _id names none) and the document itself.
type readTerm struct {
	id     string
	key    Key
	number int64
	raw    bson.Raw
}

// Snapshot is what one read of leases found: the latest term of each
// lease, and which superseded terms PruneOn may remove.
type Snapshot struct {
	// Leases holds the latest term of each lease read.
	Leases map[Key]Info

	// superseded holds the _ids of the terms below their lease's
	// latest at the time of the read, and so for good.
	superseded []string
}

// find reads the documents that filter matches in one round trip and
// returns those whose _id names a lease. Others are nobody's term (no
// claim of this package can ever collide with them): each is logged once
// at debug and skipped.
func (c *client) find(ctx context.Context, filter bson.D) ([]readTerm, error) {
	cur, err := c.config.Collection.Find(ctx, filter, options.Find().SetBatchSize(readBatch))
	if err != nil {
		return nil, errors.Annotate(err, "cannot read leases")
	}
	var raw []bson.Raw
	if err := cur.All(ctx, &raw); err != nil {
		return nil, errors.Annotate(err, "cannot read leases")
	}
	terms := make([]readTerm, 0, len(raw))
	for _, r := range raw {
		id, ok := r.Lookup("_id").StringValueOK()
		key, number, named := parseID(id)
		if !ok || !named {
			c.report(c.debugf, "nobody's term "+r.Lookup("_id").String(), "its _id names no lease")
			continue
		}
		terms = append(terms, readTerm{id: id, key: key, number: number, raw: r})
	}
	return terms, nil
}

// snapshot judges terms, lease by lease, at now.
func (c *client) snapshot(terms []readTerm) Snapshot {
	now := c.config.Clock.Now()
	byKey := make(map[Key][]readTerm)
	for _, t := range terms {
		byKey[t.key] = append(byKey[t.key], t)
	}
	snap := Snapshot{Leases: make(map[Key]Info, len(byKey))}
	for key, terms := range byKey {
		info := c.state(key, terms, now)
		snap.Leases[key] = info
		for _, t := range terms {
			if t.number != 0 && t.number < info.Term {
				snap.superseded = append(snap.superseded, t.id)
			}
		}
	}
	return snap
}

// state returns key's state from every document whose _id names it.
//
// The latest term is the one whose _id names the highest number, whatever
// its fields hold, so that no _id is ever written twice. A latest term
// that this package did not write (a field missing, of another type, or
// not what its _id says) is Foreign: it is held by no one, but whoever it
// names keeps others out until its expiry, and the next holder's fence is
// above every fence any term of the lease carries. The lease is frozen
// (Invalid) when it cannot safely go on: an _id names no number, a number
// is at its limit, or the latest term's holder, expiry or pins cannot be
// read, or its expiry lies beyond MaxDuration.
func (c *client) state(key Key, terms []readTerm, now time.Time) Info {
	var top *readTerm
	noNumber := ""
	highest := int64(0)
	for i := range terms {
		t := &terms[i]
		if t.number == 0 {
			noNumber = t.id
			continue
		}
		if top == nil || t.number > top.number {
			top = t
		}
		if f, ok := intField(t.raw, "fence"); ok {
			highest = max(highest, f)
		}
	}
	var info Info
	if top != nil {
		info = c.topInfo(key, *top, now)
	}
	if info.Foreign != "" {
		info.Fence = highest
	}
	info.HighestFence = max(highest, info.Fence)
	switch {
	case noNumber != "":
		info.Invalid = fmt.Sprintf("term _id %q names no term number", noNumber)
	case info.Term >= limit-1:
		info.Invalid = fmt.Sprintf("term %d at its limit", info.Term)
	case info.HighestFence >= limit-1:
		info.Invalid = fmt.Sprintf("fence %d at its limit", info.HighestFence)
	}
	if info.Invalid != "" {
		c.report(c.errorf, "frozen lease "+key.String(), info.Invalid)
	} else if info.Foreign != "" {
		c.report(c.errorf, "foreign latest term of lease "+key.String(), info.Foreign)
	}
	return info
}

// topInfo returns what the latest term t of key says, Foreign if this
// package did not write it, Invalid if it cannot be relied on.
func (c *client) topInfo(key Key, t readTerm, now time.Time) Info {
	var d termDoc
	err := bson.Unmarshal(t.raw, &d)
	if err == nil {
		err = d.check(key, t.number)
	}
	info := Info{Term: t.number}
	if err == nil {
		info = d.info(c.config.ClockSkew)
	} else {
		info.Foreign = err.Error()
		var ok bool
		if info.Holder, ok = stringField(t.raw, "holder"); !ok {
			info.Invalid = "its latest term's holder cannot be read"
		}
		if info.Pins, ok = stringsField(t.raw, "pins"); !ok {
			info.Invalid = "its latest term's pins cannot be read"
		}
		if expiry, ok := intField(t.raw, "expiry"); ok {
			info.Expiry = time.Unix(0, expiry)
			info.FreeAt = info.Expiry.Add(c.config.ClockSkew)
		} else if info.Holder != "" {
			info.Invalid = "its latest term's expiry cannot be read"
		}
	}
	if info.Holder != "" && info.Expiry.After(now.Add(c.config.MaxDuration+c.config.MaxDuration/10+time.Minute)) {
		info.Invalid = fmt.Sprintf("expiry %v, more than %v ahead", info.Expiry.UTC(), c.config.MaxDuration)
	}
	return info
}

// check returns an error unless d is the term numbered number of key as
// this package writes it.
func (d termDoc) check(key Key, number int64) error {
	switch {
	case d.key() != key:
		return errors.NotValidf("key %q/%q/%q", d.Namespace, d.Model, d.Lease)
	case d.Term != number:
		return errors.NotValidf("term %d in term _id %d", d.Term, number)
	case d.Fence < 0 || d.Fence >= limit:
		return errors.NotValidf("fence %d", d.Fence)
	}
	return nil
}

// stringField returns r's field name as a string; a missing or null one
// is empty.
func stringField(r bson.Raw, name string) (string, bool) {
	v, err := r.LookupErr(name)
	if err != nil || v.Type == bson.TypeNull {
		return "", true
	}
	return v.StringValueOK()
}

// intField returns r's 32- or 64-bit integer field name.
func intField(r bson.Raw, name string) (int64, bool) {
	v, err := r.LookupErr(name)
	if err != nil {
		return 0, false
	}
	switch v.Type {
	case bson.TypeInt32:
		return int64(v.Int32()), true
	case bson.TypeInt64:
		return v.Int64(), true
	}
	return 0, false
}

// stringsField returns r's array of strings name; a missing or null one
// is empty.
func stringsField(r bson.Raw, name string) ([]string, bool) {
	v, err := r.LookupErr(name)
	if err != nil || v.Type == bson.TypeNull {
		return nil, true
	}
	arr, ok := v.ArrayOK()
	if !ok {
		return nil, false
	}
	values, err := arr.Values()
	if err != nil {
		return nil, false
	}
	out := make([]string, 0, len(values))
	for _, e := range values {
		s, ok := e.StringValueOK()
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// report logs, once per subject and reason, with logf.
func (c *client) report(logf func(string, ...any), subject, reason string) {
	if _, seen := c.reported.LoadOrStore(subject+": "+reason, true); !seen {
		logf("%s: %s", subject, reason)
	}
}

func (c *client) debugf(format string, args ...any) {
	if c.config.Logger != nil {
		c.config.Logger.Debugf(format, args...)
	}
}

func (c *client) errorf(format string, args ...any) {
	if c.config.Logger != nil {
		c.config.Logger.Errorf(format, args...)
	}
}

// String returns the key as namespace/model/lease.
func (k Key) String() string {
	return k.Namespace + "/" + k.Model + "/" + k.Lease
}
