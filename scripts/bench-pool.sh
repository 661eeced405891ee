#!/usr/bin/env bash
# The volume pool's goals (issue 16), measured with the tools users run (release builds):
#   1. EXTENDED COPY of 1 GiB inside a pool vs the same copy through the host (iscsi-ctl
#      copy, READ + WRITE through one session), and EXTENDED COPY on a RAM LUN (copied
#      inside the gateway, no remap) for reference.
#   2. A thin clone of a 1 TiB volume whose every chunk is mapped (iscsi-gateway pool clone).
#   3. 10,000 volumes of 1 TiB each (virtual) on one backing file: creation time and
#      metadata size (iscsi-gateway pool check).
#   4. 4 KiB random read and random write, 32 in flight (iscsi-bench), on a pool volume vs
#      a file LUN with the same caching (',buffered') and vs an O_DIRECT file LUN.
#   5. The kill -9 crash test: up to the rounds asked (default 1000) within CRASH_SECONDS
#      (default 900); the count that ran is printed.
# Not for CI: it needs quiet cores to mean anything.
# Usage: [CRASH_SECONDS=900] scripts/bench-pool.sh [seconds-each for 4,
#        default 10] [crash rounds, default 1000]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-10}
CRASH_ROUNDS=${2:-1000}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cargo build --release -q -p gateway -p tools -p bench
gateway=target/release/iscsi-gateway
ctl=target/release/iscsi-ctl
bench=target/release/iscsi-bench
iqn=iqn.2026-11.io.iscsi-uring:bench-pool

work=$(mktemp -d /var/tmp/bench-pool.XXXXXX)
gateway_pid=""
stop_gateway() {
  if [ -n "$gateway_pid" ]; then
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
    gateway_pid=""
  fi
}
cleanup() {
  stop_gateway
  rm -rf "$work"
}
trap cleanup EXIT

# start_gateway LUN-SPEC... : starts our gateway on a free port, sets $port.
start_gateway() {
  port=$(free_port)
  local args=()
  for lun in "$@"; do args+=(--lun "$lun"); done
  "$gateway" --portal "127.0.0.1:$port" --iqn "$iqn" "${args[@]}" >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "gateway did not start:"; tail "$work/gateway.log"; exit 1
}

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

GIB_BLOCKS=$((1 << 21))   # 1 GiB of 512-byte blocks

echo "== 1. EXTENDED COPY of 1 GiB vs a host copy"
"$gateway" pool create "$work/copy.img" 8G >/dev/null
start_gateway "pool:$work/copy.img,volume=v,size=6G" "ram:3G"
head -c 256M /dev/urandom >"$work/random.bin"
for i in 0 1 2 3; do
  "$ctl" write "iscsi://127.0.0.1:$port/$iqn/0" --lba $((i * (1 << 19))) --in "$work/random.bin" >/dev/null
  "$ctl" write "iscsi://127.0.0.1:$port/$iqn/1" --lba $((i * (1 << 19))) --in "$work/random.bin" >/dev/null
done
rm "$work/random.bin"
copy() { # lun dest-lba extra-args...
  local lun=$1 dest=$2; shift 2
  "$ctl" --json copy "iscsi://127.0.0.1:$port/$iqn/$lun" --source-lba 0 --dest-lba "$dest" \
    --blocks $GIB_BLOCKS "$@" | json_field '["seconds"]'
}
pool_xcopy=$(copy 0 $((2 * GIB_BLOCKS)))
pool_host=$(copy 0 $((3 * GIB_BLOCKS)) --through-host)
ram_xcopy=$(copy 1 $((2 * GIB_BLOCKS)))
ram_host=$(copy 1 $((2 * GIB_BLOCKS)) --through-host)
# The job file copies to places nothing shares yet (4 and 5 GiB): a remap onto chunks an
# earlier copy left would also time freeing them.
echo "  iscsi-bench, a job file with an rw=copy xcopy job beside a host job (each prefilled, verified):"
cat >"$work/copy.fio" <<EOF
[global]
filename=iscsi://127.0.0.1:$port/$iqn/0
size=1g
bs=1m
iodepth=8
rw=copy
[xcopy]
copy_method=xcopy
copy_dest=4g
[host]
copy_method=host
copy_dest=5g
EOF
"$bench" "$work/copy.fio" | sed 's/^/  /'
stop_gateway
printf "  pool: EXTENDED COPY %.3f s, host copy %.3f s: %.0fx\n" "$pool_xcopy" "$pool_host" \
  "$(python3 -c "print($pool_host / max($pool_xcopy, 1e-6))")"
printf "  RAM:  EXTENDED COPY %.3f s, host copy %.3f s: %.1fx\n" "$ram_xcopy" "$ram_host" \
  "$(python3 -c "print($ram_host / max($ram_xcopy, 1e-6))")"
"$gateway" pool check "$work/copy.img" | sed 's/^/  /'
rm -f "$work/copy.img"

echo "== 2. thin clone of a fully mapped 1 TiB volume"
"$gateway" pool create "$work/clone.img" 256G >/dev/null
start_gateway "pool:$work/clone.img,volume=base,size=1T"
head -c 1G /dev/urandom >"$work/random.bin"
"$ctl" write "iscsi://127.0.0.1:$port/$iqn/0" --lba 0 --in "$work/random.bin" >/dev/null
rm "$work/random.bin"
# Map every chunk: double the mapped prefix with EXTENDED COPY (remaps, no data moved).
mapped=$GIB_BLOCKS
while [ "$mapped" -lt $((1024 * GIB_BLOCKS)) ]; do
  "$ctl" copy "iscsi://127.0.0.1:$port/$iqn/0" --source-lba 0 --dest-lba "$mapped" \
    --blocks "$mapped" >/dev/null
  mapped=$((mapped * 2))
done
stop_gateway
"$gateway" pool list "$work/clone.img" | sed 's/^/  /'
"$gateway" pool clone "$work/clone.img" base snap | sed 's/^/  /'
"$gateway" pool check "$work/clone.img" | sed 's/^/  /'
rm -f "$work/clone.img"

echo "== 3. 10,000 volumes of 1 TiB (virtual) on one backing file"
"$gateway" pool create "$work/many.img" 64G >/dev/null
"$gateway" pool volume-create "$work/many.img" vm 1T --count 10000 | sed 's/^/  /'
"$gateway" pool check "$work/many.img" | sed 's/^/  /'
echo "  backing file: $(du -h --apparent-size "$work/many.img" | cut -f1) apparent, $(du -h "$work/many.img" | cut -f1) allocated"
rm -f "$work/many.img"

echo "== 4. 4 KiB random read and random write, 32 in flight, ${SECONDS_EACH}s each"
# Like for like: the pool volume and the 'buffered' file LUN both go through the page cache
# and are made durable by SYNCHRONIZE CACHE (none is sent here); the O_DIRECT file LUN (the
# default) is shown for reference. All three are written whole first, so no read hits a hole
# and every pool chunk is mapped.
"$gateway" pool create "$work/io.img" 4G >/dev/null
start_gateway "pool:$work/io.img,volume=v,size=1G" "file:$work/buffered.img:1G,buffered" \
  "file:$work/direct.img:1G"
for lun in 0 1 2; do
  "$bench" --name=fill "--filename=iscsi://127.0.0.1:$port/$iqn/$lun" --rw=write --bs=1m \
    --iodepth=8 --size=1g --output-format=json >/dev/null
done
rand() { # rw lun
  "$bench" --name="$1" "--filename=iscsi://127.0.0.1:$port/$iqn/$2" --rw="$1" --bs=4k \
    --iodepth=32 --size=1g --runtime="$SECONDS_EACH" --time_based --output-format=json \
    | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["read"]["iops"] + j["write"]["iops"]))'
}
printf "  | %-9s | %10s | %14s | %14s | %15s | %15s |\n" "pattern" "pool IOPS" \
  "file buffered" "file O_DIRECT" "pool/buffered" "pool/O_DIRECT"
printf "  |%s|%s|%s|%s|%s|%s|\n" "-----------" "------------" "----------------" \
  "----------------" "-----------------" "-----------------"
for rw in randread randwrite; do
  pool_iops=$(rand "$rw" 0)
  buffered_iops=$(rand "$rw" 1)
  direct_iops=$(rand "$rw" 2)
  printf "  | %-9s | %10s | %14s | %14s | %15.2f | %15.2f |\n" "$rw" "$pool_iops" \
    "$buffered_iops" "$direct_iops" \
    "$(python3 -c "print($pool_iops / max($buffered_iops, 1))")" \
    "$(python3 -c "print($pool_iops / max($direct_iops, 1))")"
done
stop_gateway
rm -f "$work/io.img" "$work/buffered.img" "$work/direct.img"

echo "== 5. kill -9 crash test, $CRASH_ROUNDS rounds"
POOL_CRASH_ROUNDS=$CRASH_ROUNDS POOL_CRASH_SECONDS=${CRASH_SECONDS:-900} cargo test --release -q -p system-tests --test pool_crash \
  -- --nocapture 2>&1 | grep -E "rounds|test result" | sed 's/^/  /'
