#!/usr/bin/env bash
# Before/after of the control plane's latency and throughput (issues 16 and 18) in the same
# conditions: two builds of iscsi-gateway and iscsi-ctl (directories BEFORE and AFTER, e.g.
# a copy of main's release binaries and this checkout's), run alternately through
# scripts/bench-control.sh (create + attach latency), scripts/bench-control-storm.sh
# (bind/unbind calls per second by client count) and, with RUN_ENDPOINTS=1, the storm
# rows of scripts/bench-endpoints.sh (a small configuration: reads beside the storm).
# Alternating (before, after, after, before) spreads the machine's drift over both.
# The machine is shared: figures are noisy; compare the rows of one run only. Not for CI.
# Usage: scripts/bench-control-paired.sh BEFORE_DIR AFTER_DIR [rounds, default 2000]
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?BEFORE_DIR with iscsi-gateway and iscsi-ctl}
after=${2:?AFTER_DIR with iscsi-gateway and iscsi-ctl}
ROUNDS=${3:-2000}
dir_of() { if [ "$1" = before ]; then echo "$before"; else echo "$after"; fi; }

for who in before after after before; do
  d=$(dir_of "$who")
  echo "=== bench-control, $who ($d), $(date -u +%T)"
  GATEWAY=$d/iscsi-gateway CTL=$d/iscsi-ctl scripts/bench-control.sh "$ROUNDS" | tail -10
done
for who in after before after before; do
  d=$(dir_of "$who")
  echo "=== bench-control-storm, $who ($d), $(date -u +%T)"
  CLIENT_COUNTS=${CLIENT_COUNTS:-"1 4 12"} PER_CLIENT=${PER_CLIENT:-600} \
    GATEWAY=$d/iscsi-gateway scripts/bench-control-storm.sh 3 | tail -6
done
if [ "${RUN_ENDPOINTS:-0}" = 1 ]; then
  cargo build --release -q -p bench
  for who in before after; do
    d=$(dir_of "$who")
    echo "=== bench-endpoints (2,000 bindings, 100 volumes spread), $who ($d), $(date -u +%T)"
    BINDINGS=2000 SINGLE=200 SPREAD=100 SECONDS_IO=5 STORM_VOLUMES=200 STORM_CLIENTS=12 \
      GATEWAY=$d/iscsi-gateway CTL=$d/iscsi-ctl BENCH=target/release/iscsi-bench \
      scripts/bench-endpoints.sh 2000 | tail -14
  done
fi
