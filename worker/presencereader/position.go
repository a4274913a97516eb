package presencereader

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/juju/errors"
)

// Position is a place in one model's change log: the changes a view of
// the model reported, numbered from one. A subscriber that keeps the
// position of the last change it took can resume after it (see
// SubscribeConfig.After) and get exactly the changes it missed.
//
// View names the log: it is drawn at random when the reader starts
// logging the model, so a position from another process, or from an
// earlier run of this one, never matches a log by accident and is
// answered with a reset rather than misread. Seq rises by one with every
// change the log takes; Seq zero is the start of the log. The zero
// Position means "no position".
type Position struct {
	View string
	Seq  uint64
}

// maxViewLen bounds the View of a parsed Position, which comes from
// untrusted input such as a URL.
const maxViewLen = 64

// IsZero reports whether p is the zero Position.
func (p Position) IsZero() bool {
	return p == Position{}
}

// String returns p in the form ParsePosition reads, VIEW.SEQ, which is
// safe in a URL without escaping; the zero Position is "".
func (p Position) String() string {
	if p.IsZero() {
		return ""
	}
	return p.View + "." + strconv.FormatUint(p.Seq, 10)
}

// ParsePosition reads a Position written by Position.String. The empty
// string is the zero Position. Anything else that is not a view identity
// (1 to 64 lower-case letters and digits), a dot and a decimal sequence
// number fails with a NotValid error.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	view, seq, ok := strings.Cut(s, ".")
	if !ok || !validView(view) {
		return Position{}, errors.NotValidf("position %q", s)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Position{}, errors.NotValidf("position %q", s)
	}
	return Position{View: view, Seq: n}, nil
}

func validView(view string) bool {
	if view == "" || len(view) > maxViewLen {
		return false
	}
	for _, r := range view {
		if (r < '0' || r > '9') && (r < 'a' || r > 'z') {
			return false
		}
	}
	return true
}

// newLogID returns a fresh random identity for a change log.
func newLogID() string {
	var b [8]byte
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
