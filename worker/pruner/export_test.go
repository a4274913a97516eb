package pruner

// SweepFirst is the prune that sweeps first.
const SweepFirst = sweepFirst
