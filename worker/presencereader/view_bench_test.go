package presencereader

import (
	"fmt"
	"testing"
	"time"

	"github.com/presencekit/presence/internal/schema"
)

// benchView returns a view that knows keys keys spread over writers
// writers and over models of ten keys each, and the bitmaps of a load in
// which every key is alive.
func benchView(keys, writers int) (*view, []writerBits) {
	v := newView()
	loaded := make([]writerBits, writers)
	per := (keys + writers - 1) / writers
	for w := range loaded {
		name := fmt.Sprintf("writer-%d", w)
		words := make([]uint64, schema.WordsLen(per))
		for chunk := 0; chunk*schema.ChunkSize < per; chunk++ {
			var models, keys []string
			for i := chunk * schema.ChunkSize; i < min(per, (chunk+1)*schema.ChunkSize); i++ {
				models = append(models, fmt.Sprintf("2a4b3c5d-0000-4000-8000-%012d", i/10))
				keys = append(keys, fmt.Sprintf("unit-app-%d-%d", w, i))
				words[i/64] |= 1 << (i % 64)
			}
			v.learn(name, chunk*schema.ChunkSize, schema.NewEntries(models, keys))
		}
		loaded[w] = writerBits{writer: name, aliveCur: words, alivePrev: words}
	}
	return v, loaded
}

// BenchmarkApplyUnchanged measures applying one sync in which nothing
// changed (the database round trip excluded), at 10,000 and 100,000 keys;
// the target at 10,000 is under 1 ms and no allocation.
func BenchmarkApplyUnchanged(b *testing.B) {
	for _, keys := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			v, loaded := benchView(keys, 3)
			v.apply(loaded, 1, false, time.Time{}, time.Second, 12*time.Second)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if changes := v.apply(loaded, uint64(i+2), false, time.Time{}, time.Second, 12*time.Second); len(changes) != 0 {
					b.Fatalf("%d changes", len(changes))
				}
			}
		})
	}
}
