#!/usr/bin/env bash
# iscsi-bench beside the tools users run instead, on the same LUN in the same run:
# fio 3.42 with its libiscsi engine (../shared/anchors/fio) and libiscsi's iscsi-perf
# (reads only), against tgt's null LUN and our gateway's null LUN; then iscsi-bench's
# io_uring engine beside Debian's fio io_uring engine on a file (tmpfs and this disk).
#
# Each row runs PAIRS pairs (default 5) of SECONDS_PER_RUN-second runs (default 5): ours and
# fio back to back, the order swapping every pair, so drift in the machine's speed (other
# tenants of the host, CPU frequency) hits both sides of a pair alike. A tool's figures are
# the medians of its runs; the verdict "x fio" is the median of the per-pair ratios, with
# their lowest and highest beside it (IOPS: ours / fio, above 1 is better; CPU per I/O:
# ours / fio, below 1 is better). CPU per I/O is the whole process (user + system, from
# /usr/bin/time; fio's job processes included). p50/p99: completion latency from each tool's
# JSON. iscsi-perf (reads only, no latency figures) runs once per row, for reference.
#
# PIN_APART=1 pins every thread of the targets to the first CPU and every tool to the last:
# on this 2-CPU machine, where the scheduler puts a tool beside its target decides rows
# (ARCHITECTURE.md, InlineShard), and pinned apart the rows compare what the tools spend.
#
# Not run in CI: it is a benchmark. Needs root, tgtd, tgtadm, iscsi-perf, fio, python3.
# Usage: scripts/bench-fio.sh   (PAIRS, SECONDS_PER_RUN, ONLY_TARGET=tgt-null|gateway-null,
#                                ONLY_TABLE=iscsi|uring, URING_DEPTHS="1 4 16 32",
#                                FIO=path to the libiscsi-enabled fio, PIN_APART=1)
set -euo pipefail

SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
PAIRS=${PAIRS:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
anchor_fio=${FIO:-$root/../shared/anchors/fio}
debian_fio=$(command -v fio || true)

for tool in tgtd tgtadm iscsi-perf python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-fio: $tool is not installed" >&2; exit 1; }
done
[ -x "$anchor_fio" ] || { echo "bench-fio: no fio with libiscsi at $anchor_fio" >&2; exit 1; }

echo "building iscsi-bench (release)..." >&2
cargo build --quiet --release -p bench --bin iscsi-bench
ours="$root/target/release/iscsi-bench"

# shellcheck source=lib/null-targets.sh
source "$root/scripts/lib/null-targets.sh"

# Every tool runs under this prefix: empty, or pinned to the last CPU (PIN_APART=1).
pin_tool=()
if [ "${PIN_APART:-0}" = 1 ]; then
    for pid in "${pids[@]}"; do taskset -acp 0 "$pid" >/dev/null; done
    pin_tool=(taskset -c "$(($(nproc) - 1))")
    echo "bench-fio: targets pinned to CPU 0, tools to CPU $(($(nproc) - 1))" >&2
fi

# Runs a command, prints "<cpu seconds> " then the command's stdout from its first '{'.
timed_json() {
    local out="$work/out.$$" cpu="$work/cpu.$$"
    /usr/bin/time -f "%U %S" -o "$cpu" "${pin_tool[@]}" "$@" >"$out" 2>"$work/err.$$" || {
        echo "bench-fio: failed: $*" >&2; tail -5 "$work/err.$$" >&2; echo "0 {}"; return; }
    awk '{ printf "%.3f ", $1 + $2 }' "$cpu"
    sed -n '/^{/,$p' "$out" | tr -d '\n'
    echo
}

# "iops cpu_us_per_io p50_us p99_us" from "<cpu> <fio json>"
summarize() {
    python3 -c '
import json, sys
line = sys.stdin.read().split(" ", 1)
cpu = float(line[0]); doc = json.loads(line[1] or "{}")
jobs = doc.get("jobs") or [{}]
iops = ios = 0.0; p50 = p99 = 0.0
for job in jobs:
    for d in ("read", "write"):
        s = job.get(d, {})
        if s.get("total_ios", 0) or s.get("io_bytes", 0):
            iops += s.get("iops", 0.0); ios += s.get("total_ios", 0)
            pct = s.get("clat_ns", {}).get("percentile", {})
            p50 = max(p50, pct.get("50.000000", 0) / 1000); p99 = max(p99, pct.get("99.000000", 0) / 1000)
print("%.0f %.2f %.0f %.0f" % (iops, cpu * 1e6 / ios if ios else 0, p50, p99))
'
}

# fio's and ours take the same job options.
job_args() { # rw bs qd
    echo "--name=j --rw=$1 --bs=$2 --iodepth=$3 --runtime=$SECONDS_PER_RUN --time_based \
--output-format=json"
}

run_ours_iscsi() { # url rw bs qd
    # shellcheck disable=SC2046
    timed_json "$ours" $(job_args "$2" "$3" "$4") "--filename=$1" | summarize
}

run_fio_iscsi() { # url rw bs qd
    local escaped=${1//:/\\:}
    # shellcheck disable=SC2046
    timed_json "$anchor_fio" --ioengine=libiscsi $(job_args "$2" "$3" "$4") \
        "--filename=$escaped" | summarize
}

# iscsi-perf runs until interrupted: bound it and read its CPU time from /proc just
# before the interrupt; it prints its average IOPS on the way out.
run_iscsi_perf() { # url rw bs qd -> "iops cpu_us_per_io - -"
    local url=$1 rw=$2 bs=$3 qd=$4 blocks=$(($3 / 512)) args=()
    [ "$rw" = randread ] && args+=(-r)
    case $rw in *write*) echo "- - - -"; return ;; esac
    "${pin_tool[@]}" iscsi-perf "${args[@]}" -m "$qd" -b "$blocks" "$url" >"$work/perf.out" 2>&1 &
    local pid=$! ticks
    sleep "$SECONDS_PER_RUN"
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    kill -INT "$pid" 2>/dev/null || true
    timeout 10 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$work/perf.out" "$ticks" "$(getconf CLK_TCK)" "$SECONDS_PER_RUN" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
found = re.findall(r"iops average ([0-9.]+)", text)
iops = float(found[-1]) if found else 0.0
cpu = float(sys.argv[2]) / float(sys.argv[3])
ios = iops * float(sys.argv[4])
print("%.0f %.2f - -" % (iops, cpu * 1e6 / ios if ios else 0))
PY
}

# Runs PAIRS pairs of "$1 ARGS" and "$2 ARGS" (shell functions printing
# "iops cpu_us_per_io p50 p99"), alternating which goes first; prints one line per pair:
# the first function's four figures, then the second's.
pairs() { # ours_fn fio_fn args...
    local ours_fn=$1 fio_fn=$2 o f
    shift 2
    for i in $(seq "$PAIRS"); do
        if [ $((i % 2)) = 1 ]; then
            o=$("$ours_fn" "$@"); f=$("$fio_fn" "$@")
        else
            f=$("$fio_fn" "$@"); o=$("$ours_fn" "$@")
        fi
        echo "$o $f"
    done
}

# Reads pairs' lines (each: ours' figures, then fio's, as many each); prints ours' medians,
# fio's medians, and the median (lowest-highest) of the per-pair IOPS and CPU ratios. A fifth
# figure per tool (the io_uring table's KiB per device request) is printed after the ratios.
# A run that failed (0 IOPS) voids its pair.
verdict() {
    python3 -c '
import statistics as st, sys
rows = [[float(x) for x in line.split()] for line in sys.stdin if line.strip()]
half = len(rows[0]) // 2 if rows else 4
rows = [r for r in rows if r[0] > 0 and r[half] > 0]
if not rows:
    print("%8s %6s %5s %5s | %8s %6s %5s %5s | %16s %16s" % (("-",) * 10)); sys.exit()
med = lambda i: st.median(r[i] for r in rows)
def spread(num, den):
    q = [r[num] / r[den] for r in rows if r[den]]
    return "%.2f (%.2f-%.2f)" % (st.median(q), min(q), max(q)) if q else "-"
line = "%8.0f %6.2f %5.0f %5.0f | %8.0f %6.2f %5.0f %5.0f | %16s %16s" % (
    med(0), med(1), med(2), med(3), med(half), med(half + 1), med(half + 2), med(half + 3),
    spread(0, half), spread(1, half + 1))
if half > 4:
    kib = lambda i: "%6.0f" % med(i) if all(r[i] >= 0 for r in rows) else "%6s" % "-"
    line += " | %s %s" % (kib(4), kib(half + 4))
print(line)
'
}

# "/sys/.../stat" of the block device holding a file, or nothing (tmpfs).
device_stat_of() { # file
    local dev major minor
    dev=$(stat -c %d "$(dirname "$1")")
    major=$(((dev >> 8) & 0xfff)); minor=$(((dev & 0xff) | ((dev >> 12) & 0xfff00)))
    [ -r "/sys/dev/block/$major:$minor/stat" ] && echo "/sys/dev/block/$major:$minor/stat"
}

# Appends the KiB per request the device served during "$@" (reads and writes; -1 without a
# block device) to the command's "iops cpu p50 p99". The block layer merges adjacent
# requests when they are issued close together, so a sequential row may reach the device
# as fewer, larger requests for one tool than for the other (ARCHITECTURE.md, Benchmarks).
with_request_size() { # stat-file-or-empty cmd...
    local stat=$1 before after figures
    shift
    before=$([ -n "$stat" ] && cat "$stat")
    figures=$("$@")
    after=$([ -n "$stat" ] && cat "$stat")
    python3 -c '
import sys
b, a = sys.argv[1].split(), sys.argv[2].split()
if not b:
    print(-1); sys.exit()
d = [int(y) - int(x) for x, y in zip(b, a)]
requests, sectors = d[0] + d[4], d[2] + d[6]
print("%.0f" % (sectors * 512 / 1024 / requests) if requests else -1)
' "$before" "$after" | { read -r kib; echo "$figures $kib"; }
}

run_ours_uring() { # rw bs qd fio-args...
    local rw=$1 bs=$2 qd=$3
    shift 3
    # shellcheck disable=SC2046
    timed_json "$ours" $(job_args "$rw" "$bs" "$qd") "$@" | summarize
}

run_fio_uring() { # rw bs qd fio-args...
    local rw=$1 bs=$2 qd=$3
    shift 3
    # shellcheck disable=SC2046
    timed_json "$debian_fio" $(job_args "$rw" "$bs" "$qd") "$@" | summarize
}

# The same, with the KiB per device request appended ($device_stat: the file's device).
run_ours_uring_dev() { with_request_size "$device_stat" run_ours_uring "$@"; }
run_fio_uring_dev() { with_request_size "$device_stat" run_fio_uring "$@"; }

# The io_uring engine's rows: O_DIRECT random 4 KiB and sequential 128 KiB reads and writes
# at depth 1, 4, 16 and 32 (URING_DEPTHS narrows them).
uring_rows=()
for rw_bs in "randread 4k" "randwrite 4k" "read 128k" "write 128k"; do
    for qd in ${URING_DEPTHS:-1 4 16 32}; do uring_rows+=("$rw_bs $qd"); done
done

iscsi_rows=("randread 4096 1" "randread 4096 32" "read 65536 8" "read 1048576 4" "randwrite 4096 32")

if [ "${ONLY_TABLE:-iscsi}" = iscsi ]; then
    printf '%-13s %-17s | %-26s | %-26s | %-16s | %-16s | %-14s\n' target workload \
        "iscsi-bench IOPS us/io p50 p99" "fio+libiscsi IOPS us/io p50 p99" "x fio IOPS" \
        "x fio CPU/IO" "iscsi-perf IOPS us/io"
    for t in "${targets[@]}"; do
        read -r name portal iqn lun <<<"$t"
        url="iscsi://$portal/$iqn/$lun"
        for row in "${iscsi_rows[@]}"; do
            read -r rw bs qd <<<"$row"
            measured=$(pairs run_ours_iscsi run_fio_iscsi "$url" "$rw" "$bs" "$qd" | verdict)
            read -r pi pc _ _ <<<"$(run_iscsi_perf "$url" "$rw" "$bs" "$qd")"
            printf '%-13s %-17s | %s | %8s %6s\n' "$name" "$rw $bs $qd" "$measured" "$pi" "$pc"
        done
    done
fi

if [ "${ONLY_TABLE:-uring}" = uring ] && [ -n "$debian_fio" ]; then
    echo
    printf '%-24s %-16s | %-26s | %-26s | %-16s | %-16s | %s\n' file workload \
        "iscsi-bench IOPS us/io p50 p99" "fio io_uring IOPS us/io p50 p99" "x fio IOPS" \
        "x fio CPU/IO" "KiB/device request ours fio"
    disk_file="$root/target/bench-fio.dat"
    shm_file="/dev/shm/bench-fio.dat"
    for file in "$shm_file" "$disk_file"; do
        device_stat=$(device_stat_of "$file" || true)
        # Laid out once, before the rows, so no run's figures include writing the file.
        "$debian_fio" --name=layout --filename="$file" --size=256m --rw=write --bs=1m \
            --direct=1 >/dev/null
        for row in "${uring_rows[@]}"; do
            read -r rw bs qd <<<"$row"
            args="--ioengine=io_uring --direct=1 --size=256m --filename=$file"
            # shellcheck disable=SC2086
            measured=$(pairs run_ours_uring_dev run_fio_uring_dev "$rw" "$bs" "$qd" $args | verdict)
            printf '%-24s %-16s | %s\n' "${file/#$root\//}" "$rw $bs $qd" "$measured"
        done
        rm -f "$file"
    done
fi
