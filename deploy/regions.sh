#!/usr/bin/env bash
# Runs the signaling system in two regions on this machine, the way a
# multi-region deployment is laid out (deploy/README.md, "Regions"):
#
#   east, the home region: 3 nats-server nodes with JetStream
#     (deploy/regions/local-east.conf), the registries (the users and edges
#     buckets placed in east: -kv-cluster east), 2 edges
#   west: 2 nats-server nodes without JetStream (local-west.conf), 2 edges
#   a leaf-node site hanging off east: 1 nats-server (local-site.conf), 1 edge
#   linkdelay in front of every gateway port, adding DELAY each way (a
#     round trip of twice DELAY between the regions), which can cut the link
#     and restore it; every node advertises its link's port, so every
#     gateway connection crosses a link, and nothing else does
#
# Accounts and per-role permissions: deploy/nats/accounts.conf, as everywhere.
# It builds nats-server (the version in go.mod), ./cmd/edge, ./cmd/registry
# and linkdelay, prints the WebSocket URLs, the link's controls and the nats
# CLI commands to watch the gateways, and runs until Ctrl-C or SIGTERM; then
# it stops everything it started (edges, registries, NATS, the link) and
# removes its temporary directory. Every wait is bounded. Loopback only.
#
#   bash deploy/regions.sh
#
# Settings (environment), defaults in brackets:
#   EAST_NATS_PORTS     client ports of east-1..3 ["4222 4223 4224"]
#   EAST_ROUTE_PORTS    ["6222 6223 6224"]
#   EAST_MONITOR_PORTS  ["8222 8223 8224"]
#   EAST_GATEWAY_PORTS  ["7222 7223 7224"]
#   EAST_LEAF_PORTS     where east accepts the site's leaf node ["7422 7423 7424"]
#   WEST_NATS_PORTS     client ports of west-1.. (one node each) ["4322 4323"]
#   WEST_ROUTE_PORTS    ["6322 6323"]
#   WEST_MONITOR_PORTS  ["8322 8323"]
#   WEST_GATEWAY_PORTS  ["7322 7323"]
#   LINK_PORTS          the links in front of the gateway ports, east's then
#                       west's ["17222 17223 17224 17322 17323"]
#   LINK_CONTROL        linkdelay's control port [127.0.0.1:9300]
#   DELAY               one-way delay between the regions [20ms]
#   SITE_NATS_PORT, SITE_MONITOR_PORT  the site's node [4422, 8422]
#   EAST_EDGE_PORTS, WEST_EDGE_PORTS, SITE_EDGE_PORTS   WebSocket ports, one
#                       edge each ["9090 9091", "9092 9093", "9094"]
#   EAST_EDGE_ADMIN_PORTS, WEST_EDGE_ADMIN_PORTS, SITE_EDGE_ADMIN_PORTS
#                       their /metrics ports ["9190 9191", "9192 9193", "9194"]
#   REGISTRY_ADMIN_PORTS  one registry each, in east ["9180 9181"]
#   LEASE               the registries' -lease [30s]: a west edge cannot
#                       heartbeat while the link is cut, and a cut longer
#                       than the lease releases its users' names
#   FENCE_AFTER         the edges' -fence-after [22s]: an edge whose
#                       heartbeats have failed this long closes its sessions
#                       (4001), before the lease can give their names away;
#                       keep it under LEASE
#   REGIONS_DIR         where binaries, JetStream stores and logs go [a new
#                       temporary directory, removed on exit; a directory
#                       you name is kept]
#   BIN_DIR             take nats-server, edge, registry (and linkdelay, if
#                       there) from this directory instead of building them
#   WAIT                seconds each step may take before giving up [60]
#   LOG_LEVEL           the services' -log-level [info]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOST=127.0.0.1

read -r -a EAST_NATS_PORTS <<<"${EAST_NATS_PORTS:-4222 4223 4224}"
read -r -a EAST_ROUTE_PORTS <<<"${EAST_ROUTE_PORTS:-6222 6223 6224}"
read -r -a EAST_MONITOR_PORTS <<<"${EAST_MONITOR_PORTS:-8222 8223 8224}"
read -r -a EAST_GATEWAY_PORTS <<<"${EAST_GATEWAY_PORTS:-7222 7223 7224}"
read -r -a EAST_LEAF_PORTS <<<"${EAST_LEAF_PORTS:-7422 7423 7424}"
read -r -a WEST_NATS_PORTS <<<"${WEST_NATS_PORTS:-4322 4323}"
read -r -a WEST_ROUTE_PORTS <<<"${WEST_ROUTE_PORTS:-6322 6323}"
read -r -a WEST_MONITOR_PORTS <<<"${WEST_MONITOR_PORTS:-8322 8323}"
read -r -a WEST_GATEWAY_PORTS <<<"${WEST_GATEWAY_PORTS:-7322 7323}"
read -r -a LINK_PORTS <<<"${LINK_PORTS:-17222 17223 17224 17322 17323}"
LINK_CONTROL=${LINK_CONTROL:-$HOST:9300}
DELAY=${DELAY:-20ms}
SITE_NATS_PORT=${SITE_NATS_PORT:-4422}
SITE_MONITOR_PORT=${SITE_MONITOR_PORT:-8422}
read -r -a EAST_EDGE_PORTS <<<"${EAST_EDGE_PORTS:-9090 9091}"
read -r -a WEST_EDGE_PORTS <<<"${WEST_EDGE_PORTS:-9092 9093}"
read -r -a SITE_EDGE_PORTS <<<"${SITE_EDGE_PORTS:-9094}"
read -r -a EAST_EDGE_ADMIN_PORTS <<<"${EAST_EDGE_ADMIN_PORTS:-9190 9191}"
read -r -a WEST_EDGE_ADMIN_PORTS <<<"${WEST_EDGE_ADMIN_PORTS:-9192 9193}"
read -r -a SITE_EDGE_ADMIN_PORTS <<<"${SITE_EDGE_ADMIN_PORTS:-9194}"
read -r -a REGISTRY_ADMIN_PORTS <<<"${REGISTRY_ADMIN_PORTS:-9180 9181}"
LEASE=${LEASE:-30s}
FENCE_AFTER=${FENCE_AFTER:-22s}
WAIT=${WAIT:-60}
LOG_LEVEL=${LOG_LEVEL:-info}

die() {
  echo "regions.sh: $*" >&2
  exit 2
}
count() { # count ARRAYNAME: its number of elements
  local -n arr=$1
  echo "${#arr[@]}"
}
[ "${#EAST_NATS_PORTS[@]}" -eq 3 ] || die "east needs 3 nodes (JetStream with 3 replicas): EAST_NATS_PORTS has ${#EAST_NATS_PORTS[@]}"
for v in EAST_ROUTE_PORTS EAST_MONITOR_PORTS EAST_GATEWAY_PORTS EAST_LEAF_PORTS; do
  [ "$(count $v)" -eq 3 ] || die "$v needs 3 ports"
done
WN=${#WEST_NATS_PORTS[@]}
[ "$WN" -ge 1 ] || die "west needs a node at least"
for v in WEST_ROUTE_PORTS WEST_MONITOR_PORTS WEST_GATEWAY_PORTS; do
  [ "$(count $v)" -eq "$WN" ] || die "$v needs $WN ports, one per WEST_NATS_PORTS"
done
[ "${#LINK_PORTS[@]}" -eq $((3 + WN)) ] || die "LINK_PORTS needs $((3 + WN)) ports: one per gateway port, east's then west's"
for r in EAST WEST SITE; do
  [ "$(count "${r}_EDGE_ADMIN_PORTS")" -ge "$(count "${r}_EDGE_PORTS")" ] ||
    die "${r}_EDGE_ADMIN_PORTS needs a port for each of ${r}_EDGE_PORTS"
done

KEEP_DIR=1
if [ -z "${REGIONS_DIR:-}" ]; then
  REGIONS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/signal-regions.XXXXXX")
  KEEP_DIR=0
fi
mkdir -p "$REGIONS_DIR/logs"
REGIONS_DIR=$(cd "$REGIONS_DIR" && pwd)
BIN=$REGIONS_DIR/bin
if [ -n "${BIN_DIR:-}" ]; then
  BIN=$(cd "$BIN_DIR" && pwd)
fi
LOGS=$REGIONS_DIR/logs

# Credentials from the checked-in configuration (dev only), so that this
# script and the servers never disagree.
conf_password() { # conf_password USER: the password of USER in accounts.conf
  sed -n "s/.*{user: $1, password: \"\([^\"]*\)\".*/\1/p" deploy/nats/accounts.conf
}
EDGE_PW=$(conf_password edge)
REGISTRY_PW=$(conf_password registry)
OBSERVER_PW=$(conf_password observer)
SYS_PW=$(conf_password sys)
conf_in() { # conf_in BLOCK KEY: "KEY: value" in the top-level BLOCK of local-east.conf, unquoted
  sed -n "/^$1 {/,/^}/s/^ *$2: \"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" deploy/regions/local-east.conf | head -n1
}
ROUTE_USER=$(conf_in cluster user)
ROUTE_PW=$(conf_in cluster password)
GW_USER=$(conf_in gateway user)
GW_PW=$(conf_in gateway password)
LEAF_USER=leaf
LEAF_PW=$(sed -n 's/.*{user: leaf, password: "\([^"]*\)".*/\1/p' deploy/regions/local-east.conf)
for v in EDGE_PW REGISTRY_PW OBSERVER_PW SYS_PW ROUTE_USER ROUTE_PW GW_USER GW_PW LEAF_PW; do
  [ -n "${!v}" ] || {
    echo "regions.sh: could not read $v from deploy/nats or deploy/regions" >&2
    exit 1
  }
done

PIDS=()     # every process started, in start order
NAMES=()    # its name (link, nats-east-1, registry-1, edge-west-1, ...)
CMDS=()     # its command, quoted for eval
DIRS=()     # its working directory
ENVS=()     # its extra environment, quoted for eval
REPORTED=() # 1 once its exit was reported

log() { printf '%s regions.sh: %s\n' "$(date +%T)" "$*" >&2; }

stopping=0
cleanup() {
  local rc=$?
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  [ -n "${SLEEP_PID:-}" ] && kill "$SLEEP_PID" 2>/dev/null
  if [ "${#PIDS[@]}" -gt 0 ]; then
    log "stopping ${#PIDS[@]} processes"
    # Edges first (their users' names are released through the
    # registries), then the registries, NATS, and the link last. Each
    # group gets SIGTERM and a bounded wait, then SIGKILL.
    local group
    for group in edge registry nats link; do
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
    rm -rf "$REGIONS_DIR"
  else
    log "kept $REGIONS_DIR (logs in $LOGS)"
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
# its output in $LOGS/NAME.log, in directory $START_DIR if set and with the
# extra environment $START_ENV (NAME=value words) if set.
start() {
  local name=$1
  shift
  NAMES+=("$name")
  CMDS+=("$(printf '%q ' "$@")")
  DIRS+=("${START_DIR:-.}")
  ENVS+=("${START_ENV:-}")
  PIDS+=("")
  launch $((${#NAMES[@]} - 1))
}

launch() { # launch I: (re)starts process I
  local i=$1
  eval "set -- ${CMDS[$i]}"
  local env=()
  [ -n "${ENVS[$i]}" ] && eval "env=(${ENVS[$i]})"
  (cd "${DIRS[$i]}" && exec env "${env[@]}" setsid "$@") >>"$LOGS/${NAMES[$i]}.log" 2>&1 &
  PIDS[i]=$!
  disown "$!" # no job notices; bash still reaps it, and cleanup polls
  REPORTED[i]=0
}

# SIGUSR1: start again every process that has exited (same command, same
# JetStream store).
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

# gateway_up PORT: the node's outbound gateway to the other region is
# connected.
gateway_up() {
  curl -fsS --max-time 2 "http://$HOST:$1/gatewayz" | tr -d ' \n' | grep -q '"outbound_gateways":{"[a-z]*":{"configured":[a-z]*,"connection":{'
}

if [ -z "${BIN_DIR:-}" ]; then
  log "building into $BIN"
  mkdir -p "$BIN"
  go build -o "$BIN/nats-server" github.com/nats-io/nats-server/v2
  go build -o "$BIN" ./cmd/edge ./cmd/registry
fi
LINKDELAY=$BIN/linkdelay
if [ ! -x "$LINKDELAY" ]; then
  mkdir -p "$REGIONS_DIR/bin"
  LINKDELAY=$REGIONS_DIR/bin/linkdelay
  go build -o "$LINKDELAY" ./deploy/regions/linkdelay/cmd/linkdelay
fi

# The link: one listener per gateway port.
links=()
GW_PORTS=("${EAST_GATEWAY_PORTS[@]}" "${WEST_GATEWAY_PORTS[@]}")
for i in "${!GW_PORTS[@]}"; do
  links+=(-link "$HOST:${LINK_PORTS[$i]}=$HOST:${GW_PORTS[$i]}")
done
start link "$LINKDELAY" -delay "$DELAY" -control "$LINK_CONTROL" "${links[@]}"
wait_for "linkdelay's control port" http_ok "http://$LINK_CONTROL/status"

gw_urls() { # gw_urls FIRST COUNT: the gateway URLs (on the link) of LINK_PORTS[FIRST..]
  local u="" i
  for ((i = $1; i < $1 + $2; i++)); do
    u="$u${u:+, }nats://$GW_USER:$GW_PW@$HOST:${LINK_PORTS[$i]}"
  done
  echo "[$u]"
}
EAST_GWS=$(gw_urls 0 3)
WEST_GWS=$(gw_urls 3 "$WN")

# start_region REGION COUNT: its nodes, from deploy/regions/local-REGION.conf.
start_region() {
  local region=$1 count=$2 up
  up=$(tr '[:lower:]' '[:upper:]' <<<"$region")
  local -n nats=${up}_NATS_PORTS routes=${up}_ROUTE_PORTS mon=${up}_MONITOR_PORTS gw=${up}_GATEWAY_PORTS
  local first=0 peers=$EAST_GWS
  if [ "$region" = east ]; then peers=$WEST_GWS; else first=3; fi
  local i j
  for ((i = 0; i < count; i++)); do
    local n=$((i + 1)) rs=""
    for ((j = 0; j < count; j++)); do
      [ $j = $i ] && continue
      rs="$rs${rs:+,}nats-route://$ROUTE_USER:$ROUTE_PW@$HOST:${routes[$j]}"
    done
    mkdir -p "$REGIONS_DIR/$region-$n"
    local env
    env=$(printf '%q ' "GATEWAY_LISTEN=$HOST:${gw[$i]}" "GATEWAY_ADVERTISE=$HOST:${LINK_PORTS[$((first + i))]}" "GATEWAY_PEERS=$peers")
    if [ "$region" = east ]; then
      env="$env $(printf '%q' "LEAF_LISTEN=$HOST:${EAST_LEAF_PORTS[$i]}")"
    fi
    START_DIR=$REGIONS_DIR/$region-$n START_ENV=$env start "nats-$region-$n" "$BIN/nats-server" \
      -c "$ROOT/deploy/regions/local-$region.conf" -n "$region-$n" \
      -p "${nats[$i]}" -m "${mon[$i]}" \
      --cluster "nats://$ROUTE_USER:$ROUTE_PW@$HOST:${routes[$i]}" ${rs:+--routes "$rs"}
  done
}
start_region east 3
start_region west "$WN"
leafs=""
for p in "${EAST_LEAF_PORTS[@]}"; do
  leafs="$leafs${leafs:+, }nats-leaf://$LEAF_USER:$LEAF_PW@$HOST:$p"
done
mkdir -p "$REGIONS_DIR/site-1"
SITE_ENV=$(printf '%q' "LEAF_HUB=[$leafs]")
START_DIR=$REGIONS_DIR/site-1 START_ENV=$SITE_ENV start nats-site-1 "$BIN/nats-server" \
  -c "$ROOT/deploy/regions/local-site.conf" -p "$SITE_NATS_PORT" -m "$SITE_MONITOR_PORT"

for p in "${EAST_MONITOR_PORTS[@]}" "${WEST_MONITOR_PORTS[@]}" "$SITE_MONITOR_PORT"; do
  wait_for "NATS node (monitoring port $p)" http_ok "http://$HOST:$p/varz"
done
for p in "${EAST_MONITOR_PORTS[@]}"; do
  wait_for "JetStream meta leader (seen from monitoring port $p)" jetstream_ready "$p"
done
for p in "${EAST_MONITOR_PORTS[@]}" "${WEST_MONITOR_PORTS[@]}"; do
  wait_for "the gateway of the node with monitoring port $p" gateway_up "$p"
done
urls() { # urls PORT...: nats:// URLs
  local u="" p
  for p in "$@"; do u="$u${u:+,}nats://$HOST:$p"; done
  echo "$u"
}
EAST_URLS=$(urls "${EAST_NATS_PORTS[@]}")
WEST_URLS=$(urls "${WEST_NATS_PORTS[@]}")
SITE_URL=$(urls "$SITE_NATS_PORT")
log "NATS up: east $EAST_URLS, west $WEST_URLS, site $SITE_URL; gateways through the link ($DELAY each way)"

# Registries, in east only: the first creates the buckets (3 replicas,
# placed in east); the others start once it is ready. A registry exits
# when it cannot create the buckets in time (a young cluster): the first is
# started again, up to 3 times, as an orchestrator would.
buckets() {
  local jsz
  jsz=$(curl -fsS --max-time 2 "http://$HOST:${EAST_MONITOR_PORTS[0]}/jsz?acc=SIGNAL&streams=true") &&
    grep -q '"name": *"KV_users"' <<<"$jsz" && grep -q '"name": *"KV_edges"' <<<"$jsz"
}
for i in "${!REGISTRY_ADMIN_PORTS[@]}"; do
  start "registry-$((i + 1))" env NATS_USER=registry NATS_PASSWORD="$REGISTRY_PW" "$BIN/registry" \
    -nats "$EAST_URLS" -replicas 3 -kv-cluster east -lease "$LEASE" \
    -admin "$HOST:${REGISTRY_ADMIN_PORTS[$i]}" -log-level "$LOG_LEVEL"
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

# Edges: each region's edges get that region's nodes only.
EDGE_LINES=()
start_edges() { # start_edges REGION URLS
  local region=$1 nurls=$2 up i
  up=$(tr '[:lower:]' '[:upper:]' <<<"$region")
  local -n ports=${up}_EDGE_PORTS admins=${up}_EDGE_ADMIN_PORTS
  for i in "${!ports[@]}"; do
    local id="$region-$((i + 1))"
    start "edge-$id" env NATS_USER=edge NATS_PASSWORD="$EDGE_PW" "$BIN/edge" \
      -nats "$nurls" -id "$id" -listen "$HOST:${ports[$i]}" -fence-after "$FENCE_AFTER" \
      -admin "$HOST:${admins[$i]}" -log-level "$LOG_LEVEL"
    EDGE_LINES+=("  ws://$HOST:${ports[$i]}/    edge $id ($region)   metrics: http://$HOST:${admins[$i]}/metrics")
    EDGE_ADMINS+=("${admins[$i]}")
  done
}
EDGE_ADMINS=()
start_edges east "$EAST_URLS"
start_edges west "$WEST_URLS"
start_edges site "$SITE_URL"
for p in "${EDGE_ADMINS[@]}"; do
  wait_for "the edge with admin port $p ready" http_ok "http://$HOST:$p/readyz"
done

OBS_EAST="nats --server nats://observer:$OBSERVER_PW@$HOST:${EAST_NATS_PORTS[0]}"
OBS_WEST="nats --server nats://observer:$OBSERVER_PW@$HOST:${WEST_NATS_PORTS[0]}"
SYS="nats --server nats://$HOST:${EAST_NATS_PORTS[0]} --user sys --password $SYS_PW"
{
  echo
  echo "== two regions up, $DELAY each way between them (logs: $LOGS)"
  echo
  echo "WebSocket clients:"
  printf '%s\n' "${EDGE_LINES[@]}"
  for i in "${!REGISTRY_ADMIN_PORTS[@]}"; do
    echo "  registry-$((i + 1)) (east) metrics: http://$HOST:${REGISTRY_ADMIN_PORTS[$i]}/metrics"
  done
  echo
  echo "NATS: east $EAST_URLS (JetStream; monitoring http://$HOST:${EAST_MONITOR_PORTS[0]}/)"
  echo "      west $WEST_URLS (monitoring http://$HOST:${WEST_MONITOR_PORTS[0]}/)"
  echo "      site $SITE_URL (leaf node of east; monitoring http://$HOST:$SITE_MONITOR_PORT/)"
  echo
  echo "The link between the regions:"
  echo "  curl -X POST http://$LINK_CONTROL/cut        # drop every gateway connection, refuse new ones"
  echo "  curl -X POST http://$LINK_CONTROL/blackhole  # forward nothing and tell nobody (found by gateway pings)"
  echo "  curl -X POST http://$LINK_CONTROL/restore"
  echo "  curl -s http://$LINK_CONTROL/status"
  echo
  echo "Watch the gateways (DEV credentials from deploy/nats/accounts.conf):"
  echo "  $SYS server report gateways"
  echo "  $SYS server request gateways --cluster west     # /gatewayz of west's nodes, JSON"
  echo "  $SYS server report accounts SIGNAL"
  echo "  curl -s 'http://$HOST:${WEST_MONITOR_PORTS[0]}/gatewayz?accs=1'   # per account: interest mode"
  echo "  curl -s 'http://$HOST:${WEST_MONITOR_PORTS[0]}/accstatz?unused=1' # per account: msgs to and from gateways"
  echo "  $SYS server report jetstream"
  echo "  $OBS_WEST kv ls users      # the bucket in east, read from west"
  echo "  $OBS_WEST kv status users"
  echo "  $OBS_EAST sub 'user.>'     # careful: a subscriber in east draws west's frames across"
  echo
  echo "Processes (kill -USR1 $$ starts the dead ones again):"
  for i in "${!PIDS[@]}"; do
    printf '  %-15s pid %s\n' "${NAMES[$i]}" "${PIDS[$i]}"
  done
  echo
  echo "Ctrl-C (or SIGTERM to pid $$) stops everything."
} >&2

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
