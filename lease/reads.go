package lease

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// ErrNotFrozen is returned by Reset of a lease that is not frozen.
const ErrNotFrozen = errors.ConstError("lease is not frozen")

// validatePart returns a NotValid error unless value can be part of an
// _id: not empty, without #.
func validatePart(name, value string) error {
	if value == "" {
		return errors.NotValidf("empty lease %s", name)
	}
	if strings.Contains(value, "#") {
		return errors.NotValidf("lease %s %q (contains #)", name, value)
	}
	return nil
}

// Leases is part of the Client interface.
func (c *client) Leases(ctx context.Context, namespace, model string, leases ...string) (map[Key]Info, error) {
	snap, err := c.Snapshot(ctx, namespace, model)
	if err != nil || len(leases) == 0 {
		return snap.Leases, errors.Trace(err)
	}
	maps.DeleteFunc(snap.Leases, func(k Key, _ Info) bool { return !slices.Contains(leases, k.Lease) })
	return snap.Leases, nil
}

// Snapshot is part of the Client interface.
func (c *client) Snapshot(ctx context.Context, namespace, model string) (Snapshot, error) {
	parts := []string{namespace}
	if model != "" {
		parts = append(parts, model)
	}
	for _, p := range parts {
		if err := validatePart("namespace or model", p); err != nil {
			return Snapshot{}, errors.Trace(err)
		}
	}
	terms, err := c.find(ctx, idRange(parts...))
	if err != nil {
		return Snapshot{}, errors.Trace(err)
	}
	return c.snapshot(terms), nil
}

// ReadMany is part of the Client interface.
func (c *client) ReadMany(ctx context.Context, keys []Key) (map[Key]Info, error) {
	for _, key := range keys {
		if err := validateKey(key); err != nil {
			return nil, errors.Trace(err)
		}
	}
	infos, err := c.read(ctx, keys)
	return infos, errors.Annotatef(err, "cannot read %d leases", len(keys))
}

// read returns the latest term of each key in one query, or none when
// there are no keys. It reads, for each namespace, the one _id range from
// the first of its keys to the last, and drops the other leases' terms:
// an $or of a range per key costs the embedded server 30 times more than
// one range that returns a whole namespace.
func (c *client) read(ctx context.Context, keys []Key) (map[Key]Info, error) {
	if len(keys) == 0 {
		return map[Key]Info{}, nil
	}
	wanted := make(map[Key]bool, len(keys))
	spans := make(map[string][2]string)
	for _, k := range keys {
		wanted[k] = true
		prefix := strings.Join([]string{k.Namespace, k.Model, k.Lease}, "#")
		span, ok := spans[k.Namespace]
		if !ok || prefix < span[0] {
			span[0] = prefix
		}
		if !ok || prefix > span[1] {
			span[1] = prefix
		}
		spans[k.Namespace] = span
	}
	var clauses []bson.D
	for _, span := range spans {
		clauses = append(clauses, idSpan(span[0], span[1]))
	}
	terms, err := c.find(ctx, anyOf(clauses))
	if err != nil {
		return nil, errors.Trace(err)
	}
	terms = slices.DeleteFunc(terms, func(t readTerm) bool { return !wanted[t.key] })
	return c.snapshot(terms).Leases, nil
}

// Prune is part of the Client interface.
func (c *client) Prune(ctx context.Context, namespace, model string) (int, error) {
	snap, err := c.Snapshot(ctx, namespace, model)
	if err != nil {
		return 0, errors.Trace(err)
	}
	return c.PruneOn(ctx, snap)
}

// PruneOn is part of the Client interface.
func (c *client) PruneOn(ctx context.Context, snap Snapshot) (int, error) {
	n, err := c.remove(ctx, snap.superseded)
	return n, errors.Annotate(err, "cannot remove old lease terms")
}

// remove deletes the terms of ids, MaxPruneBatch at a time.
func (c *client) remove(ctx context.Context, ids []string) (int, error) {
	removed := 0
	for len(ids) > 0 {
		n := min(len(ids), MaxPruneBatch)
		res, err := c.config.Collection.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids[:n]}}}})
		if err != nil {
			return removed, errors.Trace(err)
		}
		removed += int(res.DeletedCount)
		ids = ids[n:]
	}
	return removed, nil
}

// Reset is part of the Client interface.
func (c *client) Reset(ctx context.Context, key Key) (Info, error) {
	if err := validateKey(key); err != nil {
		return Info{}, errors.Trace(err)
	}
	terms, err := c.find(ctx, idRange(key.Namespace, key.Model, key.Lease))
	if err != nil {
		return Info{}, errors.Trace(err)
	}
	cur := c.snapshot(terms).Leases[key]
	if cur.Invalid == "" {
		return Info{}, errors.Annotatef(ErrNotFrozen, "%s", key)
	}
	// Above every number below the limit: numbers at their limit
	// cannot be gone above, and their terms are removed below.
	var number, fence int64
	var ids []string
	for _, t := range terms {
		ids = append(ids, t.id)
		if t.number < limit-1 {
			number = max(number, t.number)
		}
		if f, ok := intField(t.raw, "fence"); ok && f < limit-1 {
			fence = max(fence, f)
		}
	}
	now := c.config.Clock.Now()
	doc := termDoc{
		ID: termID(key, number+1), Namespace: key.Namespace, Model: key.Model, Lease: key.Lease,
		Term: number + 1, Expiry: now.UnixNano(), Fence: fence,
	}
	lost, err := c.insert(ctx, []termDoc{doc})
	if err != nil {
		return Info{}, errors.Trace(err)
	}
	if len(lost) > 0 {
		return Info{}, errors.Annotatef(ErrInvalid, "%s", key)
	}
	if _, err := c.remove(ctx, ids); err != nil {
		return Info{}, errors.Annotatef(err, "cannot remove the terms that froze %s", key)
	}
	return doc.info(c.config.ClockSkew), nil
}
