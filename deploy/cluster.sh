#!/usr/bin/env bash
# Runs the signaling system as separate processes on this machine, the way a
# production deployment is laid out:
#
#   3 nats-server nodes, one cluster with JetStream (deploy/nats/n1..n3.conf,
#     accounts and permissions from deploy/nats/accounts.conf)
#   2 registries (-replicas 3: the users and edges buckets on all 3 nodes)
#   3 edges, each given every NATS node, serving WebSocket clients
#
# every service with the credentials of its role. It builds nats-server (the
# version in go.mod), ./cmd/edge and ./cmd/registry first, prints the
# WebSocket URLs and the nats CLI commands to watch the cluster, and runs
# until Ctrl-C or SIGTERM; then it stops everything it started (edges first,
# so that their users' names are released, then the registries, then NATS),
# and removes its temporary directory. Every wait is bounded.
#
#   bash deploy/cluster.sh
#
# Settings (environment), defaults in brackets:
#   NATS_PORTS       client ports of n1 n2 n3 ["4222 4223 4224"]
#   ROUTE_PORTS      cluster (route) ports ["6222 6223 6224"]
#   MONITOR_PORTS    HTTP monitoring ports ["8222 8223 8224"]
#   EDGE_PORTS       WebSocket ports, one edge each ["9090 9091 9092"]
#   EDGE_ADMIN_PORTS edges' /metrics, /healthz, /readyz ["9190 9191 9192"]
#   REGISTRY_ADMIN_PORTS  registries' admin ports, one registry each ["9180 9181"]
#   CLUSTER_DIR      where binaries, JetStream stores and logs go
#                    [a new temporary directory, removed on exit; a directory
#                    you name is kept, and its stores survive a restart]
#   BIN_DIR          take nats-server, edge and registry from this directory
#                    instead of building them [build into CLUSTER_DIR/bin]
#   WAIT             seconds each step may take before the runner gives up [60]
#   LOG_LEVEL        the services' -log-level [info]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

read -r -a NATS_PORTS <<<"${NATS_PORTS:-4222 4223 4224}"
read -r -a ROUTE_PORTS <<<"${ROUTE_PORTS:-6222 6223 6224}"
read -r -a MONITOR_PORTS <<<"${MONITOR_PORTS:-8222 8223 8224}"
read -r -a EDGE_PORTS <<<"${EDGE_PORTS:-9090 9091 9092}"
read -r -a EDGE_ADMIN_PORTS <<<"${EDGE_ADMIN_PORTS:-9190 9191 9192}"
read -r -a REGISTRY_ADMIN_PORTS <<<"${REGISTRY_ADMIN_PORTS:-9180 9181}"
WAIT=${WAIT:-60}
LOG_LEVEL=${LOG_LEVEL:-info}
HOST=127.0.0.1

if [ "${#NATS_PORTS[@]}" -ne 3 ] || [ "${#ROUTE_PORTS[@]}" -ne 3 ] || [ "${#MONITOR_PORTS[@]}" -ne 3 ]; then
  echo "cluster.sh: NATS_PORTS, ROUTE_PORTS and MONITOR_PORTS need 3 ports each" >&2
  exit 2
fi
if [ "${#EDGE_ADMIN_PORTS[@]}" -lt "${#EDGE_PORTS[@]}" ]; then
  echo "cluster.sh: EDGE_ADMIN_PORTS needs a port for each of EDGE_PORTS" >&2
  exit 2
fi

KEEP_DIR=1
if [ -z "${CLUSTER_DIR:-}" ]; then
  CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/signal-cluster.XXXXXX")
  KEEP_DIR=0
fi
mkdir -p "$CLUSTER_DIR/logs"
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
BIN=$CLUSTER_DIR/bin
if [ -n "${BIN_DIR:-}" ]; then
  BIN=$(cd "$BIN_DIR" && pwd)
fi
LOGS=$CLUSTER_DIR/logs

# The credentials come from the checked-in configuration (dev only), so that
# this script and the servers never disagree.
conf_password() { # conf_password USER: the password of USER in accounts.conf
  sed -n "s/.*{user: $1, password: \"\([^\"]*\)\".*/\1/p" deploy/nats/accounts.conf
}
EDGE_PW=$(conf_password edge)
REGISTRY_PW=$(conf_password registry)
OBSERVER_PW=$(conf_password observer)
SYS_PW=$(conf_password sys)
ROUTE_USER=$(sed -n 's/^ *user: \([a-z]*\)$/\1/p' deploy/nats/n1.conf | head -n1)
ROUTE_PW=$(sed -n 's/^ *password: "\([^"]*\)"$/\1/p' deploy/nats/n1.conf | head -n1)
for v in EDGE_PW REGISTRY_PW OBSERVER_PW SYS_PW ROUTE_USER ROUTE_PW; do
  if [ -z "${!v}" ]; then
    echo "cluster.sh: could not read $v from deploy/nats" >&2
    exit 1
  fi
done

PIDS=()     # every process started, in start order
NAMES=()    # its name (nats-n1, registry-1, edge-1, ...)
CMDS=()     # its command, quoted for eval
DIRS=()     # its working directory
REPORTED=() # 1 once its exit was reported

log() { printf '%s cluster.sh: %s\n' "$(date +%T)" "$*" >&2; }

stopping=0
cleanup() {
  local rc=$?
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  [ -n "${SLEEP_PID:-}" ] && kill "$SLEEP_PID" 2>/dev/null
  if [ "${#PIDS[@]}" -gt 0 ]; then
    log "stopping ${#PIDS[@]} processes"
    # Reverse start order: edges release their users' names through the
    # registries, registries stop, NATS goes last. Each group gets SIGTERM
    # and a bounded wait, then SIGKILL.
    local group
    for group in edge registry nats; do
      local gp=() i
      for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        case ${NAMES[$i]} in "$group"*) gp+=("${PIDS[$i]}") ;; esac
      done
      [ "${#gp[@]}" -eq 0 ] && continue
      kill -TERM "${gp[@]}" 2>/dev/null || true
      local deadline=$((SECONDS + 20))
      while [ $SECONDS -lt $deadline ]; do
        local alive=0 p
        for p in "${gp[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
      done
      for p in "${gp[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
          log "process $p ($group) did not stop in 20s; killing it"
          kill -KILL "$p" 2>/dev/null || true
          local n=0
          while kill -0 "$p" 2>/dev/null && [ $n -lt 50 ]; do
            sleep 0.1
            n=$((n + 1))
          done
        fi
      done
    done
  fi
  if [ "$KEEP_DIR" = 0 ]; then
    rm -rf "$CLUSTER_DIR"
  else
    log "kept $CLUSTER_DIR (logs in $LOGS)"
  fi
  log "stopped"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'restart_dead' USR1

# start NAME CMD...: runs CMD in its own session (so that a Ctrl-C on the
# terminal reaches only this script, which stops everything in order), with
# its output in $LOGS/NAME.log, in directory $START_DIR if set. The command
# is kept, so that SIGUSR1 can start it again (restart_dead).
start() {
  local name=$1
  shift
  NAMES+=("$name")
  CMDS+=("$(printf '%q ' "$@")")
  DIRS+=("${START_DIR:-.}")
  PIDS+=("")
  launch $((${#NAMES[@]} - 1))
}

launch() { # launch I: (re)starts process I
  local i=$1
  eval "set -- ${CMDS[$i]}"
  (cd "${DIRS[$i]}" && exec setsid "$@") >>"$LOGS/${NAMES[$i]}.log" 2>&1 &
  PIDS[i]=$!
  disown "$!" # no job notices; bash still reaps it, and cleanup polls
  REPORTED[i]=0
}

# SIGUSR1: start again every process that has exited (same command, same
# JetStream store), e.g. after an operator killed one to watch the cluster
# cope.
restart_dead() {
  local i
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      launch "$i"
      log "restarted ${NAMES[$i]} (pid ${PIDS[$i]})"
    fi
  done
}

# wait_for WHAT CMD...: retries CMD until it succeeds, for at most $WAIT
# seconds; gives up (and stops everything) after that, or when a process
# this script started has exited.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + WAIT))
  until "$@" >/dev/null 2>&1; do
    check_alive
    if [ $SECONDS -ge $deadline ]; then
      log "gave up after ${WAIT}s waiting for $what"
      exit 1
    fi
    sleep 0.2
  done
}

check_alive() {
  local i
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      log "${NAMES[$i]} (pid ${PIDS[$i]}) exited; its log ($LOGS/${NAMES[$i]}.log) ends with:"
      tail -n 20 "$LOGS/${NAMES[$i]}.log" >&2 || true
      exit 1
    fi
  done
}

http_ok() { curl -fsS --max-time 2 "$1"; }

# jetstream_ready PORT: the node is healthy (JetStream current) and sees a
# meta leader.
jetstream_ready() {
  curl -fsS --max-time 2 "http://$HOST:$1/healthz" >/dev/null &&
    curl -fsS --max-time 2 "http://$HOST:$1/jsz" | grep -q '"leader": *"[^"]'
}

if [ -z "${BIN_DIR:-}" ]; then
  log "building into $BIN"
  mkdir -p "$BIN"
  go build -o "$BIN/nats-server" github.com/nats-io/nats-server/v2
  go build -o "$BIN" ./cmd/edge ./cmd/registry
fi

# NATS: the checked-in node configs, with this run's ports and stores.
NATS_URLS=""
for i in 0 1 2; do
  n=$((i + 1))
  routes=""
  for j in 0 1 2; do
    [ $j = $i ] && continue
    routes="$routes${routes:+,}nats-route://$ROUTE_USER:$ROUTE_PW@$HOST:${ROUTE_PORTS[$j]}"
  done
  # In CLUSTER_DIR: the config's store_dir (store/n1...) is relative.
  START_DIR=$CLUSTER_DIR start "nats-n$n" "$BIN/nats-server" -c "$ROOT/deploy/nats/n$n.conf" \
    -p "${NATS_PORTS[$i]}" -m "${MONITOR_PORTS[$i]}" \
    --cluster "nats://$ROUTE_USER:$ROUTE_PW@$HOST:${ROUTE_PORTS[$i]}" --routes "$routes"
  NATS_URLS="$NATS_URLS${NATS_URLS:+,}nats://$HOST:${NATS_PORTS[$i]}"
done
for i in 0 1 2; do
  wait_for "NATS node n$((i + 1)) (port ${NATS_PORTS[$i]})" http_ok "http://$HOST:${MONITOR_PORTS[$i]}/varz"
done
for i in 0 1 2; do
  wait_for "JetStream meta leader (seen from n$((i + 1)))" jetstream_ready "${MONITOR_PORTS[$i]}"
done
log "NATS cluster up: $NATS_URLS"

# Registries: the first creates the buckets (3 replicas), the others start
# once it is ready. A registry exits when it cannot create the buckets
# (two creating the same replicated bucket at once can both time out; so can
# one while a young cluster still settles its routes): the first one is
# started again, up to 3 times, as an orchestrator would.
buckets() { # both buckets exist, seen from n1
  local jsz
  jsz=$(curl -fsS --max-time 2 "http://$HOST:${MONITOR_PORTS[0]}/jsz?acc=SIGNAL&streams=true") &&
    grep -q '"name": *"KV_users"' <<<"$jsz" && grep -q '"name": *"KV_edges"' <<<"$jsz"
}
for i in "${!REGISTRY_ADMIN_PORTS[@]}"; do
  start "registry-$((i + 1))" env NATS_USER=registry NATS_PASSWORD="$REGISTRY_PW" "$BIN/registry" \
    -nats "$NATS_URLS" -replicas 3 -admin "$HOST:${REGISTRY_ADMIN_PORTS[$i]}" -log-level "$LOG_LEVEL"
  if [ "$i" = 0 ]; then
    tries=1
    deadline=$((SECONDS + WAIT))
    until buckets && http_ok "http://$HOST:${REGISTRY_ADMIN_PORTS[0]}/readyz" >/dev/null 2>&1; do
      if ! kill -0 "${PIDS[$((${#PIDS[@]} - 1))]}" 2>/dev/null; then
        if [ $tries -ge 3 ]; then
          log "registry-1 exited $tries times; its log ($LOGS/registry-1.log) ends with:"
          tail -n 20 "$LOGS/registry-1.log" >&2 || true
          exit 1
        fi
        log "registry-1 exited ($(tail -n 1 "$LOGS/registry-1.log")); starting it again"
        launch $((${#PIDS[@]} - 1))
        tries=$((tries + 1))
      fi
      if [ $SECONDS -ge $deadline ]; then
        log "gave up after ${WAIT}s waiting for registry-1 and the buckets"
        exit 1
      fi
      sleep 0.2
    done
  fi
done
for i in "${!REGISTRY_ADMIN_PORTS[@]}"; do
  wait_for "registry-$((i + 1)) ready" http_ok "http://$HOST:${REGISTRY_ADMIN_PORTS[$i]}/readyz"
done

# Edges.
for i in "${!EDGE_PORTS[@]}"; do
  start "edge-$((i + 1))" env NATS_USER=edge NATS_PASSWORD="$EDGE_PW" "$BIN/edge" \
    -nats "$NATS_URLS" -id "edge-$((i + 1))" -listen "$HOST:${EDGE_PORTS[$i]}" \
    -admin "$HOST:${EDGE_ADMIN_PORTS[$i]}" -log-level "$LOG_LEVEL"
done
for i in "${!EDGE_PORTS[@]}"; do
  wait_for "edge-$((i + 1)) ready" http_ok "http://$HOST:${EDGE_ADMIN_PORTS[$i]}/readyz"
done

OBS="nats --server nats://observer:$OBSERVER_PW@$HOST:${NATS_PORTS[0]}"
SYS="nats --server nats://$HOST:${NATS_PORTS[0]} --user sys --password $SYS_PW"
{
  echo
  echo "== signaling cluster up (logs: $LOGS)"
  echo
  echo "WebSocket clients:"
  for i in "${!EDGE_PORTS[@]}"; do
    echo "  ws://$HOST:${EDGE_PORTS[$i]}/    edge-$((i + 1))   metrics: http://$HOST:${EDGE_ADMIN_PORTS[$i]}/metrics"
  done
  for i in "${!REGISTRY_ADMIN_PORTS[@]}"; do
    echo "  registry-$((i + 1)) metrics: http://$HOST:${REGISTRY_ADMIN_PORTS[$i]}/metrics"
  done
  echo
  echo "NATS: $NATS_URLS   monitoring: http://$HOST:${MONITOR_PORTS[0]}/ (n1)"
  echo
  echo "Watch it (read-only observer; DEV credentials from deploy/nats/accounts.conf):"
  echo "  $OBS sub 'user.>'"
  echo "  $OBS sub 'presence.>'"
  echo "  $OBS kv ls users"
  echo "  $OBS kv watch users"
  echo "  $OBS micro ls"
  echo "  $OBS micro stats edge"
  echo "  $SYS server report jetstream"
  echo "  $SYS server ls"
  echo
  echo "Processes (kill one to watch the cluster cope; kill -USR1 $$ starts the dead ones again):"
  for i in "${!PIDS[@]}"; do
    printf '  %-11s pid %s\n' "${NAMES[$i]}" "${PIDS[$i]}"
  done
  echo
  echo "Ctrl-C (or SIGTERM to pid $$) stops everything."
} >&2

# Run until signalled; report a process that dies, and keep the rest going
# (an operator may want to watch the cluster cope); SIGUSR1 restarts it.
while :; do
  for i in "${!PIDS[@]}"; do
    if [ "${REPORTED[$i]}" = 0 ] && ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      REPORTED[i]=1
      log "${NAMES[$i]} (pid ${PIDS[$i]}) exited; see $LOGS/${NAMES[$i]}.log; kill -USR1 $$ starts it again"
    fi
  done
  sleep 1 &
  SLEEP_PID=$!
  wait $SLEEP_PID || true
done
