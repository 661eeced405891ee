#!/usr/bin/env bash
# Where the time of create + attach through the control plane goes (issue 16's goal: p99
# < 2 ms with the durable commit). A release iscsi-gateway with --state-dir (on the disk
# of $STATE_PARENT, by default this checkout's target/) and
# RUST_LOG=gateway::control::phases=debug logs every call's phases (parse, apply,
# journal write, wait for another leader, snapshot, fdatasync, the pool's commit,
# publish, wait for the loops, answer; `gateway/src/control/phases.rs`).
# $ROUNDS rounds; each round runs every form of $FORMS once, then the disk's floor
# (pwrite + fdatasync twice, and once, on a file beside the journal), so all meet the
# same disk: the machine is shared and its disk's sync time drifts by 10x within minutes.
# Forms: ram = target_create + lun_attach of a RAM LUN (two RPCs); pool = volume_create
# (1 TiB, a pool made on the same disk) + lun_attach of it to a target that exists (up
# to 256 LUNs a target; making the next target is not timed), the issue's wording;
# attach = volume_create with attach (one RPC, one commit: `control/volume_attach.rs`).
# With TARGETS_BEFORE=N, N targets are made first (untimed), to see what the number of
# targets costs per change.
# Then the same rounds under `strace -f -c` for the syscalls per form (counts do not
# depend on the load; strace's times do, so only counts are printed; one form at a time).
# Not for CI. Usage: [GATEWAY=bin] [FORMS=ram,pool,attach] [TARGETS_BEFORE=N]
#   scripts/bench-control-phases.sh [rounds, default 2000]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-2000}
TARGETS_BEFORE=${TARGETS_BEFORE:-0}
FORMS=${FORMS:-ram,pool,attach}
STATE_PARENT=${STATE_PARENT:-$PWD/target}
if [ -z "${GATEWAY:-}" ]; then cargo build --release -q -p gateway; fi
gateway=${GATEWAY:-target/release/iscsi-gateway}

mkdir -p "$STATE_PARENT"
work=$(mktemp -d "$STATE_PARENT/bench-control-phases.XXXXXX")
# The gateway's log (a DEBUG line per call) goes to memory when it can: appended to a file
# on the journal's disk, its delayed allocation would join the journal's syncs.
logs=$(mktemp -d /dev/shm/bench-control-phases.XXXXXX 2>/dev/null || echo "$work")
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; fi
  sleep 0.2
  rm -rf "$work" "$logs"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_gateway() { # start_gateway NAME [wrapper...]
  local name=$1
  shift
  RUST_LOG=info,gateway::control::phases=debug "$@" "$gateway" \
    --portal "127.0.0.1:$(free_port)" --threads 2 \
    --control-socket "$work/$name.sock" --state-dir "$work/$name-state" \
    >"$logs/$name.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 200); do
    grep -q "target ready" "$logs/$name.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "gateway $name did not start:" >&2
  cat "$logs/$name.log" >&2
  exit 1
}

stop_gateway() {
  # Under strace the gateway is strace's child: stop the gateway, so that strace writes
  # its summary as it exits.
  local child
  child=$(pgrep -P "$gateway_pid" || true)
  kill ${child:-$gateway_pid}
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}

# ROUNDS rounds of every form in FORMS, each round followed by the floors when FLOOR is
# a path; prints "FORM p50 p99 p99.9 max" per form, then "floor2 ..." and "floor1 ...".
pairs() { # pairs SOCKET ROUNDS PREFIX TARGETS_BEFORE FORMS POOL [FLOOR]
  python3 - "$@" <<'EOF'
import json, os, socket, sys, time
path, rounds, prefix, before = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
forms, pool = sys.argv[5].split(","), sys.argv[6]
floor = sys.argv[7] if len(sys.argv) > 7 else None
s = socket.socket(socket.AF_UNIX)
s.connect(path)
f = s.makefile("rwb")
def call(i, method, params):
    f.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n").encode())
    f.flush()
    answer = json.loads(f.readline())
    if "error" in answer:
        sys.exit(f"{method}: {answer['error']}")
for n in range(before):
    call(-1, "target_create", {"name": f"iqn.2026-12.bench:{prefix}-before-{n}"})
if floor:
    fd = os.open(floor, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"\0" * (4 << 20))
    os.fsync(fd)
def holder(form, n):
    """The target a pool form attaches volume n to: made (untimed) every 256 volumes."""
    target = f"iqn.2026-12.bench:{prefix}-{form}-{n // 256}"
    if n % 256 == 0:
        call(-1, "target_create", {"name": target})
    return target
def run(form, n):
    """One create + attach of form; its milliseconds."""
    if form == "ram":
        name = f"iqn.2026-12.bench:{prefix}-{n}"
        t0 = time.perf_counter()
        call(2 * n, "target_create", {"name": name})
        call(2 * n + 1, "lun_attach", {"target": name, "lun": 0, "backend": "ram:1M"})
    elif form == "pool":
        target = holder(form, n)
        t0 = time.perf_counter()
        call(2 * n, "volume_create", {"pool": pool, "name": f"p{n}", "size": "1T"})
        call(2 * n + 1, "lun_attach", {"target": target, "lun": n % 256,
                                       "backend": f"pool:{pool},volume=p{n}"})
    elif form == "attach":
        target = holder(form, n)
        t0 = time.perf_counter()
        call(n, "volume_create", {"pool": pool, "name": f"a{n}", "size": "1T",
                                  "attach": {"target": target, "lun": n % 256}})
    else:
        sys.exit(f"unknown form {form}")
    return (time.perf_counter() - t0) * 1000
times = {form: [] for form in forms}
disk2, disk1 = [], []
for n in range(rounds):
    for form in forms:
        times[form].append(run(form, n))
    if floor:
        for k, into in ((2, disk2), (1, disk1)):
            t0 = time.perf_counter()
            for j in range(k):
                os.pwrite(fd, b"r" * 200, ((3 * n + j + 2 * (k == 1)) * 256) % (4 << 20))
                os.fdatasync(fd)
            into.append((time.perf_counter() - t0) * 1000)
def show(label, values):
    values.sort()
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
    print(f"{label} {q(0.5):.3f} {q(0.99):.3f} {q(0.999):.3f} {values[-1]:.3f}")
for form in forms:
    show(form, times[form])
if disk2:
    show("floor2", disk2)
    show("floor1", disk1)
EOF
}

# The pool of the pool forms, on the journal's disk (its journal is allocated when made).
"$gateway" pool create "$work/pool.img" 64G >/dev/null

start_gateway timed
figures=$(pairs "$work/timed.sock" "$ROUNDS" timed "$TARGETS_BEFORE" "$FORMS" "$work/pool.img" "$work/floor")
stop_gateway

echo
echo "create + attach, ms each, $ROUNDS rounds after $TARGETS_BEFORE targets, each round followed by the disk floors (load average: $(cut -d' ' -f1-3 /proc/loadavg)); noisy: a shared machine"
printf '| %-52s | %8s | %8s | %8s | %8s |\n' "path" "p50" "p99" "p99.9" "max"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..54})" "----------" "----------" "----------" "----------"
while read -r who p50 p99 p999 max; do
  case "$who" in
    ram) label="target_create + lun_attach (RAM), two RPCs" ;;
    pool) label="volume_create + lun_attach (pool), two RPCs" ;;
    attach) label="volume_create with attach (pool), one RPC" ;;
    floor2) label="disk floor: 2 x (pwrite + fdatasync), same loop" ;;
    floor1) label="disk floor: 1 x (pwrite + fdatasync), same loop" ;;
    *) label=$who ;;
  esac
  printf '| %-52s | %8s | %8s | %8s | %8s |\n' "$label" "$p50" "$p99" "$p999" "$max"
done <<<"$figures"

echo
echo "phases of one call, microseconds (calls of the timed loop only)"
python3 - "$logs/timed.log" "$TARGETS_BEFORE" <<'EOF'
import re, sys
path, before = sys.argv[1], int(sys.argv[2])
rows = {}
seen = {}
for line in open(path, errors="replace"):
    if "control call phases" not in line:
        continue
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    method = fields.get("method", "?").strip('"')
    seen[method] = seen.get(method, 0) + 1
    if method == "target_create" and seen[method] <= before:
        continue
    for key, value in fields.items():
        if key.endswith("_us"):
            rows.setdefault(method, {}).setdefault(key[:-3], []).append(int(value))
phases = ["parse", "apply", "journal", "wait", "snapshot", "sync", "pool", "publish", "visible", "answer", "total"]
print("| %-20s | %-9s | " % ("method", "") + " | ".join(f"{p:>8}" for p in phases) + " |")
print("|" + "-" * 22 + "|" + "-" * 11 + "|" + "|".join("-" * 10 for _ in phases) + "|")
for method, columns in sorted(rows.items()):
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        cells = []
        for p in phases:
            values = sorted(columns.get(p, [0]))
            cells.append(f"{values[min(len(values) - 1, int(q * len(values)))]:>8}")
        print(f"| {method:<20} | {label:<9} | " + " | ".join(cells) + " |")
EOF

if command -v strace >/dev/null && [ "${STRACE:-1}" = 1 ]; then
  strace_rounds=$(( ROUNDS < 500 ? ROUNDS : 500 ))
  echo
  echo "syscalls per create + attach under strace -f -c ($strace_rounds rounds of one form; the whole process: loops and control threads; those at 0.25 or more)"
  for form in ${FORMS//,/ }; do
    "$gateway" pool create "$work/traced-$form.img" 64G >/dev/null
    start_gateway "traced-$form" strace -f -c -o "$logs/strace-$form.txt"
    pairs "$work/traced-$form.sock" "$strace_rounds" "traced-$form" 0 "$form" "$work/traced-$form.img" >/dev/null
    stop_gateway
    sleep 0.5
    echo "  $form:"
    python3 - "$logs/strace-$form.txt" "$strace_rounds" <<'EOF'
import sys
path, rounds = sys.argv[1], int(sys.argv[2])
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and not parts[-1].startswith("total"):
        calls, name = int(parts[3]), parts[-1]
        if calls >= rounds // 4:
            print(f"    {name:<16} {calls / rounds:6.2f}")
EOF
  done
fi
