#!/usr/bin/env bash
# Issue 17 item 5: the cost of reservations on the I/O path. iscsi-gateway (release, a null
# LUN, two event loops) under libiscsi's iscsi-perf (random 4 KiB reads, 32 in flight),
# alternately with no reservation and with a Write Exclusive reservation held by another
# host and 8 registrants (made with iscsi-ctl pr), $SECONDS_EACH s per run, each state run
# $REPEATS times interleaved; the best run of each state is compared (IOPS and the gateway's
# CPU per I/O). Goal: within 1%. Not for CI: it needs quiet cores.
# Usage: scripts/bench-reservations.sh [seconds-each, default 5] [repeats, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-5}
REPEATS=${2:-3}
IQN=iqn.2026-12.io.iscsi-uring:bench-reservations

cargo build --release -q -p gateway --bin iscsi-gateway -p tools --bin iscsi-ctl
gateway=target/release/iscsi-gateway
ctl=target/release/iscsi-ctl
work=$(mktemp -d /tmp/iscsi-bench-reservations.XXXXXX)
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$gateway" --portal "127.0.0.1:$port" --iqn "$IQN" --lun null:1G --threads 2 \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
url="iscsi://127.0.0.1:$port/$IQN/0"

cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Prints "IOPS CPU-us-per-IO" of one iscsi-perf run.
perf() {
  local out before after iops
  before=$(cpu_seconds "$gateway_pid")
  out=$(timeout -s INT "$SECONDS_EACH" iscsi-perf -r -m 32 -b 8 "$url" 2>&1 || true)
  after=$(cpu_seconds "$gateway_pid")
  iops=$(echo "$out" | tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}')
  [ -n "$iops" ] || { echo "iscsi-perf reported no IOPS: $out" >&2; exit 1; }
  awk -v i="$iops" -v a="$after" -v b="$before" -v s="$SECONDS_EACH" \
    'BEGIN { printf "%d %.2f\n", i, (a - b) * 1e6 / (i * s) }'
}

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

best_none=(0 0) best_held=(0 0)
for r in $(seq 1 "$REPEATS"); do
  read -r iops cpu < <(perf)
  echo "run $r, no reservation: $iops IOPS, $cpu us/IO" >&2
  if [ "$iops" -gt "${best_none[0]}" ]; then best_none=("$iops" "$cpu"); fi
  hold
  read -r iops cpu < <(perf)
  echo "run $r, WE held by another, 8 registrants: $iops IOPS, $cpu us/IO" >&2
  if [ "$iops" -gt "${best_held[0]}" ]; then best_held=("$iops" "$cpu"); fi
  drop
done

printf '\niscsi-perf: random 4 KiB reads, 32 in flight, null LUN, %ss x %d per state, best run\n' "$SECONDS_EACH" "$REPEATS"
printf '| state                               | IOPS     | gateway CPU us/IO |\n'
printf '|-------------------------------------|----------|-------------------|\n'
printf '| no reservation                      | %8d | %17s |\n' "${best_none[0]}" "${best_none[1]}"
printf '| WE held by another, 8 registrants   | %8d | %17s |\n' "${best_held[0]}" "${best_held[1]}"
awk -v a="${best_held[0]}" -v b="${best_none[0]}" 'BEGIN { printf "IOPS held/none: %.3f (goal >= 0.99)\n", a / b }'
