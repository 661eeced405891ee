#!/usr/bin/env bash
# The main job, until the load tool and the embedded target land: start tgt's tgtd with a
# 256 MiB LUN on a free loopback port, then drive it with iscsi-ctl as an operator would
# (discover, login, luns, inquiry, readcap, write, read back and compare). Cleans up after
# itself. Usage: scripts/demo.sh   (as root on Debian 12; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release -q -p tools
ctl=target/release/iscsi-ctl

work=$(mktemp -d /tmp/iscsi-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# tgtd and tgtadm meet on a Unix socket named $TGT_IPC_SOCKET.<control>: keep ours private
# so a system tgtd (or a test's) is never touched.
export TGT_IPC_SOCKET="$work/tgtd.socket"
control=1
iqn=iqn.2026-11.io.iscsi-uring:demo
tgtd_pid=""
cleanup() {
  if [ -n "$tgtd_pid" ]; then
    tgtadm -C "$control" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    tgtadm -C "$control" --op delete --mode system >/dev/null 2>&1 || true
    kill "$tgtd_pid" 2>/dev/null || true
    sleep 0.2
    kill -9 "$tgtd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
# tgtd ignores SIGTERM: it leaves when its targets and then the system are deleted.
trap cleanup EXIT

truncate -s 256M "$work/lun1.img"
tgtd -f -C "$control" --iscsi "portal=127.0.0.1:$port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 50); do
  tgtadm -C "$control" --op show --mode system >/dev/null 2>&1 && break
  sleep 0.1
done
tgtadm -C "$control" --lld iscsi --op new --mode target --tid 1 -T "$iqn"
tgtadm -C "$control" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/lun1.img"
tgtadm -C "$control" --lld iscsi --op bind --mode target --tid 1 -I ALL
# tgt offers no digests unless told to.
for key in HeaderDigest DataDigest; do
  tgtadm -C "$control" --lld iscsi --op update --mode target --tid 1 --name "$key" --value CRC32C,None
done

url="iscsi://127.0.0.1:$port/$iqn/1"
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
