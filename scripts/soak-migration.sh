#!/usr/bin/env bash
# Issue 19's soak: >= 100 randomized migrations (mirror and DBT, file and RAM destinations,
# cancel / complete + commit / complete + rollback at random points) under a verifying
# iscsi-bench writer (crc32c, four jobs); 0 errors expected. The CI form runs 10.
# Usage: scripts/soak-migration.sh [ROUNDS=100] [SEED=1]
set -euo pipefail
cd "$(dirname "$0")/.."
MIGRATION_ROUNDS=${1:-100} MIGRATION_SEED=${2:-1} \
  cargo test --release -p system-tests --test migration soak -- --ignored --nocapture
