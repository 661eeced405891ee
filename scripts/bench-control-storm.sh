#!/usr/bin/env bash
# The control plane's bind/unbind storm alone (no I/O), by number of concurrent clients,
# to show what group commit buys and where the rest goes: a release iscsi-gateway with
# --state-dir on the disk of $STATE_PARENT and one pool, a target with an endpoint; for
# each client count, (a) binds only (every call a distinct volume: the state journal's
# commit is the only sync), (b) bind+unbind pairs (an unbind also flushes its volume,
# a sync of the pool). Anchor in the same run: the disk's pwrite+fdatasync rate.
# The machine is shared: figures are noisy. Not for CI.
# Usage: [GATEWAY=bin] scripts/bench-control-storm.sh [seconds per row, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_ROW=${1:-4}
CLIENT_COUNTS=${CLIENT_COUNTS:-"1 4 12"}
# Volumes made per client before the rows (a binds-only row ends early when they run out;
# its rate stays right).
PER_CLIENT=${PER_CLIENT:-3000}
STATE_PARENT=${STATE_PARENT:-$PWD/target}
TARGET=iqn.2026-12.bench:storm
# GATEWAY=... runs another build (e.g. a copy of main's, for a before/after table).
if [ -z "${GATEWAY:-}" ]; then cargo build --release -q -p gateway; fi
gateway=$(realpath "${GATEWAY:-target/release/iscsi-gateway}")
mkdir -p "$STATE_PARENT"
work=$(mktemp -d "$STATE_PARENT/bench-storm.XXXXXX")
gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$gateway" pool create "$work/pool.img" 4G >/dev/null
"$gateway" --portal "127.0.0.1:$port" --threads 2 --control-socket "$work/control.sock" \
  --state-dir "$work/state" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 200); do
  grep -q "target ready" "$work/gateway.log" 2>/dev/null && break
  sleep 0.05
done
python3 - "$work/control.sock" "$work/pool.img" "$TARGET" "$SECONDS_ROW" "$CLIENT_COUNTS" "$work/floor" "$PER_CLIENT" <<'EOF'
import json, multiprocessing, os, socket, sys, time
path, pool, target, seconds, counts, floor_path = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), [int(c) for c in sys.argv[5].split()], sys.argv[6]
per_client = int(sys.argv[7])
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rwb")
    n = [0]
    def call(method, params):
        n[0] += 1
        f.write((json.dumps({"jsonrpc": "2.0", "id": n[0], "method": method, "params": params}) + "\n").encode())
        f.flush()
        answer = json.loads(f.readline())
        if "error" in answer:
            sys.exit(f"{method}: {answer['error']}")
        return answer["result"]
    return call
call = connect()
biggest = max(counts)
for c in range(biggest):
    for i in range(per_client):
        call("volume_create", {"pool": pool, "name": f"c{c}-{i}", "size": "1M"})
call("target_create", {"name": target, "luns": [{"lun": 0, "backend": "endpoint"}]})
def client(c, mode, row, results):
    call = connect()
    host = f"iqn.2026-12.bench:h{row}-{c}"
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and done < per_client:
        name = f"c{c}-{done if mode == 'bind' else 0}"
        call("bind", {"target": target, "endpoint": 0, "host": host, "pool": pool, "volumes": [name]})
        done += 1
        if mode == "pair":
            call("unbind", {"target": target, "host": host, "pool": pool, "volumes": [name]})
            done += 1
    results.put((done, time.perf_counter() - t0))
def run(clients, mode, row):
    results = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=client, args=(c, mode, row, results)) for c in range(clients)]
    for p in procs:
        p.start()
    outcomes = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(d for d, _ in outcomes) / max(t for _, t in outcomes)
fd = os.open(floor_path, os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"\0" * (4 << 20))
os.fsync(fd)
n = 0
t0 = time.perf_counter()
while time.perf_counter() - t0 < seconds:
    os.pwrite(fd, b"x" * 300, (n * 512) % (4 << 20))
    os.fdatasync(fd)
    n += 1
floor = n / (time.perf_counter() - t0)
print("| clients | binds only, calls/s | bind+unbind, calls/s |")
print("|---|---|---|")
row = 0
for clients in counts:
    row += 1
    binds = run(clients, "bind", row)
    row += 1
    pairs = run(clients, "pair", row)
    print(f"| {clients} | {binds:.0f} | {pairs:.0f} |")
print(f"| anchor: pwrite+fdatasync per second, one writer | {floor:.0f} | |")
EOF
