#!/usr/bin/env bash
# The project's test command: installs the peers (scripts/install-deps.sh), then runs every
# test of the workspace, the whole-system tests against tgt and istgt included.
#
# Debug profile by default: a clean build is much faster than release and the tests are not
# throughput-bound. TEST_PROFILE=release switches. Extra arguments go to `cargo test`.
# The system tests need root (tgtd, istgt and dumpcap); with CI=true a missing peer tool
# fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

profile_args=()
if [ "${TEST_PROFILE:-debug}" = release ]; then
    profile_args=(--release)
fi

# The fuzz targets must keep compiling, and each gets a short unguided smoke run (coverage
# guidance needs nightly: see datapath/fuzz/README.md).
if [ "${SKIP_FUZZ_SMOKE:-0}" != 1 ]; then
    cargo build -q --release --manifest-path datapath/fuzz/Cargo.toml
    for target in decode_pdu initiator_session parse_text scsi_decoders; do
        datapath/fuzz/target/release/"$target" -runs=20000 -max_total_time=15 2>&1 | tail -n 1
    done
    cargo build -q --release --manifest-path gateway/fuzz/Cargo.toml
    gateway/fuzz/target/release/target_session -runs=5000 -max_total_time=15 2>&1 | tail -n 1
    gateway/fuzz/target/release/control_rpc -runs=20000 -max_total_time=10 2>&1 | tail -n 1
    gateway/fuzz/target/release/change_map -runs=20000 -max_total_time=10 2>&1 | tail -n 1
    cargo build -q --release --manifest-path bench/fuzz/Cargo.toml
    # From a copy of the seeds: a fuzzer adds what it finds to its first corpus directory.
    job_corpus=$(mktemp -d)
    cp bench/fuzz/seeds/job_file/* "$job_corpus"/
    bench/fuzz/target/release/job_file -runs=20000 -max_total_time=10 "$job_corpus" 2>&1 | tail -n 1
    rm -rf "$job_corpus"
    iolog_corpus=$(mktemp -d)
    cp bench/fuzz/seeds/iolog/* "$iolog_corpus"/
    bench/fuzz/target/release/iolog -runs=20000 -max_total_time=10 "$iolog_corpus" 2>&1 | tail -n 1
    rm -rf "$iolog_corpus"
    for target in cluster_frames histogram_decode; do
        bench/fuzz/target/release/"$target" -runs=20000 -max_total_time=10 2>&1 | tail -n 1
    done
fi

exec cargo test --workspace "${profile_args[@]}" "$@"
