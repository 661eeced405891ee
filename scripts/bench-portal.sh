#!/bin/sh
# Issue 15's session-spreading benchmark: SESSIONS hosts (our blocking client) log in
# through the virtual portal of one iscsi-gateway with 4 real portals; the spread and the
# gateway's RSS per idle session beside tgtd's; 4 KiB random reads on IO_SESSIONS (64)
# more sessions through iscsi-bench while those sit idle (IOPS and RSS, beside tgt holding
# as many sessions); then one portal is lost (removed, its sessions dropped: the hosts log
# in again through the virtual portal) and comes back (portal rebalance: Async Message
# event 1, the hosts move make-before-break). Runs with 1,000 and with 4,096 sessions
# (SESSIONS="N ..." to choose) and prints the tables. PROFILE=debug skips the release
# build (figures are then the debug build's). The machine is shared: figures are noisy.
set -eu
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=--release
[ "$profile" = debug ] && flag=
cargo build $flag -p gateway -p tools --bins 2>/dev/null
cargo build --release -p bench --bin iscsi-bench 2>/dev/null
for sessions in ${SESSIONS:-1000 4096}; do
    echo "SESSIONS=$sessions"
    SESSIONS=$sessions cargo test $flag -p system-tests --test portal_bench session_spreading_benchmark -- --ignored --nocapture 2>/dev/null |
        grep '^|'
done
