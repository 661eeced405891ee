#!/usr/bin/env bash
# Issue 19's soak: >= 100 randomized migrations (mirror and DBT, file and RAM destinations,
# cancel / complete + commit / complete + rollback at random points) under a verifying
# iscsi-bench writer: four jobs writing the same blocks of the whole LUN, crc32c with
# verify_shared=1 (one ledger: a read must return the last acknowledged write of any job or
# one in flight during it) and verify_backlog=128; 0 errors expected. The CI form runs 10.
# Prints the seed, the endings, and the writer's writes, verify reads and final-check blocks.
# Then runs the verifier's own check: a block zeroed in the backing file behind the gateway's
# back must be caught.
# Usage: scripts/soak-migration.sh [ROUNDS=100] [SEED=1]
set -euo pipefail
cd "$(dirname "$0")/.."
MIGRATION_ROUNDS=${1:-100} MIGRATION_SEED=${2:-1} \
  cargo test --release -p system-tests --test migration soak -- --ignored --nocapture
cargo test --release -p system-tests --test migration a_block_changed_behind -- --nocapture 2>&1 \
  | grep -E "bad magic|verify_shared|test result"
