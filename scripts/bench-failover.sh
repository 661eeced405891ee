#!/bin/sh
# Issue 14's path-loss benchmark, through iscsi-bench: 4 KiB random 70/30 read/write with
# verify=crc32c, 32 in flight, one job over two paths (paths=) to one LU (two tgtd daemons
# sharing it, reached over two veth pairs from a network namespace). One path is lost 1.5 s
# in: its daemon killed, or its link cut silently (over software TCP and over each adapter
# model's queue pairs). Prints one table row per case: errors,
# the longest gap between completions, IOPS before, in the loss's 250 ms interval, and
# after; beside each, the anchor: fio 3.42 with its libiscsi engine (no multipathing) on the
# path that is lost, with the same job; then an array-requested move (Async Message event 1
# from iscsi-gateway's drain), over software TCP and over each adapter model's queue pairs.
# Needs root (tgtd, namespaces), like the system tests.
set -eu
cd "$(dirname "$0")/.."
cargo test --release -p system-tests --test multipath failover_benchmark -- --ignored --nocapture 2>/dev/null |
    grep '^|'
# The array-requested move: iscsi-gateway's virtual portal drains the host's portal.
cargo build --release -p gateway -p tools --bins 2>/dev/null
cargo test --release -p system-tests --test portal_array async_move_benchmark -- --ignored --nocapture 2>/dev/null |
    grep '^| array'
