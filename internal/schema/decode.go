package schema

import (
	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// DecodePing decodes and validates one ping document as read, whatever
// wrote it. Bitmaps longer than MaxIndex bits are refused from the raw
// document, before anything is copied or expanded, so that the memory a
// document costs its reader is bounded by what it can validly mean. The
// error satisfies errors.NotValid, or is bson's for a field of the wrong
// type.
func DecodePing(raw bson.Raw) (PingDoc, error) {
	var doc PingDoc
	for _, field := range []string{FieldAlive, FieldDead} {
		if _, data, ok := raw.Lookup(field).BinaryOK(); ok && len(data) > MaxIndex/8 {
			return doc, errors.NotValidf("%s bitmap of %d bytes (at most %d)", field, len(data), MaxIndex/8)
		}
	}
	if err := bson.Unmarshal(raw, &doc); err != nil {
		return doc, errors.Trace(err)
	}
	return doc, errors.Trace(doc.Validate())
}

// DecodeBeings decodes and validates one beings document as read,
// whatever wrote it (see DecodePing).
func DecodeBeings(raw bson.Raw) (BeingsDoc, error) {
	var doc BeingsDoc
	if err := bson.Unmarshal(raw, &doc); err != nil {
		return doc, errors.Trace(err)
	}
	return doc, errors.Trace(doc.Validate())
}

// DocumentID returns a document's _id as text, for naming it: a string
// as it is, anything else as BSON's extended JSON says it.
func DocumentID(raw bson.Raw) string {
	v, err := raw.LookupErr(FieldID)
	if err != nil {
		return "(no _id)"
	}
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	return v.String()
}
