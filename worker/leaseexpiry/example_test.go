package leaseexpiry_test

import (
	"context"
	"log"

	"github.com/juju/errors"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/worker/leaseexpiry"
)

// A leader writes its application's settings through its token: once a
// newer leader has written them, a late write of this one is refused
// however long it stalled between CheckLeadership and UpdateGuarded.
func ExampleUpdateGuarded() {
	var (
		manager  leaseexpiry.Manager // the model's, from the engine
		settings *mongo.Collection   // the leader's resource
	)
	token, err := manager.CheckLeadership("mysql", "mysql/0")
	if err != nil {
		log.Printf("not the leader: %v", err)
		return
	}
	_, err = leaseexpiry.UpdateGuarded(context.Background(), settings, token,
		bson.D{{Key: "_id", Value: "mysql"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "primary", Value: "mysql/0"}}}},
		true)
	switch {
	case errors.Is(err, leaseexpiry.ErrFenced):
		log.Print("deposed: a newer leader wrote the settings")
	case err != nil:
		log.Printf("cannot write the settings: %v", err)
	}
}
