#!/usr/bin/env bash
# Issue 19's latency goals of a live migration (switch <= 2 ms added at >= 20K IOPS,
# mirrored write p50 <= the slower side's + 20 us, p99 during <= 2x without), through
# iscsi-bench against iscsi-gateway (release), the sides alone as plain LUNs in the same
# run; one table (see scripts/lib/bench_migration_switch.py). Not for CI: noisy on a
# shared machine.
# Usage: scripts/bench-migration-switch.sh [SIZE_MIB=256] [RATE_MB=100] [IOPS=22000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p gateway -p tools -p bench
exec python3 scripts/lib/bench_migration_switch.py "$@"
