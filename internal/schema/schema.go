// Package schema is the one place that knows how presence is stored: the
// collections derived from the base collection, slot arithmetic, document
// ids and fields, the bitmap encoding, and the validation of keys, models
// and of what is read back.
//
// The storage model. Time is cut into slots of half a Period. Every ping
// batcher (one per controller) is a writer with an id of its own (an
// ObjectID), whatever the number of models it serves. It hands each of its
// pingers a small integer index, which names one (model, key) pair, and
// owns two kinds of document that nobody else ever writes:
//
//   - a ping document per (slot, writer) in "<base>.pings", holding two
//     bitmaps indexed by pinger index, alive (pinged in the slot) and dead
//     (disconnected in the slot, not pinged since), the period the writer
//     slots time by, and the writer's clock when it wrote (so that
//     readers can show a skew where there is one). The slot is the
//     writer's own sequence, not a time others may compare with theirs
//     (see Progress);
//   - a beings document per (writer, chunk of ChunkSize indexes) in
//     "<base>.beings", holding the model and key of each index. A writer
//     updates them once it has FreshLimit new keys; until then the entries
//     of its newest indexes travel in its ping documents, which readers
//     read anyway, so a new key costs no extra write or read. (A beings
//     document is big: on the embedded server every write of one scans
//     them all, and holds up every other write meanwhile.)
//
// So a controller writes one ping document per flush whatever the number of
// its models and agents, and a reader loads the whole database's presence
// with one query that returns O(writers) documents.
//
// Because each writer owns its documents, every write is a whole-field $set
// upsert, idempotent and safe to retry, and no two writers ever
// read-modify-write one document. The one thing writers could race for, a
// writer id, is decided by inserting the writer's first beings document,
// whose unique _id makes a duplicate fail with E11000. That is correct on
// MongoDB and on every MongoDB-compatible server, including ones whose
// conditional updates are not atomic across connections.
//
// An index is reused only by the same (model, key), so a bit always names
// one key of one model.
package schema

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"time"
	"unicode/utf8"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

const (
	// DefaultPeriod is the Period used when one is zero: a key that has
	// not pinged for a Period is dead. A silent death is seen within
	// Period + flush + sync (about 11 s with the defaults), a Disconnect
	// within a few hundredths of a second (the batcher writes it at once)
	// and one sync.
	DefaultPeriod = 10 * time.Second

	// DefaultFlushInterval is how often a ping batcher writes, ±20%.
	DefaultFlushInterval = time.Second

	// DefaultSyncInterval is how often a controller's presence reader
	// reads: one query for every model, cheap enough to run ten times a
	// second, so that a Disconnect or a new key (which the batcher writes
	// at once) is seen within about a tenth of a second.
	DefaultSyncInterval = 100 * time.Millisecond

	// DefaultBase is the usual name of the base collection.
	DefaultBase = "presence"

	// ChunkSize is the number of pinger indexes one beings document maps.
	ChunkSize = 1024

	// FreshLimit is the most new keys a writer carries in its ping
	// documents before it writes them to its beings documents.
	FreshLimit = 256

	// MaxBatch is the most writes sent in one bulkWrite call: the
	// embedded server hangs on a bulkWrite that updates 100 or more
	// existing documents on SQLite, and 41 or more on PostgreSQL.
	MaxBatch = 32

	// MaxIndex is the most indexes one writer may hand out. Readers
	// reject documents that name more, so that one bad document cannot
	// make them allocate without bound.
	MaxIndex = 1 << 20

	// KeepSlots is how many slots of each live writer's sequence the
	// pruner keeps below the latest it believes: three Periods. Readers
	// read each writer's latest two; the rest is margin for readers
	// that fall behind.
	KeepSlots = 6

	// ReadSlots is how many slots a reader reads: the current one and
	// two before it, so that it can judge each writer by its own latest
	// two slots even when that writer is one slot behind.
	ReadSlots = 3

	// MaxKeyLength is the longest key accepted, in bytes.
	MaxKeyLength = 1024
)

// Field names, shared by writers, readers and the pruner.
const (
	FieldID      = "_id"
	FieldSlot    = "slot"
	FieldWriter  = "writer"
	FieldPeriod  = "period"
	FieldAt      = "at"
	FieldAlive   = "alive"
	FieldDead    = "dead"
	FieldChunk   = "chunk"
	FieldEntries = "entries"
	FieldFresh   = "fresh"
	FieldFrom    = "freshFrom"
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

// SlotLength returns the length of a slot for period: half of it. A key
// that pings every PingInterval has a bit in every slot of its writer, and
// a writer moves to a new slot twice a Period, so a key that stops is seen
// dead within one Period of its last ping (plus a flush and a sync).
func SlotLength(period time.Duration) time.Duration {
	return period / 2
}

// Slot returns the slot that t falls in. Slots are counted from the Unix
// epoch, so every process with the same period agrees on them.
func Slot(t time.Time, period time.Duration) int64 {
	n := t.UnixNano()
	p := int64(SlotLength(period))
	s := n / p
	if n%p < 0 {
		s--
	}
	return s
}

// SlotStart returns the instant slot begins.
func SlotStart(slot int64, period time.Duration) time.Time {
	return time.Unix(0, slot*int64(SlotLength(period)))
}

// PruneTimeout returns the deadline of one whole prune for period. A
// writer that rewrote its beings documents checks them again once that
// long has passed, so that no prune that read it as gone before it wrote
// again can still be deleting them.
func PruneTimeout(period time.Duration) time.Duration {
	return max(period/2, 2*time.Second)
}

// PingInterval returns how often a pinger pings for a given period: twice a
// slot, so that every slot of its writer has its bit.
func PingInterval(period time.Duration) time.Duration {
	return period / 4
}

// PingID returns the _id of a writer's ping document for slot.
func PingID(slot int64, writer string) string {
	return fmt.Sprintf("%d:%s", slot, writer)
}

// BeingsID returns the _id of a writer's beings document for a chunk.
func BeingsID(writer string, chunk int) string {
	return fmt.Sprintf("%s:%d", writer, chunk)
}

// Entries names a run of a writer's indexes: the i-th index of the run is
// key Keys[i] of the model Models[Model[i]]. An empty key is an index not
// handed out. The model table keeps a run of keys of few models small.
//
// In a document, Entries is one binary value (see MarshalBSONValue), not
// arrays: the embedded server stores a document as JSON with a type per
// element and reads every document of a collection for each command on
// it, so a thousand entries as arrays of strings cost it ten times the
// time of one binary value of the same bytes.
type Entries struct {
	Models []string
	Model  []int32
	Keys   []string
}

// entriesFormat is the first byte of an encoded run of entries.
const entriesFormat = 1

// MarshalBSONValue encodes e as a BSON binary value: a format byte, the
// number of models and each model, then the number of entries and, for
// each, its model reference and its key; numbers as unsigned varints,
// strings as a varint length and their bytes.
func (e Entries) MarshalBSONValue() (byte, []byte, error) {
	if len(e.Model) != len(e.Keys) {
		return 0, nil, errors.NotValidf("%d model references for %d keys", len(e.Model), len(e.Keys))
	}
	data := []byte{entriesFormat}
	data = binary.AppendUvarint(data, uint64(len(e.Models)))
	for _, m := range e.Models {
		data = appendString(data, m)
	}
	data = binary.AppendUvarint(data, uint64(len(e.Keys)))
	for i, k := range e.Keys {
		if e.Model[i] < 0 {
			return 0, nil, errors.NotValidf("model reference %d", e.Model[i])
		}
		data = binary.AppendUvarint(data, uint64(e.Model[i]))
		data = appendString(data, k)
	}
	t, raw, err := bson.MarshalValue(bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: data})
	return byte(t), raw, errors.Trace(err)
}

func appendString(data []byte, s string) []byte {
	return append(binary.AppendUvarint(data, uint64(len(s))), s...)
}

// UnmarshalBSONValue decodes what MarshalBSONValue encodes, and the
// document of arrays that writers before it wrote. It never allocates
// more than the value's own size can hold: a reader never trusts what it
// reads (Validate checks the rest).
func (e *Entries) UnmarshalBSONValue(t byte, raw []byte) error {
	switch bson.Type(t) {
	case bson.TypeNull:
		*e = Entries{}
		return nil
	case bson.TypeEmbeddedDocument:
		var old struct {
			Models []string `bson:"models"`
			Model  []int32  `bson:"model"`
			Keys   []string `bson:"keys"`
		}
		if err := bson.Unmarshal(raw, &old); err != nil {
			return errors.Trace(err)
		}
		*e = Entries(old)
		return nil
	case bson.TypeBinary:
	default:
		return errors.NotValidf("entries of BSON type %v", bson.Type(t))
	}
	d, err := newDecoder(raw, "entries", entriesFormat)
	if err != nil {
		return errors.Trace(err)
	}
	var out Entries
	// A model takes at least a byte and an entry two, and no writer
	// has more than MaxIndex of either: counts beyond that are lies,
	// and allocate nothing.
	if n := d.count(1); n > 0 {
		out.Models = make([]string, n)
		for i := range out.Models {
			out.Models[i] = d.string()
		}
	}
	n := d.count(2)
	out.Model, out.Keys = make([]int32, n), make([]string, n)
	for i := range out.Keys {
		ref := d.uvarint()
		if ref > math.MaxInt32 {
			return errors.NotValidf("model reference %d", ref)
		}
		out.Model[i] = int32(ref)
		out.Keys[i] = d.string()
	}
	if d.err != nil {
		return errors.Trace(d.err)
	}
	if len(d.data) > 0 {
		return errors.NotValidf("%d bytes after the entries", len(d.data))
	}
	*e = out
	return nil
}

// decoder reads Entries' and NoticeChanges' encodings; its first error
// sticks.
type decoder struct {
	data []byte
	err  error
}

// newDecoder returns a decoder of raw, a BSON binary value that encodes
// what, past its format byte, which must be format.
func newDecoder(raw []byte, what string, format byte) (*decoder, error) {
	_, data, ok := bson.RawValue{Type: bson.TypeBinary, Value: raw}.BinaryOK()
	if !ok {
		return nil, errors.NotValidf("malformed binary %s", what)
	}
	d := &decoder{data: data}
	if got := d.byte(); got != format {
		return nil, errors.NotValidf("%s format %d", what, got)
	}
	return d, nil
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errors.NotValidf("truncated entries")
	}
	d.data = nil
}

func (d *decoder) byte() byte {
	if len(d.data) == 0 {
		d.fail()
		return 0
	}
	b := d.data[0]
	d.data = d.data[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.data = d.data[n:]
	return v
}

// count reads a number of items of at least size bytes each, at most
// MaxIndex.
func (d *decoder) count(size int) int {
	n := d.uvarint()
	if d.err == nil && (n > uint64(len(d.data)/size) || n > MaxIndex) {
		d.err = errors.NotValidf("%d items in %d bytes", n, len(d.data))
	}
	if d.err != nil {
		d.data = nil
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.data)) {
		d.fail()
		return ""
	}
	s := string(d.data[:n])
	d.data = d.data[n:]
	return s
}

// NewEntries returns the Entries of a run whose i-th index is keys[i] of
// models[i]; models and keys must be of the same length.
func NewEntries(models, keys []string) Entries {
	e := Entries{Model: make([]int32, len(keys)), Keys: keys}
	table := make(map[string]int32)
	for i, m := range models {
		ref, ok := table[m]
		if !ok {
			ref = int32(len(e.Models))
			table[m] = ref
			e.Models = append(e.Models, m)
		}
		e.Model[i] = ref
	}
	return e
}

// Len returns the number of indexes in the run.
func (e Entries) Len() int {
	return len(e.Keys)
}

// Validate returns a NotValid error unless e is well formed with at most
// limit indexes: a reader never trusts what it reads.
func (e Entries) Validate(limit int) error {
	if len(e.Keys) > limit {
		return errors.NotValidf("%d entries (at most %d)", len(e.Keys), limit)
	}
	if len(e.Model) != len(e.Keys) {
		return errors.NotValidf("%d model references for %d keys", len(e.Model), len(e.Keys))
	}
	for _, ref := range e.Model {
		if ref < 0 || int(ref) >= len(e.Models) {
			return errors.NotValidf("model reference %d of %d models", ref, len(e.Models))
		}
	}
	return nil
}

// PingDoc is a ping document as read. Fresh holds the entries of the
// indexes from FreshFrom on that the writer has not yet written to its
// beings documents: a writer writes beings once it has FreshLimit new
// keys, and readers learn new keys from the ping documents they read
// anyway.
type PingDoc struct {
	Slot      int64   `bson:"slot"`
	Writer    string  `bson:"writer"`
	Period    int64   `bson:"period"`
	At        int64   `bson:"at"`
	Alive     []byte  `bson:"alive"`
	Dead      []byte  `bson:"dead"`
	FreshFrom int     `bson:"freshFrom"`
	Fresh     Entries `bson:"fresh"`
}

// Validate returns a NotValid error unless doc can be applied safely.
func (doc PingDoc) Validate() error {
	if doc.Writer == "" {
		return errors.NotValidf("ping document without writer")
	}
	if len(doc.Alive) > MaxIndex/8 || len(doc.Dead) > MaxIndex/8 {
		return errors.NotValidf("bitmap longer than %d bytes", MaxIndex/8)
	}
	if doc.FreshFrom < 0 || doc.FreshFrom > MaxIndex {
		return errors.NotValidf("freshFrom %d", doc.FreshFrom)
	}
	return errors.Trace(doc.Fresh.Validate(min(FreshLimit*4, MaxIndex-doc.FreshFrom)))
}

// BeingsDoc is a beings document as read: Entries name the indexes from
// Chunk*ChunkSize on.
type BeingsDoc struct {
	Writer  string  `bson:"writer"`
	Chunk   int     `bson:"chunk"`
	Slot    int64   `bson:"slot"`
	Entries Entries `bson:"entries"`
}

// Validate returns a NotValid error unless doc can be applied safely.
func (doc BeingsDoc) Validate() error {
	if doc.Writer == "" {
		return errors.NotValidf("beings document without writer")
	}
	if doc.Chunk < 0 || doc.Chunk >= MaxIndex/ChunkSize {
		return errors.NotValidf("chunk %d", doc.Chunk)
	}
	return errors.Trace(doc.Entries.Validate(ChunkSize))
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

// EnsureIndexes creates the secondary indexes that keep reads of the
// current slots and of one writer's beings from scanning everything on
// MongoDB. It is idempotent.
func EnsureIndexes(ctx context.Context, base *mongo.Collection) error {
	for _, spec := range []struct {
		coll   *mongo.Collection
		fields bson.D
	}{
		{Pings(base), bson.D{{Key: FieldSlot, Value: 1}}},
		{Beings(base), bson.D{{Key: FieldWriter, Value: 1}, {Key: FieldChunk, Value: 1}}},
	} {
		if _, err := spec.coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: spec.fields}); err != nil {
			return errors.Annotatef(err, "cannot create index on %s", spec.coll.Name())
		}
	}
	return nil
}
