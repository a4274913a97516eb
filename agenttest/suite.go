package agenttest

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	gc "gopkg.in/check.v1"
)

// MongoSuite is a check.v1 fixture: one server per suite, and for every test
// a fresh database on a fresh client. Embedding it is enough: check.v1
// calls its SetUpSuite, SetUpTest, TearDownTest and TearDownSuite as the
// embedding suite's own. A suite that defines any of those methods itself
// must call MongoSuite's from it, as with any embedded method.
type MongoSuite struct {
	// Server is the suite's server; tests may Stop and Start it.
	Server *Server

	// Client is this test's client.
	Client *mongo.Client

	// DB is this test's database, dropped at teardown.
	DB *mongo.Database

	clients []*mongo.Client
}

// SetUpSuite starts the server.
func (s *MongoSuite) SetUpSuite(c *gc.C) {
	server, err := NewServer()
	c.Assert(err, gc.IsNil)
	s.Server = server
}

// TearDownSuite destroys the server and its data.
func (s *MongoSuite) TearDownSuite(c *gc.C) {
	if s.Server != nil {
		c.Check(s.Server.Destroy(), gc.IsNil)
		s.Server = nil
	}
}

// SetUpTest makes the test's client and database.
func (s *MongoSuite) SetUpTest(c *gc.C) {
	s.Client = s.NewClient(c)
	s.DB = s.Client.Database(uniqueName("presencetest"))
}

// TearDownTest disconnects every client the test made, then drops the
// test's database on a client of its own. It restarts the server if the
// test left it stopped, and resumes it if the test left it paused.
//
// Once the test's clients are gone, no worker the test left running can
// write to the database after the drop and so create it again.
func (s *MongoSuite) TearDownTest(c *gc.C) {
	if !s.Server.External() {
		c.Check(s.Server.Start(), gc.IsNil)
		_ = s.Server.Resume()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, client := range s.clients {
		_ = client.Disconnect(ctx)
	}
	if s.DB != nil {
		c.Check(s.dropDB(ctx, s.DB.Name()), gc.IsNil)
	}
	s.clients, s.Client, s.DB = nil, nil, nil
}

// dropDB drops the named database on a client of its own, retrying
// while a server the test restarted is not yet back.
func (s *MongoSuite) dropDB(ctx context.Context, name string) error {
	client, err := s.Server.NewClient()
	if err != nil {
		return err
	}
	defer func() { _ = client.Disconnect(ctx) }()
	return Retry(LongWait, func() error { return client.Database(name).Drop(ctx) })
}

// NewClient returns another client of the server, with its own connection
// pool, disconnected at teardown.
func (s *MongoSuite) NewClient(c *gc.C, extra ...*options.ClientOptions) *mongo.Client {
	client, err := s.Server.NewClient(extra...)
	c.Assert(err, gc.IsNil)
	s.clients = append(s.clients, client)
	return client
}

// NewDB returns this test's database seen through another client, as a
// second controller sharing the database would see it.
func (s *MongoSuite) NewDB(c *gc.C) *mongo.Database {
	return s.NewClient(c).Database(s.DB.Name())
}
