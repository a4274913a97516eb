package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/presencekit/presence/internal/schema"
)

// explainedBeings is one beings document: which keys a writer's indexes
// stand for.
type explainedBeings struct {
	ID     string `json:"_id"`
	Writer string `json:"writer"`
	Chunk  int    `json:"chunk"`
	// First is the index of the document's first entry.
	First int `json:"first"`
	// Keys are the document's keys by model (of the model asked for
	// only, if one was).
	Keys map[string][]string `json:"keys"`
}

// explainedPing is one ping document: the keys a writer saw alive and
// dead in one slot.
type explainedPing struct {
	ID        string `json:"_id"`
	Writer    string `json:"writer"`
	Slot      int64  `json:"slot"`
	SlotStart string `json:"slotStart"` // RFC 3339, by the document's Period
	Written   string `json:"written"`   // RFC 3339, by the writer's clock
	Period    string `json:"period"`
	// Alive and Dead are the keys whose bits are set, by model; an
	// index no beings document or fresh entry names shows as "#N".
	Alive map[string][]string `json:"alive"`
	Dead  map[string][]string `json:"dead"`
	// Invalid says why a reader would skip the document.
	Invalid string `json:"invalid,omitempty"`
}

// runExplain prints the presence documents of every model (or of
// --model) in words: which key each bit of each ping document stands for,
// slots and stamps as times. It only reads, and prints each document as
// it reads it. A document that does not decode is named, with why, and
// the rest explained. It exits 0, or 2 on error, when the database holds
// no presence documents, or when none is at the --period given.
func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "explain", "", args, stdout, stderr, answerExplain)
}

func answerExplain(ctx context.Context, o queryOptions, db *mongo.Database, stdout, _ io.Writer) (int, error) {
	base := db.Collection(o.collection)
	var out explainOutput = &textExplain{w: stdout, beingsColl: schema.Beings(base).Name(), pingsColl: schema.Pings(base).Name()}
	if o.json {
		out = &jsonExplain{w: stdout}
	}
	ex := &explainer{model: o.model.Id(), period: o.period, names: make(map[string]map[int]entry), out: out,
		found: &presenceScan{base: base, where: schema.Namespace(base), periods: make(map[time.Duration]int)}}
	if err := ex.run(ctx, base); err != nil {
		return 0, errors.Trace(err)
	}
	if _, err := ex.found.period(ctx, db, o.collection, o.period); err != nil {
		return 0, errors.Trace(err)
	}
	return exitYes, nil
}

// entry is what one writer's index stands for.
type entry struct{ model, key string }

// explainOutput prints an explanation as it is read: the beings
// documents, then the ping documents, then the documents skipped.
type explainOutput interface {
	beings(explainedBeings)
	ping(explainedPing)
	end(named []skippedDoc, count int)
}

// explainer reads the presence documents one at a time and hands each,
// decoded, to its output. What it keeps is bounded by what the
// documents validly mean: the names of each writer's indexes (at most
// MaxIndex a writer), never a document's bitmap beyond MaxIndex bits.
type explainer struct {
	model  string
	period time.Duration // the Period asked for, or 0
	out    explainOutput
	// names is what each writer's indexes stand for: its beings
	// documents, then the fresh entries of its ping documents, oldest
	// slot first.
	names map[string]map[int]entry
	// found counts the documents read, by kind and Period, and the
	// documents skipped (its models and writers are not kept).
	found *presenceScan
}

// run reads and explains every beings document, then every ping
// document by writer and slot.
func (ex *explainer) run(ctx context.Context, base *mongo.Collection) error {
	beings := schema.Beings(base)
	if err := eachDocument(ctx, beings, nil, func(raw bson.Raw) {
		doc, err := schema.DecodeBeings(raw)
		if err != nil {
			ex.found.skipped.add(beings.Name(), raw, err)
			return
		}
		ex.found.beings++
		ex.out.beings(ex.explainBeings(schema.DocumentID(raw), doc))
	}); err != nil {
		return errors.Trace(err)
	}
	pings := schema.Pings(base)
	cur, err := pings.Find(ctx, bson.D{}, mongooptions.Find().SetSort(bson.D{{Key: schema.FieldWriter, Value: 1}, {Key: schema.FieldSlot, Value: 1}}))
	if err != nil {
		return errors.Annotatef(err, "cannot read %s", pings.Name())
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	for cur.Next(ctx) {
		doc, err := schema.DecodePing(cur.Current)
		if err != nil {
			ex.found.skipped.add(pings.Name(), cur.Current, err)
			continue
		}
		ex.found.pings++
		ex.found.periods[time.Duration(doc.Period)]++
		ex.out.ping(ex.explainPing(schema.DocumentID(cur.Current), doc))
	}
	if err := cur.Err(); err != nil {
		return errors.Annotatef(err, "cannot read %s", pings.Name())
	}
	ex.out.end(ex.found.skipped.list())
	return nil
}

// learn records what the indexes of writer from first on stand for.
func (ex *explainer) learn(writer string, first int, e schema.Entries) {
	if ex.names[writer] == nil {
		ex.names[writer] = make(map[int]entry)
	}
	for i, key := range e.Keys {
		if key != "" {
			ex.names[writer][first+i] = entry{model: e.Models[e.Model[i]], key: key}
		}
	}
}

// explainBeings learns and explains one valid beings document.
func (ex *explainer) explainBeings(id string, doc schema.BeingsDoc) explainedBeings {
	first := doc.Chunk * schema.ChunkSize
	ex.learn(doc.Writer, first, doc.Entries)
	eb := explainedBeings{ID: id, Writer: doc.Writer, Chunk: doc.Chunk, First: first, Keys: make(map[string][]string)}
	for j, key := range doc.Entries.Keys {
		if m := doc.Entries.Models[doc.Entries.Model[j]]; key != "" && (ex.model == "" || m == ex.model) {
			eb.Keys[m] = append(eb.Keys[m], key)
		}
	}
	return eb
}

// explainPing learns the fresh entries of one valid ping document and
// explains it; its slot is timed by its own Period.
func (ex *explainer) explainPing(id string, doc schema.PingDoc) explainedPing {
	ex.learn(doc.Writer, doc.FreshFrom, doc.Fresh)
	period := time.Duration(doc.Period)
	ep := explainedPing{
		ID: id, Writer: doc.Writer, Slot: doc.Slot,
		Written: time.Unix(0, doc.At).UTC().Format(time.RFC3339Nano),
		Period:  period.String(),
		Alive:   decodeKeys(doc.Alive, ex.names[doc.Writer], ex.model),
		Dead:    decodeKeys(doc.Dead, ex.names[doc.Writer], ex.model),
	}
	switch {
	case period <= 0:
		ep.Invalid = fmt.Sprintf("period %d", doc.Period)
	case ex.period > 0 && period != ex.period:
		ep.Invalid = fmt.Sprintf("written with period %v, not --period %v", period, ex.period)
	}
	if period > 0 {
		ep.SlotStart = schema.SlotStart(doc.Slot, period).UTC().Format(time.RFC3339Nano)
	}
	return ep
}

// decodeKeys returns the keys whose bits are set in bits, by model, of
// model only if it is not empty; an index without a name is "#N" under
// the model "?". bits must be valid (at most MaxIndex bits).
func decodeKeys(bits []byte, names map[int]entry, model string) map[string][]string {
	out := make(map[string][]string)
	schema.ForEachBit(schema.DecodeBits(nil, bits), func(index int) {
		e, ok := names[index]
		if !ok {
			e = entry{model: "?", key: fmt.Sprintf("#%d", index)}
		}
		if model == "" || e.model == model || !ok {
			out[e.model] = append(out[e.model], e.key)
		}
	})
	return out
}

// textExplain prints an explanation for people.
type textExplain struct {
	w                     io.Writer
	beingsColl, pingsColl string
}

func (t *textExplain) beings(b explainedBeings) {
	fmt.Fprintf(t.w, "%s %s: writer %s, indexes from %d\n", t.beingsColl, b.ID, b.Writer, b.First)
	printKeys(t.w, "keys", b.Keys)
}

func (t *textExplain) ping(p explainedPing) {
	fmt.Fprintf(t.w, "%s %s: writer %s, slot %d (from %s), written %s, period %s\n",
		t.pingsColl, p.ID, p.Writer, p.Slot, p.SlotStart, p.Written, p.Period)
	if p.Invalid != "" {
		fmt.Fprintf(t.w, "    INVALID (readers skip it): %s\n", p.Invalid)
	}
	printKeys(t.w, "alive", p.Alive)
	printKeys(t.w, "dead", p.Dead)
}

func (t *textExplain) end(named []skippedDoc, count int) {
	for _, doc := range named {
		fmt.Fprintf(t.w, "%s %s: SKIPPED, does not decode: %s\n", doc.Kind, doc.ID, doc.Reason)
	}
	if count > len(named) {
		fmt.Fprintf(t.w, "... and %d more documents skipped\n", count-len(named))
	}
}

func printKeys(w io.Writer, what string, keys map[string][]string) {
	for _, model := range sortedKeys(keys) {
		fmt.Fprintf(w, "    %s in model %s (%d): %s\n", what, model, len(keys[model]), strings.Join(keys[model], " "))
	}
}

// jsonExplain prints an explanation as one JSON object,
// {"beings": [...], "pings": [...], "skipped": N, "skipped_documents": [...]},
// written as it is read.
type jsonExplain struct {
	w     io.Writer
	state int // 0 nothing written, 1 in beings, 2 in pings
	n     int // elements written in the current list
}

// element writes v as the next element of list (1 beings, 2 pings),
// opening the object and the list as needed.
func (j *jsonExplain) element(list int, v any) {
	for j.state < list {
		switch j.state {
		case 0:
			fmt.Fprint(j.w, `{"beings":[`)
		case 1:
			fmt.Fprint(j.w, `],"pings":[`)
		}
		j.state++
		j.n = 0
	}
	if v == nil {
		return
	}
	if j.n > 0 {
		fmt.Fprint(j.w, ",")
	}
	j.n++
	data, _ := json.Marshal(v)
	fmt.Fprintf(j.w, "\n%s", data)
}

func (j *jsonExplain) beings(b explainedBeings) { j.element(1, b) }

func (j *jsonExplain) ping(p explainedPing) { j.element(2, p) }

func (j *jsonExplain) end(named []skippedDoc, count int) {
	j.element(2, nil)
	if named == nil {
		named = []skippedDoc{}
	}
	data, _ := json.Marshal(named)
	fmt.Fprintf(j.w, "\n],\"skipped\":%d,\"skipped_documents\":%s}\n", count, data)
}
