package pingbatcher

import (
	"go.mongodb.org/mongo-driver/v2/bson"
)

// modelState is what a batcher holds for one model: the writer it is in
// that model, the indexes it handed out, and the slots not yet written.
// It is guarded by PingBatcher.mu.
type modelState struct {
	uuid   string
	writer string

	// registered is set once the writer's first beings document was
	// inserted: the insert is what proves the writer id unique.
	registered bool

	keys  []string            // index -> key
	inUse []bool              // index -> held by a pinger
	free  map[string][]uint32 // key -> released indexes of that key

	// persisted is how many indexes the beings documents map, as of the
	// last flush that wrote them, in slot persistedSlot; the keys of
	// later indexes travel in the ping documents until then.
	persisted     int
	persistedSlot int64

	slots    []*slotState
	lastSlot int64 // the latest slot pinged, 0 before any ping
}

// slotState is one ping document being built.
type slotState struct {
	slot        int64
	alive, dead []uint64
	version     uint64
	written     uint64
}

func newModelState(uuid string) *modelState {
	return &modelState{
		uuid:   uuid,
		writer: bson.NewObjectID().Hex(),
		free:   make(map[string][]uint32),
	}
}

// allocate returns an index for key: one the key used before if any is
// free, else a new one.
func (m *modelState) allocate(key string) uint32 {
	if free := m.free[key]; len(free) > 0 {
		index := free[len(free)-1]
		if len(free) == 1 {
			delete(m.free, key)
		} else {
			m.free[key] = free[:len(free)-1]
		}
		m.inUse[index] = true
		return index
	}
	index := uint32(len(m.keys))
	m.keys = append(m.keys, key)
	m.inUse = append(m.inUse, true)
	return index
}

// release frees index for reuse by the same key.
func (m *modelState) release(index uint32) {
	if int(index) >= len(m.inUse) || !m.inUse[index] {
		return
	}
	m.inUse[index] = false
	key := m.keys[index]
	m.free[key] = append(m.free[key], index)
}

// valid reports whether index is currently held.
func (m *modelState) valid(index uint32) bool {
	return int(index) < len(m.inUse) && m.inUse[index]
}

// slotFor returns the state of slot, creating it if needed.
func (m *modelState) slotFor(slot int64) *slotState {
	for _, s := range m.slots {
		if s.slot == slot {
			return s
		}
	}
	s := &slotState{slot: slot}
	m.slots = append(m.slots, s)
	return s
}

// set sets bit index in words, growing it as needed.
func set(words []uint64, index uint32) ([]uint64, bool) {
	w := int(index / 64)
	for len(words) <= w {
		words = append(words, 0)
	}
	bit := uint64(1) << (index % 64)
	if words[w]&bit != 0 {
		return words, false
	}
	words[w] |= bit
	return words, true
}

// unset clears bit index in words.
func unset(words []uint64, index uint32) bool {
	w := int(index / 64)
	if w >= len(words) {
		return false
	}
	bit := uint64(1) << (index % 64)
	if words[w]&bit == 0 {
		return false
	}
	words[w] &^= bit
	return true
}

// ping marks index alive in s, clearing any death.
func (s *slotState) ping(index uint32) {
	var changed, cleared bool
	s.alive, changed = set(s.alive, index)
	cleared = unset(s.dead, index)
	if changed || cleared {
		s.version++
	}
}

// kill marks index dead in s.
func (s *slotState) kill(index uint32) {
	var changed bool
	s.dead, changed = set(s.dead, index)
	if changed {
		s.version++
	}
}

// dirty reports whether s has changes not yet written.
func (s *slotState) dirty() bool {
	return s.version != s.written
}

// prune drops slots that are written and older than the latest but one:
// nobody will ping them again, and watchers no longer read them.
func (m *modelState) prune() {
	kept := m.slots[:0]
	for _, s := range m.slots {
		if s.dirty() || s.slot >= m.lastSlot-1 {
			kept = append(kept, s)
		}
	}
	for i := len(kept); i < len(m.slots); i++ {
		m.slots[i] = nil
	}
	m.slots = kept
}

// reset gives m a new writer id and forgets every index: used when the
// writer id turned out to be taken, and when a model had no ping for long
// enough that the pruner may remove the writer's documents.
func (m *modelState) reset() {
	*m = *newModelState(m.uuid)
}
