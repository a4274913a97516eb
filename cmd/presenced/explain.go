package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
)

// explained is what `presenced explain` prints: the presence documents
// with their bitmaps decoded into keys, their slot numbers and stamps
// into times.
type explained struct {
	Beings []explainedBeings `json:"beings"`
	Pings  []explainedPing   `json:"pings"`
}

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
	SlotStart string `json:"slotStart"` // RFC 3339, by the Period given
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
// slots and stamps as times. It only reads. It exits 0, or 2 on error.
func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runQuery(ctx, "explain", "", args, stdout, stderr, answerExplain)
}

func answerExplain(ctx context.Context, o queryOptions, db *mongo.Database, stdout io.Writer) (int, error) {
	base := db.Collection(o.collection)
	ex, err := explain(ctx, base, o.model.Id(), o.period)
	if err != nil {
		return 0, err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return exitYes, enc.Encode(ex)
	}
	printExplained(stdout, ex, schema.Beings(base).Name(), schema.Pings(base).Name())
	return exitYes, nil
}

// entry is what one writer's index stands for.
type entry struct{ model, key string }

// explain reads every beings and ping document and decodes them, keeping
// the keys of model only if it is not empty.
func explain(ctx context.Context, base *mongo.Collection, model string, period time.Duration) (explained, error) {
	var ex explained
	var beings []schema.BeingsDoc
	var beingIDs []string
	if err := readAll(ctx, schema.Beings(base), func(raw bson.Raw) error {
		var doc schema.BeingsDoc
		if err := bson.Unmarshal(raw, &doc); err != nil {
			return errors.Annotate(err, "cannot decode a beings document")
		}
		beings = append(beings, doc)
		beingIDs = append(beingIDs, idOf(raw))
		return nil
	}); err != nil {
		return ex, errors.Trace(err)
	}
	var pings []schema.PingDoc
	var pingIDs []string
	if err := readAll(ctx, schema.Pings(base), func(raw bson.Raw) error {
		var doc schema.PingDoc
		if err := bson.Unmarshal(raw, &doc); err != nil {
			return errors.Annotate(err, "cannot decode a ping document")
		}
		pings = append(pings, doc)
		pingIDs = append(pingIDs, idOf(raw))
		return nil
	}); err != nil {
		return ex, errors.Trace(err)
	}

	// What each writer's indexes stand for: its beings documents, then
	// the fresh entries of its ping documents, oldest slot first.
	names := make(map[string]map[int]entry)
	learn := func(writer string, first int, e schema.Entries) {
		if e.Validate(schema.MaxIndex) != nil {
			return
		}
		if names[writer] == nil {
			names[writer] = make(map[int]entry)
		}
		for i, key := range e.Keys {
			if key != "" {
				names[writer][first+i] = entry{model: e.Models[e.Model[i]], key: key}
			}
		}
	}
	for i, doc := range beings {
		learn(doc.Writer, doc.Chunk*schema.ChunkSize, doc.Entries)
		eb := explainedBeings{ID: beingIDs[i], Writer: doc.Writer, Chunk: doc.Chunk, First: doc.Chunk * schema.ChunkSize, Keys: make(map[string][]string)}
		if doc.Entries.Validate(schema.ChunkSize) == nil {
			for j, key := range doc.Entries.Keys {
				if m := doc.Entries.Models[doc.Entries.Model[j]]; key != "" && (model == "" || m == model) {
					eb.Keys[m] = append(eb.Keys[m], key)
				}
			}
		}
		ex.Beings = append(ex.Beings, eb)
	}
	order := make([]int, len(pings))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		pa, pb := pings[order[a]], pings[order[b]]
		return pa.Writer < pb.Writer || (pa.Writer == pb.Writer && pa.Slot < pb.Slot)
	})
	for _, i := range order {
		learn(pings[i].Writer, pings[i].FreshFrom, pings[i].Fresh)
	}
	for _, i := range order {
		doc := pings[i]
		ep := explainedPing{
			ID: pingIDs[i], Writer: doc.Writer, Slot: doc.Slot,
			SlotStart: schema.SlotStart(doc.Slot, period).UTC().Format(time.RFC3339Nano),
			Written:   time.Unix(0, doc.At).UTC().Format(time.RFC3339Nano),
			Period:    time.Duration(doc.Period).String(),
			Alive:     decodeKeys(doc.Alive, names[doc.Writer], model),
			Dead:      decodeKeys(doc.Dead, names[doc.Writer], model),
		}
		if err := doc.Validate(); err != nil {
			ep.Invalid = err.Error()
		} else if doc.Period != int64(period) {
			ep.Invalid = fmt.Sprintf("written with period %v, not --period %v", time.Duration(doc.Period), period)
		}
		ex.Pings = append(ex.Pings, ep)
	}
	return ex, nil
}

// decodeKeys returns the keys whose bits are set in bits, by model, of
// model only if it is not empty; an index without a name is "#N" under
// the model "?".
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

// readAll calls f with every document of coll.
func readAll(ctx context.Context, coll *mongo.Collection, f func(bson.Raw) error) error {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return errors.Annotatef(err, "cannot read %s", coll.Name())
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	for cur.Next(ctx) {
		if err := f(cur.Current); err != nil {
			return errors.Trace(err)
		}
	}
	return errors.Annotatef(cur.Err(), "cannot read %s", coll.Name())
}

// idOf returns a document's _id as text.
func idOf(raw bson.Raw) string {
	v := raw.Lookup("_id")
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	return v.String()
}

// printExplained prints ex for people.
func printExplained(w io.Writer, ex explained, beingsName, pingsName string) {
	for _, b := range ex.Beings {
		fmt.Fprintf(w, "%s %s: writer %s, indexes from %d\n", beingsName, b.ID, b.Writer, b.First)
		printKeys(w, "keys", b.Keys)
	}
	for _, p := range ex.Pings {
		fmt.Fprintf(w, "%s %s: writer %s, slot %d (from %s), written %s, period %s\n",
			pingsName, p.ID, p.Writer, p.Slot, p.SlotStart, p.Written, p.Period)
		if p.Invalid != "" {
			fmt.Fprintf(w, "    INVALID (readers skip it): %s\n", p.Invalid)
		}
		printKeys(w, "alive", p.Alive)
		printKeys(w, "dead", p.Dead)
	}
}

func printKeys(w io.Writer, what string, keys map[string][]string) {
	for _, model := range sortedKeys(keys) {
		fmt.Fprintf(w, "    %s in model %s (%d): %s\n", what, model, len(keys[model]), strings.Join(keys[model], " "))
	}
}
