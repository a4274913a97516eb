package schema

import (
	"cmp"
	"context"
	"encoding/binary"
	"slices"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Notices. A writer that flushes a prompt change (a key coming up, a
// Disconnect) or moves on to a new slot of its sequence appends one
// small notice to a capped collection, which every controller's reader
// tails (a tailable, awaitData cursor; a change stream would do as well
// where the deployment is a replica set): the reader loads when a notice
// comes instead of polling, and still polls while it cannot tail. A
// notice says who wrote and why, and carries the flush's prompt changes
// themselves (see NoticeChange), which other readers apply at once,
// before the load that confirms them. Batchers create the collection;
// readers never write.

const (
	// NoticesMaxBytes bounds the notices collection in bytes: room for
	// NoticesMaxDocuments notices that carry their most changes (see
	// NoticeMaxChangeBytes), so that the documents bound the collection
	// rather than a few big notices. A collection made earlier with a
	// smaller bound keeps it: there, big notices roll it sooner, and a
	// reader whose cursor they roll past reopens it at the newest.
	NoticesMaxBytes = 64 << 10

	// NoticesMaxDocuments bounds the notices collection in documents. A
	// reader takes each notice as it comes and, when it opens a cursor,
	// skips to the newest, so it needs few; and the embedded server
	// answers a waiting getMore by querying the whole collection every
	// 10 ms, so every notice kept costs each tailing reader server time
	// (measured: a tailing reader costs the embedded server 8% of a core
	// at 4 notices, 11% at 16, 24% at 64, where a reader that polls the
	// ping documents every 100 ms costs it 2%). At rest (a notice per
	// slot per controller) 16 last a minute for five controllers.
	NoticesMaxDocuments = 16

	// NoticesKept is how many notices TrimNotices keeps where the server
	// does not enforce the cap: fewer than the cap, since there every
	// waiting getMore of every tailing reader reads every notice kept,
	// every 10 ms, and notices that carry changes are larger (measured:
	// after 10,000 keys came up, 16 notices carrying 32 changes each
	// cost the embedded server 46% of a core at rest, for two tailing
	// readers). A reader more than that many notices behind loses its
	// place, reopens at the newest notice and loads.
	NoticesKept = 4

	// FieldPrompt marks a notice of a flush that carried a prompt change.
	FieldPrompt = "prompt"
)

// NoticeDoc is one notice: Writer flushed its slot Slot, with a prompt
// change if Prompt is set. Changes are prompt changes that flush wrote,
// in the order they were made, at most NoticeMaxChanges of them and
// NoticeMaxChangeBytes of keys and models; a flush with more carries
// the first ones, and readers load the rest.
type NoticeDoc struct {
	Writer  string        `bson:"writer"`
	Slot    int64         `bson:"slot"`
	Prompt  bool          `bson:"prompt"`
	Changes NoticeChanges `bson:"changes,omitempty"`
}

// NoticeChanges are the changes a notice carries. They travel as one
// binary value rather than an array of documents: the embedded server
// reads every notice kept for every waiting getMore of every tailing
// reader, every 10 ms, and its cost goes with the documents and fields
// it converts (measured, at rest after 10,000 keys came up, two tailing
// readers: 21-23% of a core with 4-8 notices of 8 changes each as
// arrays of documents, 16% as one binary value, 12% with no changes).
type NoticeChanges []NoticeChange

// noticeChangesFormat is the first byte of encoded NoticeChanges.
const noticeChangesFormat = 1

// MarshalBSONValue encodes cs as a BSON binary value: a format byte, the
// number of changes and, for each, a byte that is 1 if it came up, its
// model and its key; numbers as unsigned varints, strings as a varint
// length and their bytes.
func (cs NoticeChanges) MarshalBSONValue() (byte, []byte, error) {
	data := binary.AppendUvarint([]byte{noticeChangesFormat}, uint64(len(cs)))
	for _, c := range cs {
		up := byte(0)
		if c.Up {
			up = 1
		}
		data = appendString(appendString(append(data, up), c.Model), c.Key)
	}
	t, raw, err := bson.MarshalValue(bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: data})
	return byte(t), raw, errors.Trace(err)
}

// UnmarshalBSONValue decodes what MarshalBSONValue encodes. It never
// allocates more than the value's own size can hold (ValidateChanges
// checks the rest); no changes decode as nil.
func (cs *NoticeChanges) UnmarshalBSONValue(t byte, raw []byte) error {
	if bson.Type(t) != bson.TypeBinary {
		return errors.NotValidf("notice changes of BSON type %v", bson.Type(t))
	}
	d, err := newDecoder(raw, "notice changes", noticeChangesFormat)
	if err != nil {
		return errors.Trace(err)
	}
	// A change takes at least three bytes: its flag and two lengths.
	var out NoticeChanges
	if n := d.count(3); n > 0 {
		out = make(NoticeChanges, n)
		for i := range out {
			flag := d.byte()
			if flag > 1 {
				return errors.NotValidf("change %d: flag %d", i, flag)
			}
			out[i] = NoticeChange{Up: flag == 1, Model: d.string(), Key: d.string()}
		}
	}
	if d.err != nil {
		return errors.Trace(d.err)
	}
	if len(d.data) > 0 {
		return errors.NotValidf("%d bytes after the notice changes", len(d.data))
	}
	*cs = out
	return nil
}

// NoticeChange is one prompt change a notice carries: the key Key of
// the model Model (its UUID) came up (Up) or was disconnected.
type NoticeChange struct {
	Model string
	Key   string
	Up    bool
}

const (
	// NoticeMaxChanges is the most changes one notice carries: a flush
	// of a few changes, the usual prompt one, carries them all; a storm's
	// flushes carry their first ones, and readers load the rest.
	NoticeMaxChanges = 8

	// NoticeMaxChangeBytes bounds the bytes of the keys and models of
	// the changes one notice carries.
	NoticeMaxChangeBytes = 1 << 10
)

// Size returns the bytes c's key and model count for against
// NoticeMaxChangeBytes.
func (c NoticeChange) Size() int {
	return len(c.Model) + len(c.Key)
}

// Validate returns a NotValid error unless c can be applied: a valid
// model UUID and key.
func (c NoticeChange) Validate() error {
	if !names.IsValidModel(c.Model) {
		return errors.NotValidf("model %q", c.Model)
	}
	return errors.Trace(ValidateKey(c.Key))
}

// ValidateChanges returns a NotValid error unless every change doc
// carries can be applied and they keep within NoticeMaxChanges and
// NoticeMaxChangeBytes.
func (doc NoticeDoc) ValidateChanges() error {
	if len(doc.Changes) > NoticeMaxChanges {
		return errors.NotValidf("%d changes (at most %d)", len(doc.Changes), NoticeMaxChanges)
	}
	size := 0
	for i, c := range doc.Changes {
		if err := c.Validate(); err != nil {
			return errors.Annotatef(err, "change %d", i)
		}
		size += c.Size()
	}
	if size > NoticeMaxChangeBytes {
		return errors.NotValidf("%d bytes of changes (at most %d)", size, NoticeMaxChangeBytes)
	}
	return nil
}

// Notices returns the capped collection of notices derived from base.
func Notices(base *mongo.Collection) *mongo.Collection {
	return base.Database().Collection(base.Name() + ".notices")
}

// EnsureNotices creates the capped collection of notices derived from
// base unless it exists (see NoticesMaxBytes and NoticesMaxDocuments). A
// collection of that name that is not capped is left alone: readers
// cannot tail it and poll instead.
func EnsureNotices(ctx context.Context, base *mongo.Collection) error {
	coll := Notices(base)
	err := coll.Database().CreateCollection(ctx, coll.Name(), options.CreateCollection().
		SetCapped(true).SetSizeInBytes(NoticesMaxBytes).SetMaxDocuments(NoticesMaxDocuments))
	var cmdErr mongo.CommandError
	if errors.As(err, &cmdErr) && cmdErr.Name == "NamespaceExists" {
		return nil
	}
	return errors.Annotatef(err, "cannot create capped collection %s", coll.Name())
}

// TrimNotices deletes the oldest notices beyond NoticesKept, in
// the collection's natural order (the order in which the server took
// them, which tailing cursors follow), and returns how many it deleted.
// On a server that caps the collection (MongoDB) there are never more
// and it deletes nothing. The embedded server does not enforce the cap:
// FerretDB v1 removes what a capped collection holds beyond its bounds
// only when its capped cleanup is configured, which its embedding
// package cannot do, so the notices grow without end there and every
// tailing reader's waiting getMore, which reads them all every 10 ms,
// costs more and more. So batchers trim what they append. It costs one
// read of the notices' _ids, and one delete when there is anything to
// delete; a reader whose cursor stands on a notice it deletes (one more
// than NoticesKept behind) breaks, and reopens at the newest.
func TrimNotices(ctx context.Context, base *mongo.Collection) (int64, error) {
	ids, err := NoticeIDs(ctx, base)
	if err != nil {
		return 0, errors.Trace(err)
	}
	if len(ids) <= NoticesKept {
		return 0, nil
	}
	old := ids[:len(ids)-NoticesKept]
	res, err := Notices(base).DeleteMany(ctx, bson.D{{Key: FieldID, Value: bson.D{{Key: "$in", Value: old}}}})
	if err != nil {
		return 0, errors.Annotate(err, "cannot trim the notices")
	}
	return res.DeletedCount, nil
}

// NoticeIDs returns the _ids of the notices derived from base in the
// order a tailing cursor follows them: by record id where the server
// shows it (the embedded server stamps a record id when an insert
// begins, so two inserts may commit in the other order, and its natural
// order is then not its cursors' order), else in natural order. Neither
// is the order of the _ids, which batchers in separate processes make
// apart.
func NoticeIDs(ctx context.Context, base *mongo.Collection) ([]bson.RawValue, error) {
	cur, err := Notices(base).Find(ctx, bson.D{}, options.Find().
		SetProjection(bson.D{{Key: FieldID, Value: 1}}).SetShowRecordID(true))
	if err != nil {
		return nil, errors.Annotate(err, "cannot read the notices")
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	type notice struct {
		id     bson.RawValue
		record int64
	}
	var notices []notice
	for cur.Next(ctx) {
		id := cur.Current.Lookup(FieldID)
		n := notice{id: bson.RawValue{Type: id.Type, Value: slices.Clone(id.Value)}}
		if record, ok := cur.Current.Lookup("$recordId").AsInt64OK(); ok {
			n.record = record
		}
		notices = append(notices, n)
	}
	if err := cur.Err(); err != nil {
		return nil, errors.Annotate(err, "cannot read the notices")
	}
	slices.SortStableFunc(notices, func(a, b notice) int { return cmp.Compare(a.record, b.record) })
	ids := make([]bson.RawValue, len(notices))
	for i, n := range notices {
		ids[i] = n.id
	}
	return ids, nil
}
