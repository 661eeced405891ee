#!/usr/bin/env bash
# Why the pool's journal region is written with zeros when a pool is made or opened
# (`Engine::allocate_journal`): a 4 KiB append at a new offset + fdatasync, into a hole of
# a sparse file (what every volume operation did until the journal wrapped) against into
# blocks already written, alternating in one loop on the disk of $STATE_PARENT (default
# this checkout's target/), so both meet the same disk. Prints p50/p90/p99/max in ms.
# Not for CI. Usage: scripts/bench-journal-holes.sh [rounds, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-500}
STATE_PARENT=${STATE_PARENT:-$PWD/target}
mkdir -p "$STATE_PARENT"
work=$(mktemp -d "$STATE_PARENT/bench-journal-holes.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$ROUNDS" <<'PY'
import os, sys, time
work, rounds = sys.argv[1], int(sys.argv[2])
size = 32 << 20
sparse = os.open(os.path.join(work, "sparse"), os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(sparse, size)
filled = os.open(os.path.join(work, "filled"), os.O_RDWR | os.O_CREAT, 0o600)
for _ in range(size >> 20):
    os.write(filled, b"\0" * (1 << 20))
os.fsync(filled)
os.fsync(sparse)
times = {"into a hole (sparse file)": [], "into written zeros": []}
block = b"j" * 4096
for n in range(rounds):
    for fd, label in ((sparse, "into a hole (sparse file)"), (filled, "into written zeros")):
        t0 = time.perf_counter()
        os.pwrite(fd, block, (n * 4096) % size)
        os.fdatasync(fd)
        times[label].append((time.perf_counter() - t0) * 1000)
print(f"4 KiB append + fdatasync at a new offset, {rounds} rounds alternating (load average: {open('/proc/loadavg').read().split()[0]})")
for label, values in times.items():
    values.sort()
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
    print(f"  {label:<28} p50 {q(.5):.3f}  p90 {q(.9):.3f}  p99 {q(.99):.3f}  max {values[-1]:.3f}")
PY
