#!/usr/bin/env bash
# Issue 17 item 5: the cost of reservations on the I/O path. iscsi-gateway (release, a null
# LUN, two event loops) under libiscsi's iscsi-perf (random 4 KiB reads, 32 in flight),
# alternately with no reservation and with a Write Exclusive reservation held by another
# host and 8 registrants (made with iscsi-ctl pr), and, when BASELINE_GATEWAY names an
# iscsi-gateway built without reservations (e.g. from the commit before them), that one
# too, $SECONDS_EACH s per run, the states interleaved $REPEATS times. Prints the median
# of each state (IOPS and the gateway's CPU per I/O) and the ratios. Goal: within 1%.
# Not for CI: it needs quiet cores (on shared ones, compare the CPU per I/O).
# Usage: [BASELINE_GATEWAY=path] scripts/bench-reservations.sh [seconds-each, default 5] [repeats, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-5}
REPEATS=${2:-5}
IQN=iqn.2026-12.io.iscsi-uring:bench-reservations

cargo build --release -q -p gateway --bin iscsi-gateway -p tools --bin iscsi-ctl
gateway=target/release/iscsi-gateway
ctl=target/release/iscsi-ctl
work=$(mktemp -d /tmp/iscsi-bench-reservations.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a gateway binary; prints "PID URL".
start() {
  local binary=$1 port
  port=$(free_port)
  RUST_LOG=warn "$binary" --portal "127.0.0.1:$port" --iqn "$IQN" --lun null:1G --threads 2 \
    >>"$work/gateway.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo "$pid iscsi://127.0.0.1:$port/$IQN/0"
}

cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Prints "IOPS CPU-us-per-IO" of one iscsi-perf run against URL $1 served by PID $2.
perf() {
  local out before after iops
  before=$(cpu_seconds "$2")
  out=$(timeout -s INT "$SECONDS_EACH" iscsi-perf -r -m 32 -b 8 "$1" 2>&1 || true)
  after=$(cpu_seconds "$2")
  iops=$(echo "$out" | tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}')
  [ -n "$iops" ] || { echo "iscsi-perf reported no IOPS: $out" >&2; exit 1; }
  awk -v i="$iops" -v a="$after" -v b="$before" -v s="$SECONDS_EACH" \
    'BEGIN { printf "%d %.3f\n", i, (a - b) * 1e6 / (i * s) }'
}

read -r ours url < <(start "$gateway")
pids+=("$ours")
base_pid="" base_url=""
if [ -n "${BASELINE_GATEWAY:-}" ]; then
  read -r base_pid base_url < <(start "$BASELINE_GATEWAY")
  pids+=("$base_pid")
fi

hold() {
  for n in $(seq 1 8); do
    "$ctl" --initiator-name "iqn.2026-12.io.iscsi-uring:host-$n" pr "$url" --register-ignore \
      --param-sark "$n" >/dev/null
  done
  "$ctl" --initiator-name iqn.2026-12.io.iscsi-uring:host-1 pr "$url" --reserve --param-rk 1 \
    --prout-type WE >/dev/null
}
drop() {
  "$ctl" --initiator-name iqn.2026-12.io.iscsi-uring:host-1 pr "$url" --clear --param-rk 1 >/dev/null
}

: >"$work/runs"
for r in $(seq 1 "$REPEATS"); do
  if [ -n "$base_pid" ]; then
    echo "base $(perf "$base_url" "$base_pid")" | tee -a "$work/runs" >&2
  fi
  echo "none $(perf "$url" "$ours")" | tee -a "$work/runs" >&2
  hold
  echo "held $(perf "$url" "$ours")" | tee -a "$work/runs" >&2
  drop
done

printf '\niscsi-perf: random 4 KiB reads, 32 in flight, null LUN, 2 event loops, %ss x %d per state, median\n' \
  "$SECONDS_EACH" "$REPEATS"
python3 - "$work/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    state, iops, cpu = line.split()
    runs.setdefault(state, []).append((int(iops), float(cpu)))
names = {"base": "gateway without reservations (baseline)",
         "none": "with reservations, none held",
         "held": "WE held by another, 8 registrants"}
med = {s: (statistics.median(i for i, _ in v), statistics.median(c for _, c in v)) for s, v in runs.items()}
print(f"| {'state':42} | {'IOPS':>9} | {'gateway CPU us/IO':>17} |")
print(f"|{'-' * 44}|{'-' * 11}|{'-' * 19}|")
for s in ("base", "none", "held"):
    if s in med:
        print(f"| {names[s]:42} | {med[s][0]:>9.0f} | {med[s][1]:>17.3f} |")
ref = "base" if "base" in med else "none"
print(f"held/{ref}: IOPS {med['held'][0] / med[ref][0]:.3f}, CPU per I/O {med['held'][1] / med[ref][1]:.3f} (goal: IOPS >= 0.99)")
if ref == "base":
    print(f"none/base: IOPS {med['none'][0] / med['base'][0]:.3f}, CPU per I/O {med['none'][1] / med['base'][1]:.3f}")
PY
