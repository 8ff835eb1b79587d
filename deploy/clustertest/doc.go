// Package clustertest tests what deploy/ ships, with real processes: a
// 3-node NATS cluster with JetStream run from the checked-in configs in
// deploy/nats (accounts, per-role permissions), registries and edges built
// from ./cmd and connected with their role's credentials, and the local
// runner deploy/cluster.sh. It also checks the container and Kubernetes
// manifests against the binaries' flags and the NATS configs.
//
// It has no code of its own; see the _test.go files. The tests build
// nats-server from the version in go.mod, so they need nothing installed
// beyond Go (and curl for the runner's test); -short skips them.
package clustertest
