package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/juju/clock"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/presencekit/presence/lease"
	"github.com/presencekit/presence/worker/leaseexpiry"
)

// runLease runs `presenced lease reset APPLICATION --model UUID --yes`:
// it supersedes a frozen leadership lease with a free term above every
// number seen (lease.Client.Reset), and removes the terms that froze it.
// Without --yes it only says what it would do. It exits 0 once reset, 1
// when nothing was done (the lease is not frozen, or --yes is missing),
// 2 on error.
func runLease(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "reset" {
		return flagError(usageError{command: "presenced lease", err: errors.New("the only subcommand is reset: presenced lease reset APPLICATION --model UUID --mongo-uri URI --yes")}, stderr)
	}
	var yes bool
	confirm := func(fs *flag.FlagSet) {
		fs.BoolVar(&yes, "yes", false, "reset the lease (without it, only say what would be done)")
	}
	return runQuery(ctx, "lease reset", "APPLICATION", args[1:], stdout, stderr,
		func(ctx context.Context, o queryOptions, db *mongo.Database, stdout, _ io.Writer) (int, error) {
			return answerReset(ctx, o, db, stdout, yes)
		}, confirm)
}

// answerReset resets the frozen lease of o's one application, if yes.
func answerReset(ctx context.Context, o queryOptions, db *mongo.Database, stdout io.Writer, yes bool) (int, error) {
	if len(o.args) != 1 {
		return 0, fmt.Errorf("name one application, not %d", len(o.args))
	}
	client, err := lease.NewClient(lease.ClientConfig{Collection: db.Collection(o.leases), Clock: clock.WallClock})
	if err != nil {
		return 0, err
	}
	key := lease.Key{Namespace: leaseexpiry.Namespace, Model: o.model.Id(), Lease: o.args[0]}
	infos, err := client.ReadMany(ctx, []lease.Key{key})
	if err != nil {
		return 0, err
	}
	info := infos[key]
	if info.Invalid == "" {
		fmt.Fprintf(stdout, "%s is not frozen: nothing to do\n", key.Lease)
		return exitNo, nil
	}
	if !yes {
		fmt.Fprintf(stdout, "%s is frozen: %s\nre-run with --yes to write a free term above every number seen and remove its other terms\n",
			key.Lease, info.Invalid)
		return exitNo, nil
	}
	reset, err := client.Reset(ctx, key)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(stdout, "%s reset: term %d, fence %d, free (was frozen: %s)\n", key.Lease, reset.Term, reset.Fence, info.Invalid)
	return exitYes, nil
}
