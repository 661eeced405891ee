#!/usr/bin/env bash
# The main job: first iscsi-bench, the fio-style load tool, with no target named (so it
# starts our target in-process: a 1 GiB RAM LUN on a free loopback port) running fio's
# classic 4 KiB random read at 32 in flight for 10 s, in fio's output format; then our own
# target (iscsi-gateway, a 256 MiB RAM LUN) on a free loopback port,
# driven with iscsi-ctl as an operator would (discover, login, luns, inquiry, readcap, a 64 MiB
# write and read-back with CRC32C digests, compared byte for byte); then the target benchmark
# (libiscsi's iscsi-perf against tgt's null LUN and ours, side by side). Cleans up after
# itself. Usage: scripts/demo.sh   (as root on Debian 12; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release -q -p tools -p gateway -p bench
ctl=target/release/iscsi-ctl

echo '$ iscsi-bench --name=randread --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based'
target/release/iscsi-bench --name=randread --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based

work=$(mktemp -d /tmp/iscsi-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
iqn=iqn.2026-11.io.iscsi-uring:demo
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then
    kill -TERM "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

target/release/iscsi-gateway --portal "127.0.0.1:$port" --iqn "$iqn" --lun ram:256M \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

url="iscsi://127.0.0.1:$port/$iqn/0"
step() { printf '\n$ iscsi-ctl %s\n' "$*"; "$ctl" "$@"; }
step discover "127.0.0.1:$port"
step login "$url"
step luns "$url"
step inquiry "$url"
step inquiry "$url" --vpd 0x83
step readcap "$url"
head -c $((64 << 20)) /dev/urandom >"$work/in.bin"
step --header-digest crc32c --data-digest crc32c write "$url" --lba 2048 --in "$work/in.bin"
step --header-digest crc32c --data-digest crc32c read "$url" --lba 2048 --blocks $(( (64 << 20) / 512 )) --out "$work/out.bin"
cmp "$work/in.bin" "$work/out.bin"
echo
echo "64 MiB written and read back with CRC32C digests: identical."

kill -TERM "$gateway_pid"
wait "$gateway_pid" || true
gateway_pid=""

echo
echo "Benchmark: libiscsi's iscsi-perf against tgt's null LUN and iscsi-gateway's null LUN"
scripts/bench-target.sh
