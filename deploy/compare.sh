#!/usr/bin/env bash
# Compares this system with another signaling server that speaks the
# tutorial protocol, in alternating rounds of deploy/bench.sh, so that both
# see the same machine conditions (on a shared machine single runs move by
# up to 30%). Prints, for each figure, the median and the range over the
# rounds, and the ratio of the medians. Bounded: each bench.sh run bounds
# itself; the whole script stops after ROUNDS rounds.
#
# The same independent load generator (cmd/signal-bench, tutorial-protocol
# clients over loopback) drives both, with the per-connection rate and
# per-address limits of this system lifted as for any benchmark (bench.sh's
# default SERVER_ARGS, "-rate -1 -max-conns-per-ip -1"). "Across two edges"
# is this system as a cluster: `signal` plus a second `edge`, the callers
# on signal's edge and the callees on the other, so that every message
# crosses NATS between two edge processes; the other server is one process
# on one URL, measured the same way (relay1). CPU per message is the CPU
# time (utime+stime, /proc/PID/stat) of every server process over the
# measured window, divided by the messages delivered in it: signal plus the
# second edge here, the other server's process(es) there; the load tool's
# own is beside it.
#
#   EXTERNAL_CMD='node /path/to/tutorial/server.js' EXTERNAL_PORT=9090 \
#     NICE=-15 bash deploy/compare.sh
#
# EXTERNAL_CMD is started (in the foreground of a background subshell, at
# the same nice level) before each of its rounds and stopped after; it must
# listen on 127.0.0.1:EXTERNAL_PORT. The tutorial's server.js listens on
# 9090, which is also PORT_A's default here: give it another port (edit its
# port) or set PORT_A. Settings: ROUNDS=3, STEPS_OURS="relay relay1 paced
# logins", STEPS_OTHER="relay1 paced logins", NICE, and bench.sh's own
# (PAIRS, RATE, DURATION, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
EXTERNAL_CMD=${EXTERNAL_CMD:?set EXTERNAL_CMD to the command that runs the other server}
EXTERNAL_PORT=${EXTERNAL_PORT:?set EXTERNAL_PORT to the port it listens on}
STEPS_OURS=${STEPS_OURS:-relay relay1 paced logins}
STEPS_OTHER=${STEPS_OTHER:-relay1 paced logins}
nice_cmd=()
[ -z "${NICE:-}" ] || nice_cmd=(nice -n "$NICE")
out=$(mktemp -d)
other=""
cleanup() {
  [ -z "$other" ] || kill "$other" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
log() { echo "compare: $*" >&2; }

for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: this system (load average $(cut -d' ' -f1 /proc/loadavg))"
  STEPS=$STEPS_OURS OUT=$out/ours$r bash deploy/bench.sh >"$out/ours$r.md" 2>"$out/ours$r.err" ||
    { cat "$out/ours$r.err" >&2; exit 1; }
  log "round $r/$ROUNDS: $EXTERNAL_CMD (load average $(cut -d' ' -f1 /proc/loadavg))"
  # shellcheck disable=SC2086
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; exec "${nice_cmd[@]}" $EXTERNAL_CMD) >"$out/other$r.log" 2>&1 &
  other=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$EXTERNAL_PORT") 2>/dev/null && break
    kill -0 "$other" 2>/dev/null || { cat "$out/other$r.log" >&2; exit 1; }
    sleep 0.1
  done
  STEPS=$STEPS_OTHER EXTERNAL_URL=ws://127.0.0.1:$EXTERNAL_PORT/ EXTERNAL_PID=$other OUT=$out/other$r \
    bash deploy/bench.sh >"$out/other$r.md" 2>"$out/other$r.err" || { cat "$out/other$r.err" >&2; exit 1; }
  kill "$other" 2>/dev/null || true
  wait "$other" 2>/dev/null || true
  other=""
done

# value FILE KEY: a number from one run's JSON (see bench.sh's j).
value() {
  local f=$1 k=$2
  if [[ $k == *.* ]]; then
    sed -n "s/.*\"${k%%.*}\":{\([^}]*\)}.*/\1/p" "$f" | sed -n "s/.*\"${k#*.}\":\([^,}]*\).*/\1/p"
  else
    sed -n "s/.*\"$k\":\([^,}]*\).*/\1/p" "$f"
  fi
}
# fails WHO: failed logins and refusals over every logins run.
fails() {
  local f n=0 a b
  for f in "$out"/"$1"*/logins.json; do
    [ -s "$f" ] || continue
    a=$(value "$f" failures) b=$(value "$f" refused)
    n=$((n + ${a:-0} + ${b:-0}))
  done
  echo "$n"
}
# stat WHO STEP KEY: "median (min-max)" over the rounds.
stat() {
  local who=$1 step=$2 key=$3 r f
  for r in $(seq 1 "$ROUNDS"); do
    f=$out/$who$r/$step.json
    [ -s "$f" ] && value "$f" "$key"
  done | sort -g | awk '{v[NR]=$1} END {
    if (NR == 0) { print "-"; exit }
    m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
    printf "%.6g (%.6g-%.6g)\n", m, v[1], v[NR] }'
}

# ratio A B: A / B of two "median (min-max)" figures.
ratio() {
  awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}
# line LABEL OURS OTHER: a table row with the ratio.
line() { echo "| $1 | $2 | $3 | $(ratio "$2" "$3") |"; }

echo
echo "### deploy/compare.sh: $ROUNDS alternating rounds; median (min-max)"
echo
echo "$(uname -sr), $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ)$([ -n "${NICE:-}" ] && echo "; nice $NICE"); other: $EXTERNAL_CMD"
echo
echo "| figure | this system | other | this / other |"
echo "| --- | --- | --- | --- |"
line "relay, closed loop, across two edges (other: its one URL): msgs/s" "$(stat ours relay msgs_per_s)" "$(stat other relay1 msgs_per_s)"
line "same: server CPU per message, all server processes, µs" "$(stat ours relay server_cpu_us_per_msg)" "$(stat other relay1 server_cpu_us_per_msg)"
line "same: load tool CPU per message, µs" "$(stat ours relay tool_cpu_us_per_msg)" "$(stat other relay1 tool_cpu_us_per_msg)"
line "same: round trip p50 µs" "$(stat ours relay rtt.p50_us)" "$(stat other relay1 rtt.p50_us)"
line "same: round trip p99 µs" "$(stat ours relay rtt.p99_us)" "$(stat other relay1 rtt.p99_us)"
line "relay, closed loop, one URL: msgs/s" "$(stat ours relay1 msgs_per_s)" "$(stat other relay1 msgs_per_s)"
line "same: server CPU per message, all server processes, µs" "$(stat ours relay1 server_cpu_us_per_msg)" "$(stat other relay1 server_cpu_us_per_msg)"
line "same: round trip p50 µs" "$(stat ours relay1 rtt.p50_us)" "$(stat other relay1 rtt.p50_us)"
line "same: round trip p99 µs" "$(stat ours relay1 rtt.p99_us)" "$(stat other relay1 rtt.p99_us)"
line "relay paced$([ "$STEPS_OTHER" = "${STEPS_OTHER/paced/}" ] || echo ", across two edges (other: one URL)"): round trip p50 µs" "$(stat ours paced rtt.p50_us)" "$(stat other paced rtt.p50_us)"
line "same: round trip p99 µs" "$(stat ours paced rtt.p99_us)" "$(stat other paced rtt.p99_us)"
line "same: round trip p99.9 µs" "$(stat ours paced rtt.p999_us)" "$(stat other paced rtt.p999_us)"
line "same: server CPU per message, µs" "$(stat ours paced server_cpu_us_per_msg)" "$(stat other paced server_cpu_us_per_msg)"
line "logins (connect+login+close, over two edges; other: one URL): cycles/s" "$(stat ours logins cycles_per_s)" "$(stat other logins cycles_per_s)"
lost() { cat "$out"/"$1"*/relay*.json "$out"/"$1"*/paced.json 2>/dev/null | sed -n 's/.*"lost":\([0-9]*\).*"misrouted":\([0-9]*\).*/\1 \2/p' | awk '{s+=$1+$2} END {print s+0}'; }
echo "| lost + misrouted, relay (all rounds) | $(lost ours) | $(lost other) | |"
echo "| failed logins + success:false (all rounds) | $(fails ours) | $(fails other) | |"
