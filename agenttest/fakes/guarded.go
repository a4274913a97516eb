package fakes

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/worker/leaseexpiry"
)

// ModelUUID is the model whose leases the fake Manager's tokens guard:
// their Guard fields name it.
const ModelUUID = "00000000-0000-4000-8000-00000000fa4e"

// GuardedDocs is an in-memory leaseexpiry.GuardedUpdater: documents keyed
// by _id that take guarded writes exactly as leaseexpiry.UpdateGuarded
// makes them on MongoDB, so that a leader's code can be unit-tested with
// the fake Manager and no database. It understands a filter that names a
// document by _id alone, and the update operators $set, $unset, $inc and
// $setOnInsert on top-level fields; anything else is a NotValid error.
// Its methods are safe for concurrent use.
type GuardedDocs struct {
	mu   sync.Mutex
	docs map[string]bson.M
}

var _ leaseexpiry.GuardedUpdater = (*GuardedDocs)(nil)

// NewGuardedDocs returns an empty GuardedDocs.
func NewGuardedDocs() *GuardedDocs {
	return &GuardedDocs{docs: make(map[string]bson.M)}
}

// UpdateGuarded is part of leaseexpiry.GuardedUpdater: it fails with
// leaseexpiry.ErrFenced, writing nothing, when the document holds a
// higher fence for the token's lease.
func (d *GuardedDocs) UpdateGuarded(ctx context.Context, token leaseexpiry.Token, filter, update any, upsert bool) (*mongo.UpdateResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, errors.Trace(err)
	}
	if token == nil {
		return nil, errors.NotValidf("nil token")
	}
	g := token.Guard()
	ops, err := g.Update(update)
	if err != nil {
		return nil, errors.Trace(err)
	}
	id, err := idOf(filter)
	if err != nil {
		return nil, errors.Trace(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	doc, found := d.docs[id]
	if !found && !upsert {
		return &mongo.UpdateResult{}, nil
	}
	if found {
		if stored, ok := fenceOf(doc, g.Field); ok && stored > g.Fence {
			return nil, errors.Annotatef(leaseexpiry.ErrFenced, "stored fence %d above %d", stored, g.Fence)
		}
	}
	next := bson.M{}
	for k, v := range doc {
		next[k] = v
	}
	if err := apply(next, ops, !found); err != nil {
		return nil, errors.Trace(err)
	}
	d.docs[id] = next
	if !found {
		return &mongo.UpdateResult{UpsertedCount: 1, UpsertedID: id}, nil
	}
	return &mongo.UpdateResult{MatchedCount: 1, ModifiedCount: 1}, nil
}

// Get returns a copy of the fields of the document whose _id is id, fence
// fields included, and whether it exists.
func (d *GuardedDocs) Get(id any) (bson.M, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	doc, ok := d.docs[fmt.Sprint(id)]
	if !ok {
		return nil, false
	}
	out := bson.M{}
	for k, v := range doc {
		out[k] = v
	}
	return out, true
}

// idOf returns the key of the document filter names by _id alone.
func idOf(filter any) (string, error) {
	var fields bson.D
	switch f := filter.(type) {
	case bson.D:
		fields = f
	case bson.M:
		for k, v := range f {
			fields = append(fields, bson.E{Key: k, Value: v})
		}
	default:
		return "", errors.NotValidf("filter %T (the fake takes a bson.D or bson.M)", filter)
	}
	if len(fields) != 1 || fields[0].Key != "_id" {
		return "", errors.NotValidf("filter %v (the fake takes {_id: value} only)", filter)
	}
	return fmt.Sprint(fields[0].Value), nil
}

// fenceOf returns the fence stored at field, a FencesField path.
func fenceOf(doc bson.M, field string) (int64, bool) {
	fences, ok := doc[leaseexpiry.FencesField].(bson.M)
	if !ok {
		return 0, false
	}
	n, ok := fences[strings.TrimPrefix(field, leaseexpiry.FencesField+".")].(int64)
	return n, ok
}

// apply applies ops, a guarded update, to doc; insert says whether doc is
// being inserted ($setOnInsert applies then only).
func apply(doc bson.M, ops bson.D, insert bool) error {
	for _, op := range ops {
		fields, ok := op.Value.(bson.D)
		if !ok {
			return errors.NotValidf("%s of %T", op.Key, op.Value)
		}
		for _, f := range fields {
			if err := applyOne(doc, op.Key, f, insert); err != nil {
				return errors.Trace(err)
			}
		}
	}
	return nil
}

func applyOne(doc bson.M, op string, f bson.E, insert bool) error {
	if rest, ok := strings.CutPrefix(f.Key, leaseexpiry.FencesField+"."); ok && op == "$set" {
		fences, _ := doc[leaseexpiry.FencesField].(bson.M)
		next := bson.M{}
		for k, v := range fences {
			next[k] = v
		}
		next[rest] = f.Value
		doc[leaseexpiry.FencesField] = next
		return nil
	}
	if strings.Contains(f.Key, ".") {
		return errors.NotValidf("field %q (the fake takes top-level fields only)", f.Key)
	}
	switch op {
	case "$set":
		doc[f.Key] = f.Value
	case "$setOnInsert":
		if insert {
			doc[f.Key] = f.Value
		}
	case "$unset":
		delete(doc, f.Key)
	case "$inc":
		by, ok := integer(f.Value)
		if !ok {
			return errors.NotValidf("$inc of %q by %T (the fake takes integers)", f.Key, f.Value)
		}
		n, _ := integer(doc[f.Key])
		doc[f.Key] = n + by
	default:
		return errors.NotValidf("update operator %s", op)
	}
	return nil
}

// integer returns v as an int64 if it is an integer of any size.
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}
