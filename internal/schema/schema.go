// Package schema is the one place that knows how presence is stored: the
// collections derived from the base collection, slot arithmetic, document
// ids and fields, the bitmap encoding, and the validation of keys and
// models. Every worker reads and writes through it.
//
// The storage model. Time is cut into slots of one Period. Every ping
// batcher is, for each model it serves, a writer with an id of its own (an
// ObjectID). A writer hands its pingers small integer indexes and owns two
// kinds of document, which nobody else ever writes:
//
//   - a ping document per (model, slot, writer) in "<base>.pings", holding
//     two bitmaps indexed by pinger index: alive (pinged in the slot) and
//     dead (disconnected in the slot, not pinged since);
//   - a beings document per (model, writer, chunk of ChunkSize indexes) in
//     "<base>.beings", holding the keys of those indexes. A writer updates
//     them once a slot (or every FreshLimit new keys); until then the keys
//     of its newest indexes travel in its ping documents, which watchers
//     read anyway, so a new key costs no extra write or read.
//
// Because each writer owns its documents, every write is a whole-field $set
// upsert, idempotent and safe to retry, and no two writers ever
// read-modify-write one document. The one thing writers could race for, a
// writer id, is decided by inserting the writer's first beings document,
// whose unique _id makes a duplicate fail with E11000. That is correct on
// MongoDB and on every MongoDB-compatible server, including ones whose
// conditional updates are not atomic across connections.
//
// An index is reused only by the same key, so a bit always names one key.
// Writes per flush grow with the number of models (one ping document per
// model and slot), never with the number of agents.
package schema

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"
	"unicode/utf8"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

const (
	// DefaultPeriod is the slot length used when a Period is zero. A
	// silent death is seen within 2 x Period + flush + sync (about 22s
	// with the defaults), a Disconnect within one flush and one sync.
	DefaultPeriod = 10 * time.Second

	// DefaultFlushInterval is how often a ping batcher writes, ±20%.
	DefaultFlushInterval = time.Second

	// DefaultSyncInterval is how often a watcher reads.
	DefaultSyncInterval = time.Second

	// DefaultBase is the usual name of the base collection.
	DefaultBase = "presence"

	// ChunkSize is the number of pinger indexes one beings document maps.
	ChunkSize = 1024

	// FreshLimit is the most new keys a writer carries in its ping
	// documents before it writes them to its beings documents.
	FreshLimit = 256

	// MaxBatch is the most writes sent in one bulkWrite call: the
	// embedded server hangs on a bulkWrite that updates 100 or more
	// existing documents.
	MaxBatch = 50

	// KeepSlots is how many slots before the current one the pruner
	// keeps. Watchers read two (current and previous); the rest is
	// margin for clock skew and slow flushes.
	KeepSlots = 3

	// MaxKeyLength is the longest key accepted, in bytes.
	MaxKeyLength = 1024
)

// Field names, shared by writers, readers and the pruner.
const (
	FieldID     = "_id"
	FieldModel  = "model"
	FieldSlot   = "slot"
	FieldWriter = "writer"
	FieldAlive  = "alive"
	FieldDead   = "dead"
	FieldChunk  = "chunk"
	FieldKeys   = "keys"
	FieldFresh  = "fresh"
	FieldFrom   = "freshFrom"
)

// Pings returns the collection of ping documents derived from base.
func Pings(base *mongo.Collection) *mongo.Collection {
	return base.Database().Collection(base.Name() + ".pings")
}

// Beings returns the collection of beings documents derived from base.
func Beings(base *mongo.Collection) *mongo.Collection {
	return base.Database().Collection(base.Name() + ".beings")
}

// Namespace returns "database.collection" for base, to tell whether two
// handles name the same data.
func Namespace(base *mongo.Collection) string {
	return base.Database().Name() + "." + base.Name()
}

// Slot returns the slot that t falls in. Slots are counted from the Unix
// epoch, so every process with the same period agrees on them.
func Slot(t time.Time, period time.Duration) int64 {
	n := t.UnixNano()
	p := int64(period)
	s := n / p
	if n%p < 0 {
		s--
	}
	return s
}

// SlotStart returns the instant slot begins.
func SlotStart(slot int64, period time.Duration) time.Time {
	return time.Unix(0, slot*int64(period))
}

// PingInterval returns how often a pinger pings for a given period: twice a
// slot, so that every slot gets a ping even when a flush is late or clocks
// differ by up to Period/2 - flush interval.
func PingInterval(period time.Duration) time.Duration {
	return period / 2
}

// PingID returns the _id of a writer's ping document for model and slot.
func PingID(model string, slot int64, writer string) string {
	return fmt.Sprintf("%s:%d:%s", model, slot, writer)
}

// BeingsID returns the _id of a writer's beings document for a chunk.
func BeingsID(model, writer string, chunk int) string {
	return fmt.Sprintf("%s:%s:%d", model, writer, chunk)
}

// PingDoc is a ping document as read. Fresh holds the keys of the indexes
// from FreshFrom on that the writer has not yet written to its beings
// documents: a writer writes beings once a slot (or every FreshLimit new
// keys), and watchers learn new keys from the ping documents they read
// anyway.
type PingDoc struct {
	Model     string   `bson:"model"`
	Slot      int64    `bson:"slot"`
	Writer    string   `bson:"writer"`
	Alive     []byte   `bson:"alive"`
	Dead      []byte   `bson:"dead"`
	FreshFrom int      `bson:"freshFrom"`
	Fresh     []string `bson:"fresh"`
}

// BeingsDoc is a beings document as read. Keys[i] is the key of index
// Chunk*ChunkSize+i; an empty string is an index not handed out.
type BeingsDoc struct {
	Model  string   `bson:"model"`
	Writer string   `bson:"writer"`
	Chunk  int      `bson:"chunk"`
	Slot   int64    `bson:"slot"`
	Keys   []string `bson:"keys"`
}

// ValidateKey returns a NotValid error unless key can be stored.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errors.NotValidf("empty key")
	case len(key) > MaxKeyLength:
		return errors.NotValidf("key longer than %d bytes", MaxKeyLength)
	case !utf8.ValidString(key):
		return errors.NotValidf("key %q (not UTF-8)", key)
	}
	return nil
}

// ValidateModel returns a NotValid error unless model names a model.
func ValidateModel(model names.ModelTag) error {
	if !names.IsValidModel(model.Id()) {
		return errors.NotValidf("model tag %q", model.String())
	}
	return nil
}

// WordsLen returns how many 64-bit words hold n bits.
func WordsLen(n int) int {
	return (n + 63) / 64
}

// EncodeBits appends the little-endian bytes of words to dst, dropping
// trailing zero words, and returns the result.
func EncodeBits(dst []byte, words []uint64) []byte {
	n := len(words)
	for n > 0 && words[n-1] == 0 {
		n--
	}
	for _, w := range words[:n] {
		dst = binary.LittleEndian.AppendUint64(dst, w)
	}
	return dst
}

// DecodeBits decodes src, as written by EncodeBits, into dst (grown as
// needed; a short final word is zero-padded) and returns it.
func DecodeBits(dst []uint64, src []byte) []uint64 {
	dst = dst[:0]
	for len(src) >= 8 {
		dst = append(dst, binary.LittleEndian.Uint64(src))
		src = src[8:]
	}
	if len(src) > 0 {
		var tail [8]byte
		copy(tail[:], src)
		dst = append(dst, binary.LittleEndian.Uint64(tail[:]))
	}
	return dst
}

// ForEachBit calls f with the index of every set bit in words.
func ForEachBit(words []uint64, f func(index int)) {
	for i, w := range words {
		for w != 0 {
			f(i*64 + bits.TrailingZeros64(w))
			w &= w - 1
		}
	}
}

// EnsureIndexes creates the secondary indexes that keep per-model reads
// and deletes from touching other models' documents on MongoDB. It is
// idempotent.
func EnsureIndexes(ctx context.Context, base *mongo.Collection) error {
	for _, spec := range []struct {
		coll   *mongo.Collection
		fields bson.D
	}{
		{Pings(base), bson.D{{Key: FieldModel, Value: 1}, {Key: FieldSlot, Value: 1}}},
		{Beings(base), bson.D{{Key: FieldModel, Value: 1}, {Key: FieldWriter, Value: 1}}},
	} {
		if _, err := spec.coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: spec.fields}); err != nil {
			return errors.Annotatef(err, "cannot create index on %s", spec.coll.Name())
		}
	}
	return nil
}
