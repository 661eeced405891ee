#!/usr/bin/env python3
"""The bind/unbind storm beside the spread reads (scripts/bench-endpoints.sh, step 5).

`block` runs one block of conditions against the running gateway and prints one JSON
line per condition; `table` reads those lines and prints the storm table.

Conditions:
  quiet          the spread job alone;
  storm:CLASS    the job while CLIENTS control clients bind and unbind BATCH volumes per
                 call (one persistent connection each, bind then unbind, paced at RATE
                 binds+unbinds per second in all; RATE 0: as fast as answered);
  list:CLASS     the same clients, paced alike, calling binding_list for the storm's host
                 instead (no change): what the load generator and the control socket
                 cost beside the reads, apart from the changes;
  alone:CLASS    the storm without the job: the gateway's CPU per change, the rate reached;
  busy:idle      the job beside one SCHED_IDLE busy loop per CPU: no CPU ever idles, yet
                 nothing else runs while the job's threads want a CPU (on a VM an idle
                 vCPU wakes slowly: this is the quiet run without that).
  alternate:CLASS  one job, the storm on and off by turns (TOGGLE_MS each, off first): the
                 job's histogram log (write_hist_log) gives the p99 of the windows inside
                 storm phases and of those inside quiet ones. Both come from one process
                 with the same threads on the same CPUs, so the runs' drift and where the
                 scheduler put the threads (which move a 6 s job's p99 by 10-30% on this
                 VM) drop out of the ratio.
  alternate-list:CLASS  the same with the clients calling binding_list (no change).
CLASS is how the clients run: normal, nice (nice 19) or idle (SCHED_IDLE), the last two
standing in for clients on another host (which take none of the array's CPU).
"""
import json
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import time


def gateway_ticks(pid):
    """User + system CPU of the whole gateway (exited threads included), clock ticks."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def set_class(klass):
    if klass == "nice":
        os.nice(19)
    elif klass == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif klass != "normal":
        sys.exit(f"unknown client class {klass}")


def client(args, c, klass, change, stop, results):
    set_class(klass)
    s = socket.socket(socket.AF_UNIX)
    s.connect(args["socket"])
    f = s.makefile("rwb")
    n = 0

    # The clients stand in for a storage provider on another host, so they spend as little
    # of this machine's CPU as they can: each request is encoded once (only its id
    # changes) and an answer is decoded only when it is an error. Encoding 50 names and
    # decoding 50 rows per call in Python took a CPU beside the reads that a remote
    # provider would not (even at SCHED_IDLE: a client in a system call is not preempted
    # on this kernel, PREEMPT_NONE).
    def encoded(method, params):
        head = b'{"jsonrpc":"2.0","method":"' + method.encode() + b'","params":'
        return head + json.dumps(params, separators=(",", ":")).encode() + b',"id":', method

    def call(request):
        nonlocal n
        n += 1
        line, method = request
        f.write(line + str(n).encode() + b"}\n")
        f.flush()
        answer = f.readline()
        if not answer.startswith(b'{"id"') or b'"result"' not in answer:
            sys.exit(f"{method}: {json.loads(answer).get('error', answer) if answer else 'no answer'}")

    clients, batch, rate = args["clients"], args["batch"], args["rate"]
    mine = [f"s{i}" for i in range(c, args["volumes"], clients)]
    groups = [mine[i:i + batch] for i in range(0, len(mine) - batch + 1, batch)]
    requests = [
        (encoded("bind", {"target": args["target"], "endpoint": 0, "host": args["host"],
                          "pool": args["pool"], "volumes": names}),
         encoded("unbind", {"target": args["target"], "host": args["host"],
                            "pool": args["pool"], "volumes": names}))
        for names in groups
    ]
    listing = encoded("binding_list", {"host": args["host"]})
    done = 0
    t0 = time.perf_counter()
    # With a toggle, changes are made only in the odd phases of toggle_ms from toggle_t0
    # (wall clock, shared with the orchestrator) and paced from each phase's start;
    # `busy` counts the seconds spent in those phases.
    toggle_t0 = args.get("toggle_t0")
    toggle_ms = args.get("toggle_ms") if toggle_t0 else None
    phase, phase_start, phase_done, busy = None, t0, 0, 0.0
    while not stop.is_set() and time.perf_counter() - t0 < args["max_seconds"]:
        if toggle_ms:
            now = time.time()
            k = int((now - toggle_t0) * 1000 // toggle_ms)
            if k % 2 == 0:
                if phase is not None:
                    busy += time.perf_counter() - phase_start
                    phase = None
                time.sleep(min(0.05, toggle_t0 + (k + 1) * toggle_ms / 1000 - now))
                continue
            if k != phase:
                phase, phase_start, phase_done = k, time.perf_counter(), 0
            if rate > 0:
                ahead = phase_done / (rate / clients) - (time.perf_counter() - phase_start)
                if ahead > 0:
                    time.sleep(ahead)
            phase_done += 2 * batch
        elif rate > 0:
            # Paced: this client's share of the rate, binds and unbinds counted alike.
            ahead = done / (rate / clients) - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        bind, unbind = requests[(done // (2 * batch)) % len(groups)]
        if change:
            call(bind)
            call(unbind)
        else:
            call(listing)
            call(listing)
        done += 2 * batch
    if toggle_ms:
        if phase is not None:
            busy += time.perf_counter() - phase_start
        results.put((done, busy))
    else:
        results.put((done, time.perf_counter() - t0))


def spin():
    set_class("idle")
    while True:
        pass


def run_job(args, extra=()):
    out = subprocess.run([args["bench"], "--output-format=json"] + args["job"] + list(extra),
                         check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    d = report["jobs"][0]["read"]
    p = d["clat_ns"]["percentile"]
    return {"iops": d["iops"], "ios": d["total_ios"], "p50_us": p["50.000000"] / 1000,
            "p99_us": p["99.000000"] / 1000}, report["timestamp_ms"]


# fio's latency buckets (FIO_IO_U_PLAT_BITS 6; the histogram log's bins, coarseness 0).
PLAT_BITS, PLAT_VAL = 6, 64


def plat_value_ns(index):
    """fio's plat_idx_to_val: the middle of bucket `index`, in ns."""
    if index < (PLAT_VAL << 1):
        return index
    error_bits = (index >> PLAT_BITS) - 1
    return (1 << (error_bits + PLAT_BITS)) + ((index % PLAT_VAL) + 0.5) * (1 << error_bits)


def percentile_us(bins, fraction):
    total = sum(bins)
    if not total:
        return float("nan")
    seen = 0
    for index, count in enumerate(bins):
        seen += count
        if seen >= fraction * total:
            return plat_value_ns(index) / 1000
    return float("nan")


# Up to this long between the run's timestamp and its job's start (the sessions' login),
# and for a storm call to end after its phase did: a window is counted in a phase only if
# it lies inside it whatever the delay and the spill were.
JOB_START_SLACK_MS = 300
SPILL_MS = 50


def alternate(args, row):
    """The storm on and off by turns beside one job: p99 inside each kind of phase."""
    toggle_ms, window_ms = args["toggle_ms"], args["toggle_ms"] // 6
    prefix = os.path.join(args["log_dir"], f"alternate-{args['round']}-{os.getpid()}")
    figures, started_ms = run_job(args, [f"--write_hist_log={prefix}", f"--log_hist_msec={window_ms}",
                                         f"--runtime={args['alternate_seconds']}"])
    row.update(figures)
    t0_ms = args["toggle_t0"] * 1000
    phases = {0: [0] * (29 * PLAT_VAL), 1: [0] * (29 * PLAT_VAL)}
    windows = {0: 0, 1: 0}
    # Each phase's own histogram too: one disturbance from outside (another process's burst
    # of work) lands in one phase, and moves the pooled p99 of its kind; the median of the
    # storm phases' ratios to their neighbours shrugs it off.
    by_phase = {}
    for path in [f for f in os.listdir(args["log_dir"]) if f.startswith(os.path.basename(prefix))]:
        for line in open(os.path.join(args["log_dir"], path)):
            fields = [int(x) for x in line.split(",")]
            end = started_ms + fields[0] - t0_ms
            first, last = end - window_ms - SPILL_MS, end + JOB_START_SLACK_MS
            k = int(first // toggle_ms)
            if first < 0 or int(last // toggle_ms) != k or fields[1] != 0:
                continue  # straddles a switch, or not a read
            own = by_phase.setdefault(k, [0] * (29 * PLAT_VAL))
            for i, count in enumerate(fields[3:]):
                phases[k % 2][i] += count
                own[i] += count
            windows[k % 2] += 1
        os.remove(os.path.join(args["log_dir"], path))
    row["p99_quiet_us"] = percentile_us(phases[0], 0.99)
    row["p99_storm_us"] = percentile_us(phases[1], 0.99)
    row["p50_quiet_us"] = percentile_us(phases[0], 0.50)
    row["p50_storm_us"] = percentile_us(phases[1], 0.50)
    row["windows"] = [windows[0], windows[1]]
    p99 = {k: percentile_us(bins, 0.99) for k, bins in by_phase.items()}
    # A storm phase (odd) against the mean of the quiet phases on both sides of it.
    pairs = [p99[k] / ((p99[k - 1] + p99[k + 1]) / 2)
             for k in sorted(p99) if k % 2 and k - 1 in p99 and k + 1 in p99]
    row["phase_ratios"] = [round(r, 3) for r in pairs]
    row["phase_ratio_median"] = median(pairs)


def condition(args, name):
    kind, _, klass = name.partition(":")
    pid = args["gateway_pid"]
    ticks0 = gateway_ticks(pid)
    procs, stop, results = [], multiprocessing.Event(), multiprocessing.Queue()
    spinners = []
    if kind == "busy":
        spinners = [multiprocessing.Process(target=spin, daemon=True)
                    for _ in range(os.cpu_count() or 1)]
        for p in spinners:
            p.start()
    if kind.startswith("alternate"):
        # Phase 0 (quiet) starts as the job does, a second from now.
        args = dict(args, toggle_t0=time.time() + 1)
    if kind in ("storm", "list", "alone", "alternate", "alternate-list"):
        change = kind not in ("list", "alternate-list")
        procs = [multiprocessing.Process(target=client,
                                         args=(args, c, klass, change, stop, results))
                 for c in range(args["clients"])]
        for p in procs:
            p.start()
    # Every condition starts its job alike: a second after the last one ended.
    time.sleep(1)
    row = {"condition": name, "priority": args["priority"], "round": args["round"]}
    if kind == "alone":
        time.sleep(args["seconds"])
    elif kind.startswith("alternate"):
        alternate(args, row)
    else:
        row.update(run_job(args)[0])
    stop.set()
    for p in spinners:
        p.kill()
        p.join()
    # A client that failed (its call refused) put nothing: say so instead of waiting.
    try:
        outcomes = [results.get(timeout=args["max_seconds"] + 30) for _ in procs]
    except queue.Empty:
        for p in procs:
            p.kill()
        sys.exit(f"{name}: a storm client ended without its figures (see its error above)")
    for p in procs:
        p.join()
    if outcomes:
        row["ops"] = sum(d for d, _ in outcomes)
        row["ops_per_s"] = row["ops"] / max(t for _, t in outcomes)
    row["gateway_cpu_s"] = (gateway_ticks(pid) - ticks0) / os.sysconf("SC_CLK_TCK")
    return row


def block(argv):
    args = json.load(open(argv[0]))
    names = args["conditions"]
    # Rotate the order each round: the machine's load drifts over minutes.
    shift = args["round"] % len(names)
    for name in names[shift:] + names[:shift]:
        print(json.dumps(condition(args, name)), flush=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2) if xs else float("nan")


def table(argv):
    rows = [json.loads(line) for line in open(argv[0]) if line.strip()]
    quiet = {(r["priority"], r["round"]): r for r in rows if r["condition"] == "quiet"}
    print("| control threads | condition | runs | changes/s reached (median) | IOPS (median) "
          "| p50 µs (median) | p99 µs per run | p99 / same round's quiet p99 (median) "
          "| storm phase / neighbouring quiet phases, median per run (alternate) "
          "| gateway CPU per change beyond the reads, µs (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    keys = []
    for r in rows:
        if (r["priority"], r["condition"]) not in keys:
            keys.append((r["priority"], r["condition"]))
    order = {"quiet": 0, "busy": 1, "storm": 2, "list": 3, "alone": 4, "alternate": 5,
             "alternate-list": 6}
    keys.sort(key=lambda k: (k[0], order[k[1].split(":")[0]], k[1]))
    for priority, name in keys:
        mine = [r for r in rows if r["priority"] == priority and r["condition"] == name]
        rate = median([r["ops_per_s"] for r in mine if "ops_per_s" in r])
        cpu_per_change = []
        ratios = []
        phase_ratios = []
        for r in mine:
            q = quiet.get((priority, r["round"]))
            if "ops" in r and r["ops"] and "p99_storm_us" not in r:
                reads_cpu = 0.0
                if "ios" in r and q and q.get("ios"):
                    reads_cpu = q["gateway_cpu_s"] / q["ios"] * r["ios"]
                cpu_per_change.append(max(0.0, r["gateway_cpu_s"] - reads_cpu) * 1e6 / r["ops"])
            if "p99_storm_us" in r:
                ratios.append(r["p99_storm_us"] / r["p99_quiet_us"])
                if "phase_ratio_median" in r:
                    phase_ratios.append(r["phase_ratio_median"])
            elif "p99_us" in r and q:
                ratios.append(r["p99_us"] / q["p99_us"])
        fmt = lambda x, d=0: "-" if x != x else f"{x:,.{d}f}"
        p99s = ", ".join(f"{r['p99_storm_us']:.0f}/{r['p99_quiet_us']:.0f}"
                         if "p99_storm_us" in r else f"{r['p99_us']:.0f}"
                         for r in mine if "p99_us" in r) or "-"
        print(f"| {priority} | {name} | {len(mine)} | {fmt(rate)} "
              f"| {fmt(median([r['iops'] for r in mine if 'iops' in r]))} "
              f"| {fmt(median([r['p50_us'] for r in mine if 'p50_us' in r]))} | {p99s} "
              f"| {fmt(median(ratios), 3)} "
              f"| {', '.join(f'{x:.3f}' for x in phase_ratios) or '-'} "
              f"| {fmt(median(cpu_per_change), 1)} |")


if __name__ == "__main__":
    {"block": block, "table": table}[sys.argv[1]](sys.argv[2:])
