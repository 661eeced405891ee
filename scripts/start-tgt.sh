#!/usr/bin/env bash
# Starts a throw-away tgtd for poking at by hand, the way the system tests do: loopback only,
# its own control socket and LUN files in a scratch directory, everything removed on Ctrl-C.
#
#   scripts/start-tgt.sh [PORT] [LUN_MIB] [IQN] [CHAP_USER CHAP_SECRET]
#
# Defaults: port 3260, one 64 MiB LUN, iqn.2024-01.invalid.dev:tgt, no CHAP. tgt exposes a
# controller at LUN 0; the data LUN is LUN 1. Needs root.
set -euo pipefail

port=${1:-3260}
lun_mib=${2:-64}
iqn=${3:-iqn.2024-01.invalid.dev:tgt}
chap_user=${4:-}
chap_secret=${5:-}

dir=$(mktemp -d "${TMPDIR:-/tmp}/start-tgt.XXXXXX")
export TGT_IPC_SOCKET="$dir/tgtd-ipc"
tgtadm() { command tgtadm -C 0 --lld iscsi "$@"; }

tgtd -f -C 0 -t 4 --iscsi "portal=127.0.0.1:$port" >"$dir/tgtd.log" 2>&1 &
tgtd_pid=$!
cleanup() {
    # tgtd ignores SIGTERM: delete the target and the system, then make sure.
    tgtadm --mode target --op delete --force --tid 1 >/dev/null 2>&1 || true
    command tgtadm -C 0 --mode system --op delete >/dev/null 2>&1 || true
    sleep 0.2
    kill -KILL "$tgtd_pid" 2>/dev/null || true
    wait "$tgtd_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 100); do
    [ -S "$TGT_IPC_SOCKET.0" ] && break
    kill -0 "$tgtd_pid" 2>/dev/null || { cat "$dir/tgtd.log" >&2; exit 1; }
    sleep 0.05
done

truncate -s "${lun_mib}M" "$dir/lun1.img"
tgtadm --mode target --op new --tid 1 --targetname "$iqn"
tgtadm --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$dir/lun1.img"
tgtadm --mode target --op bind --tid 1 --initiator-address ALL
credentials=""
if [ -n "$chap_user" ]; then
    tgtadm --mode account --op new --user "$chap_user" --password "$chap_secret"
    tgtadm --mode account --op bind --tid 1 --user "$chap_user"
    credentials="$chap_user%$chap_secret@"
fi

echo "tgtd (pid $tgtd_pid) serving $iqn on 127.0.0.1:$port; log $dir/tgtd.log"
echo "  iscsi-ls -s iscsi://${credentials}127.0.0.1:$port"
echo "  iscsi-inq iscsi://${credentials}127.0.0.1:$port/$iqn/1"
echo "Ctrl-C stops it and removes $dir"
wait "$tgtd_pid"
