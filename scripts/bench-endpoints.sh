#!/usr/bin/env bash
# Protocol endpoints with thousands of bound volumes (issue 18's goals), through the tools
# users run: a release iscsi-gateway (--control-socket, --state-dir on the disk of
# $STATE_PARENT, so the journal's fdatasync is real) with one pool, a target with an
# endpoint at LUN 0 and a plain pool volume at LUN 1, then:
#   1. $SINGLE binds of one volume each (one RPC, one durable commit each): p50/p99/max;
#   2. the rest up to $BINDINGS bindings for one host through the endpoint in batches of
#      1,000 (one RPC, one commit each): per-batch time;
#   3. REPORT LUNS with SELECT REPORT 0x12 at the endpoint listing them all, as
#      `iscsi-ctl luns --select-report 0x12 --no-inquiry` times it (report_luns_us: the
#      command alone, the 512 KiB answer included), median of 5;
#   4. 4 KiB random reads at 32 in flight for $SECONDS_IO s with iscsi-bench: one job over
#      $SPREAD volumes of the endpoint (a filename list, file_service_type=random) beside
#      the same job on the plain LUN (the anchor, same pool, same session kind), $ROUNDS
#      pairs (default 2) in alternating order; IOPS ratio per pair, their median;
#   5. the storm (scripts/endpoint_storm.py): the spread job quiet, then while another
#      host's volumes are bound and unbound ($STORM_BATCH_CLIENTS clients on persistent
#      connections, $STORM_BATCH volumes per call, paced at $STORM_RATE binds+unbinds per
#      second), then beside the same clients calling binding_list (no change), the clients
#      run normally and niced, and quiet beside idle-class CPU burners ($STORM_CONDITIONS,
#      see scripts/endpoint_storm.py), and one $ALTERNATE_SECONDS s job with the storm on
#      and off by turns ($TOGGLE_MS ms each; its p99 inside storm phases over its p99
#      inside quiet ones, from the job's histogram log: the measure that does not depend
#      on where the scheduler put one run's threads); $STORM_ROUNDS rounds, the order rotating;
#      for each class of the gateway's control threads in $CONTROL_PRIORITIES
#      (--control-priority; the gateway restarts on its state directory between them):
#      p50/p99 against the same round's quiet run, the rate reached, the gateway's CPU
#      per change; and the storm alone (no reads) for the CPU per change undisturbed.
# Also the gateway's RSS (VmRSS) before the binds, with them all bound, and after the reads:
# the memory each bound volume costs, idle and once read.
# The machine is shared: figures are noisy. Not for CI.
# GATEWAY=, CTL=, BENCH= run other builds (one made before a change, for a before/after;
# CONTROL_PRIORITIES=normal for a gateway without --control-priority).
# STORM_ONLY=1: only the binds needed and step 5.
# Usage: [GATEWAY=bin CTL=bin BENCH=bin] scripts/bench-endpoints.sh [bindings, default 65536]
set -euo pipefail
cd "$(dirname "$0")/.."

BINDINGS=${1:-65536}
SINGLE=${SINGLE:-2000}
SPREAD=${SPREAD:-1000}
SECONDS_IO=${SECONDS_IO:-10}
ROUNDS=${ROUNDS:-2}
STORM_VOLUMES=${STORM_VOLUMES:-200}
STORM_BATCH=${STORM_BATCH:-50}
STORM_BATCH_CLIENTS=${STORM_BATCH_CLIENTS:-4}
STORM_RATE=${STORM_RATE:-10000}
STORM_ROUNDS=${STORM_ROUNDS:-3}
STORM_CONDITIONS=${STORM_CONDITIONS:-alternate:idle alternate:nice quiet busy:idle storm:normal storm:nice list:normal list:nice}
TOGGLE_MS=${TOGGLE_MS:-3000}
ALTERNATE_SECONDS=${ALTERNATE_SECONDS:-30}
CONTROL_PRIORITIES=${CONTROL_PRIORITIES:-normal}
STORM_ONLY=${STORM_ONLY:-0}
LOGINS=${LOGINS:-11}
STATE_PARENT=${STATE_PARENT:-$PWD/target}
TARGET=iqn.2026-12.bench:endpoints
HOST=iqn.2026-12.bench:esx-a
OTHER=iqn.2026-12.bench:esx-b

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cargo build --release -q -p gateway -p tools -p bench
gateway=$(realpath "${GATEWAY:-target/release/iscsi-gateway}")
ctl=$(realpath "${CTL:-target/release/iscsi-ctl}")
bench=$(realpath "${BENCH:-target/release/iscsi-bench}")

mkdir -p "$STATE_PARENT"
work=$(mktemp -d "$STATE_PARENT/bench-endpoints.XXXXXX")
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(free_port)
"$gateway" pool create "$work/pool.img" 8G >/dev/null
start_gateway() { # start_gateway [EXTRA ARGS...]: on the same portal and state directory
  : >"$work/gateway.log"
  "$gateway" --portal "127.0.0.1:$port" --threads 2 --control-socket "$work/control.sock" \
    --state-dir "$work/state" "$@" >"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 1200); do
    grep -q "target ready" "$work/gateway.log" 2>/dev/null && break
    sleep 0.05
  done
  grep -q "target ready" "$work/gateway.log" || { cat "$work/gateway.log" >&2; exit 1; }
}
stop_gateway() {
  kill "$gateway_pid"
  wait "$gateway_pid" || true
  gateway_pid=""
}
priority_args() { [ "$1" = normal ] || echo "--control-priority $1"; }
read -r -a first_priority <<<"$CONTROL_PRIORITIES"
# shellcheck disable=SC2046
start_gateway $(priority_args "${first_priority[0]}")

# Steps 1 and 2 on one control connection; prints "key value" lines.
python3 - "$work/control.sock" "$work/pool.img" "$BINDINGS" "$SINGLE" "$STORM_VOLUMES" \
  "$TARGET" "$HOST" "$gateway_pid" "$STORM_ONLY" >"$work/control.out" <<'EOF'
import json, socket, sys, time
path, pool, total, single, storm, target, host, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8]
if sys.argv[9] == "1":
    single = 0
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
f = s.makefile("rwb")
n = 0
def call(method, params):
    global n
    n += 1
    f.write((json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}) + "\n").encode())
    f.flush()
    answer = json.loads(f.readline())
    if "error" in answer:
        sys.exit(f"{method}: {answer['error']}")
    return answer["result"]
t0 = time.perf_counter()
for i in range(total):
    call("volume_create", {"pool": pool, "name": f"v{i}", "size": "64M"})
for i in range(storm):
    call("volume_create", {"pool": pool, "name": f"s{i}", "size": "64M"})
call("volume_create", {"pool": pool, "name": "plain", "size": "64M"})
print(f"volume_create_s {time.perf_counter() - t0:.1f}")
call("target_create", {"name": target, "luns": [
    {"lun": 0, "backend": "endpoint"},
    {"lun": 1, "backend": f"pool:{pool},volume=plain"}]})
print(f"rss_unbound_kib {rss_kib()}")
times = []
for i in range(single):
    t = time.perf_counter()
    call("bind", {"target": target, "endpoint": 0, "host": host, "pool": pool, "volumes": [f"v{i}"]})
    times.append((time.perf_counter() - t) * 1000)
times.sort()
q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
print(f"single_p50_ms {q(times, 0.5):.3f}")
print(f"single_p99_ms {q(times, 0.99):.3f}")
print(f"single_max_ms {times[-1] if times else float('nan'):.3f}")
batches = []
i = single
while i < total:
    names = [f"v{j}" for j in range(i, min(total, i + 1000))]
    t = time.perf_counter()
    call("bind", {"target": target, "endpoint": 0, "host": host, "pool": pool, "volumes": names})
    if len(names) == 1000:
        batches.append((time.perf_counter() - t) * 1000)
    i += len(names)
batches.sort()
if batches:
    print(f"batch_p50_ms {q(batches, 0.5):.1f}")
    print(f"batch_max_ms {batches[-1]:.1f}")
    print(f"batches {len(batches)}")
listed = call("binding_list", {"host": host})
print(f"bound {len(listed['bindings'])}")
print(f"rss_bound_kib {rss_kib()}")
EOF
cat "$work/control.out" >&2
val() { awk -v k="$1" '$1 == k { print $2 }' "$work/control.out"; }

if [ "$STORM_ONLY" != 1 ]; then
# The disk's floor for one commit: pwrite + fdatasync of a preallocated file beside the
# state directory (what the journal does per bind).
floor=$(python3 - "$work/floor" "$SINGLE" <<'EOF'
import os, sys, time
path, rounds = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"\0" * (4 << 20))
os.fsync(fd)
times = []
for n in range(rounds):
    t0 = time.perf_counter()
    os.pwrite(fd, b"x" * 300, (n * 512) % (4 << 20))
    os.fdatasync(fd)
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
print(f"{times[len(times) // 2]:.3f} / {times[min(len(times) - 1, int(0.99 * len(times)))]:.3f}")
EOF
)

# Step 3.
reports=()
for _ in 1 2 3 4 5; do
  out=$("$ctl" --json --initiator-name "$HOST" luns --select-report 0x12 --no-inquiry \
    "iscsi://127.0.0.1:$port/$TARGET/0")
  reports+=("$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["report_luns_us"], len(d["luns"]))' <<<"$out")")
done
report_us=$(printf '%s\n' "${reports[@]}" | sort -n | awk 'NR == 3 { print $1 }')
report_count=$(printf '%s\n' "${reports[@]}" | awk 'NR == 1 { print $2 }')

fi

# Step 4: one job each, on the command line (a job file line holds at most 8 KiB; the
# list of 1,000 URLs is about 55 KiB).
common=(--ioengine=iscsi "--initiator_name=$HOST" --rw=randread --bs=4k --iodepth=32
  "--runtime=$SECONDS_IO" --time_based=1)
plain_args=(--name=plain "--filename=iscsi://127.0.0.1:$port/$TARGET/1")
spread_list=$(for i in $(seq 1 "$SPREAD"); do
  printf 'iscsi://127.0.0.1:%s/%s/0:%s\n' "$port" "$TARGET" "$i"
done | paste -sd: -)
spread_args=(--name=spread --file_service_type=random "--filename=$spread_list")

# The gateway's CPU time so far (user + system, clock ticks).
gateway_ticks() { awk '{ print $14 + $15 }' "/proc/$gateway_pid/stat"; }
run_job() { # run_job ARGS... -> "iops p99_us gateway_cpu_us_per_io"
  local before after
  before=$(gateway_ticks)
  "$bench" --output-format=json "${common[@]}" "$@" >"$work/job.json"
  after=$(gateway_ticks)
  python3 - "$work/job.json" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]["read"]
p = d["clat_ns"]["percentile"]
cpu_us = int(sys.argv[2]) * 1e6 / int(sys.argv[3])
print("%.0f %.0f %.2f" % (d["iops"], p["99.000000"] / 1000, cpu_us / max(1, d["total_ios"])))
PY
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$gateway_pid/status"; }
# $ROUNDS pairs, the order alternating (plain first, then spread first): the machine's
# load drifts, so each pair's ratio is the figure, and their median the summary. The
# gateway's CPU time per I/O (from /proc) is the figure the load disturbs least.
plains=() spreads=() pair_ratios=() spread_p99s=() cpu_plain=() cpu_spread=() cpu_ratios=()
for round in $(seq "$([ "$STORM_ONLY" = 1 ] && echo 0 || echo "$ROUNDS")"); do
  if (( round % 2 )); then
    read -r p _ pc <<<"$(run_job "${plain_args[@]}")"
    read -r s s_p99 sc <<<"$(run_job "${spread_args[@]}")"
  else
    read -r s s_p99 sc <<<"$(run_job "${spread_args[@]}")"
    read -r p _ pc <<<"$(run_job "${plain_args[@]}")"
  fi
  plains+=("$p") spreads+=("$s") spread_p99s+=("$s_p99") cpu_plain+=("$pc") cpu_spread+=("$sc")
  pair_ratios+=("$(python3 -c "print(f'{$s / $p:.3f}')")")
  cpu_ratios+=("$(python3 -c "print(f'{$sc / $pc:.3f}')")")
done
rss_after_io=$(rss_kib)

# Step 5: the storm rounds (scripts/endpoint_storm.py), for each class of the gateway's
# control threads, restarting the gateway on its state directory between classes.
read -r -a conditions <<<"$STORM_CONDITIONS"
storm_rows="$work/storm.jsonl"
: >"$storm_rows"
for round in $(seq "$STORM_ROUNDS"); do
  for priority in $CONTROL_PRIORITIES; do
    if [ "$priority" != "${current_priority:-${first_priority[0]}}" ]; then
      stop_gateway
      # shellcheck disable=SC2046
      start_gateway $(priority_args "$priority")
    fi
    current_priority=$priority
    these=("${conditions[@]}")
    # The storm alone (no reads), once per class: the gateway's CPU per change.
    [ "$round" = 1 ] && these+=("alone:normal")
    python3 -c 'import json, sys; print(json.dumps({
      "socket": sys.argv[1], "pool": sys.argv[2], "volumes": int(sys.argv[3]),
      "target": sys.argv[4], "host": sys.argv[5], "clients": int(sys.argv[6]),
      "batch": int(sys.argv[7]), "rate": float(sys.argv[8]), "seconds": float(sys.argv[9]),
      "max_seconds": max(float(sys.argv[9]), float(sys.argv[17])) + 5, "bench": sys.argv[10],
      "gateway_pid": int(sys.argv[11]), "priority": sys.argv[12], "round": int(sys.argv[13]),
      "conditions": sys.argv[14].split(), "log_dir": sys.argv[15],
      "toggle_ms": int(sys.argv[16]), "alternate_seconds": int(sys.argv[17]),
      "job": sys.argv[18:]}))' \
      "$work/control.sock" "$work/pool.img" "$STORM_VOLUMES" "$TARGET" "$OTHER" \
      "$STORM_BATCH_CLIENTS" "$STORM_BATCH" "$STORM_RATE" "$SECONDS_IO" "$bench" \
      "$gateway_pid" "$priority" "$round" "${these[*]}" "$work" "$TOGGLE_MS" \
      "$ALTERNATE_SECONDS" "${common[@]}" "${spread_args[@]}" \
      >"$work/storm-args.json"
    python3 scripts/endpoint_storm.py block "$work/storm-args.json" | tee -a "$storm_rows" >&2
  done
done

if [ "$STORM_ONLY" != 1 ]; then
# Logins of a host with every binding beside one with none, alternating: the gateway's
# CPU time per session (login, REPORT LUNS, logout; all its threads' run time from
# schedstat, in ns) and the client's wall time, medians of $LOGINS sessions each.
read -r login_cpu_bound login_wall_bound login_cpu_none login_wall_none <<<"$(
  python3 - "$ctl" "$HOST" "$OTHER" "iscsi://127.0.0.1:$port/$TARGET/1" "$gateway_pid" "$LOGINS" <<'EOF2'
import glob, subprocess, sys, time
ctl, hosts, url, pid, rounds = sys.argv[1], sys.argv[2:4], sys.argv[4], sys.argv[5], int(sys.argv[6])
def run_ns():
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(open(path).read().split()[0])
        except (OSError, ValueError):
            pass
    return total
cpus = {h: [] for h in hosts}
walls = {h: [] for h in hosts}
time.sleep(1)  # what the storms left (retired configurations, flushes) settles first
for _ in range(rounds):
    for host in hosts:
        before = run_ns()
        t = time.perf_counter()
        subprocess.run([ctl, "--initiator-name", host, "luns", "--no-inquiry", url],
                       check=True, stdout=subprocess.DEVNULL)
        walls[host].append((time.perf_counter() - t) * 1000)
        time.sleep(0.05)  # the logout's cleanup runs after the client is gone
        cpus[host].append((run_ns() - before) / 1000)
med = lambda xs: sorted(xs)[len(xs) // 2]
print(" ".join(f"{med(cpus[h]):.0f} {med(walls[h]):.1f}" for h in hosts))
EOF2
)"

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
spread_best=$(printf '%s\n' "${spreads[@]}" | sort -n | tail -1)
plain_best=$(printf '%s\n' "${plains[@]}" | sort -n | tail -1)
quiet_p99=$(printf '%s\n' "${spread_p99s[@]}" | sort -n | head -1)
median_ratio=$(median "${pair_ratios[@]}")
join() { local IFS=,; echo "$*" | sed 's/,/, /g'; }

echo
echo "| figure | value | goal |"
echo "|---|---|---|"
echo "| volumes bound to one endpoint for one host | $(val bound) | 65,536 |"
rss_unbound=$(val rss_unbound_kib)
rss_bound=$(val rss_bound_kib)
per_volume() { python3 -c "print(f'{($1 - $rss_unbound) * 1024 / $(val bound):.0f}')"; }
echo "| gateway RSS before the binds / with them bound / after the reads over $SPREAD of them | $((rss_unbound / 1024)) / $((rss_bound / 1024)) / $((rss_after_io / 1024)) MiB | |"
echo "| RSS per bound volume: idle / after the reads (bytes) | $(per_volume "$rss_bound") / $(per_volume "$rss_after_io") | |"
echo "| REPORT LUNS 0x12 with all of them (LUNs listed, median of 5) | ${report_us} µs ($report_count) | < 10 ms |"
echo "| bind of one volume, durable commit included: p50 / p99 / max ($SINGLE binds) | $(val single_p50_ms) / $(val single_p99_ms) / $(val single_max_ms) ms | p99 < 2 ms |"
echo "| the disk's floor: pwrite + fdatasync p50 / p99 | $floor ms | |"
echo "| 1,000 binds in one call: median / max ($(val batches) batches) | $(val batch_p50_ms) / $(val batch_max_ms) ms | < 100 ms |"
echo "| 4 KiB random read IOPS, $SPREAD volumes of the endpoint ($ROUNDS runs) | $(join "${spreads[@]}") | |"
echo "| 4 KiB random read IOPS, one plain LUN (anchor, $ROUNDS runs) | $(join "${plains[@]}") | |"
echo "| ratio spread / plain per pair (median) | $(join "${pair_ratios[@]}") ($median_ratio) | >= 0.90 |"
echo "| ratio spread / plain (best runs) | $(ratio "$spread_best" "$plain_best") | |"
echo "| gateway CPU per I/O, µs: spread / plain per pair | $(join "${cpu_spread[@]}") / $(join "${cpu_plain[@]}") | |"
echo "| gateway CPU per I/O, spread / plain per pair (median) | $(join "${cpu_ratios[@]}") ($(median "${cpu_ratios[@]}")) | |"
echo "| a session (login, REPORT LUNS, logout) of the host with $(val bound) bindings / of one with none: gateway CPU (median of $LOGINS) | $login_cpu_bound / $login_cpu_none µs | independent of the bindings |"
echo "| the same sessions' wall time as the client sees it | $login_wall_bound / $login_wall_none ms | |"
fi

echo
echo "Storm: $STORM_BATCH_CLIENTS clients, $STORM_BATCH volumes per call (bind then unbind), paced at $STORM_RATE binds+unbinds/s, persistent connections; clients normal or niced (nice 19) as named; busy:idle = quiet beside one SCHED_IDLE busy loop per CPU; alternate:CLASS = one ${ALTERNATE_SECONDS} s job, the storm on and off by turns (${TOGGLE_MS} ms each), its p99 in storm phases / in quiet phases (the per-run column shows storm/quiet; clients idle = SCHED_IDLE); $STORM_ROUNDS rounds of ${SECONDS_IO} s jobs, order rotating; the gateway's control threads per --control-priority."
python3 scripts/endpoint_storm.py table "$storm_rows"
