#!/usr/bin/env bash
# Issue 20's goals, measured with the tools users run (release builds), on this machine:
#   8 iscsi-bench agents (--server, each on its own loopback address, each in its own
#   directory) driven by one controller (--client), ROUNDS rounds per target:
#     - null: the null engine (nothing but the start path);
#     - gateway: 4 KiB random reads through our iSCSI initiator to iscsi-gateway's null LUN
#       (the logins happen before the release).
#   Per round: the start skew the controller reports (max - min of the hosts' actual starts,
#   each agent's clock mapped by its probed offset; the same CLOCK_MONOTONIC here, so the raw
#   starts are compared too) and the merge error: every I/O's clat from the agents'
#   per-I/O logs (write_lat_log) fed to one reference histogram of the same resolution,
#   whose percentiles are compared with the controller's "All clients" ones (the error is
#   the largest relative difference; 0 means bit-identical).
#   Anchor, same run: fio 3.33's --server/--client with the same job (null engine), its
#   start skew read as the spread of each client's first logged I/O (ms resolution: fio's
#   logs carry no finer time); fio has no barrier.
# The machine is shared (others compile on its 2 cores): the figures are noisy.
# Usage: scripts/bench-cluster.sh [rounds, default 5] [seconds per run, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
RUNTIME=${2:-3}
AGENTS=8
export ISCSI_BENCH_TOKEN="bench-cluster-$$"

cargo build --release -q -p bench -p gateway
bench=$PWD/target/release/iscsi-bench
gateway=$PWD/target/release/iscsi-gateway
iqn=iqn.2026-12.io.iscsi-uring:bench-cluster

work=$(mktemp -d /var/tmp/bench-cluster.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # host port
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2"; exit 1
}

gw_port=$(free_port)
"$gateway" --portal "127.0.0.1:$gw_port" --iqn "$iqn" --lun null:16G >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$gw_port"

# The agents: 127.0.0.(10+i), each in its own directory (their log files land there).
clients=()
for i in $(seq 1 $AGENTS); do
  dir="$work/agent$i"; mkdir -p "$dir"
  addr="127.0.0.$((10 + i))"
  (cd "$dir" && exec "$bench" --server="$addr,8765" 2>"$dir/agent.err") &
  pids+=($!)
  clients+=("--client=$addr,8765")
done
for i in $(seq 1 $AGENTS); do wait_port "127.0.0.$((10 + i))" 8765; done

percentiles="1:10:25:50:75:90:95:99:99.5:99.9:99.99:100"
job() { # kind
  case "$1" in
    null) target="ioengine=null" ;;
    gateway) target="filename=iscsi://127.0.0.1:$gw_port/$iqn/0" ;;
  esac
  cat <<EOF
[r]
$target
rw=randread
bs=4k
size=1g
iodepth=4
time_based
runtime=$RUNTIME
rate_iops=3000
write_lat_log=r
percentile_list=$percentiles
EOF
}

analyse() { # json agent-dirs...
  python3 - "$@" <<'PY'
import json, sys, glob, os
doc = json.load(open(sys.argv[1]))
cluster = doc["iscsi_bench"]["cluster"]
allc = next(j for j in doc["client_stats"] if j["jobname"] == "All clients")
values = []
for d in sys.argv[2:]:
    for path in glob.glob(os.path.join(d, "r_clat.*.log")):
        with open(path) as f:
            values += [int(line.split(",")[1]) for line in f if line.strip()]
        os.remove(path)
    for path in glob.glob(os.path.join(d, "r_*.log")):
        os.remove(path)
values.sort()
def highest_equivalent(v):  # HdrHistogram, 3 significant digits, lowest 1
    size = 1 << max(0, (v | 2047).bit_length() - 1 - 10)
    return (v // size) * size + size - 1
n = len(values)
reference = {}
for key in allc["read"]["clat_ns"]["percentile"]:
    p = float(key)
    cumulative, chosen = 0, values[-1]
    # fio's rule over the histogram's buckets: the first bucket whose cumulative count
    # reaches p/100*N, reported as its highest equivalent value within [min, max].
    i = 0
    while i < n:
        top = highest_equivalent(values[i])
        j = i
        while j < n and highest_equivalent(values[j]) == top:
            j += 1
        cumulative += j - i
        if cumulative >= p / 100.0 * n:
            chosen = min(max(top, values[0]), values[-1])
            break
        i = j
    reference[key] = chosen
merged = {k: int(v) for k, v in allc["read"]["clat_ns"]["percentile"].items()}
errors = [abs(merged[k] - reference[k]) / reference[k] for k in reference if reference[k]]
import math
exact = {k: values[max(0, math.ceil(float(k) / 100.0 * n) - 1)] for k in reference}
resolution = [abs(merged[k] - exact[k]) / exact[k] for k in exact if exact[k]]
hosts = cluster["hosts"]
raw = [h["start_ns"] for h in hosts]
print("%d %d %d %d %d %d %.6f %.4f %d" % (
    allc["read"]["total_ios"], n, cluster["start_skew_ns"], cluster["clock_uncertainty_ns"],
    len(reference), sum(1 for k in reference if merged[k] != reference[k]),
    max(errors) if errors else 0.0, 100 * max(resolution) if resolution else 0.0,
    cluster["flagged"]))
PY
}

printf '| target | round | I/Os merged | I/Os logged | start skew | clock +/- | percentiles | differing | max merge error | max error vs raw | flagged |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for kind in null gateway; do
  job "$kind" >"$work/$kind.fio"
  for round in $(seq 1 "$ROUNDS"); do
    "$bench" --output-format=json --output="$work/out.json" "${clients[@]}" "$work/$kind.fio" 2>"$work/controller.err" ||
      { echo "controller failed:"; cat "$work/controller.err"; exit 1; }
    read -r merged logged skew unc count differ maxerr rawerr flagged < <(analyse "$work/out.json" "$work"/agent*)
    printf '| %s | %d | %d | %d | %.3f ms | %.3f ms | %d | %d | %s | %s%% | %d |\n' "$kind" "$round" \
      "$merged" "$logged" "$(echo "$skew / 1000000" | bc -l)" "$(echo "$unc / 1000000" | bc -l)" \
      "$count" "$differ" "$maxerr" "$rawerr" "$flagged"
  done
done

# The anchor: fio's client/server, same job on the null engine, 8 servers, a host file (fio
# gives job files after several --client options to the last one only).
if command -v fio >/dev/null; then
  mkdir -p "$work/fio"
  : >"$work/fio/hosts.list"
  for i in $(seq 1 $AGENTS); do
    addr="127.0.0.$((40 + i))"
    fio --server="$addr,8765" >"$work/fio-server$i.log" 2>&1 &
    pids+=($!)
    echo "$addr,8765" >>"$work/fio/hosts.list"
  done
  for i in $(seq 1 $AGENTS); do wait_port "127.0.0.$((40 + i))" 8765; done
  job null | sed 's/^write_lat_log=r/write_lat_log=r\nlog_unix_epoch=1/' >"$work/fio/job.fio"
  printf '\n| anchor | round | I/Os | start skew (first logged I/O per client, 1 ms resolution) | All clients max error vs raw |\n|---|---|---|---|---|\n'
  for round in $(seq 1 "$ROUNDS"); do
    (cd "$work/fio" && rm -f r_* && fio --output-format=json --output=out.json --client=hosts.list job.fio >/dev/null 2>&1) ||
      { echo "fio failed"; cat "$work/fio/out.json" || true; exit 1; }
    row=$(python3 - "$work/fio" <<'PY'
import glob, json, math, os, sys
d = sys.argv[1]
firsts, values = [], []
for path in glob.glob(os.path.join(d, "r_clat.*.log.*")):
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    if lines:
        firsts.append(int(lines[0].split(",")[0]))
    values += [int(l.split(",")[1]) for l in lines]
values.sort()
n = len(values)
text = open(os.path.join(d, "out.json")).read()
doc = json.loads(text[text.index("{"):])
allc = next(j for j in doc["client_stats"] if j["jobname"] == "All clients")
pct = allc["read"]["clat_ns"].get("percentile")
errors = []
for k, v in (pct or {}).items():
    exact = values[max(0, math.ceil(float(k) / 100.0 * n) - 1)]
    if exact:
        errors.append(abs(int(v) - exact) / exact)
merged = "%.4f%%" % (100 * max(errors)) if errors else "none: its All clients entry has no percentiles"
print("%d | %d ms over %d clients | %s" % (n, max(firsts) - min(firsts), len(firsts), merged))
PY
)
    printf '| fio 3.33 --client | %d | %s |\n' "$round" "$row"
  done
fi
