#!/usr/bin/env bash
# Benchmarks the signaling system on this machine with cmd/signal-bench and
# prints a Markdown table of the figures.
#
# It builds ./cmd/signal, ./cmd/edge and ./cmd/signal-bench into a temporary
# directory, starts `signal` (embedded NATS with JetStream, the registry and
# edge A) and a second `edge` (edge B) against signal's NATS, then runs:
#
#   1. conns   N idle logged-in users on one edge (default edge B), while
#              sampling VmRSS of every process from /proc/PID/status;
#   2. relay   closed loop, PAIRS pairs, callers on edge A, callees on edge B;
#   3. relay   closed loop, PAIRS pairs, all on edge A (one URL, as a
#              single-process server is measured);
#   4. relay   paced at RATE offers/s in all (offers+answers: 2*RATE msg/s),
#              across A and B;
#   5. logins  connect+login+close storm, LOGIN_C workers over A and B;
#
# and stops everything it started on exit. Every step is bounded in time
# (the tool's own -max-time, and `timeout` around it).
#
# To measure some other server speaking the tutorial protocol instead (one
# URL), start it yourself and pass its process id(s), comma separated (all
# of them count for its memory and CPU):
#
#   EXTERNAL_URL=ws://127.0.0.1:9090/ EXTERNAL_PID=1234 deploy/bench.sh
#
# CPU per message: the relay steps give the tool -pids with every server
# process (signal and edge, or EXTERNAL_PID's), and it reads their
# utime+stime from /proc/PID/stat at the start and the end of the measured
# window: their sum over the messages delivered in it is the server CPU per
# message; the tool's own CPU per message is reported beside it.
#
# Settings (environment):
#   N=19000          idle users for the conns step
#   HOLD=10          seconds the idle users are held (RSS is sampled after SETTLE)
#   SETTLE=3         seconds after the last user logged in before sampling RSS
#   CONNS_EDGE=b     which edge takes the idle users: a (inside signal) or b
#   PAIRS=20         relay pairs
#   RATE=2000        paced relay: total offers per second
#   DURATION=10      seconds measured in relay and logins steps
#   WARMUP=1         seconds of relay warmup
#   LOGIN_C=32       logins workers
#   PORT_A=19090     signal's WebSocket port (edge A)
#   PORT_B=19091     the second edge's WebSocket port (edge B)
#   NATS_PORT=14222  signal's embedded NATS port
#   STEPS="conns relay relay1 paced logins"   which steps to run, in order
#                    (with EXTERNAL_URL: "conns relay1 paced logins")
#   OUT=dir          keep the JSON results and logs there (default: a temp dir, removed)
#   BENCH_ARGS=...   extra flags for every signal-bench run
#   SERVER_ARGS=...  extra flags for signal and edge. Default: "-rate -1
#                    -max-conns-per-ip -1" where the binaries have those
#                    flags: the tool puts hundreds of messages per second on
#                    each connection and every connection on a few client
#                    addresses, which a per-connection rate limit or a
#                    per-address cap (policies for real clients) would throttle
#   NICE=-15         run the servers and the tool at this nice level (negative
#                    needs root): on a machine shared with other work, keeps
#                    that work from skewing the figures (start an EXTERNAL
#                    server at the same level to compare like with like)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-19000}
HOLD=${HOLD:-10}
SETTLE=${SETTLE:-3}
CONNS_EDGE=${CONNS_EDGE:-b}
PAIRS=${PAIRS:-20}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
LOGIN_C=${LOGIN_C:-32}
PORT_A=${PORT_A:-19090}
PORT_B=${PORT_B:-19091}
NATS_PORT=${NATS_PORT:-14222}
EXTERNAL_URL=${EXTERNAL_URL:-}
if [ -n "$EXTERNAL_URL" ]; then
  STEPS=${STEPS:-conns relay1 paced logins} # one URL: relay and relay1 are the same
else
  STEPS=${STEPS:-conns relay relay1 paced logins}
fi
EXTERNAL_PID=${EXTERNAL_PID:-}
BENCH_ARGS=${BENCH_ARGS:-}
NICE=${NICE:-}

log() { echo "bench: $*" >&2; }
# A command prefix, not a function: "$!" of a backgrounded simple command is
# the process itself (nice execs it), which the RSS and CPU figures need.
nice_cmd=()
[ -z "$NICE" ] || nice_cmd=(nice -n "$NICE")
die() { log "$*"; exit 1; }

# Raise the open-file limit as far as allowed: the idle users need one
# descriptor each, in the tool and in the edge.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
log "open files limit: $(ulimit -n)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((N + 100)) ]; then
  log "warning: ulimit -n $(ulimit -n) is below N=$N plus headroom; conns will fail"
fi

tmp=$(mktemp -d)
out=${OUT:-$tmp/out}
mkdir -p "$out"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # Bounded wait for a graceful stop, then kill.
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port pid
  for _ in $(seq 1 200); do
    if ! port_free "$1"; then return 0; fi
    kill -0 "$2" 2>/dev/null || die "process $2 exited before listening on $1 (see its log)"
    sleep 0.05
  done
  die "nothing listens on port $1 after 10s"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU time (user+system) of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

log "building into $tmp"
go build -o "$tmp/signal-bench" ./cmd/signal-bench
if [ -z "$EXTERNAL_URL" ]; then
  go build -o "$tmp/signal" ./cmd/signal
  go build -o "$tmp/edge" ./cmd/edge
  if [ -z "${SERVER_ARGS+set}" ]; then
    SERVER_ARGS=""
    help=$("$tmp/signal" -h 2>&1 || true)
    if grep -q -- '^  -rate ' <<<"$help"; then SERVER_ARGS+=" -rate -1"; fi
    if grep -q -- '^  -max-conns-per-ip ' <<<"$help"; then SERVER_ARGS+=" -max-conns-per-ip -1"; fi
  fi
  log "server flags:${SERVER_ARGS:- (none)}"
  for p in "$PORT_A" "$PORT_B" "$NATS_PORT"; do
    port_free "$p" || die "port $p is in use; set PORT_A, PORT_B or NATS_PORT"
  done
  "${nice_cmd[@]}" "$tmp/signal" -listen "127.0.0.1:$PORT_A" -nats-listen "127.0.0.1:$NATS_PORT" -data "$tmp/js" \
    -id bench-a -log-level warn $SERVER_ARGS >"$out/signal.log" 2>&1 &
  SIGNAL_PID=$!
  pids+=("$SIGNAL_PID")
  wait_port "$PORT_A" "$SIGNAL_PID"
  "${nice_cmd[@]}" "$tmp/edge" -nats "nats://127.0.0.1:$NATS_PORT" -listen "127.0.0.1:$PORT_B" \
    -id bench-b -log-level warn $SERVER_ARGS >"$out/edge.log" 2>&1 &
  EDGE_PID=$!
  pids+=("$EDGE_PID")
  wait_port "$PORT_B" "$EDGE_PID"
  URL_A="ws://127.0.0.1:$PORT_A/"
  URL_B="ws://127.0.0.1:$PORT_B/"
  URLS="$URL_A,$URL_B"
  PROCS="signal:$SIGNAL_PID edge:$EDGE_PID"
  TARGET="this system: signal (NATS, registry, edge A :$PORT_A) + edge B (:$PORT_B)"
  if [ "$CONNS_EDGE" = a ]; then CONNS_URL=$URL_A; else CONNS_URL=$URL_B; fi
else
  [ -n "$EXTERNAL_PID" ] || die "EXTERNAL_URL needs EXTERNAL_PID (the server's process id(s), for its RSS and CPU)"
  PROCS=""
  k=0
  for pid in ${EXTERNAL_PID//,/ }; do
    kill -0 "$pid" 2>/dev/null || die "EXTERNAL_PID $pid is not running"
    k=$((k + 1))
    name=server
    if [ "$k" -gt 1 ]; then name=server$k; fi
    PROCS+="${PROCS:+ }$name:$pid"
  done
  URL_A=$EXTERNAL_URL
  URLS=$EXTERNAL_URL
  CONNS_URL=$EXTERNAL_URL
  TARGET="external server $EXTERNAL_URL (pid $EXTERNAL_PID)"
fi
PIDS=${PROCS// /,} # for the tool's -pids
sleep 1

# j FILE KEY: a top-level number of a result; j FILE OBJ.KEY: one of a
# latency object's. The tool writes compact JSON with sorted keys.
j() {
  local f=$1 k=$2 v
  if [[ $k == *.* ]]; then
    v=$(sed -n "s/.*\"${k%%.*}\":{\([^}]*\)}.*/\1/p" "$f" | sed -n "s/.*\"${k#*.}\":\([^,}]*\).*/\1/p")
  else
    v=$(sed -n "s/.*\"$k\":\([^,}]*\).*/\1/p" "$f")
  fi
  echo "${v:--}"
}
# bench NAME ARGS...: runs the tool, keeps its JSON line in $out/NAME.json.
declare -A CPU LOAD
bench() {
  local name=$1 p t0
  shift
  LOAD[$name]=$(cut -d' ' -f1 /proc/loadavg)
  log "== $name: signal-bench $* $BENCH_ARGS   (load average ${LOAD[$name]})"
  for p in $PROCS; do CPU[${name}_${p%%:*}]=$(cpu_ticks "${p#*:}"); done
  t0=$(date +%s.%N)
  # The tool bounds itself (-max-time); timeout is the belt to its braces.
  # shellcheck disable=SC2086
  "${nice_cmd[@]}" timeout -k 5 900 "$tmp/signal-bench" "$@" $BENCH_ARGS >"$out/$name.json" 2> >(tee "$out/$name.log" >&2) || true
  [ -s "$out/$name.json" ] || echo '{}' >"$out/$name.json"
  CPU[${name}_wall]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  local s="" c
  for p in $PROCS; do
    c=$(( $(cpu_ticks "${p#*:}") - CPU[${name}_${p%%:*}] ))
    s+="${p%%:*} $(awk -v c="$c" -v hz="$HZ" 'BEGIN{printf "%.1f", c/hz}'), "
  done
  # A file, not a variable: the conns step runs in a subshell.
  echo "${s}tool $(j "$out/$name.json" tool_cpu_s) in ${CPU[${name}_wall]} s wall; load average before ${LOAD[$name]}" >"$out/$name.cpu"
}
cpu_row() { cat "$out/$1.cpu" 2>/dev/null || echo -; }
# cpu_split FILE: "; signal 1.2 s, edge 0.8 s" (the window's CPU seconds per
# server process), or nothing with one process.
cpu_split() {
  local p s=""
  [ "${PROCS// /}" != "$PROCS" ] || return 0
  for p in $PROCS; do s+="${s:+, }${p%%:*} $(j "$1" "server_cpu_s.${p%%:*}") s"; done
  echo "; $s in the window"
}

fmt_n() { [ "$1" = - ] && echo - || printf "%.0f" "$1"; }

declare -A MEM
rows=()
row() { rows+=("| $1 | $2 |"); }

for step in $STEPS; do
  case $step in
  conns)
    for p in $PROCS; do MEM[base_${p%%:*}]=$(rss_kb "${p#*:}"); done
    ready="$tmp/ready"
    rm -f "$ready"
    bench conns conns -url "$CONNS_URL" -n "$N" -hold "$((HOLD + SETTLE))" -c 64 -ready-file "$ready" &
    bpid=$!
    for _ in $(seq 1 $((N / 50 + 600))); do # up to N/500 + 60 s
      [ -e "$ready" ] && break
      kill -0 "$bpid" 2>/dev/null || break
      sleep 0.1
    done
    if [ -e "$ready" ]; then
      sleep "$SETTLE"
      up=$(cat "$ready")
      for p in $PROCS; do
        name=${p%%:*} pid=${p#*:}
        MEM[hold_$name]=$(rss_kb "$pid")
        MEM[hwm_$name]=$(hwm_kb "$pid")
        log "RSS $name: $((MEM[base_$name] / 1024)) MiB before, $((MEM[hold_$name] / 1024)) MiB with $up idle users"
      done
      MEM[up]=$up
    fi
    wait "$bpid" || true
    ;;
  relay)
    bench relay relay -url "$URLS" -pairs "$PAIRS" -duration "$DURATION" -warmup "$WARMUP" -pids "$PIDS"
    ;;
  relay1)
    bench relay1 relay -url "$URL_A" -pairs "$PAIRS" -duration "$DURATION" -warmup "$WARMUP" -pids "$PIDS"
    ;;
  paced)
    bench paced relay -url "$URLS" -pairs "$PAIRS" -rate "$RATE" -duration "$DURATION" -warmup "$WARMUP" -pids "$PIDS"
    ;;
  logins)
    bench logins logins -url "$URLS" -c "$LOGIN_C" -duration "$DURATION"
    ;;
  *) die "unknown step $step" ;;
  esac
done

# ---- the table ----
ncpu=$(nproc)
echo
echo "### signal-bench: $TARGET"
echo
echo "$(uname -sr), $ncpu CPUs, $(go version | awk '{print $3}'); $(date -u +%Y-%m-%dT%H:%MZ)$([ -n "$NICE" ] && echo "; nice $NICE")"
echo
echo "| figure | value |"
echo "| --- | --- |"
for step in $STEPS; do
  f=$out/$step.json
  case $step in
  relay | relay1)
    where="$PAIRS pairs, closed loop, across 2 edges"
    [ "$step" = relay1 ] && where="$PAIRS pairs, closed loop, one URL"
    [ -n "$EXTERNAL_URL" ] && where="$PAIRS pairs, closed loop, one URL"
    row "relay ($where): msgs/s delivered" "$(fmt_n "$(j "$f" msgs_per_s)")"
    row "relay ($where): round trip p50 / p90 / p99 / max µs" \
      "$(j "$f" rtt.p50_us) / $(j "$f" rtt.p90_us) / $(j "$f" rtt.p99_us) / $(j "$f" rtt.max_us)"
    row "relay ($where): lost / misrouted" "$(j "$f" lost) / $(j "$f" misrouted)"
    row "relay ($where): CPU per message delivered, all server processes / load tool µs" "$(j "$f" server_cpu_us_per_msg) / $(j "$f" tool_cpu_us_per_msg)$(cpu_split "$f")"
    row "relay ($where): CPU seconds" "$(cpu_row "$step")"
    ;;
  paced)
    row "relay paced $RATE offers/s ($((2 * RATE)) msg/s)$([ -n "$EXTERNAL_URL" ] || echo ', across 2 edges'): msgs/s delivered" "$(fmt_n "$(j "$f" msgs_per_s)")"
    row "relay paced: round trip p50 / p99 / p99.9 / max µs" \
      "$(j "$f" rtt.p50_us) / $(j "$f" rtt.p99_us) / $(j "$f" rtt.p999_us) / $(j "$f" rtt.max_us)"
    row "relay paced: lost / misrouted; pacer lag max µs" "$(j "$f" lost) / $(j "$f" misrouted); $(j "$f" send_lag_max_us)"
    row "relay paced: CPU per message delivered, all server processes / load tool µs" "$(j "$f" server_cpu_us_per_msg) / $(j "$f" tool_cpu_us_per_msg)$(cpu_split "$f")"
    row "relay paced: CPU seconds" "$(cpu_row "$step")"
    ;;
  logins)
    row "logins ($LOGIN_C workers$([ -n "$EXTERNAL_URL" ] || echo ' over 2 edges')): connect+login+close cycles/s" "$(fmt_n "$(j "$f" cycles_per_s)")"
    row "logins: connect+login p50 / p99 µs" "$(j "$f" connect_login.p50_us) / $(j "$f" connect_login.p99_us)"
    row "logins: failures / success:false" "$(j "$f" failures) / $(j "$f" refused)"
    row "logins: CPU seconds" "$(cpu_row "$step")"
    ;;
  conns)
    f=$out/conns.json
    row "conns: idle users up / failed / dropped" "$(j "$f" ok) / $(j "$f" failed) / $(j "$f" dropped)"
    row "conns: connect+login rate while ramping, /s" "$(fmt_n "$(j "$f" connect_login_per_s)")"
    row "conns: CPU seconds" "$(cpu_row conns)"
    if [ -n "${MEM[up]:-}" ] && [ "${MEM[up]}" -gt 0 ]; then
      for p in $PROCS; do
        name=${p%%:*}
        b=${MEM[base_$name]} h=${MEM[hold_$name]}
        row "conns: $name RSS before → holding ${MEM[up]} users (MiB)" \
          "$(awk -v b="$b" -v h="$h" 'BEGIN{printf "%.1f → %.1f (peak %.1f)", b/1024, h/1024, '"${MEM[hwm_$name]}"'/1024}')"
        row "conns: $name memory per idle user (RSS delta / users)" \
          "$(awk -v b="$b" -v h="$h" -v n="${MEM[up]}" 'BEGIN{printf "%.1f KiB", (h-b)/n}')"
      done
    fi
    ;;
  esac
done
printf '%s\n' "${rows[@]}"
echo
log "JSON results: $out$([ -z "${OUT:-}" ] && echo ' (removed at exit; set OUT=dir to keep them)')"
