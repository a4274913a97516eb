package presencereader

import "time"

// Forgetting: the view holds the keys that writers name now, and those
// they named lately, never every key it ever met. A key is forgotten
// once it is dead and no writer names it any more (its writers were
// forgotten), or once it is dead and has been named by no bit for the
// window given to sweep (LogAge): its writer released its index. A
// model is forgotten with its last key. A forgotten key reads dead, as
// a key never met does; if a writer's bit names it again, the reader
// fetches that writer's beings again, as for any index it cannot name.
// Everything here is owned by the reader's loop goroutine, as the view
// is.

// forgotten marks a writer's index whose key was forgotten while the
// writer still names it: learn maps it again only when a live bit names
// it (see want), not every time it reads the writer's beings.
const forgotten = -2

// want records that a live bit of writer named index, which the view
// cannot name: the next load fetches the writer's beings, and learn maps
// the index again even if it was forgotten.
func (v *view) want(writer string, index int) {
	v.refetch[writer] = true
	w := v.wanted[writer]
	if w == nil {
		w = make(map[int]bool)
		v.wanted[writer] = w
	}
	w[index] = true
}

// sweep forgets the keys that are dead and named by no writer, or named
// by no bit since window before now, and the models left with no key.
// The entities of the last apply's changes are kept, and their ids in
// v.changes follow the renumbering.
func (v *view) sweep(now time.Time, window time.Duration) {
	drop := v.stale(now.UnixNano(), now.Add(-window).UnixNano())
	if drop == 0 {
		return
	}
	renum := v.renumber()
	for _, wk := range v.writer {
		for i, id := range wk.ids {
			if id >= 0 {
				wk.ids[i] = renumbered(renum[id])
			}
		}
	}
	for i := range v.changes {
		v.changes[i].id = renum[v.changes[i].id]
	}
	for uuid, m := range v.models {
		m.renumber(renum)
		if len(m.ids) == 0 {
			delete(v.models, uuid)
		}
	}
}

// stale marks in v.drop the entities to forget, updates when the others
// were last seen (at now), and returns how many it marked. An entity is
// kept while it is alive, named by a bit of the last apply, or changed
// by it; it goes when no writer names it, or when it was last seen
// before cutoff.
func (v *view) stale(now, cutoff int64) int {
	named := v.named()
	for _, c := range v.changes {
		v.seen[c.id] = now
	}
	v.drop = resize(v.drop, len(v.keys))
	n := 0
	for id := range v.keys {
		switch {
		case v.alive[id] || v.stamp[id] == v.epoch || v.dead[id] == v.epoch || v.held[id] == v.epoch:
			v.seen[id] = now
		case v.seen[id] == 0:
			v.seen[id] = now // learnt since the last sweep
		}
		v.drop[id] = !v.alive[id] && v.seen[id] != now && (!named[id] || v.seen[id] < cutoff)
		if v.drop[id] {
			n++
		}
	}
	return n
}

// named returns, by entity id, whether any writer's index names the
// entity. The slice is reused by the next call.
func (v *view) named() []bool {
	v.refs = resize(v.refs, len(v.keys))
	for _, wk := range v.writer {
		for _, id := range wk.ids {
			if id >= 0 {
				v.refs[id] = true
			}
		}
	}
	return v.refs
}

// resize returns buf cleared and of length n, reusing its memory unless
// it is much larger than needed.
func resize(buf []bool, n int) []bool {
	if cap(buf) < n || cap(buf) > 2*n+minRing {
		return make([]bool, n)
	}
	buf = buf[:n]
	clear(buf)
	return buf
}

// renumber removes the entities marked in v.drop, moving the others
// down, and returns each old id's new one (-1 for those removed). The
// per-entity slices give their memory back once they are mostly empty.
func (v *view) renumber() []int32 {
	renum := make([]int32, len(v.keys))
	n := 0
	for id := range v.keys {
		if v.drop[id] {
			renum[id] = -1
			continue
		}
		renum[id] = int32(n)
		v.keys[n], v.owner[n], v.alive[n] = v.keys[id], v.owner[id], v.alive[id]
		v.stamp[n], v.dead[n], v.held[n], v.seen[n] = v.stamp[id], v.dead[id], v.held[id], v.seen[id]
		v.by[n] = v.by[id]
		n++
	}
	clear(v.keys[n:])
	clear(v.owner[n:])
	clear(v.by[n:])
	v.keys, v.owner, v.alive = shrink(v.keys[:n]), shrink(v.owner[:n]), shrink(v.alive[:n])
	v.stamp, v.dead, v.held, v.seen = shrink(v.stamp[:n]), shrink(v.dead[:n]), shrink(v.held[:n]), shrink(v.seen[:n])
	v.by = shrink(v.by[:n])
	hints := make(map[int32]hintMark, len(v.hints))
	for id, h := range v.hints {
		if renum[id] >= 0 {
			hints[renum[id]] = h
		}
	}
	v.hints = hints
	return renum
}

// shrink returns s, copied into a slice of its own size when its array
// is more than twice as large as it needs.
func shrink[T any](s []T) []T {
	if cap(s) <= 2*len(s)+minRing {
		return s
	}
	return append(make([]T, 0, len(s)), s...)
}

// renumber gives m's entities their new ids (see view.renumber),
// forgetting those removed.
func (m *model) renumber(renum []int32) {
	for key, id := range m.ids {
		if renum[id] < 0 {
			delete(m.ids, key)
		} else {
			m.ids[key] = renum[id]
		}
	}
	kept := m.all[:0]
	for _, id := range m.all {
		if renum[id] >= 0 {
			kept = append(kept, renum[id])
		}
	}
	m.all = shrink(kept)
}

// renumbered returns what a writer's index that named an entity names
// after a renumbering to id: id, or forgotten.
func renumbered(id int32) int32 {
	if id < 0 {
		return forgotten
	}
	return id
}
