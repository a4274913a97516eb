package presencereader

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/catacomb"
	"github.com/presencekit/presence/internal/schema"
)

// The load: one read of the ping documents and, for writers with
// indexes the view does not know, of their beings documents. A load runs
// in a goroutine of its own (see startLoad): what it reads goes into a
// loadResult, which the loop applies (see finishLoad); nothing here but
// queueLoad and startLoad touches what the loop owns.

// minReadTimeout is the shortest deadline a load gets.
const minReadTimeout = 2 * time.Second

// loadResult is what one load read.
type loadResult struct {
	// at is when the load started on the reader's observed clock (see
	// Reader.observe), and took how long it took (never negative);
	// rawStart and rawEnd are the clock's own readings, for the skews.
	at, rawStart, rawEnd time.Time
	took                 time.Duration
	// gen is the load's generation (see Reader.gen).
	gen     uint64
	writers []writerBits
	// progress is each writer's sequence as this load judged it.
	progress map[string]schema.Progress
	stamps   writerAt
	beings   []schema.BeingsDoc
	fresh    map[string]fresh
	skipped  []string // why documents were skipped, one per document
	err      error
	// beingsErr is why beings documents could not be read; the pings
	// were, so the load still counts.
	beingsErr error
}

// writerAt is the newest clock stamp a writer put in its ping documents.
type writerAt map[string]int64

// fresh is the newest entries a writer carried in its ping documents.
type fresh struct {
	from    int
	entries schema.Entries
}

// queueLoad answers req with the first load that starts after it,
// starting one now unless one is in flight. It must only be called from
// the loop goroutine.
func (r *Reader) queueLoad(req reqSync) {
	r.nextWaiters = append(r.nextWaiters, req)
	if !r.inFlight {
		r.startLoad()
	}
}

// startLoad starts a load in a goroutine of its own, so that requests are
// served while the database answers. It must only be called from the loop
// goroutine.
func (r *Reader) startLoad() {
	// The changes of the notices that came before the load begins are
	// applied first: a hint counts loads begun after it as confirming
	// it (see view.hint).
	r.applyHints()
	r.inFlight = true
	r.gen++
	r.curWaiters, r.nextWaiters = r.nextWaiters, nil
	known := r.view.known()
	progress := r.view.progress()
	raw := r.config.Clock.Now()
	now := r.observe(raw)
	gen := r.gen
	go func() {
		res := r.read(now, progress, known)
		res.gen = gen
		res.rawStart, res.rawEnd = raw, r.config.Clock.Now()
		res.took = max(res.rawEnd.Sub(raw), 0)
		r.results <- res
	}()
}

// observe returns the reader's observed time at raw, a reading of its
// clock: it moves on as the clock does, but never back, so that a clock
// stepped back does not make the reader wait again for what it has
// already waited for. (A step forward is a gap between loads, which the
// reader treats as a trouble of its own: see gapLimit.) It must only be
// called from the loop goroutine.
func (r *Reader) observe(raw time.Time) time.Time {
	if r.observed.IsZero() {
		r.observed = raw
	} else {
		r.observed = r.observed.Add(max(raw.Sub(r.observedRaw), 0))
	}
	r.observedRaw = raw
	return r.observed
}

// read queries the ping documents of each writer's latest two slots (see
// readFilter), judges each writer's sequence from them (see
// schema.Progress) as of now on the observed clock, and reads the beings
// documents of writers with indexes beyond what known says.
// The ping read has a deadline of one SyncInterval (at least
// minReadTimeout); the beings read, which brings many keys at once after a
// writer starts, half a Period (at least as long). It runs in the load's
// goroutine.
func (r *Reader) read(now time.Time, progress map[string]schema.Progress, known map[string]int) loadResult {
	ctx, cancel := catacomb.Call(&r.catacomb, max(r.config.SyncInterval, minReadTimeout))
	defer cancel()
	res := loadResult{at: now}
	cur, err := r.pings.Find(ctx, readFilter(progress))
	if err != nil {
		res.err = errors.Annotate(err, "cannot read pings")
		return res
	}
	defer cur.Close(context.WithoutCancel(ctx))
	docs := make(map[string][]schema.PingDoc)
	for cur.Next(ctx) {
		var doc schema.PingDoc
		err := cur.Decode(&doc)
		if err == nil {
			err = r.check(doc, cur.Current.Lookup(schema.FieldID))
		}
		if err != nil {
			res.skipped = append(res.skipped, fmt.Sprintf("ping document %v: %v", cur.Current.Lookup(schema.FieldID), err))
			continue
		}
		docs[doc.Writer] = append(docs[doc.Writer], doc)
	}
	if err := cur.Err(); err != nil {
		res.err = errors.Annotate(err, "cannot read pings")
		return res
	}
	res.judge(docs, progress, now, r.config.Period)
	need := res.unknownBeings(known)
	if len(need) == 0 {
		return res
	}
	ctx, cancel = catacomb.Call(&r.catacomb, max(r.config.Period/2, r.config.SyncInterval, minReadTimeout))
	defer cancel()
	// The pings are read: a failed beings read costs only the keys it
	// did not bring, which the next load fetches.
	if chunks := chunkCount(need); chunks <= maxPointReads {
		r.readChunks(ctx, need, &res)
	} else {
		r.scanChunks(ctx, need, &res)
	}
	return res
}

// maxPointReads is the most beings documents a load reads one by one,
// each by its _id: a new key or two, the usual case, costs a read or
// two that every server answers from its _id index (the embedded
// server has no other index: its scan of 100,000 keys' beings takes a
// second or more). Beyond it a load fetches them with one query.
const maxPointReads = 8

// chunkCount returns how many beings documents need names.
func chunkCount(need []beingsRange) int {
	n := 0
	for _, b := range need {
		n += b.last - b.first + 1
	}
	return n
}

// readChunks reads the beings documents need names, each by its _id, into
// res. It stops at the first error.
func (r *Reader) readChunks(ctx context.Context, need []beingsRange, res *loadResult) {
	for _, b := range need {
		for chunk := b.first; chunk <= b.last; chunk++ {
			raw, err := r.beings.FindOne(ctx, bson.D{{Key: schema.FieldID, Value: schema.BeingsID(b.writer, chunk)}}).Raw()
			if errors.Is(err, mongo.ErrNoDocuments) {
				// Not written yet, or pruned: the bits it would name
				// stay unknown, which holds their deaths.
				continue
			}
			if err != nil {
				res.beingsErr = errors.Annotatef(err, "cannot read beings after %d documents", len(res.beings))
				return
			}
			r.addBeings(raw, res, func(doc schema.BeingsDoc) error {
				if doc.Writer != b.writer || doc.Chunk != chunk {
					return errors.NotValidf("writer %q chunk %d under the _id of writer %q chunk %d", doc.Writer, doc.Chunk, b.writer, chunk)
				}
				return nil
			})
		}
	}
}

// scanChunks reads the beings documents need names with one query into
// res.
func (r *Reader) scanChunks(ctx context.Context, need []beingsRange, res *loadResult) {
	or := make(bson.A, len(need))
	for i, b := range need {
		or[i] = bson.D{
			{Key: schema.FieldWriter, Value: b.writer},
			{Key: schema.FieldChunk, Value: bson.D{{Key: "$gte", Value: b.first}, {Key: "$lte", Value: b.last}}},
		}
	}
	cur, err := r.beings.Find(ctx, bson.D{{Key: "$or", Value: or}},
		options.Find().SetSort(bson.D{{Key: schema.FieldWriter, Value: 1}, {Key: schema.FieldChunk, Value: 1}}))
	if err != nil {
		res.beingsErr = errors.Annotate(err, "cannot read beings")
		return
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		r.addBeings(cur.Current, res, nil)
	}
	if err := cur.Err(); err != nil {
		res.beingsErr = errors.Annotatef(err, "cannot read beings after %d documents", len(res.beings))
	}
}

// addBeings decodes and validates one beings document, with check if it
// is not nil, and adds it to res, or records it as skipped.
func (r *Reader) addBeings(raw bson.Raw, res *loadResult, check func(schema.BeingsDoc) error) {
	var doc schema.BeingsDoc
	err := bson.Unmarshal(raw, &doc)
	if err == nil {
		err = doc.Validate()
	}
	if err == nil && check != nil {
		err = check(doc)
	}
	if err != nil {
		res.skipped = append(res.skipped, fmt.Sprintf("beings document %v: %v", raw.Lookup(schema.FieldID), err))
		return
	}
	res.beings = append(res.beings, doc)
}

// check returns why doc, read under id, must not be applied, or nil.
func (r *Reader) check(doc schema.PingDoc, id bson.RawValue) error {
	if err := doc.Validate(); err != nil {
		return errors.Trace(err)
	}
	if err := doc.CheckID(id.StringValue()); id.Type != bson.TypeString || err != nil {
		return errors.NotValidf("_id %v of slot %d of writer %q", id, doc.Slot, doc.Writer)
	}
	if doc.Period != int64(r.config.Period) {
		return errors.Errorf("written with period %v, this reader's is %v", time.Duration(doc.Period), r.config.Period)
	}
	return nil
}

// readFilter returns the query of a load: for each writer whose sequence
// the reader has seen move on, its documents from the slot before its
// latest on; for every other writer, all of its documents (at most the
// pruner's window), from which the load judges its sequence afresh. It
// compares no slot with the reader's clock.
func readFilter(progress map[string]schema.Progress) bson.D {
	if len(progress) == 0 {
		return bson.D{}
	}
	writers := slices.Sorted(maps.Keys(progress))
	or := make(bson.A, 0, len(writers)+1)
	or = append(or, bson.D{{Key: schema.FieldWriter, Value: bson.D{{Key: "$nin", Value: writers}}}})
	for _, w := range writers {
		clause := bson.D{{Key: schema.FieldWriter, Value: w}}
		if p := progress[w]; p.Confirmed {
			clause = append(clause, bson.E{Key: schema.FieldSlot, Value: bson.D{{Key: "$gte", Value: p.Top - 1}}})
		}
		or = append(or, clause)
	}
	return bson.D{{Key: "$or", Value: or}}
}

// judge works out each writer's sequence from the documents read of it,
// as of now, skips those that claim a slot the writer cannot have reached
// (see schema.Progress), and adds the writer's latest two slots to res.
func (res *loadResult) judge(docs map[string][]schema.PingDoc, progress map[string]schema.Progress, now time.Time, period time.Duration) {
	res.progress = make(map[string]schema.Progress, len(docs))
	byWriter := make(map[string]int)
	for _, writer := range slices.Sorted(maps.Keys(docs)) {
		list := docs[writer]
		seqs := make([]int64, len(list))
		for i, doc := range list {
			seqs[i] = doc.Slot
		}
		p := progress[writer]
		rejected, moved := p.Observe(seqs, now, period)
		res.progress[writer] = p
		for _, doc := range list {
			switch {
			case slices.Contains(rejected, doc.Slot):
				res.skipped = append(res.skipped, fmt.Sprintf("ping document %q: slot %d is beyond what writer %s can have reached", schema.PingID(doc.Slot, doc.Writer), doc.Slot, doc.Writer))
			case doc.Slot == p.Top || doc.Slot == p.Top-1:
				res.addPing(doc, byWriter)
			}
		}
		if i, ok := byWriter[writer]; ok {
			res.writers[i].moved = moved
		}
	}
}

// addPing adds one ping document of a writer's latest two slots to res.
func (res *loadResult) addPing(doc schema.PingDoc, byWriter map[string]int) {
	i, ok := byWriter[doc.Writer]
	if !ok {
		i = len(res.writers)
		byWriter[doc.Writer] = i
		res.writers = append(res.writers, writerBits{writer: doc.Writer, slot: doc.Slot - 2})
	}
	wb := &res.writers[i]
	if res.stamps == nil {
		res.stamps = make(writerAt)
	}
	res.stamps[doc.Writer] = max(res.stamps[doc.Writer], doc.At)
	if f, ok := res.fresh[doc.Writer]; doc.Fresh.Len() > 0 && (!ok || doc.FreshFrom+doc.Fresh.Len() > f.from+f.entries.Len()) {
		if res.fresh == nil {
			res.fresh = make(map[string]fresh)
		}
		res.fresh[doc.Writer] = fresh{from: doc.FreshFrom, entries: doc.Fresh}
	}
	alive, dead := schema.DecodeBits(nil, doc.Alive), schema.DecodeBits(nil, doc.Dead)
	switch {
	case doc.Slot > wb.slot:
		if doc.Slot == wb.slot+1 {
			wb.alivePrev, wb.deadPrev = wb.aliveCur, wb.deadCur
		} else {
			wb.alivePrev, wb.deadPrev = nil, nil
		}
		wb.aliveCur, wb.deadCur, wb.slot = alive, dead, doc.Slot
	case doc.Slot == wb.slot-1:
		wb.alivePrev, wb.deadPrev = alive, dead
	}
}

// beingsRange names the beings documents of one writer's chunks first
// to last.
type beingsRange struct {
	writer      string
	first, last int
}

// unknownBeings returns the beings documents to read for writers whose
// bits go beyond the indexes the view knows (known) and the ping
// documents carry: from the first unknown index's chunk to the highest
// bit's.
func (res *loadResult) unknownBeings(known map[string]int) []beingsRange {
	var need []beingsRange
	for _, wb := range res.writers {
		n, ok := known[wb.writer]
		if !ok {
			n = 0
		}
		if f, carried := res.fresh[wb.writer]; carried && n >= 0 && f.from <= n {
			n = max(n, f.from+f.entries.Len())
		}
		top := highest(wb)
		if n >= 0 && top < n {
			continue
		}
		// Only the chunks from the first unknown index on: a writer's
		// chunks below that never change.
		first := 0
		if ok && n > 0 {
			first = n / schema.ChunkSize
		}
		need = append(need, beingsRange{writer: wb.writer, first: first, last: max(first, top/schema.ChunkSize)})
	}
	return need
}
