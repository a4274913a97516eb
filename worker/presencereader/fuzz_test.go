package presencereader

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/presencekit/presence/internal/schema"
)

// FuzzDocuments feeds arbitrary ping and beings documents through the
// checks and into a view, as a load would: whatever the bytes, nothing
// panics and a writer's table never outgrows schema.MaxIndex.
func FuzzDocuments(f *testing.F) {
	for _, doc := range []any{
		schema.PingDoc{Slot: 1, Writer: "w", Period: 1, Alive: []byte{1, 2}, FreshFrom: 0,
			Fresh: schema.NewEntries([]string{"m"}, []string{"k"})},
		bson.D{{Key: "writer", Value: "w"}, {Key: "freshFrom", Value: int32(2147483647)}},
		bson.D{{Key: "writer", Value: "w"}, {Key: "freshFrom", Value: int32(-1)}},
		bson.D{{Key: "writer", Value: "w"}, {Key: "alive", Value: "text"}},
		schema.BeingsDoc{Writer: "w", Chunk: 2147483647, Entries: schema.NewEntries([]string{"m"}, []string{"k"})},
		bson.D{{Key: "writer", Value: "w"}, {Key: "entries", Value: bson.D{{Key: "model", Value: bson.A{int32(7)}}, {Key: "keys", Value: bson.A{"k"}}}}},
		bson.D{{Key: "writer", Value: "w"}, {Key: "entries", Value: bson.Binary{Data: []byte{1, 1, 1, 'm', 2, 0, 1, 'k', 0, 0}}}},
		bson.D{{Key: "writer", Value: "w"}, {Key: "fresh", Value: bson.Binary{Data: []byte{1, 0, 0xff, 0xff, 0x03}}}},
	} {
		data, err := bson.Marshal(doc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v := newView()
		var ping schema.PingDoc
		if bson.Unmarshal(data, &ping) == nil && ping.Validate() == nil {
			v.learn(ping.Writer, ping.FreshFrom, ping.Fresh)
			v.apply([]writerBits{{writer: ping.Writer, aliveCur: schema.DecodeBits(nil, ping.Alive), deadCur: schema.DecodeBits(nil, ping.Dead)}}, 1, false, time.Time{}, time.Second, 12*time.Second)
		}
		var beings schema.BeingsDoc
		if bson.Unmarshal(data, &beings) == nil && beings.Validate() == nil {
			v.learn(beings.Writer, beings.Chunk*schema.ChunkSize, beings.Entries)
		}
		for name, wk := range v.writer {
			if len(wk.ids) > schema.MaxIndex {
				t.Fatalf("writer %q has %d indexes", name, len(wk.ids))
			}
		}
	})
}
