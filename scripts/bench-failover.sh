#!/bin/sh
# Issue 14's path-loss benchmark: 4 KiB random 70/30 read/write with read verification, 32 in
# flight, one shard over two tgtd daemons sharing one LU (round-robin); one daemon is
# SIGKILLed after 1 s. Prints one table row: errors, verify failures, the longest gap between
# completions, IOPS before, during and after. Needs root (tgtd), like the system tests.
set -eu
cd "$(dirname "$0")/.."
cargo test --release -p system-tests --test multipath failover_benchmark -- --ignored --nocapture 2>/dev/null |
    grep '^|'
