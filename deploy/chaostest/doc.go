// Package chaostest is the chaos run of issue 13: the real binaries (edge,
// registry, nats-server at go.mod's version, built by services/proctest) on
// a 3-node NATS cluster started from deploy/nats, with 3 edges, 2
// registries, more than 1,000 logged-in users and more than 100 calls
// relaying numbered frames, while faults are injected in sequence and
// overlapping: kill -9 of an edge, of the NATS node that leads the users
// stream, of a registry; SIGSTOP of an edge for longer than the lease, then
// SIGCONT; a NATS node restart. The invariants it checks throughout and at
// the end, and how it counts, are documented on TestChaos.
//
// It has no code of its own; see the _test.go files. It needs nothing
// installed beyond Go; -short skips it.
package chaostest
