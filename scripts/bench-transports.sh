#!/usr/bin/env bash
# The three transports of the data path side by side, same target, same workloads, one run
# (issue 6 item 7): software TCP, a dependent adapter model, an independent adapter model.
#
# Starts a private tgtd on a free loopback port with a null LUN (reads cost the target
# nothing), then for each workload runs iscsi-transports, which measures every transport in
# one process for SECONDS_PER_RUN seconds each and prints: IOPS, MB/s, host CPU per I/O
# (process CPU minus the adapter model's own threads), the shard threads' share of it,
# adapter CPU per I/O (the model's CpuMeter), host CPU relative to software ("host x"),
# p50/p99 latency, the shards' kernel entries per I/O and bytes copied on the host.
#
# The models run on the same cores as everything else: on a shared machine IOPS and totals
# are noisy and adapter CPU competes with host CPU. Compare within one table (ratios).
# Not run in CI: it is a benchmark. Needs tgtd and tgtadm.
# Usage: scripts/bench-transports.sh   (SECONDS_PER_RUN=3 by default; DIGESTS=1 offers CRC32C;
#        SPIN_US=0 makes the caller and the shards sleep at once instead of polling 50 us)
set -euo pipefail

SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in tgtd tgtadm; do
    command -v "$tool" >/dev/null || { echo "bench-transports: $tool is not installed" >&2; exit 1; }
done

echo "building iscsi-transports (release)..." >&2
cargo build --quiet --release -p tools --bin iscsi-transports
transports="$root/target/release/iscsi-transports"

# tgt only: the adapter models are measured against tgt's null LUN.
WITH_GATEWAY=0
# shellcheck source=lib/null-targets.sh
source "$root/scripts/lib/null-targets.sh"
digests=()
if [ "${DIGESTS:-0}" = 1 ]; then
    for key in HeaderDigest DataDigest; do
        tgtadm_ --op update --mode target --tid 1 -n "$key" -v "CRC32C,None"
    done
    digests=(--digests)
fi

# pattern bs qd
workloads=(
    "randread 4096 32"
    "seqread 65536 8"
)

for w in "${workloads[@]}"; do
    read -r pattern bs qd <<<"$w"
    echo
    echo "== $pattern bs=$bs qd=$qd, ${SECONDS_PER_RUN}s per transport, tgt null LUN${digests:+, CRC32C digests} =="
    "$transports" --portal "127.0.0.1:$tgt_port" --target "$tgt_iqn" --lun 1 \
        --pattern "$pattern" --bs "$bs" --qd "$qd" --seconds "$SECONDS_PER_RUN" \
        --spin-us "${SPIN_US:-50}" "${digests[@]}" \
        || echo "bench-transports: $pattern $bs $qd failed" >&2
done
cat <<'EOF2'

host us/IO: CPU microseconds per I/O of this process (user + system, getrusage) minus the
adapter model's threads (offload::cpu::CpuMeter): what a host with a real adapter would
still spend. caller us: the driver threads that submit and reap (the application's side);
shard us: the shard threads (/proc/self/task/*/schedstat); the rest is other threads of the
process. host x: host us/IO relative to software (below 1: less host CPU). adapter us: the
model's threads by its CpuMeter; (threads): the same threads as the kernel counts them.
ent/IO: the shards' kernel entries per I/O (software: io_uring enters; adapters: sleeps on
the completion eventfd). copied B: payload bytes copied on the host.
EOF2
