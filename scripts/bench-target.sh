#!/usr/bin/env bash
# Throughput of our target (iscsi-gateway) against tgt's tgtd, both with a null LUN (reads
# return zeros, writes are dropped, so only the iSCSI path is measured), driven the same way
# by libiscsi's iscsi-perf: random 4 KiB reads, 32 in flight, one connection, about
# $SECONDS_EACH seconds each. Prints both IOPS figures and the ratio ours/tgt.
# Not for CI: it needs quiet cores to mean anything.
# Usage: scripts/bench-target.sh [seconds-each, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-5}
BLOCKS_PER_IO=8   # 8 x 512 B = 4 KiB
IN_FLIGHT=32

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cargo build --release -q -p gateway
gateway=target/release/iscsi-gateway

work=$(mktemp -d /tmp/iscsi-bench.XXXXXX)
# tgtd and tgtadm meet on a Unix socket named $TGT_IPC_SOCKET.<control>: ours is private so
# a system tgtd (or a test's) is never touched.
export TGT_IPC_SOCKET="$work/tgtd.socket"
control=1
tgt_iqn=iqn.2026-11.io.iscsi-uring:bench-tgt
our_iqn=iqn.2026-11.io.iscsi-uring:bench-gateway
tgtd_pid=""
gateway_pid=""
cleanup() {
  if [ -n "$tgtd_pid" ]; then
    # tgtd ignores SIGTERM: it leaves when its targets and then the system are deleted.
    tgtadm -C "$control" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    tgtadm -C "$control" --op delete --mode system >/dev/null 2>&1 || true
    sleep 0.2
    kill -9 "$tgtd_pid" 2>/dev/null || true
  fi
  if [ -n "$gateway_pid" ]; then
    kill "$gateway_pid" 2>/dev/null || true
    sleep 0.2
    kill -9 "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# tgt with a null backing store (its size is fixed by tgt; the path is only a name).
tgt_port=$(free_port)
tgtd -f -C "$control" --iscsi "portal=127.0.0.1:$tgt_port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 50); do
  tgtadm -C "$control" --op show --mode system >/dev/null 2>&1 && break
  sleep 0.1
done
tgtadm -C "$control" --lld iscsi --op new --mode target --tid 1 -T "$tgt_iqn"
tgtadm -C "$control" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 \
  --bstype null -b /dev/null-bench
tgtadm -C "$control" --lld iscsi --op bind --mode target --tid 1 -I ALL

# Ours, same kind of LUN.
our_port=$(free_port)
RUST_LOG=warn "$gateway" --portal "127.0.0.1:$our_port" --iqn "$our_iqn" --lun null:1G \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$our_port") 2>/dev/null && break
  sleep 0.1
done

# CPU seconds (user + system, all threads) a process has used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Runs iscsi-perf for SECONDS_EACH seconds (it runs until interrupted) against the target
# process $2 and prints the last "iops average" it reported and the CPU seconds the target
# used meanwhile. iscsi-perf is one libiscsi thread: when it saturates its core, IOPS say
# more about the client than the target, and the target's CPU per I/O is the fairer figure.
perf() {
  local url=$1 pid=$2 out before after iops
  before=$(cpu_seconds "$pid")
  out=$(timeout -s INT "$SECONDS_EACH" iscsi-perf -r -m "$IN_FLIGHT" -b "$BLOCKS_PER_IO" "$url" 2>&1 || true)
  after=$(cpu_seconds "$pid")
  echo "$out" >>"$work/perf.log"
  iops=$(echo "$out" | tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}')
  echo "$iops $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.3f", a - b }')"
}

read -r tgt_iops tgt_cpu < <(perf "iscsi://127.0.0.1:$tgt_port/$tgt_iqn/1" "$tgtd_pid")
read -r our_iops our_cpu < <(perf "iscsi://127.0.0.1:$our_port/$our_iqn/0" "$gateway_pid")
if [ -z "$tgt_iops" ] || [ -z "$our_iops" ]; then
  echo "iscsi-perf reported no IOPS; its output:" >&2
  cat "$work/perf.log" >&2
  exit 1
fi

per_io() { awk -v cpu="$1" -v iops="$2" -v s="$SECONDS_EACH" 'BEGIN { printf "%.1f", cpu * 1e6 / (iops * s) }'; }
printf '\niscsi-perf: random reads, %d KiB, %d in flight, %ss each, null LUNs, loopback\n' \
  $((BLOCKS_PER_IO / 2)) "$IN_FLIGHT" "$SECONDS_EACH"
printf '| target        | IOPS     | target CPU s | target CPU us/IO |\n'
printf '|---------------|----------|--------------|------------------|\n'
printf '| tgt (tgtd)    | %8d | %12s | %16s |\n' "$tgt_iops" "$tgt_cpu" "$(per_io "$tgt_cpu" "$tgt_iops")"
printf '| iscsi-gateway | %8d | %12s | %16s |\n' "$our_iops" "$our_cpu" "$(per_io "$our_cpu" "$our_iops")"
awk -v ours="$our_iops" -v tgt="$tgt_iops" 'BEGIN { printf "IOPS ratio ours/tgt: %.2fx (goal >= 1.5x)\n", ours / tgt }'
