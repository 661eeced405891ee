#!/bin/sh
# Issue 15's session-spreading benchmark: SESSIONS hosts (default 1000, our blocking client)
# log in through the virtual portal of one iscsi-gateway with 4 real portals; the spread and
# the gateway's RSS per idle session; then one portal is lost (removed, its sessions
# dropped: the hosts log in again through the virtual portal) and comes back (portal
# rebalance: Async Message event 1, the hosts move make-before-break). Prints one table
# row. PROFILE=debug skips the release build (figures are then the debug build's).
set -eu
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=--release
[ "$profile" = debug ] && flag=
cargo build $flag -p gateway -p tools --bins 2>/dev/null
cargo test $flag -p system-tests --test portal_bench session_spreading_benchmark -- --ignored --nocapture 2>/dev/null |
    grep '^|'
