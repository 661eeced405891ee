#!/usr/bin/env bash
# Issue 11's goals, measured: iscsi-gateway (release) under each hostile client of
# tests/src/hostile (run through the iscsi-hostile binary, the same code the CI tests run),
# with a healthy session beside it measured by iscsi-bench (4 KiB random reads, one in
# flight, $SECONDS_EACH s) and logins timed through iscsi-ctl. Prints one table:
#   - every attack: the gateway still runs; its peak resident memory (VmHWM) and the
#     largest RSS sampled during the attack stay within 64 MiB + 1 MiB per session; the
#     healthy read p99 under attack is within 2x of its unloaded value;
#   - 10,000 idle connections (from 127.0.0.2): a legitimate login (from 127.0.0.1) in
#     < 100 ms, gateway CPU per I/O (utime + stime over the healthy run's I/Os) within 10%
#     of none;
#   - a stuck LUN (a file on a bindfs mount whose daemon is stopped with SIGSTOP, a WRITE
#     sent to it): the other LUN's IOPS at >= 90% of unloaded.
# The gateway runs one event loop (--threads 1): attacker and healthy session share it.
# An attack stops early once the gateway is resident over $CEILING_MIB (it has failed by
# then), so a gateway without bounds cannot eat the machine.
# Not for CI: it needs quiet cores to mean anything, and runs about 2 minutes.
# Usage: scripts/bench-hostile.sh [seconds-each, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-5}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
SLOWLORIS_CONNECTIONS=${SLOWLORIS_CONNECTIONS:-3000}
CEILING_MIB=${CEILING_MIB:-1024}
# Seconds the gateway gives a backend before it answers the command itself (ABORTED
# COMMAND): short, so the stuck WRITE is answered within the stuck LUN's row.
BACKEND_TIMEOUT=${BACKEND_TIMEOUT:-2}
BASE_BUDGET_MIB=64
SESSION_BUDGET_MIB=1
IQN=iqn.2026-11.io.iscsi-uring:bench-hostile

for tool in bindfs python3; do
  command -v "$tool" >/dev/null || { echo "bench-hostile: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done

cargo build --release -q -p gateway --bin iscsi-gateway -p bench --bin iscsi-bench \
  -p tools --bin iscsi-ctl -p system-tests --bin iscsi-hostile
gateway=target/release/iscsi-gateway
bench=target/release/iscsi-bench
ctl=target/release/iscsi-ctl
hostile=target/release/iscsi-hostile

work=$(mktemp -d /tmp/iscsi-bench-hostile.XXXXXX)
gateway_pid=""
attack_pid=""
fuse_pid=""
cleanup() {
  [ -n "$attack_pid" ] && kill "$attack_pid" 2>/dev/null || true
  [ -n "$fuse_pid" ] && kill -CONT "$fuse_pid" 2>/dev/null || true
  stop_gateway
  if [ -n "$fuse_pid" ]; then
    umount -l "$work/mnt" 2>/dev/null || true
    kill "$fuse_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_gateway LUN... : sets $port and $gateway_pid.
start_gateway() {
  port=$(free_port)
  local args=()
  for lun in "$@"; do args+=(--lun "$lun"); done
  RUST_LOG=warn "$gateway" --portal "127.0.0.1:$port" --iqn "$IQN" --threads 1 "${args[@]}" \
    --backend-timeout "$BACKEND_TIMEOUT" \
    >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-hostile: the gateway did not listen; log:" >&2
  tail -20 "$work/gateway.log" >&2
  exit 1
}

stop_gateway() {
  [ -n "$gateway_pid" ] || return 0
  kill "$gateway_pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$gateway_pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}

alive() { kill -0 "$gateway_pid" 2>/dev/null && echo yes || echo no; }

# Peak resident memory (VmHWM) in MiB, or "-" once the process is gone.
peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%d", $2 / 1024; found = 1 } END { if (!found) print "-" }' \
    "/proc/$gateway_pid/status" 2>/dev/null || echo "-"
}

cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# healthy LUN: iscsi-bench QD1 4 KiB random reads; prints "p99_us iops total_ios", or
# "- 0 0" when the run failed (its output is kept in the work directory).
healthy() {
  local lun=$1 out="$work/bench-$RANDOM.json"
  timeout $((SECONDS_EACH + 30)) "$bench" --name=healthy \
    "--filename=iscsi://127.0.0.1:$port/$IQN/$lun" --rw=randread --bs=4k --iodepth=1 \
    --size=32m --runtime="$SECONDS_EACH" --time_based --output-format=json \
    >"$out" 2>"$out.err" || true
  python3 - "$out" <<'EOF'
import json, sys
try:
    read = json.load(open(sys.argv[1]))["jobs"][0]["read"]
    p99 = read["clat_ns"]["percentile"]["99.000000"] / 1000
    print(f"{p99:.0f} {read['iops']:.0f} {read['total_ios']}")
except Exception:
    print("- 0 0")
EOF
}

# Time of one legitimate login through iscsi-ctl, in ms, or "fail".
login_ms() {
  local start end
  start=$(date +%s%N)
  if timeout 15 "$ctl" login "iscsi://127.0.0.1:$port/$IQN" >"$work/login.out" 2>&1; then
    end=$(date +%s%N)
    awk -v ns=$((end - start)) 'BEGIN { printf "%.1f", ns / 1e6 }'
  else
    echo fail
  fi
}

# attack NAME ARGS...: iscsi-hostile in the background, its JSON lines in $work/NAME.out.
attack() {
  local name=$1; shift
  "$hostile" "$@" --portal "127.0.0.1:$port" --watch-pid "$gateway_pid" \
    --max-rss-mib "$CEILING_MIB" >"$work/$name.out" 2>"$work/$name.err" &
  attack_pid=$!
}

# Waits until the attack announced its connections open (slot attacks) or ended.
wait_open() {
  for _ in $(seq 1200); do
    grep -q '"event":"open"' "$work/$1.out" 2>/dev/null && return 0
    kill -0 "$attack_pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

finish_attack() {
  wait "$attack_pid" 2>/dev/null || true
  attack_pid=""
}

# A field of the attack's final JSON line.
attack_field() {
  python3 - "$work/$1.out" "$2" <<'EOF'
import json, sys
done = [json.loads(l) for l in open(sys.argv[1]) if '"event":"done"' in l]
print(done[-1].get(sys.argv[2], "-") if done else "-")
EOF
}

rows=()
# row NAME ALIVE PEAK SAMPLED BUDGET P99_UNLOADED P99_ATTACK OTHER OTHER_OK
row() {
  local ratio verdict
  ratio=$(awk -v a="$7" -v u="$6" 'BEGIN { if (a == "-" || u == "-" || u == 0) print "-"; else printf "%.2f", a / u }')
  verdict=PASS
  [ "$2" = yes ] || verdict=FAIL
  awk -v p="$3" -v s="$4" -v b="$5" 'BEGIN { exit !((p != "-" && p + 0 <= b) && (s == "-" || s + 0 <= b)) }' || verdict=FAIL
  awk -v r="$ratio" 'BEGIN { exit !(r != "-" && r + 0 <= 2.0) }' || verdict=FAIL
  [ "$9" = ok ] || verdict=FAIL
  rows+=("$(printf '| %-30s | %-5s | %8s | %11s | %6s | %9s | %9s | %5s | %-44s | %-4s |' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$ratio" "$8" "$verdict")")
}

budget=$((BASE_BUDGET_MIB + 2 * SESSION_BUDGET_MIB))

rss_mib() {
  awk '/^VmRSS:/ { printf "%d", $2 / 1024; found = 1 } END { if (!found) print "-" }' \
    "/proc/$gateway_pid/status" 2>/dev/null || echo "-"
}

# One attack beside the healthy session: NAME, KIND (flood: runs a fixed time; slots:
# opens connections, then holds them until killed), then iscsi-hostile's arguments.
attack_row() {
  local name=$1 kind=$2; shift 2
  start_gateway ram:64M
  read -r p99_unloaded _ _ < <(healthy 0)
  if [ "$kind" = slots ]; then
    attack "$name" "$@" --seconds $((SECONDS_EACH + 90))
    wait_open "$name"
  else
    attack "$name" "$@" --seconds $((SECONDS_EACH + 2))
    sleep 0.5
  fi
  read -r p99_attack _ _ < <(healthy 0)
  local during sampled over
  during=$(rss_mib)
  if [ "$kind" = slots ]; then
    sleep 1
    kill "$attack_pid" 2>/dev/null || true
  fi
  finish_attack
  sampled=$(attack_field "$name" watched_max_rss_kib)
  over=$(attack_field "$name" watched_over_ceiling)
  if [ "$sampled" = "-" ]; then sampled=$during; else sampled=$((sampled / 1024)); fi
  [ "$over" = True ] && sampled=">$CEILING_MIB(stop)"
  local other
  if [ "$kind" = slots ]; then
    other="opened $(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"open\"" in l][-1]["connections_opened"])' "$work/$name.out" 2>/dev/null || echo "?")"
  else
    # An attack stopped at the memory ceiling left the healthy run's end unloaded: say when.
    other="sent $(attack_field "$name" pdus_sent) PDUs in $(attack_field "$name" elapsed_s | cut -c1-4) s; closed $(attack_field "$name" connections_closed_by_target)"
  fi
  row "$name" "$(alive)" "$(peak_rss_mib)" "$sampled" "$budget" "$p99_unloaded" "$p99_attack" "$other" ok
  stop_gateway
}

attack_row "NOP flood, discovery, 256K" flood nop-flood --source 127.0.0.4 --ping-kib 256
attack_row "NOP flood, logged in, 256K" flood nop-flood --source 127.0.0.4 --ping-kib 256 \
  --target "$IQN"
attack_row "slow reader, 1M READs" flood slow-reader --source 127.0.0.4 --target "$IQN" --lun 0 \
  --read-kib 1024
attack_row "login slowloris, $SLOWLORIS_CONNECTIONS conns" slots slowloris --source 127.0.0.3 \
  --target "$IQN" --connections "$SLOWLORIS_CONNECTIONS" --interval-ms 2000

# 10,000 idle connections: login time and CPU per I/O, without and with. The goal of the
# issue is about CPU and logins; the memory column still shows the peak. CPU per I/O at one
# in flight swings by more than the goal's 10% from one 5 s run to the next on a shared
# machine, so each side is the best of two runs (without: one before the flood, one after
# it; with: two during it), as scripts/bench.sh takes each tool's best of its rounds.
measure_cpu() {
  local before p99 ios
  before=$(cpu_seconds "$gateway_pid")
  read -r p99 _ ios < <(healthy 0)
  awk -v a="$(cpu_seconds "$gateway_pid")" -v b="$before" -v n="$ios" -v p="$p99" \
    'BEGIN { if (n > 0) printf "%s %.2f\n", p, (a - b) * 1e6 / n; else print p, "-" }'
}
best_of() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-") print b; else if (b == "-") print a; else print (a + 0 < b + 0 ? a : b) }'
}
start_gateway ram:64M
login_none=$(login_ms)
read -r p99_unloaded cpu_none_1 < <(measure_cpu)
attack idle idle-flood --source 127.0.0.2 --connections "$IDLE_CONNECTIONS" --seconds $((SECONDS_EACH + 60))
wait_open idle
opened=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"open\"" in l][-1]["connections_opened"])' "$work/idle.out" 2>/dev/null || echo "?")
login_idle=$(login_ms)
read -r p99_idle cpu_idle_1 < <(measure_cpu)
read -r _ cpu_idle_2 < <(measure_cpu)
peak=$(peak_rss_mib)
idle_alive=$(alive)
kill "$attack_pid" 2>/dev/null || true
finish_attack
read -r _ cpu_none_2 < <(measure_cpu)
cpu_none=$(best_of "$cpu_none_1" "$cpu_none_2")
cpu_idle=$(best_of "$cpu_idle_1" "$cpu_idle_2")
cpu_ratio=$(awk -v i="$cpu_idle" -v n="$cpu_none" 'BEGIN { if (i == "-" || n == "-" || n == 0) print "-"; else printf "%.2f", i / n }')
idle_ok=$(awk -v l="$login_idle" -v r="$cpu_ratio" 'BEGIN { print (l != "fail" && l + 0 < 100 && r != "-" && r + 0 <= 1.10) ? "ok" : "no" }')
row "idle flood, $opened/$IDLE_CONNECTIONS conns" "$idle_alive" "$peak" "-" "$budget" "$p99_unloaded" "$p99_idle" \
  "login ${login_none}->${login_idle} ms; us/IO ${cpu_none}->${cpu_idle} (${cpu_ratio}x)" "$idle_ok"
stop_gateway

# A stuck LUN beside a healthy one on the same event loop.
mkdir -p "$work/backing" "$work/mnt"
truncate -s 64M "$work/backing/lun.img"
bindfs -f "$work/backing" "$work/mnt" >"$work/bindfs.log" 2>&1 &
fuse_pid=$!
for _ in $(seq 100); do [ -e "$work/mnt/lun.img" ] && break; sleep 0.1; done
start_gateway ram:64M "file:$work/mnt/lun.img"
read -r p99_unloaded iops_unloaded _ < <(healthy 0)
kill -STOP "$fuse_pid"
attack stuck stuck-write --source 127.0.0.1 --target "$IQN" --lun 1 --seconds $((SECONDS_EACH + 10))
sleep 1
read -r p99_stuck iops_stuck _ < <(healthy 0)
stuck_alive=$(alive)
kill -CONT "$fuse_pid"
finish_attack
# The unloaded figure is taken before and after the hang and averaged: QD1 IOPS on a shared
# machine drift by more than the goal's 10% between two runs.
read -r _ iops_after _ < <(healthy 0)
iops_unloaded=$(awk -v a="$iops_unloaded" -v b="$iops_after" 'BEGIN { printf "%.0f", (a + b) / 2 }')
iops_ratio=$(awk -v s="$iops_stuck" -v u="$iops_unloaded" 'BEGIN { if (u == 0) print "-"; else printf "%.2f", s / u }')
stuck_ok=$(awk -v r="$iops_ratio" 'BEGIN { print (r != "-" && r + 0 >= 0.9) ? "ok" : "no" }')
row "stuck LUN 1 (stopped FUSE)" "$stuck_alive" "$(peak_rss_mib)" "-" "$budget" "$p99_unloaded" "$p99_stuck" \
  "LUN 0 IOPS ${iops_unloaded}->${iops_stuck} (${iops_ratio}x); WRITE: $(attack_field stuck first_error | cut -c1-28)" "$stuck_ok"
stop_gateway
umount -l "$work/mnt" 2>/dev/null || true
kill "$fuse_pid" 2>/dev/null || true
fuse_pid=""

printf '\niscsi-gateway under hostile clients: release build, --threads 1, ram LUN, loopback; healthy\n'
printf 'session: iscsi-bench randread 4k QD1 %ss. Goals: alive; RSS <= %d MiB + %d MiB/session;\n' \
  "$SECONDS_EACH" "$BASE_BUDGET_MIB" "$SESSION_BUDGET_MIB"
printf 'p99 ratio <= 2; idle: login < 100 ms, CPU/IO <= 1.10x; stuck: other LUN IOPS >= 0.9x.\n'
printf '| %-30s | %-5s | %8s | %11s | %6s | %9s | %9s | %5s | %-44s | %-4s |\n' \
  attack alive "peak MiB" "sampled MiB" budget "p99 0 us" "p99 A us" ratio other verdict
printf '|%s|\n' "$(printf -- '-%.0s' $(seq 170))"
printf '%s\n' "${rows[@]}"
