#!/usr/bin/env bash
# Counts, per relayed message, the system calls, futex calls, thread
# wake-ups and context switches of every process in the relay closed loop
# across two edges (callers on signal's edge A, callees on edge B), and
# the goroutine wake-ups and creations of the two server processes.
#
#   bash deploy/count.sh                  # prints a Markdown table
#   BIN=/tmp/old bash deploy/count.sh     # binaries built elsewhere
#                                         # (signal, edge, signal-bench)
#
# How: signal-bench runs the relay for WARMUP+DURATION seconds; after the
# warmup, `perf stat` (tracepoints raw_syscalls:sys_enter,
# syscalls:sys_enter_futex, sched:sched_wakeup, context switches) watches
# each process for WINDOW seconds at once, and the edges' relayed counters
# (/metrics) are read just before and after it: their difference is the
# number of messages of the window. With TRACE=1 it then takes a 1 s Go
# execution trace of each server (/debug/pprof/trace) and counts the
# goroutines made runnable (unblocked) and created; with STRACE=1 also a
# per-system-call breakdown with `strace -c -f` over a short window (strace
# slows the process it watches several times over, so its totals are not
# the figure: its proportions are).
#
# Needs perf (apt-get install linux-perf) and root or
# kernel.perf_event_paranoid <= 1 for the tracepoints. Ports: BASE (WebSocket
# A, B = BASE+1, admin BASE+100, BASE+101), NATS_PORT. Bounded in time; stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-20} WARMUP=${WARMUP:-3} WINDOW=${WINDOW:-5} BASE=${BASE:-29090} NATS_PORT=${NATS_PORT:-24322}
TRACE=${TRACE:-1} STRACE=${STRACE:-0} URLS=${URLS:-ab}
DURATION=${DURATION:-$((WINDOW + 10 + (TRACE ? 4 : 0) + (STRACE ? 4 : 0)))}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  [ -n "${KEEP:-}" ] && cp -r "$tmp" "$KEEP"; rm -rf "$tmp"
}
trap cleanup EXIT
BIN=${BIN:-}
if [ -z "$BIN" ]; then
  BIN=$tmp/bin
  go build -o "$BIN/" ./cmd/signal ./cmd/edge ./cmd/signal-bench
fi
F=(-rate -1 -max-conns-per-ip -1 -log-level warn)
"$BIN/signal" -listen "127.0.0.1:$BASE" -nats-listen "127.0.0.1:$NATS_PORT" -data "$tmp/js" -id count-a \
  -admin "127.0.0.1:$((BASE + 100))" "${F[@]}" >"$tmp/signal.log" 2>&1 &
SIG=$!; pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$((BASE + 100))/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/edge" -listen "127.0.0.1:$((BASE + 1))" -nats "nats://127.0.0.1:$NATS_PORT" -id count-b \
  -admin "127.0.0.1:$((BASE + 101))" "${F[@]}" >"$tmp/edge.log" 2>&1 &
EDGE=$!; pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$((BASE + 101))/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
case $URLS in
ab) url="ws://127.0.0.1:$BASE/,ws://127.0.0.1:$((BASE + 1))/" ;;
a) url="ws://127.0.0.1:$BASE/" ;;
*) echo "count: URLS is ab or a" >&2; exit 2 ;;
esac
"$BIN/signal-bench" relay -url "$url" -pairs "$PAIRS" -warmup "$WARMUP" -duration "$DURATION" \
  >"$tmp/relay.json" 2>"$tmp/relay.err" &
TOOL=$!; pids+=($!)

# relayed: messages published by both edges so far (offers + answers).
relayed() {
  local n=0 p v
  for p in $((BASE + 100)) $((BASE + 101)); do
    [ "$URLS" = a ] && [ "$p" = $((BASE + 101)) ] && continue
    v=$(curl -fs "http://127.0.0.1:$p/metrics" | awk '/^signal_edge_messages_relayed_total/ {s += $2} END {printf "%d", s}')
    n=$((n + v))
  done
  echo "$n"
}
sleep "$WARMUP"
EV=raw_syscalls:sys_enter,sched:sched_wakeup,context-switches,task-clock
for c in read write readv writev pread64 pwrite64 recvfrom sendto recvmsg sendmsg epoll_pwait epoll_wait epoll_ctl \
  futex nanosleep clock_nanosleep sched_yield getsockopt setsockopt ioctl madvise mmap munmap tgkill getpid \
  rt_sigreturn fsync fdatasync accept4 close connect socket getrandom openat shutdown; do
  EV+=,syscalls:sys_enter_$c
done
# perf starts with its counters off (-D -1) and is switched on and off
# through a fifo, so that they count exactly while the messages are
# counted: opening every event on every thread takes perf a while.
perfs=()
for who in signal:$SIG edge:$EDGE tool:$TOOL; do
  w=${who%%:*}
  mkfifo "$tmp/ctl.$w" "$tmp/ack.$w"
  perf stat -D -1 --control "fifo:$tmp/ctl.$w,$tmp/ack.$w" -x, -e "$EV" -p "${who#*:}" -o "$tmp/perf.$w" &
  perfs+=($!)
  pids+=($!)
done
# perfctl CMD: CMD (enable, disable) to every perf, waiting for each ack.
perfctl() {
  local w
  for w in signal edge tool; do
    echo "$1" >"$tmp/ctl.$w"
    read -r _ <"$tmp/ack.$w"
  done
}
perfctl enable
m0=$(relayed)
sleep "$WINDOW"
m1=$(relayed)
perfctl disable
for p in "${perfs[@]}"; do kill -INT "$p"; done
for p in "${perfs[@]}"; do wait "$p" || true; done
msgs=$((m1 - m0))
waits=()
# wait_all: waits for the measuring jobs started since the last call.
wait_all() { for j in "${waits[@]}"; do wait "$j" || true; done; waits=(); }
echo "count: $msgs messages relayed in the ${WINDOW}s window ($((msgs / WINDOW))/s)" >&2

declare -A GOR
if [ "$TRACE" = 1 ]; then
  for who in signal:$((BASE + 100)) edge:$((BASE + 101)); do
    [ "$URLS" = a ] && [ "${who%%:*}" = edge ] && continue
    curl -fs -o "$tmp/trace.${who%%:*}" "http://127.0.0.1:${who#*:}/debug/pprof/trace?seconds=1" &
    waits+=($!)
  done
  t0=$(relayed)
  wait_all
  t1=$(relayed)
  tmsgs=$((t1 - t0))
  for who in signal edge; do
    [ -s "$tmp/trace.$who" ] || continue
    go tool trace -d=parsed "$tmp/trace.$who" >"$tmp/trace.$who.txt" 2>/dev/null || true
    # Goroutines made runnable from waiting, and goroutines created.
    GOR[${who}_unblock]=$(grep -c 'GoID=[0-9]* Waiting->Runnable' "$tmp/trace.$who.txt" || true)
    GOR[${who}_create]=$(grep -c 'GoID=[0-9]* NotExist->Runnable' "$tmp/trace.$who.txt" || true)
  done
fi
if [ "$STRACE" = 1 ]; then
  for who in signal:$SIG edge:$EDGE; do
    timeout -s INT 3 strace -c -f -p "${who#*:}" -o "$tmp/strace.${who%%:*}" >/dev/null 2>&1 &
    waits+=($!)
  done
  wait_all
fi
wait "$TOOL" || true

# ev FILE EVENT: the count of EVENT in a perf stat -x, file.
ev() { awk -F, -v e="$2" '$3 == e {print $1}' "$1"; }
per() { awk -v a="$1" -v m="$2" 'BEGIN { if (m > 0 && a != "") printf "%.2f", a / m; else print "-" }'; }
echo
echo "### deploy/count.sh: relay, $PAIRS pairs, closed loop, $([ "$URLS" = ab ] && echo "across two edges" || echo "one URL")"
echo
echo "$(uname -sr), $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ); $msgs messages in ${WINDOW}s ($((msgs / WINDOW))/s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| per relayed message | signal (NATS, registry, edge A) | edge B | load tool |"
echo "| --- | --- | --- | --- |"
row() { # label event
  local s=() who
  for who in signal edge tool; do s+=("$(per "$(ev "$tmp/perf.$who" "$2")" "$msgs")"); done
  echo "| $1 | ${s[0]} | ${s[1]} | ${s[2]} |"
}
row "system calls" raw_syscalls:sys_enter
row "futex calls" syscalls:sys_enter_futex
row "epoll_pwait (Go's netpoller, and the edge's poller)" syscalls:sys_enter_epoll_pwait
row "epoll_ctl" syscalls:sys_enter_epoll_ctl
row "thread wake-ups (sched_wakeup)" sched:sched_wakeup
row "context switches" context-switches
cpu=()
for who in signal edge tool; do cpu+=("$(awk -v a="$(ev "$tmp/perf.$who" task-clock)" -v m="$msgs" 'BEGIN { if (m > 0) printf "%.1f", a * 1000 / m; else print "-" }')"); done
echo "| CPU µs (task-clock) | ${cpu[0]} | ${cpu[1]} | ${cpu[2]} |"
if [ "$TRACE" = 1 ]; then
  echo "| goroutines unblocked (Go trace, 1 s, $tmsgs msgs) | $(per "${GOR[signal_unblock]:-}" "$tmsgs") | $(per "${GOR[edge_unblock]:-}" "$tmsgs") | |"
  echo "| goroutines created | $(per "${GOR[signal_create]:-}" "$tmsgs") | $(per "${GOR[edge_create]:-}" "$tmsgs") | |"
fi
echo
echo "System calls per relayed message, by call (at least 0.01):"
echo
for who in signal edge tool; do
  printf '%s:' "$who"
  awk -F, -v m="$msgs" '$3 ~ /^syscalls:sys_enter_/ && $1 + 0 > 0 { n = $1 / m; if (n >= 0.01) printf "%s %.2f\n", substr($3, 20), n }' "$tmp/perf.$who" |
    sort -k2 -rn | awk '{printf " %s %s", $1, $2} END {print ""}'
done
echo
grep -E "delivered|round trip " "$tmp/relay.err" >&2 || cat "$tmp/relay.err" >&2
if [ "$STRACE" = 1 ]; then
  for who in signal edge; do
    echo "strace -c -f, $who (3 s; proportions only):"
    head -20 "$tmp/strace.$who" 2>/dev/null || true
  done
fi
