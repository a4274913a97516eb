package watcher

import (
	"math/bits"
)

// writerBits is one writer's bitmaps for the two slots a load reads.
type writerBits struct {
	writer string
	// aliveCur, deadCur are the current slot's bitmaps; alivePrev,
	// deadPrev the previous slot's.
	aliveCur, deadCur, alivePrev, deadPrev []uint64
}

// writerKeys maps a writer's indexes to key ids.
type writerKeys struct {
	keys []int32 // index -> key id; -1 where no key is known
	seen uint64  // the last load generation the writer appeared in
}

// change is a key whose reported state changed.
type change struct {
	key   int32
	alive bool
}

// view is the watcher's knowledge: every key it has heard of, the state it
// reports for each, and which writer index names which key. It is owned by
// the watcher's loop goroutine.
type view struct {
	ids    map[string]int32
	keys   []string // key id -> key
	alive  []bool   // key id -> reported state
	stamp  []uint32 // key id -> epoch in which a live index was found
	dead   []uint32 // key id -> epoch in which a disconnected index was found
	epoch  uint32
	writer map[string]*writerKeys

	changes []change
	// unknown counts the live bits of the last apply that named no
	// known key; refetch lists the writers they came from.
	unknown int
	refetch map[string]bool
}

func newView() *view {
	return &view{
		ids:     make(map[string]int32),
		writer:  make(map[string]*writerKeys),
		refetch: make(map[string]bool),
	}
}

// id returns key's id, adding the key if it is new.
func (v *view) id(key string) int32 {
	if id, ok := v.ids[key]; ok {
		return id
	}
	id := int32(len(v.keys))
	v.ids[key] = id
	v.keys = append(v.keys, key)
	v.alive = append(v.alive, false)
	v.stamp = append(v.stamp, 0)
	v.dead = append(v.dead, 0)
	return id
}

// learn records that writer's indexes from first on name keys.
func (v *view) learn(writer string, first int, keys []string) {
	wk := v.writer[writer]
	if wk == nil {
		wk = &writerKeys{}
		v.writer[writer] = wk
	}
	for len(wk.keys) < first+len(keys) {
		wk.keys = append(wk.keys, -1)
	}
	for i, key := range keys {
		if key != "" {
			wk.keys[first+i] = v.id(key)
		}
	}
}

// known returns, for each writer, how many indexes it knows, or -1 where
// the last apply met a live bit it could not name; a load fetches beings
// for writers whose bits go beyond that.
func (v *view) known() map[string]int {
	out := make(map[string]int, len(v.writer))
	for name, wk := range v.writer {
		out[name] = len(wk.keys)
		if v.refetch[name] {
			out[name] = -1
		}
	}
	return out
}

// apply works out every key's state from one load and returns the keys
// whose reported state changes. A key is alive while any of its indexes is
// alive: pinged in the current slot and not disconnected since, or, with
// no word in the current slot, pinged in the previous one and not
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
				if id := lookup(wk, index); id >= 0 {
					v.stamp[id] = v.epoch
				} else {
					v.unknown++
					v.refetch[wb.writer] = true
				}
			}
			for gone != 0 {
				index := w*64 + bits.TrailingZeros64(gone)
				gone &= gone - 1
				if id := lookup(wk, index); id >= 0 {
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
		v.changes = append(v.changes, change{key: int32(id), alive: now})
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

func lookup(wk *writerKeys, index int) int32 {
	if wk == nil || index >= len(wk.keys) {
		return -1
	}
	return wk.keys[index]
}

func leadingZeros(x uint64) int {
	return bits.LeadingZeros64(x)
}
