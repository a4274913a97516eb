package leaseexpiry

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// ErrFenced is returned by a guarded write when the document it would
// change was written, under the same lease, by a leader with a higher
// fence: the writer has been deposed, and its write did not land.
const ErrFenced = errors.ConstError("write fenced by a newer leader")

// FencesField is the field of a guarded document that holds, for each
// lease that guarded a write to it, the fence of the latest such write:
// FencesField + "." + the lease's name in Guard.Field.
const FencesField = "leaseFences"

// Guard is what a guarded write stores and compares: the field of the
// document that holds the lease's fence, and the token's fence. The zero
// Guard is not valid.
//
// A guarded write applies only if the document's stored fence for the
// lease is missing or not above Fence, and stores Fence with the write, in
// the same command: once a newer leader has written a document, no write
// of a deposed leader lands on it, however long that leader stalled
// between its check and its write. What a guard does not do:
//   - It orders writes, it does not exclude them: a deposed leader's write
//     that reaches a document before any newer leader's write to it still
//     lands (check the token just before writing to make that window
//     small). Fencing, not a lock.
//   - It guards only the documents that carry the field: a document that
//     the new leader has not written yet accepts any fence.
//   - It needs the server to apply a filtered update atomically. MongoDB
//     does, on every deployment. The embedded server (FerretDB v1) does not
//     across connections: there, a deposed leader's write that reaches the
//     server at the same instant as the new leader's may still land; one
//     that arrives after the new leader's write has been applied is
//     refused.
//   - A resource outside MongoDB must compare fences itself: store the
//     highest fence it accepted for the lease, refuse a write that carries
//     a lower one, and store the higher one with the write in the same
//     atomic step (a conditional write, a compare-and-swap, a transaction).
type Guard struct {
	// Field is the dotted path of the stored fence: FencesField, a dot,
	// then the lease's model UUID and application name joined by ":".
	Field string

	// Fence is the token's fence.
	Fence int64
}

// guardFor returns the Guard of a token of application's lease in model,
// a model UUID, with fence.
func guardFor(model, application string, fence int64) Guard {
	return Guard{Field: FencesField + "." + model + ":" + application, Fence: fence}
}

// NewGuard returns the Guard that a token of application's lease in the
// model whose UUID is model, holding fence, would give: for fakes and for
// code that stores the fence of a lease it knows by name. It fails with a
// NotValid error for a bad name or a negative fence.
func NewGuard(model, application string, fence int64) (Guard, error) {
	if err := ValidateApplication(application); err != nil {
		return Guard{}, errors.Trace(err)
	}
	if model == "" || strings.ContainsAny(model, ".$:") {
		return Guard{}, errors.NotValidf("model %q", model)
	}
	if fence < 0 {
		return Guard{}, errors.NotValidf("fence %d", fence)
	}
	return guardFor(model, application, fence), nil
}

// Validate returns a NotValid error unless g names a fence field and has a
// non-negative fence.
func (g Guard) Validate() error {
	if !strings.HasPrefix(g.Field, FencesField+".") || len(g.Field) == len(FencesField)+1 {
		return errors.NotValidf("guard field %q", g.Field)
	}
	if g.Fence < 0 {
		return errors.NotValidf("guard fence %d", g.Fence)
	}
	return nil
}

// Filter returns filter narrowed to documents that g may write: those
// whose stored fence for g's lease is missing or not above g.Fence. The
// condition is added beside filter's own fields (under $or, or inside
// $and when filter has an $or of its own), not around them, so that an
// upsert still takes its fields, _id included, from filter's equalities on
// every server. A nil filter means every document. It fails with a
// NotValid error for a filter that does not encode as a document.
func (g Guard) Filter(filter any) (bson.D, error) {
	alternatives := bson.A{
		bson.D{{Key: g.Field, Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: g.Field, Value: bson.D{{Key: "$lte", Value: g.Fence}}}},
	}
	var fields bson.D
	if filter != nil {
		var err error
		if fields, err = toD(filter); err != nil {
			return nil, errors.Annotate(err, "cannot guard filter")
		}
	}
	out := slices.Clone(fields)
	orAt := slices.IndexFunc(out, func(e bson.E) bool { return e.Key == "$or" })
	if orAt < 0 {
		return append(out, bson.E{Key: "$or", Value: alternatives}), nil
	}
	guard := bson.D{{Key: "$or", Value: alternatives}}
	andAt := slices.IndexFunc(out, func(e bson.E) bool { return e.Key == "$and" })
	if andAt < 0 {
		return append(out, bson.E{Key: "$and", Value: bson.A{guard}}), nil
	}
	and, ok := out[andAt].Value.(bson.A)
	if !ok {
		return nil, errors.NotValidf("filter's $and of %T", out[andAt].Value)
	}
	out[andAt].Value = append(slices.Clone(and), guard)
	return out, nil
}

// Update returns update, a document of update operators ($set, $inc and
// the like), with g.Fence added to its $set. It fails with a NotValid
// error for a replacement document or a pipeline (write those with $set),
// for an update that does not encode, and for one that writes the fence
// field itself.
func (g Guard) Update(update any) (bson.D, error) {
	if err := g.Validate(); err != nil {
		return nil, errors.Trace(err)
	}
	doc, err := toD(update)
	if err != nil {
		return nil, errors.Annotate(err, "cannot guard update")
	}
	out := make(bson.D, 0, len(doc)+1)
	merged := false
	for _, e := range doc {
		if !strings.HasPrefix(e.Key, "$") {
			return nil, errors.NotValidf("update with field %q (a guarded write takes update operators only)", e.Key)
		}
		fields, err := toD(e.Value)
		if err != nil {
			return nil, errors.Annotatef(err, "cannot guard update's %s", e.Key)
		}
		for _, f := range fields {
			if f.Key == FencesField || strings.HasPrefix(f.Key, FencesField+".") || strings.HasPrefix(g.Field, f.Key+".") {
				return nil, errors.NotValidf("update of %q, which holds the guard's fences", f.Key)
			}
		}
		if e.Key == "$set" {
			fields = append(fields, bson.E{Key: g.Field, Value: g.Fence})
			e.Value = fields
			merged = true
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.NotValidf("empty update")
	}
	if !merged {
		out = append(out, bson.E{Key: "$set", Value: bson.D{{Key: g.Field, Value: g.Fence}}})
	}
	return out, nil
}

// toD encodes v, a document of any kind the driver takes, as a bson.D.
func toD(v any) (bson.D, error) {
	if v == nil {
		return nil, errors.NotValidf("nil document")
	}
	if d, ok := v.(bson.D); ok {
		return d, nil
	}
	raw, err := bson.Marshal(v)
	if err != nil {
		return nil, errors.NotValidf("document %T (%v)", v, err)
	}
	var d bson.D
	if err := bson.Unmarshal(raw, &d); err != nil {
		return nil, errors.NotValidf("document %T (%v)", v, err)
	}
	return d, nil
}

// GuardedUpdater makes guarded writes: the interface a leader's code
// depends on, so that its tests can use agenttest/fakes' in-memory one.
type GuardedUpdater interface {
	// UpdateGuarded updates the document that filter matches, as
	// UpdateGuarded does.
	UpdateGuarded(ctx context.Context, token Token, filter, update any, upsert bool) (*mongo.UpdateResult, error)
}

// GuardedCollection is a GuardedUpdater over a MongoDB collection.
type GuardedCollection struct {
	// Collection holds the guarded documents. It must not be nil.
	Collection *mongo.Collection
}

// UpdateGuarded is part of the GuardedUpdater interface: it calls
// UpdateGuarded on g.Collection.
func (g GuardedCollection) UpdateGuarded(ctx context.Context, token Token, filter, update any, upsert bool) (*mongo.UpdateResult, error) {
	return UpdateGuarded(ctx, g.Collection, token, filter, update, upsert)
}

// UpdateGuarded updates one document of coll that filter matches, with
// update (update operators), only if no leader of token's lease with a
// higher fence has written it, and stores the token's fence in it: one
// UpdateOne command whose filter and update carry the fence (see Guard for
// what this protects against and what it does not). It does not read the
// lease: check the token first if the write must not run once the lease is
// lost.
//
// It fails with ErrFenced, with nothing written, when the document that
// filter matches holds a higher fence for the lease (or a stored fence
// that is not a number); with a NotValid error for a bad token or update;
// and with the database's error. With upsert, filter must name the
// document by _id, so that a fenced upsert fails on the unique _id instead
// of inserting a second document. When filter matches no document and
// upsert is false, the result says so (MatchedCount 0) and the error is
// nil, as UpdateOne's would be.
func UpdateGuarded(ctx context.Context, coll *mongo.Collection, token Token, filter, update any, upsert bool) (*mongo.UpdateResult, error) {
	if coll == nil {
		return nil, errors.NotValidf("nil collection")
	}
	if token == nil {
		return nil, errors.NotValidf("nil token")
	}
	g := token.Guard()
	u, err := g.Update(update)
	if err != nil {
		return nil, errors.Trace(err)
	}
	f, err := toD(filter)
	if err != nil {
		return nil, errors.Annotate(err, "cannot guard filter")
	}
	if upsert && !namesID(f) {
		return nil, errors.NotValidf("guarded upsert whose filter does not name an _id")
	}
	guarded, err := g.Filter(f)
	if err != nil {
		return nil, errors.Trace(err)
	}
	res, err := coll.UpdateOne(ctx, guarded, u, options.UpdateOne().SetUpsert(upsert))
	switch {
	case mongo.IsDuplicateKeyError(err):
		if fenced, why := fencedBy(ctx, coll, g, f); fenced {
			return nil, errors.Annotate(ErrFenced, why)
		}
		return nil, errors.Annotate(err, "cannot make guarded write")
	case err != nil:
		return nil, errors.Annotate(err, "cannot make guarded write")
	case res.MatchedCount == 0 && res.UpsertedCount == 0:
		if fenced, why := fencedBy(ctx, coll, g, f); fenced {
			return nil, errors.Annotate(ErrFenced, why)
		}
	}
	return res, nil
}

// UpdateGuardedInTransaction is UpdateGuarded inside a transaction that
// first checks token (token.CheckContext) in the same session, as the
// seed API's Token.AssertOps did for mgo/txn: the write applies only if the
// lease's latest term, read in the transaction, still shows the token's
// leader, and no newer leader's fence is stored. It needs a deployment
// with transactions (a replica set or a sharded cluster), and the lease
// collection of the token's manager on the same client as coll; the
// embedded server has no transactions, and there it fails with the
// server's error, writing nothing. It fails with ErrNotHeld when the
// check fails, and otherwise as UpdateGuarded does.
func UpdateGuardedInTransaction(ctx context.Context, coll *mongo.Collection, token Token, filter, update any, upsert bool) (*mongo.UpdateResult, error) {
	if coll == nil {
		return nil, errors.NotValidf("nil collection")
	}
	if token == nil {
		return nil, errors.NotValidf("nil token")
	}
	session, err := coll.Database().Client().StartSession()
	if err != nil {
		return nil, errors.Annotate(err, "cannot start a session")
	}
	defer session.EndSession(context.WithoutCancel(ctx))
	res, err := session.WithTransaction(ctx, func(ctx context.Context) (any, error) {
		if err := token.CheckContext(ctx); err != nil {
			return nil, errors.Trace(err)
		}
		return UpdateGuarded(ctx, coll, token, filter, update, upsert)
	})
	if err != nil {
		return nil, errors.Annotate(err, "cannot make guarded write in a transaction")
	}
	return res.(*mongo.UpdateResult), nil
}

// namesID reports whether filter pins the document's _id.
func namesID(filter bson.D) bool {
	for _, e := range filter {
		if e.Key == "_id" {
			return true
		}
	}
	return false
}

// fencedBy reports whether a document that filter matches holds a fence
// for g's lease that g may not write over, and says which: the follow-up
// read that names why a guarded write did nothing. A failed read reports
// no fence, so the caller returns what the write itself said.
func fencedBy(ctx context.Context, coll *mongo.Collection, g Guard, filter bson.D) (bool, string) {
	var doc bson.Raw
	err := coll.FindOne(ctx, filter, options.FindOne().SetProjection(bson.D{{Key: g.Field, Value: 1}})).Decode(&doc)
	if err != nil {
		return false, ""
	}
	stored, err := doc.LookupErr(strings.Split(g.Field, ".")...)
	if err != nil {
		return false, ""
	}
	if n, ok := stored.AsInt64OK(); ok {
		if n > g.Fence {
			return true, fmt.Sprintf("stored fence %d above %d", n, g.Fence)
		}
		return false, ""
	}
	return true, fmt.Sprintf("stored fence is a %s, not a number", stored.Type)
}
