package presencereader

import (
	"math/bits"

	"github.com/presencekit/presence/internal/schema"
)

// writerBits is one writer's bitmaps for the two slots a load reads.
type writerBits struct {
	writer string
	// aliveCur, deadCur are the current slot's bitmaps; alivePrev,
	// deadPrev the previous slot's.
	aliveCur, deadCur, alivePrev, deadPrev []uint64
}

// writerKeys maps a writer's indexes to entity ids.
type writerKeys struct {
	ids  []int32 // index -> entity id; -1 where none is known
	seen uint64  // the last load generation the writer appeared in
}

// change is an entity whose reported state changed.
type change struct {
	id    int32
	alive bool
}

// model is what the view knows of one model: its keys, each an entity.
type model struct {
	uuid string
	ids  map[string]int32 // key -> entity id
	all  []int32          // every entity id of the model, for snapshots
	// alive counts the model's entities reported alive.
	alive int
}

// view is the reader's knowledge: every (model, key) entity that a writer
// has named, the state it reports for each, and which writer index names
// which entity. It is owned by the reader's loop goroutine.
type view struct {
	models map[string]*model
	keys   []string // entity id -> key
	owner  []*model // entity id -> its model
	alive  []bool   // entity id -> reported state
	stamp  []uint32 // entity id -> epoch in which a live index was found
	dead   []uint32 // entity id -> epoch in which a disconnected index was found
	epoch  uint32
	writer map[string]*writerKeys

	changes []change
	// unknown counts the live bits of the last apply that named no
	// known entity; refetch lists the writers they came from.
	unknown int
	refetch map[string]bool
}

func newView() *view {
	return &view{
		models:  make(map[string]*model),
		writer:  make(map[string]*writerKeys),
		refetch: make(map[string]bool),
	}
}

// model returns the model named uuid, adding it if it is new.
func (v *view) model(uuid string) *model {
	m := v.models[uuid]
	if m == nil {
		m = &model{uuid: uuid, ids: make(map[string]int32)}
		v.models[uuid] = m
	}
	return m
}

// lookup returns the state of key in the model named uuid; a key the
// view never met is dead.
func (v *view) lookup(uuid, key string) bool {
	if m := v.models[uuid]; m != nil {
		if id, ok := m.ids[key]; ok {
			return v.alive[id]
		}
	}
	return false
}

// id returns the entity id of key in m, adding it if it is new.
func (v *view) id(m *model, key string) int32 {
	if id, ok := m.ids[key]; ok {
		return id
	}
	id := int32(len(v.keys))
	m.ids[key] = id
	m.all = append(m.all, id)
	v.keys = append(v.keys, key)
	v.owner = append(v.owner, m)
	v.alive = append(v.alive, false)
	v.stamp = append(v.stamp, 0)
	v.dead = append(v.dead, 0)
	return id
}

// learn records that writer's indexes from first on name the entities of
// e, which must be valid.
func (v *view) learn(writer string, first int, e schema.Entries) {
	wk := v.writer[writer]
	if wk == nil {
		wk = &writerKeys{}
		v.writer[writer] = wk
	}
	for len(wk.ids) < first+e.Len() {
		wk.ids = append(wk.ids, -1)
	}
	var last *model
	for i, key := range e.Keys {
		if key == "" {
			continue
		}
		uuid := e.Models[e.Model[i]]
		if last == nil || last.uuid != uuid {
			last = v.model(uuid)
		}
		wk.ids[first+i] = v.id(last, key)
	}
}

// known returns, for each writer, how many indexes it knows, or -1 where
// the last apply met a live bit it could not name; a load fetches beings
// for writers whose bits go beyond that.
func (v *view) known() map[string]int {
	out := make(map[string]int, len(v.writer))
	for name, wk := range v.writer {
		out[name] = len(wk.ids)
		if v.refetch[name] {
			out[name] = -1
		}
	}
	return out
}

// apply works out every entity's state from one load and returns those
// whose reported state changes. A key is alive while any of its indexes
// is alive: pinged in the current slot and not disconnected since, or,
// with no word in the current slot, pinged in the previous one and not
// disconnected there. When hold is set, a key that went quiet without a
// recorded death keeps its state: the load may have come before writers
// caught up after an outage. The returned slice is reused by the next
// call; apply allocates nothing once the view has seen its keys.
func (v *view) apply(writers []writerBits, gen uint64, hold bool) []change {
	v.epoch++
	if v.epoch == 0 {
		clear(v.stamp)
		clear(v.dead)
		v.epoch = 1
	}
	v.unknown = 0
	clear(v.refetch)
	for i := range writers {
		wb := &writers[i]
		wk := v.writer[wb.writer]
		if wk != nil {
			wk.seen = gen
		}
		n := max(len(wb.aliveCur), len(wb.deadCur), len(wb.alivePrev), len(wb.deadPrev))
		for w := 0; w < n; w++ {
			ac, dc := word(wb.aliveCur, w), word(wb.deadCur, w)
			ap, dp := word(wb.alivePrev, w), word(wb.deadPrev, w)
			live := ^dc & (ac | (^dp & ap))
			gone := dc | (dp &^ ac)
			for live != 0 {
				index := w*64 + bits.TrailingZeros64(live)
				live &= live - 1
				if id := entityOf(wk, index); id >= 0 {
					v.stamp[id] = v.epoch
				} else {
					v.unknown++
					v.refetch[wb.writer] = true
				}
			}
			for gone != 0 {
				index := w*64 + bits.TrailingZeros64(gone)
				gone &= gone - 1
				if id := entityOf(wk, index); id >= 0 {
					v.dead[id] = v.epoch
				}
			}
		}
	}
	v.changes = v.changes[:0]
	for id := range v.keys {
		now := v.stamp[id] == v.epoch
		if now == v.alive[id] {
			continue
		}
		if !now && hold && v.dead[id] != v.epoch {
			continue
		}
		v.alive[id] = now
		if now {
			v.owner[id].alive++
		} else {
			v.owner[id].alive--
		}
		v.changes = append(v.changes, change{id: int32(id), alive: now})
	}
	return v.changes
}

// forget drops writers not seen since generation before.
func (v *view) forget(before uint64) {
	for name, wk := range v.writer {
		if wk.seen < before {
			delete(v.writer, name)
		}
	}
}

func word(words []uint64, i int) uint64 {
	if i < len(words) {
		return words[i]
	}
	return 0
}

func entityOf(wk *writerKeys, index int) int32 {
	if wk == nil || index >= len(wk.ids) {
		return -1
	}
	return wk.ids[index]
}

// highest returns the highest index set in any of wb's bitmaps, or -1.
func highest(wb writerBits) int {
	top := -1
	for _, words := range [][]uint64{wb.aliveCur, wb.deadCur, wb.alivePrev, wb.deadPrev} {
		for i := len(words) - 1; i >= 0; i-- {
			if words[i] != 0 {
				top = max(top, i*64+63-bits.LeadingZeros64(words[i]))
				break
			}
		}
	}
	return top
}
