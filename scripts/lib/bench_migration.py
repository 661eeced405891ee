#!/usr/bin/env python3
"""Issue 19's migration benchmark: our gateway's migration (mirror and DBT modes) beside
QEMU's block mirror (qemu-storage-daemon, copy-mode write-blocking and background) on
files, in the same run, with the same writer load (4 KiB random writes at a fixed rate,
crc32c verification).

Each row copies a file of SIZE MiB at RATE MB/s to another file on /dev/shm:
  - idle: no writer (the reference copy time);
  - busy: the writer runs during the whole copy (IOPS 4 KiB random writes).
Our gateway exports the file as an iSCSI LUN (the writer, iscsi-bench, goes through iSCSI);
QEMU exports it over NBD (the writer, fio's nbd engine with the same options; QEMU's FUSE
export holds the resize permission that its mirror job refuses to share). Each side's write latency is
compared with its own baseline (the writer alone, no migration), so the paths' different
costs cancel out. Noisy: the machine is shared; read the ratios, not the microseconds.

The writer logs every write's completion latency with its Unix time (`write_lat_log`,
`log_unix_epoch`), so each busy row also reports the writes that completed while the
copy ran (from the migrate call until the copy left `copying`): the whole run's p99 mixes
them with the writes before and after the migration. Goal (b) of issue 19 compares the
mirrored writes' p50 with the writer alone on each side: the baselines are the writer
alone on the source (the gateway's plain file LUN) and alone on the destination (a LUN
on the destination's spec, a fresh file). For the gateway's rows the gateway's own
latency (`lun stats --interval-ms`, from the command's arrival on the event loop to its
answer) is read over most of the copy too, and over the baselines' runs, to tell the
gateway's share of a write's time from the rest (the client, the socket, the scheduler).

Usage: scripts/bench-migration.sh [SIZE_MIB=1024] [RATE_MB=100] [IOPS=2000]
Environment: BIN_DIR (default target/release: the binaries under test, to compare two
builds), ROWS=all|gateway|mirror|side-by-side (mirror: the gateway's baselines and its
mirror rows only, for before/after pairs; side-by-side: goal (b) as a mirrored LUN and a
plain file LUN written at the same time on one gateway), WRITER_SECONDS (default: the convergence limit + 10).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import gateway_control

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("BIN_DIR", os.path.join(ROOT, "target/release"))
GATEWAY = os.path.join(BIN_DIR, "iscsi-gateway")
CTL = os.path.join(BIN_DIR, "iscsi-ctl")
BENCH = os.path.join(BIN_DIR, "iscsi-bench")
ROWS = os.environ.get("ROWS", "all")
# POLL_WITH_CTL=1: poll the status through an iscsi-ctl process as before (to compare).
POLL_WITH_CTL = os.environ.get("POLL_WITH_CTL") == "1"
IQN = "iqn.2026-12.io.iscsi-uring:bench-migration"

SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
RATE_MB = int(sys.argv[2]) if len(sys.argv) > 2 else 100
IOPS = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
SIZE = SIZE_MIB << 20
RATE = RATE_MB * 1000 * 1000
IDLE_ESTIMATE = SIZE / RATE
LIMIT = max(30.0, 3 * IDLE_ESTIMATE)  # a copy slower than this "does not converge"
WRITER_SECONDS = int(os.environ.get("WRITER_SECONDS", LIMIT + 10))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fill(path):
    """A file of SIZE bytes of data (no holes: both copies read every byte)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(SIZE_MIB):
            f.write(block)


class Writer:
    """The writer's process and the prefix of its per-write latency log."""

    def __init__(self, proc, log_prefix):
        self.proc = proc
        self.log_prefix = log_prefix


def writer(target, seconds, nbd=False):
    """iscsi-bench on an iSCSI URL; fio's nbd engine (same options) on QEMU's NBD export."""
    log_prefix = tempfile.mktemp(prefix="bench-migration-lat.", dir="/dev/shm")
    common = [
        "--name=w", "--rw=randwrite", "--bs=4k", "--iodepth=8",
        f"--rate_iops={IOPS}", "--time_based", f"--runtime={seconds}",
        f"--size={SIZE}", "--verify=crc32c", "--output-format=json",
        f"--write_lat_log={log_prefix}", "--log_unix_epoch=1",
    ]
    if nbd:
        args = ["fio", *common, "--ioengine=nbd", f"--uri={target}"]
    else:
        args = [BENCH, *common, f"--filename={target}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Writer(proc, log_prefix)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def window_latency(log_prefix, start_s=None, end_s=None):
    """p50 and p99 (us) of the writes that completed in [start_s, end_s] (Unix seconds;
    None: the whole run), from the writer's clat log; removes the logs."""
    values = []
    path = f"{log_prefix}_clat.1.log"
    try:
        with open(path) as f:
            for line in f:
                fields = line.split(",")
                if len(fields) < 3 or fields[2].strip() != "1":
                    continue
                t_ms = int(fields[0])
                if start_s is not None and t_ms < start_s * 1000:
                    continue
                if end_s is not None and t_ms > end_s * 1000:
                    continue
                values.append(int(fields[1]) / 1000)
    except OSError:
        return {"writes": 0, "p50_us": None, "p99_us": None}
    finally:
        for kind in ("lat", "clat", "slat"):
            try:
                os.unlink(f"{log_prefix}_{kind}.1.log")
            except OSError:
                pass
    values.sort()
    return {"writes": len(values), "p50_us": percentile(values, 0.50),
            "p99_us": percentile(values, 0.99)}


def writer_result(w, window=None):
    """The writer's figures from its JSON, and `copy` (the writes completed within
    `window`, Unix seconds) or `log` (every write) from its latency log."""
    result = writer_json(w.proc)
    if window is None:
        result["log"] = window_latency(w.log_prefix)
    else:
        result["copy"] = window_latency(w.log_prefix, *window)
    return result


def writer_json(proc):
    out, err = proc.communicate(timeout=WRITER_SECONDS + 120)
    try:
        text = out.decode()
        job = json.loads(text[text.index("{"):])["jobs"][0]
    except Exception:
        return {"error": "no JSON: " + err.decode()[-300:]}
    pct = job["write"]["clat_ns"].get("percentile", {})
    return {
        "error": job.get("error", -1),
        "verify_failures": err.decode().count("verify:"),
        "iops": job["write"]["iops"],
        "p50_us": pct.get("50.000000", 0) / 1000,
        "p99_us": pct.get("99.000000", 0) / 1000,
        "max_us": job["write"]["clat_ns"].get("max", 0) / 1000,
    }


class Gateway:
    def __init__(self, work, spec):
        self.work = work
        self.port = free_port()
        self.socket = os.path.join(work, "control.sock")
        # A fresh configuration per row.
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        self.log = open(os.path.join(work, "gateway.log"), "ab")
        self.proc = subprocess.Popen(
            [GATEWAY, "--portal", f"127.0.0.1:{self.port}", "--control-socket", self.socket,
             "--state-dir", os.path.join(work, "state"), "--threads", "2"],
            stdout=self.log, stderr=self.log)
        for _ in range(200):
            if os.path.exists(self.socket):
                break
            time.sleep(0.05)
        self.ctl("target", "create", IQN, "--lun", f"0=file:{spec}")

    def ctl(self, *args):
        return gateway_control.ctl(CTL, self.socket, *args)

    def rpc(self, method, params):
        """The status is polled every 50 ms during the copy on the socket itself: an
        `iscsi-ctl` process per poll (a 50 MB binary started 20 times a second) took CPU
        from the writer and the gateway only while a migration ran."""
        return gateway_control.rpc(self.socket, method, params)[0]

    def url(self, lun=0):
        return f"iscsi://127.0.0.1:{self.port}/{IQN}/{lun}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def gateway_row(work, mode, busy):
    src, dst = os.path.join(work, "src.img"), os.path.join(work, "dst.img")
    fill(src)
    if os.path.exists(dst):
        os.unlink(dst)
    gw = Gateway(work, src)
    proc = writer(gw.url(), WRITER_SECONDS) if busy else None
    if busy:
        time.sleep(2)
    inside = {}
    started = time.monotonic()
    copy_started = time.time()
    gw.ctl("migrate", IQN, "0", "--to", f"file:{dst}:{SIZE}", "--mode", mode,
           "--rate", str(RATE))
    if busy:
        threading.Thread(target=gateway_latency, args=(gw, inside), daemon=True).start()
    state, status = "copying", {}
    while time.monotonic() - started < LIMIT:
        status = gw.rpc("migrate_status", {})["migrations"][0]
        if POLL_WITH_CTL:
            status = gw.ctl("migration", "status")["migrations"][0]
        state = status["state"]
        if state != "copying":
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    copy_ended = time.time()
    switch_ms = None
    if state == "ready":
        t = time.monotonic()
        gw.ctl("migration", "complete", IQN, "0", "--commit")
        switch_ms = (time.monotonic() - t) * 1000
    else:
        gw.ctl("migration", "cancel", IQN, "0")
    w = writer_result(proc, (copy_started, copy_ended)) if proc else None
    gw.stop()
    return {
        "system": "gateway", "mode": mode, "busy": busy,
        "converged": state == "ready", "state": state, "seconds": elapsed,
        "copied": status.get("copied_bytes", 0) / SIZE, "passes": status.get("passes", 0),
        "stun_ms": status.get("stun_us", 0) / 1000, "switch_ms": switch_ms, "writer": w,
        "inside": inside,
    }


def side_by_side_row(work):
    """Goal (b) with a shared machine's noise paired out: the migrating LUN (file to file)
    and a plain file LUN of the same kind (a filled file on /dev/shm, as the source) on one
    gateway, each with its own writer at IOPS, at the same time. The plain LUN's p50 over
    the copy stands for the slower side's, measured in the same seconds as the mirrored
    writes' (the sides alone, in runs of their own, move by tens of µs from run to run
    here); the gateway's own p50 of each LUN is read over the same interval."""
    src, dst, plain = (os.path.join(work, name) for name in ("src.img", "dst.img", "plain.img"))
    fill(src)
    fill(plain)
    if os.path.exists(dst):
        os.unlink(dst)
    gw = Gateway(work, src)
    gw.ctl("lun", "attach", IQN, "1", f"file:{plain}")
    mirrored, alone = writer(gw.url(0), WRITER_SECONDS), writer(gw.url(1), WRITER_SECONDS)
    time.sleep(2)
    copy_started, started = time.time(), time.monotonic()
    gw.ctl("migrate", IQN, "0", "--to", f"file:{dst}:{SIZE}", "--mode", "mirror",
           "--rate", str(RATE))
    inside = {}

    def both_luns():
        try:
            ms = int(IDLE_ESTIMATE * 800)
            for lun in gw.ctl("lun", "stats", "--interval-ms", str(ms))["luns"]:
                inside[lun["lun"]] = lun["latency_us"]["p50"]
        except Exception as error:  # noqa: BLE001 (a figure missing, not the run)
            inside["error"] = str(error)

    threading.Thread(target=both_luns, daemon=True).start()
    state = "copying"
    while time.monotonic() - started < LIMIT and state == "copying":
        state = gw.rpc("migrate_status", {})["migrations"][0]["state"]
        time.sleep(0.05)
    window = (copy_started, time.time())
    gw.ctl("migration", "complete", IQN, "0", "--commit")
    m, a = writer_result(mirrored, window), writer_result(alone, window)
    gw.stop()
    return {"state": state, "mirrored": m, "alone": a, "inside": inside}


def print_side_by_side(r):
    m, a = r["mirrored"].get("copy", {}), r["alone"].get("copy", {})
    fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)
    over = m["p50_us"] - a["p50_us"] if m.get("p50_us") and a.get("p50_us") else None
    inside = r["inside"]
    inside_over = inside[0] - inside[1] if 0 in inside and 1 in inside else None
    print(f"\nside by side on one gateway during the copy ({r['state']}): a mirrored LUN and a "
          f"plain file LUN, a writer each at {IOPS}/s\n")
    print("| LUN | writes | p50 us | p99 us | gateway-internal p50 us | errors | verify failures |")
    print("|---|---|---|---|---|---|---|")
    for name, lun, w in (("mirrored (file to file)", 0, r["mirrored"]), ("plain file", 1, r["alone"])):
        c = w.get("copy", {})
        print(f"| {name} | {c.get('writes')} | {fmt(c.get('p50_us'))} | {fmt(c.get('p99_us'))} | "
              f"{fmt(inside.get(lun))} | {fmt(w.get('error'))} | {fmt(w.get('verify_failures'))} |")
    print(f"\nmirrored p50 - plain p50: {fmt(over, '{:+.0f}')} us "
          f"(gateway-internal {fmt(inside_over, '{:+.0f}')} us)")


def gateway_latency(gw, into, ms=None):
    """The gateway's own write latency over most of the copy, or over `ms` (lun_stats with
    an interval: from a command's arrival on its event loop to its answer)."""
    try:
        ms = ms or int(IDLE_ESTIMATE * 800)
        luns = gw.ctl("lun", "stats", "--interval-ms", str(ms))["luns"]
        lat = luns[0]["latency_us"]
        into.update({"p50_us": lat["p50"], "p99_us": lat["p99"]})
    except Exception as error:  # noqa: BLE001 (a figure missing, not the run)
        into["error"] = str(error)


def gateway_baseline(work, side="source"):
    """The writer alone on the source (a filled file) or on the destination (the
    migration's destination spec: a fresh file of SIZE bytes)."""
    if side == "source":
        spec = os.path.join(work, "src.img")
        fill(spec)
    else:
        dst = os.path.join(work, "dst.img")
        if os.path.exists(dst):
            os.unlink(dst)
        spec = f"{dst}:{SIZE}"
    gw = Gateway(work, spec)
    proc = writer(gw.url(), 10)
    time.sleep(1)
    inside = {}
    gateway_latency(gw, inside, 8000)
    w = writer_result(proc)
    w["inside"] = inside
    gw.stop()
    return w


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.read()
        self.cmd("qmp_capabilities")

    def read(self):
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        answer = self.read()
        if "error" in answer:
            raise RuntimeError(f"{name}: {answer['error']}")
        return answer["return"]


def qemu_start(work, src):
    port = free_port()
    qmp_path = os.path.join(work, "qmp.sock")
    if os.path.exists(qmp_path):
        os.unlink(qmp_path)
    log = open(os.path.join(work, "qsd.log"), "ab")
    proc = subprocess.Popen(
        ["qemu-storage-daemon",
         "--blockdev", f"driver=file,node-name=srcfile,filename={src},aio=threads",
         "--blockdev", "driver=raw,node-name=src,file=srcfile",
         "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}",
         "--export", "type=nbd,id=exp0,node-name=src,name=src,writable=on",
         "--chardev", f"socket,id=qmp,path={qmp_path},server=on,wait=off",
         "--monitor", "chardev=qmp"], stdout=log, stderr=log)
    return proc, Qmp(qmp_path), f"nbd://127.0.0.1:{port}/src"


def qemu_row(work, copy_mode, busy):
    src, dst = os.path.join(work, "src.img"), os.path.join(work, "dst.img")
    fill(src)
    with open(dst, "wb") as f:
        f.truncate(SIZE)
    proc, qmp, mnt = qemu_start(work, src)
    try:
        return qemu_mirror(proc, qmp, mnt, dst, copy_mode, busy)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def qemu_mirror(proc, qmp, mnt, dst, copy_mode, busy):
    w_proc = writer(mnt, WRITER_SECONDS, nbd=True) if busy else None
    if busy:
        time.sleep(2)
    qmp.cmd("blockdev-add", driver="file", **{"node-name": "dstfile"}, filename=dst)
    qmp.cmd("blockdev-add", driver="raw", **{"node-name": "dst"}, file="dstfile")
    started = time.monotonic()
    copy_started = time.time()
    qmp.cmd("blockdev-mirror", **{"job-id": "m", "copy-mode": copy_mode}, device="src",
            target="dst", sync="full", speed=RATE)
    ready, job = False, {}
    while time.monotonic() - started < LIMIT:
        jobs = qmp.cmd("query-block-jobs")
        job = jobs[0] if jobs else {}
        if job.get("ready"):
            ready = True
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    copy_ended = time.time()
    switch_ms = None
    if ready:
        t = time.monotonic()
        qmp.cmd("job-complete", id="m")
        while qmp.cmd("query-block-jobs"):
            time.sleep(0.001)
        switch_ms = (time.monotonic() - t) * 1000
    else:
        qmp.cmd("block-job-cancel", device="m", force=True)
    w = writer_result(w_proc, (copy_started, copy_ended)) if w_proc else None
    qmp.cmd("quit")
    proc.wait(timeout=60)
    return {
        "system": "qemu", "mode": copy_mode, "busy": busy, "converged": ready,
        "state": "ready" if ready else "not ready", "seconds": elapsed,
        "copied": job.get("offset", 0) / SIZE, "passes": None, "stun_ms": None,
        "switch_ms": switch_ms, "writer": w, "inside": {},
    }


def qemu_baseline(work):
    src = os.path.join(work, "src.img")
    fill(src)
    proc, qmp, mnt = qemu_start(work, src)
    w = writer_result(writer(mnt, 10, nbd=True))
    qmp.cmd("quit")
    proc.wait(timeout=60)
    return w


def main():
    for tool in (GATEWAY, CTL, BENCH):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: cargo build --release -p gateway -p tools -p bench")
    if ROWS not in ("all", "gateway", "mirror", "side-by-side"):
        sys.exit(f"ROWS={ROWS}: all, gateway, mirror or side-by-side")
    if ROWS == "all" and not shutil.which("qemu-storage-daemon"):
        sys.exit("qemu-storage-daemon missing: apt-get install -y qemu-system-common")
    work = tempfile.mkdtemp(prefix="bench-migration.", dir="/dev/shm")
    if ROWS == "side-by-side":
        try:
            print_side_by_side(side_by_side_row(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    rows, base = [], {}
    qemu = ROWS == "all"
    busy_rows = [("gateway", "mirror")]
    if ROWS != "mirror":
        busy_rows.append(("gateway", "dbt"))
    if qemu:
        busy_rows += [("qemu", "write-blocking"), ("qemu", "background")]
    try:
        base["gateway"] = gateway_baseline(work)
        dest_base = gateway_baseline(work, "destination")
        if qemu:
            base["qemu"] = qemu_baseline(work)
        idle = {}
        for system, mode in (("gateway", "mirror"), ("qemu", "write-blocking")):
            if system == "qemu" and not qemu:
                continue
            row = gateway_row(work, mode, False) if system == "gateway" else qemu_row(work, mode, False)
            idle[system] = row["seconds"]
            rows.append(row)
        for system, mode in busy_rows:
            row = gateway_row(work, mode, True) if system == "gateway" else qemu_row(work, mode, True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmigration of a {SIZE_MIB} MiB file at {RATE_MB} MB/s; writer 4 KiB random writes "
          f"at {IOPS}/s, iodepth 8, crc32c verify (noisy: shared 2-core machine)\n")
    fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)
    for name, w in [*base.items(), ("gateway destination", dest_base)]:
        log = w.get("log", {})
        print(f"baseline writer alone on {name}: p50 {w.get('p50_us', 0):.0f} us, "
              f"p99 {w.get('p99_us', 0):.0f} us, max {w.get('max_us', 0):.0f} us, errors {w.get('error')}"
              f" (per-write log: p50 {fmt(log.get('p50_us'))} us, p99 {fmt(log.get('p99_us'))} us)"
              + (f"; gateway-internal p50 {fmt(w['inside'].get('p50_us'))} us, "
                 f"p99 {fmt(w['inside'].get('p99_us'))} us" if w.get("inside") else ""))
    print()
    print("| system | mode | writer | converged | copy s | x idle | copied / size | passes | "
          "stun ms | switch ms | write p50 us | p99 us | p99 / baseline | max us | errors | verify failures |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w = r["writer"] or {}
        b = base[r["system"]] or {}
        p99 = w.get("p99_us")
        ratio = f"{p99 / b['p99_us']:.2f}" if p99 and b.get("p99_us") else "-"
        x_idle = r["seconds"] / idle[r["system"]] if idle.get(r["system"]) else 0
        print(f"| {r['system']} | {r['mode']} | {'busy' if r['busy'] else 'idle'} | "
              f"{'yes' if r['converged'] else 'NO (' + r['state'] + ')'} | {r['seconds']:.1f} | "
              f"{x_idle:.2f} | {r['copied']:.2f} | {fmt(r['passes'])} | {fmt(r['stun_ms'], '{:.1f}')} | "
              f"{fmt(r['switch_ms'], '{:.1f}')} | {fmt(w.get('p50_us'))} | {fmt(p99)} | {ratio} | "
              f"{fmt(w.get('max_us'))} | {fmt(w.get('error'))} | {fmt(w.get('verify_failures'))} |")

    # The writes that completed while the copy ran, against the writer alone (per-write
    # logs both); goal (b): the mirrored p50 against the slower side's p50 + 20 us.
    print("\nwhile the copy ran (writes completed from the migrate call to the end of the copy; "
          "baselines from the same per-write logs):\n")
    print("| system | mode | writes | p50 us | p99 us | p99 / baseline p99 | p50 - slower side's p50 | "
          "gateway-internal p50 us | p99 us | internal p50 - slower side's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w = r["writer"] or {}
        copy = w.get("copy")
        if not copy:
            continue
        b = (base[r["system"]] or {}).get("log", {})
        ratio = (copy["p99_us"] / b["p99_us"]) if copy.get("p99_us") and b.get("p99_us") else None
        # Goal (b) is the gateway's: its destination alone is measured, QEMU's is not.
        over = None
        if r["system"] == "gateway":
            sides = [b.get("p50_us"), dest_base.get("log", {}).get("p50_us")]
            slower = max((v for v in sides if v is not None), default=None)
            if copy.get("p50_us") is not None and slower:
                over = copy["p50_us"] - slower
        inside = r.get("inside") or {}
        # The same inside the gateway (arrival on the loop to the answer), where the
        # client's and the scheduler's share of a write does not blur it.
        inside_over = None
        if r["system"] == "gateway" and inside.get("p50_us") is not None:
            sides = [(w or {}).get("inside", {}).get("p50_us") for w in (base["gateway"], dest_base)]
            slower = max((v for v in sides if v is not None), default=None)
            if slower is not None:
                inside_over = inside["p50_us"] - slower
        print(f"| {r['system']} | {r['mode']} | {copy['writes']} | {fmt(copy.get('p50_us'))} | "
              f"{fmt(copy.get('p99_us'))} | {fmt(ratio, '{:.2f}')} | {fmt(over, '{:+.0f}')} | "
              f"{fmt(inside.get('p50_us'))} | {fmt(inside.get('p99_us'))} | {fmt(inside_over, '{:+.0f}')} |")


if __name__ == "__main__":
    main()
