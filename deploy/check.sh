#!/usr/bin/env bash
# Checks what deploy/ ships without running it, for CI or before a commit:
#
#   - every deploy/nats config passes `nats-server -c X -t` (nats-server at
#     the version in go.mod);
#   - the YAML (compose, Kubernetes, Helm values) parses (python3 + PyYAML;
#     skipped with a note when missing), `kubectl kustomize deploy/k8s`
#     renders (when kubectl is there);
#   - every flag and environment variable that cluster.sh, the Dockerfile,
#     docker-compose.yml and deploy/k8s give edge, registry, signal or
#     nats-server is in that binary's -h, and every path they name exists;
#   - deploy/k8s/nats-values.yaml has the accounts and permissions of
#     deploy/nats/accounts.conf, passwords from the Secrets, and the
#     nats-server version of go.mod.
#
# It is TestDeployFiles in deploy/clustertest, which `go test ./...` runs as
# well (with the cluster and runner tests beside it). Also:
#   bash deploy/check.sh -all    # every deploy test: + the 3-node cluster
#                                # with failover, + cluster.sh (~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
for f in deploy/*.sh; do bash -n "$f"; done
if command -v shellcheck >/dev/null; then
  shellcheck deploy/cluster.sh deploy/regions.sh deploy/check.sh deploy/scale.sh deploy/compare.sh
fi
run='^TestDeployFiles$'
if [ "${1:-}" = "-all" ]; then
  run='.'
fi
go test -count=1 -run "$run" -v ./deploy/clustertest 2>&1 | grep -v '^=== RUN'
