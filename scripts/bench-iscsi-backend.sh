#!/usr/bin/env bash
# Issue 19's `iscsi:` backend: a LUN on tgt through iscsi-gateway against the same LUN on
# tgt directly, 4 KiB random reads at 32 in flight, iscsi-bench (release) as the host, in
# rounds that alternate the two; prints IOPS, p50/p99 and the ratio gateway/direct per
# round and the median ratio, and the gateway's context switches per I/O (all its threads,
# voluntary and not: the cross-thread wake-ups a command costs, a count that does not depend
# on the machine's load as the IOPS do) and CPU time per I/O of the gateway and of tgtd (on
# a 2-core machine the gateway's run has four busy processes where the direct run has two,
# so the IOPS ratio is bounded by CPU: these say what each hop costs). tgt's LUN is a file on tmpfs (/dev/shm), so the far side's
# storage is not what is measured. Not for CI: noisy on a shared machine.
# Usage: scripts/bench-iscsi-backend.sh [ROUNDS=3] [SECONDS_EACH=5] [IODEPTH=32]
# PERF_DIR=DIR: each gateway run also under `perf stat` (system calls, context switches,
# task clock of the gateway and of tgtd, per I/O in DIR/per-io-ROUND.txt; perf's window is
# SECONDS_EACH from the start of the run, so the figures are approximate) and, with
# PERF_RECORD=1, in round 1 `perf record -g` of the gateway (DIR/gateway.perf.data), which
# slows that round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_EACH=${2:-5}
IODEPTH=${3:-32}

cargo build --release -q -p gateway -p bench
# GATEWAY_BIN runs another build of the gateway (an older commit's, for a before/after).
gateway=${GATEWAY_BIN:-target/release/iscsi-gateway}
bench=target/release/iscsi-bench

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d /tmp/bench-iscsi-backend.XXXXXX)
lun_file=$(mktemp /dev/shm/bench-iscsi-backend.XXXXXX)
export TGT_IPC_SOCKET="$work/tgtd.socket"
control=1
tgt_iqn=iqn.2026-12.io.iscsi-uring:far-array
our_iqn=iqn.2026-12.io.iscsi-uring:gateway
tgtd_pid=""
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then
    kill "$gateway_pid" 2>/dev/null || true
    sleep 0.3
    kill -9 "$gateway_pid" 2>/dev/null || true
  fi
  if [ -n "$tgtd_pid" ]; then
    tgtadm -C "$control" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    tgtadm -C "$control" --op delete --mode system >/dev/null 2>&1 || true
    sleep 0.2
    kill -9 "$tgtd_pid" 2>/dev/null || true
  fi
  rm -rf "$work" "$lun_file"
}
trap cleanup EXIT

truncate -s 1G "$lun_file"
tgt_port=$(free_port)
tgtd -f -C "$control" --iscsi "portal=127.0.0.1:$tgt_port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 50); do
  tgtadm -C "$control" --op show --mode system >/dev/null 2>&1 && break
  sleep 0.1
done
tgtadm -C "$control" --lld iscsi --op new --mode target --tid 1 -T "$tgt_iqn"
tgtadm -C "$control" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$lun_file"
tgtadm -C "$control" --lld iscsi --op bind --mode target --tid 1 -I ALL
far_url="iscsi://127.0.0.1:$tgt_port/$tgt_iqn/1"

our_port=$(free_port)
RUST_LOG=warn "$gateway" --portal "127.0.0.1:$our_port" --iqn "$our_iqn" --lun "$far_url" \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$our_port") 2>/dev/null && break
  sleep 0.1
done
our_url="iscsi://127.0.0.1:$our_port/$our_iqn/0"

# The gateway's context switches so far, summed over its threads.
gateway_switches() {
  cat /proc/"$gateway_pid"/task/*/status 2>/dev/null \
    | awk '/ctxt_switches/ {n += $2} END {print n + 0}'
}

# CPU time (user + system, clock ticks) of a process so far, all its threads.
cpu_ticks() {
  awk '{print $14 + $15}' /proc/"$1"/stat 2>/dev/null || echo 0
}
ticks_per_second=$(getconf CLK_TCK)

# One run: prints "IOPS P50_US P99_US SWITCHES_PER_IO GATEWAY_CPU_US_PER_IO TGTD_CPU_US_PER_IO"
# (switches and CPU of the gateway: 0 direct).
run() {
  local before after gw_before gw_after tgt_before tgt_after
  before=$(gateway_switches)
  gw_before=$(cpu_ticks "$gateway_pid")
  tgt_before=$(cpu_ticks "$tgtd_pid")
  local perf_pids=()
  if [ -n "${PERF_DIR:-}" ] && [ "$1" = "$our_url" ]; then
    mkdir -p "$PERF_DIR"
    perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$gateway_pid" \
      -o "$PERF_DIR/stat-gateway-$round.txt" -- sleep "$SECONDS_EACH" 2>/dev/null &
    perf_pids+=($!)
    perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$tgtd_pid" \
      -o "$PERF_DIR/stat-tgtd-$round.txt" -- sleep "$SECONDS_EACH" 2>/dev/null &
    perf_pids+=($!)
    if [ "$round" = 1 ] && [ -n "${PERF_RECORD:-}" ]; then
      perf record -g -q -p "$gateway_pid" -o "$PERF_DIR/gateway.perf.data" \
        -- sleep "$SECONDS_EACH" >/dev/null 2>&1 &
      perf_pids+=($!)
    fi
  fi
  "$bench" --name=r --rw=randread --bs=4k --iodepth="$IODEPTH" --size=1G --time_based \
    --runtime="$SECONDS_EACH" --output-format=json --filename="$1" >"$work/out.json"
  for pid in "${perf_pids[@]}"; do wait "$pid" || true; done
  if [ ${#perf_pids[@]} -gt 0 ]; then
    python3 - "$work/out.json" "$PERF_DIR/stat-gateway-$round.txt" "$PERF_DIR/stat-tgtd-$round.txt" \
      >"$PERF_DIR/per-io-$round.txt" <<'PY'
import json, re, sys
ios = max(json.load(open(sys.argv[1]))["jobs"][0]["read"]["total_ios"], 1)
for name, path in (("gateway", sys.argv[2]), ("tgtd", sys.argv[3])):
    counts = {}
    for line in open(path):
        m = re.match(r"\s*([\d,.]+)\s+(?:msec\s+)?(\S+)", line)
        if m and m.group(2) in ("raw_syscalls:sys_enter", "context-switches", "task-clock"):
            counts[m.group(2)] = float(m.group(1).replace(",", ""))
    print(f"{name}: syscalls/io {counts.get('raw_syscalls:sys_enter', 0) / ios:.2f} "
          f"cswitch/io {counts.get('context-switches', 0) / ios:.2f} "
          f"cpu_us/io {counts.get('task-clock', 0) * 1000 / ios:.2f}")
PY
  fi
  after=$(gateway_switches)
  gw_after=$(cpu_ticks "$gateway_pid")
  tgt_after=$(cpu_ticks "$tgtd_pid")
  python3 - "$work/out.json" "$((after - before))" "$((gw_after - gw_before))" \
    "$((tgt_after - tgt_before))" "$ticks_per_second" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
read = job["read"]
assert job.get("error", 0) == 0, job
pct = read["clat_ns"]["percentile"]
ios = max(read["total_ios"], 1)
switches = int(sys.argv[2]) / ios
us_per_tick = 1e6 / int(sys.argv[5])
gw_cpu, tgt_cpu = (int(t) * us_per_tick / ios for t in sys.argv[3:5])
print(f'{read["iops"]:.0f} {pct["50.000000"] / 1000:.0f} {pct["99.000000"] / 1000:.0f} {switches:.2f} '
      f'{gw_cpu:.1f} {tgt_cpu:.1f}')
PY
}

echo "4 KiB random read, ${IODEPTH} in flight, ${SECONDS_EACH} s each (noisy: shared machine)"
printf '%-6s %12s %8s %8s %10s %14s %8s %8s %10s %10s %10s %8s\n' round direct_iops p50_us p99_us tgt_us/io \
  gateway_iops p50_us p99_us cswitch/io gw_us/io tgt_us/io ratio
ratios=()
switch_counts=()
gateway_cpu=()
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    read -r d_iops d_p50 d_p99 _ _ d_tgt < <(run "$far_url")
    read -r g_iops g_p50 g_p99 g_cs g_cpu g_tgt < <(run "$our_url")
  else
    read -r g_iops g_p50 g_p99 g_cs g_cpu g_tgt < <(run "$our_url")
    read -r d_iops d_p50 d_p99 _ _ d_tgt < <(run "$far_url")
  fi
  ratio=$(python3 -c "print(f'{$g_iops / $d_iops:.2f}')")
  ratios+=("$ratio")
  switch_counts+=("$g_cs")
  gateway_cpu+=("$g_cpu")
  printf '%-6s %12s %8s %8s %10s %14s %8s %8s %10s %10s %10s %8s\n' "$round" "$d_iops" "$d_p50" "$d_p99" "$d_tgt" \
    "$g_iops" "$g_p50" "$g_p99" "$g_cs" "$g_cpu" "$g_tgt" "$ratio"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median ratio gateway/direct: $(median "${ratios[@]}"); median gateway context switches per I/O: $(median "${switch_counts[@]}"); median gateway CPU per I/O: $(median "${gateway_cpu[@]}") us"
