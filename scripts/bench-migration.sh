#!/usr/bin/env bash
# Issue 19's migration benchmark: the gateway's migration (mirror and DBT) beside QEMU's
# block mirror (qemu-storage-daemon: write-blocking and background) on files in /dev/shm,
# the same rate-limited copy and the same verifying iscsi-bench writer, in one run; one
# table (see scripts/lib/bench_migration.py). Not for CI: noisy on a shared machine.
# Usage: scripts/bench-migration.sh [SIZE_MIB=1024] [RATE_MB=100] [IOPS=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p gateway -p tools -p bench
exec python3 scripts/lib/bench_migration.py "$@"
