#!/usr/bin/env bash
# The scale run of the performance issue: EDGES edges (signal's own plus
# EDGES-1 edge processes) each holding USERS idle logged-in users, one
# signal-bench conns process per edge (a process may hold at most ~20,000
# descriptors here), then a relay paced at RATE offers/s across two edges
# while they are held. Prints the resident memory of every server process
# and the relay's round-trip figures. Bounded in time; stops all it started.
#
#   bash deploy/scale.sh                 # 5 edges x 19,000 users
#   EDGES=3 USERS=5000 bash deploy/scale.sh
#   PROFILE=/tmp/prof bash deploy/scale.sh   # also CPU profiles of signal and
#                                            # edge 1 during the relay, there
set -euo pipefail
EDGES=${EDGES:-5} USERS=${USERS:-19000} RATE=${RATE:-2000} BASE=${BASE:-20090} NATS_PORT=${NATS_PORT:-24222}
PROFILE=${PROFILE:-}
[ "$EDGES" -ge 2 ] || { echo "scale: EDGES must be at least 2 (the relay runs across two edges)" >&2; exit 2; }
# admin I: the -admin flag of server I, when profiling.
admin() { adm=(); [ -z "$PROFILE" ] || adm=(-admin "127.0.0.1:$((BASE + 100 + $1))"); }
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
pids=()
cleanup() {
  # A benchmark: no graceful drain of 95,000 users on the way out.
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(cd "$root" && go build -o "$dir/" ./cmd/signal ./cmd/edge ./cmd/signal-bench)
read -ra extra <<<"${SERVER_ARGS:-}"
F=(-rate -1 -max-conns-per-ip -1 -log-level warn "${extra[@]}")
admin 0
"$dir/signal" -listen "127.0.0.1:$BASE" -nats-listen "127.0.0.1:$NATS_PORT" -data "$dir/data" "${F[@]}" "${adm[@]}" >"$dir/signal.log" 2>&1 &
servers=($!); pids+=($!)
sleep 2
for i in $(seq 1 $((EDGES - 1))); do
  admin "$i"
  "$dir/edge" -listen "127.0.0.1:$((BASE + i))" -nats "nats://127.0.0.1:$NATS_PORT" -id "scale-$i" "${F[@]}" "${adm[@]}" >"$dir/edge$i.log" 2>&1 &
  servers+=($!); pids+=($!)
done
sleep 2
hold=$((USERS / 500 + 40))
for i in $(seq 0 $((EDGES - 1))); do
  "$dir/signal-bench" conns -url ws://127.0.0.1:$((BASE + i))/ -n "$USERS" -c 64 -hold ${hold}s \
    -prefix "scale$i" -ready-file "$dir/ready$i" >"$dir/conns$i.json" 2>"$dir/conns$i.err" &
  pids+=($!)
done
for t in $(seq 1 $((hold + 60))); do
  [ "$(find "$dir" -maxdepth 1 -name 'ready*' | wc -l)" -eq "$EDGES" ] && break
  sleep 1
done
echo "scale: $(find "$dir" -maxdepth 1 -name 'ready*' | wc -l) of $EDGES edges hold $USERS users each (${t}s)"
rss() { for p in "${servers[@]}"; do printf '  %s %s\n' "$(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-60)" "$(grep VmRSS "/proc/$p/status")"; done; }
rss
# The relay's callers and callees on two edge processes (on signal's own
# edge and the first edge process when there are only two).
r1=$((EDGES > 2 ? BASE + 1 : BASE)) r2=$((EDGES > 2 ? BASE + 2 : BASE + 1))
"$dir/signal-bench" relay -url "ws://127.0.0.1:$r1/,ws://127.0.0.1:$r2/" \
  -pairs 20 -rate "$RATE" -duration 10s -warmup 1s >"$dir/relay.json" 2>"$dir/relay.err" &
relay=$!
if [ -n "$PROFILE" ]; then
  mkdir -p "$PROFILE"
  sleep 3
  curl -fsS -o "$PROFILE/signal.cpu" "http://127.0.0.1:$((BASE + 100))/debug/pprof/profile?seconds=6" &
  p1=$!
  curl -fsS -o "$PROFILE/edge1.cpu" "http://127.0.0.1:$((BASE + 101))/debug/pprof/profile?seconds=6" || true
  wait $p1 || true
  cp "$dir/signal" "$dir/edge" "$PROFILE/"
fi
wait $relay || true
grep -E "delivered|round trip" "$dir/relay.err" || cat "$dir/relay.err"
rss
