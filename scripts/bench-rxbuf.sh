#!/usr/bin/env bash
# Issue 15, receive buffers sized on demand: does the I/O path keep its speed? iscsi-bench
# random reads (4 KiB and 64 KiB, 32 in flight, one session, $SECONDS_EACH s each) against
# tgt's null LUN (the anchor), this tree's iscsi-gateway with a null LUN and, when
# BEFORE=/path/to/iscsi-gateway names a build from before the change, that one too; all in
# one run, in turn, in ROUNDS passes that alternate the gateways' order. Prints IOPS, MiB/s and the ratio to tgt. Release build; the machine is
# shared, so figures are noisy: compare within one run only.
# Usage: [BEFORE=/tmp/iscsi-gateway-before] scripts/bench-rxbuf.sh [seconds-each, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SECONDS_EACH=${1:-5}

cargo build --release -q -p gateway --bin iscsi-gateway -p bench --bin iscsi-bench
bench=$root/target/release/iscsi-bench
WITH_GATEWAY=0
# shellcheck source=lib/null-targets.sh
source scripts/lib/null-targets.sh

# start_gateway NAME BINARY: appends "NAME portal iqn lun" to targets.
start_gateway() {
    local name=$1 binary=$2 port iqn
    port=$(free_port)
    iqn="iqn.2026-12.io.iscsi-uring:rxbuf-$name"
    RUST_LOG=warn "$binary" --portal "127.0.0.1:$port" --iqn "$iqn" --lun null:100G \
        >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    targets+=("$name 127.0.0.1:$port $iqn 0")
}
start_gateway gateway "$root/target/release/iscsi-gateway"
if [ -n "${BEFORE:-}" ]; then
    start_gateway gateway-before "$BEFORE"
fi

# run PORTAL IQN LUN BS: prints "iops MiB/s", or "0 0" when the run failed.
run() {
    local out="$work/run-$RANDOM.json"
    timeout $((SECONDS_EACH + 30)) "$bench" --name=rxbuf "--filename=iscsi://$1/$2/$3" \
        --rw=randread "--bs=$4" --iodepth=32 --size=1g --runtime="$SECONDS_EACH" \
        --time_based --output-format=json >"$out" 2>"$out.err" || true
    python3 - "$out" <<'EOF'
import json, sys
try:
    read = json.load(open(sys.argv[1]))["jobs"][0]["read"]
    print(f"{read['iops']:.0f} {read['bw'] / 1024:.1f}")
except Exception:
    print("0 0")
EOF
}

# ROUNDS passes over the targets (default 2), so that no target always runs in the same
# slot of a machine whose load drifts.
printf '| round | target | 4 KiB QD32 IOPS | x tgt | 64 KiB QD32 MiB/s | x tgt |\n|---|---|---|---|---|---|\n'
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
for round in $(seq "${ROUNDS:-2}"); do
    tgt_small="" tgt_large=""
    order=("${targets[@]}")
    if [ $((round % 2)) = 0 ]; then
        # Even rounds: the gateways in reverse order (tgt stays first: the anchor).
        order=("${targets[0]}")
        for ((i = ${#targets[@]} - 1; i >= 1; i--)); do order+=("${targets[$i]}"); done
    fi
    for line in "${order[@]}"; do
        read -r name portal iqn lun <<<"$line"
        read -r small _ <<<"$(run "$portal" "$iqn" "$lun" 4k)"
        read -r _ large <<<"$(run "$portal" "$iqn" "$lun" 64k)"
        [ -z "$tgt_small" ] && tgt_small=$small tgt_large=$large
        printf '| %s | %s | %s | %s | %s | %s |\n' "$round" "$name" "$small" \
            "$(ratio "$small" "$tgt_small")" "$large" "$(ratio "$large" "$tgt_large")"
    done
done
