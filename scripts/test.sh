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
    # One target directory for the three fuzz crates: libfuzzer and the workspace crates
    # they share are built once, not three times (about two minutes of a cold CI run).
    fuzz_target_dir=target/fuzz
    fuzz_bin=$fuzz_target_dir/release
    for crate in datapath gateway bench; do
        cargo build -q --release --manifest-path "$crate/fuzz/Cargo.toml" \
            --target-dir "$fuzz_target_dir"
    done
    for target in decode_pdu initiator_session parse_text scsi_decoders; do
        "$fuzz_bin/$target" -runs=20000 -max_total_time=15 2>&1 | tail -n 1
    done
    "$fuzz_bin"/target_session -runs=5000 -max_total_time=15 2>&1 | tail -n 1
    "$fuzz_bin"/control_rpc -runs=20000 -max_total_time=10 2>&1 | tail -n 1
    "$fuzz_bin"/change_map -runs=20000 -max_total_time=10 2>&1 | tail -n 1
    # From a copy of the seeds: a fuzzer adds what it finds to its first corpus directory.
    job_corpus=$(mktemp -d)
    cp bench/fuzz/seeds/job_file/* "$job_corpus"/
    "$fuzz_bin"/job_file -runs=20000 -max_total_time=10 "$job_corpus" 2>&1 | tail -n 1
    rm -rf "$job_corpus"
    iolog_corpus=$(mktemp -d)
    cp bench/fuzz/seeds/iolog/* "$iolog_corpus"/
    "$fuzz_bin"/iolog -runs=20000 -max_total_time=10 "$iolog_corpus" 2>&1 | tail -n 1
    rm -rf "$iolog_corpus"
    for target in cluster_frames histogram_decode; do
        "$fuzz_bin/$target" -runs=20000 -max_total_time=10 2>&1 | tail -n 1
    done
fi

exec cargo test --workspace "${profile_args[@]}" "$@"
