package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/juju/errors"
	"github.com/juju/names/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/internal/schema"
)

// The operator's commands read the database as the presence reader does:
// a document that does not decode, or that no reader would apply, is
// skipped, named once and counted, and everything else is answered.

// maxNamedSkips is how many skipped documents one answer names; beyond
// it they are only counted, so that a collection full of bad documents
// costs a bounded answer.
const maxNamedSkips = 100

// skippedDoc names a document an answer left out, and why.
type skippedDoc struct {
	Kind   string `json:"kind"` // the collection: presence.pings, presence.beings
	ID     string `json:"_id"`
	Reason string `json:"reason"`
}

// String returns "kind _id: reason".
func (s skippedDoc) String() string {
	return fmt.Sprintf("%s %s: %s", s.Kind, s.ID, s.Reason)
}

// skips collects the documents an answer skipped, each named once (by
// kind and _id) up to maxNamedSkips, all of them counted. It is safe for
// concurrent use.
type skips struct {
	mu    sync.Mutex
	seen  map[string]bool
	named []skippedDoc
	count int
}

// add records that the document of kind with raw's _id was skipped for
// err's reason, unless it already was.
func (s *skips) add(kind string, raw bson.Raw, err error) {
	doc := skippedDoc{Kind: kind, ID: schema.DocumentID(raw), Reason: err.Error()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	key := doc.Kind + "\x00" + doc.ID
	if s.seen[key] {
		return
	}
	s.count++
	if len(s.named) < maxNamedSkips {
		s.seen[key] = true
		s.named = append(s.named, doc)
	}
}

// list returns the named documents and how many were skipped in all.
func (s *skips) list() ([]skippedDoc, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.named), s.count
}

// report writes one line per named document and, if some were not
// named, how many, each prefixed by prefix.
func (s *skips) report(w io.Writer, prefix string) {
	named, count := s.list()
	for _, doc := range named {
		fmt.Fprintf(w, "%sskipped %s\n", prefix, doc)
	}
	if count > len(named) {
		fmt.Fprintf(w, "%s... and %d more documents skipped\n", prefix, count-len(named))
	}
}

// presenceScan is what one read of every presence document found: the
// writers' latest valid documents, the models their keys are in, the
// Periods their ping documents were written with, and what was skipped.
type presenceScan struct {
	// base is the base collection read; where names it,
	// "database.collection".
	base  *mongo.Collection
	where string
	// pings and beings count the valid documents.
	pings, beings int
	// periods counts the valid ping documents by the Period written in
	// them.
	periods map[time.Duration]int
	// latest is each writer's valid ping document of the highest slot.
	latest map[string]schema.PingDoc
	// models are the models any valid document names keys of, sorted,
	// but for those marked removed (see presence.RemoveModel).
	models []string
	// removed are the models marked removed.
	removed map[string]bool
	skipped skips
}

// scanPresence reads every beings and ping document under base once, one
// at a time, and returns what it found. A document that does not decode
// or validate is skipped and named; only a failed read is an error.
func scanPresence(ctx context.Context, base *mongo.Collection) (*presenceScan, error) {
	s := &presenceScan{
		base:    base,
		where:   schema.Namespace(base),
		periods: make(map[time.Duration]int),
		latest:  make(map[string]schema.PingDoc),
	}
	models := make(map[string]bool)
	learn := func(e schema.Entries) {
		for _, m := range e.Models {
			if names.IsValidModel(m) {
				models[m] = true
			}
		}
	}
	beings := schema.Beings(base)
	if err := eachDocument(ctx, beings, nil, func(raw bson.Raw) {
		doc, err := schema.DecodeBeings(raw)
		if err != nil {
			s.skipped.add(beings.Name(), raw, err)
			return
		}
		s.beings++
		learn(doc.Entries)
	}); err != nil {
		return nil, errors.Trace(err)
	}
	pings := schema.Pings(base)
	if err := eachDocument(ctx, pings, nil, func(raw bson.Raw) {
		doc, err := schema.DecodePing(raw)
		if err == nil && doc.Period <= 0 {
			err = errors.NotValidf("period %d", doc.Period)
		}
		if err != nil {
			s.skipped.add(pings.Name(), raw, err)
			return
		}
		s.pings++
		s.periods[time.Duration(doc.Period)]++
		learn(doc.Fresh)
		if last, ok := s.latest[doc.Writer]; !ok || doc.Slot > last.Slot {
			doc.Alive, doc.Dead, doc.Fresh = nil, nil, schema.Entries{}
			s.latest[doc.Writer] = doc
		}
	}); err != nil {
		return nil, errors.Trace(err)
	}
	var err error
	if s.removed, err = schema.RemovedModels(ctx, base); err != nil {
		return nil, errors.Trace(err)
	}
	for m := range models {
		if !s.removed[m] {
			s.models = append(s.models, m)
		}
	}
	sort.Strings(s.models)
	return s, nil
}

// modelsOf returns model, or every model the scan found if model is
// empty.
func (s *presenceScan) modelsOf(model string) []string {
	if model != "" {
		return []string{model}
	}
	return s.models
}

// eachDocument calls f with every document of coll that filter (nil:
// every one) selects, one at a time.
func eachDocument(ctx context.Context, coll *mongo.Collection, filter bson.D, f func(bson.Raw)) error {
	return errors.Trace(schema.EachDocument(ctx, coll, filter, f))
}

// errNoAnswer is a command's truthful "cannot say": no presence
// documents where it looked, or none at the Period asked. Commands exit
// exitError with it, and its message names what was found instead.
type errNoAnswer struct{ msg string }

func (e errNoAnswer) Error() string { return e.msg }

// period returns the Period to read the deployment with: the Period its
// valid ping documents were written with (that of most documents, if a
// foreign client wrote others). A Period given on the command line is a
// check: unless some document has it, the answer is errNoAnswer naming
// the Periods found. So is a scan that found no presence at all.
func (s *presenceScan) period(ctx context.Context, db *mongo.Database, base string, given time.Duration) (time.Duration, error) {
	if s.pings == 0 {
		return 0, errNoAnswer{s.nothingHere(ctx, db, base)}
	}
	if given > 0 {
		if s.periods[given] == 0 {
			return 0, errNoAnswer{fmt.Sprintf("no presence documents at period %v in %s: %s", given, s.where, s.periodList())}
		}
		return given, nil
	}
	var best time.Duration
	for p, n := range s.periods {
		if n > s.periods[best] || (n == s.periods[best] && p > best) {
			best = p
		}
	}
	for p, n := range s.periods {
		if p != best && n == s.periods[best] {
			return 0, errNoAnswer{fmt.Sprintf("ping documents in %s disagree on the period (%s): name one with --period", s.where, s.periodList())}
		}
	}
	return best, nil
}

// periodList says how many valid ping documents have each Period.
func (s *presenceScan) periodList() string {
	var parts []string
	for p, n := range s.periods {
		parts = append(parts, fmt.Sprintf("%d at %v", n, p))
	}
	sort.Strings(parts)
	return "found " + strings.Join(parts, ", ")
}

// nothingHere says that the scan found no valid ping document, and what
// it found instead: skipped documents, beings only, or which databases
// on the server do hold presence documents under base.
func (s *presenceScan) nothingHere(ctx context.Context, db *mongo.Database, base string) string {
	_, skipped := s.skipped.list()
	switch {
	case skipped > 0:
		return fmt.Sprintf("no valid ping documents in %s: %d presence documents skipped as invalid", s.where, skipped)
	case s.beings > 0:
		return fmt.Sprintf("no ping documents in %s (%d beings documents): no controller is writing", s.where, s.beings)
	}
	msg := fmt.Sprintf("no presence documents in %s", s.where)
	others, err := databasesWith(ctx, db.Client(), base+".pings")
	switch {
	case err != nil:
		return msg + " (cannot list the other databases: " + err.Error() + ")"
	case len(others) == 0:
		return msg + "; no database on this server has any"
	}
	return msg + "; databases with presence documents: " + strings.Join(others, ", ")
}

// databasesWith returns the databases on client's server that have a
// collection named coll, at most ten, read-only.
func databasesWith(ctx context.Context, client *mongo.Client, coll string) ([]string, error) {
	dbs, err := client.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return nil, errors.Trace(err)
	}
	var out []string
	for _, name := range dbs {
		colls, err := client.Database(name).ListCollectionNames(ctx, bson.D{{Key: "name", Value: coll}})
		if err != nil {
			return nil, errors.Trace(err)
		}
		if len(colls) > 0 {
			out = append(out, name)
		}
		if len(out) == 10 {
			break
		}
	}
	return out, nil
}
