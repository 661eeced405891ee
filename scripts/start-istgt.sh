#!/usr/bin/env bash
# Starts a throw-away istgt for poking at by hand, the way the system tests do: loopback only,
# config and LUN files in a scratch directory, everything removed on Ctrl-C.
#
#   scripts/start-istgt.sh [PORT] [LUN_MIB] [IQN] [CHAP_USER CHAP_SECRET]
#
# Defaults: port 3260, one 64 MiB LUN, iqn.2024-01.invalid.dev:istgt, no CHAP. istgt numbers
# LUNs from 0. Needs root. Note: iscsi-ls hangs against istgt (it advances ExpCmdSN on an
# immediate Text request); use iscsi-inq or iscsi-readcapacity16 with the target name.
set -euo pipefail

port=${1:-3260}
lun_mib=${2:-64}
iqn=${3:-iqn.2024-01.invalid.dev:istgt}
chap_user=${4:-}
chap_secret=${5:-}

dir=$(mktemp -d "${TMPDIR:-/tmp}/start-istgt.XXXXXX")
truncate -s "${lun_mib}M" "$dir/lun0.img"
auth_lines="  AuthMethod None"
credentials=""
: >"$dir/auth.conf"
if [ -n "$chap_user" ]; then
    auth_lines=$'  AuthMethod CHAP\n  AuthGroup AuthGroup1'
    printf '[AuthGroup1]\n  Auth "%s" "%s"\n' "$chap_user" "$chap_secret" >"$dir/auth.conf"
    credentials="$chap_user%$chap_secret@"
fi
cat >"$dir/istgt.conf" <<CONF
[Global]
  NodeBase "iqn.2024-01.invalid.dev"
  PidFile "$dir/istgt.pid"
  AuthFile "$dir/auth.conf"
  MediaDirectory "$dir"
  DiscoveryAuthMethod Auto

[UnitControl]
  AuthMethod CHAP Mutual

[PortalGroup1]
  Portal DA1 127.0.0.1:$port

[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 127.0.0.0/8

[LogicalUnit1]
  TargetName "$iqn"
  Mapping PortalGroup1 InitiatorGroup1
  UseDigest Auto
  UnitType Disk
$auth_lines
  LUN0 Storage "$dir/lun0.img" Auto
CONF

istgt -D -c "$dir/istgt.conf" >"$dir/istgt.log" 2>&1 &
istgt_pid=$!
cleanup() {
    kill -TERM "$istgt_pid" 2>/dev/null || true
    wait "$istgt_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "istgt (pid $istgt_pid) serving $iqn on 127.0.0.1:$port; log $dir/istgt.log"
echo "  iscsi-inq iscsi://${credentials}127.0.0.1:$port/$iqn/0"
echo "  iscsi-readcapacity16 iscsi://${credentials}127.0.0.1:$port/$iqn/0"
echo "Ctrl-C stops it and removes $dir"
wait "$istgt_pid"
