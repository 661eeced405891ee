#!/usr/bin/env bash
# Where the gateway's time goes for reads spread over bound volumes (issue 18), beside the
# same reads on one plain LUN: a release iscsi-gateway with one pool, an endpoint at LUN 0
# and a plain pool volume at LUN 1, $VOLUMES volumes bound for one host (batches of 1,000),
# then 4 KiB random reads at 32 in flight for $SECONDS_IO s with iscsi-bench, spread over
# them and on the plain LUN, each under `perf record` (cpu-clock: this VM has no hardware
# counters, so no cache-miss counts) attached to the gateway. Prints per run the IOPS,
# the gateway's CPU time per I/O and its top functions (self time), and keeps the
# profiles in $OUT (default target/profile-endpoints). The machine is shared: noisy.
# GATEWAY=, CTL=, BENCH= run other builds.
# Usage: [VOLUMES=1000] [SECONDS_IO=5] [OUT=dir] scripts/profile-endpoints.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VOLUMES=${VOLUMES:-1000}
SECONDS_IO=${SECONDS_IO:-5}
OUT=${OUT:-$PWD/target/profile-endpoints}
TARGET=iqn.2026-12.bench:profile
HOST=iqn.2026-12.bench:esx-a

if [ -z "${GATEWAY:-}" ]; then
  cargo build --release -q -p gateway -p tools -p bench
fi
gateway=$(realpath "${GATEWAY:-target/release/iscsi-gateway}")
bench=$(realpath "${BENCH:-target/release/iscsi-bench}")
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }

mkdir -p "$OUT"
work=$(mktemp -d "$OUT/run.XXXXXX")
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  rm -f "$work/pool.img"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$gateway" pool create "$work/pool.img" 4G >/dev/null
"$gateway" --portal "127.0.0.1:$port" --threads 2 --control-socket "$work/control.sock" \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 200); do
  grep -q "target ready" "$work/gateway.log" 2>/dev/null && break
  sleep 0.05
done
grep -q "target ready" "$work/gateway.log" || { cat "$work/gateway.log" >&2; exit 1; }

python3 - "$work/control.sock" "$work/pool.img" "$VOLUMES" "$TARGET" "$HOST" <<'EOF'
import json, socket, sys
path, pool, total, target, host = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
f = s.makefile("rwb")
n = 0
def call(method, params):
    global n
    n += 1
    f.write((json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}) + "\n").encode())
    f.flush()
    answer = json.loads(f.readline())
    if "error" in answer:
        sys.exit(f"{method}: {answer['error']}")
    return answer["result"]
for i in range(total):
    call("volume_create", {"pool": pool, "name": f"v{i}", "size": "64M"})
call("volume_create", {"pool": pool, "name": "plain", "size": "64M"})
call("target_create", {"name": target, "luns": [
    {"lun": 0, "backend": "endpoint"},
    {"lun": 1, "backend": f"pool:{pool},volume=plain"}]})
for start in range(0, total, 1000):
    call("bind", {"target": target, "endpoint": 0, "host": host, "pool": pool,
                  "volumes": [f"v{i}" for i in range(start, min(total, start + 1000))]})
EOF

common=(--ioengine=iscsi "--initiator_name=$HOST" --rw=randread --bs=4k --iodepth=32
  "--runtime=$SECONDS_IO" --time_based=1 --output-format=json)
spread_list=$(for i in $(seq 1 "$VOLUMES"); do
  printf 'iscsi://127.0.0.1:%s/%s/0:%s\n' "$port" "$TARGET" "$i"
done | paste -sd: -)
gateway_ticks() { awk '{ print $14 + $15 }' "/proc/$gateway_pid/stat"; }

profile() { # profile NAME ARGS...
  local name=$1 before after
  shift
  before=$(gateway_ticks)
  perf record -q -e cpu-clock -F 2000 -g -p "$gateway_pid" -o "$work/$name.perf" \
    -- sleep "$((SECONDS_IO + 1))" 2>/dev/null &
  local perf_pid=$!
  "$bench" "${common[@]}" "$@" >"$work/$name.json"
  wait "$perf_pid" || true
  after=$(gateway_ticks)
  python3 - "$work/$name.json" "$((after - before))" "$(getconf CLK_TCK)" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]["read"]
cpu_us = int(sys.argv[2]) * 1e6 / int(sys.argv[3])
print("%s: %.0f IOPS, p99 %.0f us, gateway CPU %.2f us per I/O" % (
    sys.argv[4], d["iops"], d["clat_ns"]["percentile"]["99.000000"] / 1000,
    cpu_us / max(1, d["total_ios"])))
PY
  perf report -i "$work/$name.perf" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E "^ +[0-9]" | head -"${TOP:-25}" | cut -c1-140 || true
  echo
}

profile spread --name=spread --file_service_type=random "--filename=$spread_list"
profile plain --name=plain "--filename=iscsi://127.0.0.1:$port/$TARGET/1"
echo "profiles: $work/spread.perf $work/plain.perf (perf report -i ...)"
