package pruner

// SweepEvery is how many prunes go by between two sweeps.
const SweepEvery = sweepEvery
