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

Usage: scripts/bench-migration.sh [SIZE_MIB=1024] [RATE_MB=100] [IOPS=2000]
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATEWAY = os.path.join(ROOT, "target/release/iscsi-gateway")
CTL = os.path.join(ROOT, "target/release/iscsi-ctl")
BENCH = os.path.join(ROOT, "target/release/iscsi-bench")
IQN = "iqn.2026-12.io.iscsi-uring:bench-migration"

SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
RATE_MB = int(sys.argv[2]) if len(sys.argv) > 2 else 100
IOPS = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
SIZE = SIZE_MIB << 20
RATE = RATE_MB * 1000 * 1000
IDLE_ESTIMATE = SIZE / RATE
LIMIT = max(30.0, 3 * IDLE_ESTIMATE)  # a copy slower than this "does not converge"
WRITER_SECONDS = int(LIMIT + 10)


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


def writer(target, seconds, nbd=False):
    """iscsi-bench on an iSCSI URL; fio's nbd engine (same options) on QEMU's NBD export."""
    common = [
        "--name=w", "--rw=randwrite", "--bs=4k", "--iodepth=8",
        f"--rate_iops={IOPS}", "--time_based", f"--runtime={seconds}",
        f"--size={SIZE}", "--verify=crc32c", "--output-format=json",
    ]
    if nbd:
        args = ["fio", *common, "--ioengine=nbd", f"--uri={target}"]
    else:
        args = [BENCH, *common, f"--filename={target}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def writer_result(proc):
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
    def __init__(self, work, src):
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
        self.ctl("target", "create", IQN, "--lun", f"0=file:{src}")

    def ctl(self, *args):
        out = subprocess.run([CTL, "gateway", "--socket", self.socket, "--json", *args],
                             capture_output=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"iscsi-ctl {args}: {out.stderr.decode()}")
        return json.loads(out.stdout)

    def url(self):
        return f"iscsi://127.0.0.1:{self.port}/{IQN}/0"

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
    started = time.monotonic()
    gw.ctl("migrate", IQN, "0", "--to", f"file:{dst}:{SIZE}", "--mode", mode,
           "--rate", str(RATE))
    state, status = "copying", {}
    while time.monotonic() - started < LIMIT:
        status = gw.ctl("migration", "status")["migrations"][0]
        state = status["state"]
        if state != "copying":
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    switch_ms = None
    if state == "ready":
        t = time.monotonic()
        gw.ctl("migration", "complete", IQN, "0", "--commit")
        switch_ms = (time.monotonic() - t) * 1000
    else:
        gw.ctl("migration", "cancel", IQN, "0")
    w = writer_result(proc) if proc else None
    gw.stop()
    return {
        "system": "gateway", "mode": mode, "busy": busy,
        "converged": state == "ready", "state": state, "seconds": elapsed,
        "copied": status.get("copied_bytes", 0) / SIZE, "passes": status.get("passes", 0),
        "stun_ms": status.get("stun_us", 0) / 1000, "switch_ms": switch_ms, "writer": w,
    }


def gateway_baseline(work):
    src = os.path.join(work, "src.img")
    fill(src)
    gw = Gateway(work, src)
    w = writer_result(writer(gw.url(), 10))
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
    switch_ms = None
    if ready:
        t = time.monotonic()
        qmp.cmd("job-complete", id="m")
        while qmp.cmd("query-block-jobs"):
            time.sleep(0.001)
        switch_ms = (time.monotonic() - t) * 1000
    else:
        qmp.cmd("block-job-cancel", device="m", force=True)
    w = writer_result(w_proc) if w_proc else None
    qmp.cmd("quit")
    proc.wait(timeout=60)
    return {
        "system": "qemu", "mode": copy_mode, "busy": busy, "converged": ready,
        "state": "ready" if ready else "not ready", "seconds": elapsed,
        "copied": job.get("offset", 0) / SIZE, "passes": None, "stun_ms": None,
        "switch_ms": switch_ms, "writer": w,
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
    if not shutil.which("qemu-storage-daemon"):
        sys.exit("qemu-storage-daemon missing: apt-get install -y qemu-system-common")
    work = tempfile.mkdtemp(prefix="bench-migration.", dir="/dev/shm")
    rows, base = [], {}
    try:
        base["gateway"] = gateway_baseline(work)
        base["qemu"] = qemu_baseline(work)
        idle = {}
        for system, mode in (("gateway", "mirror"), ("qemu", "write-blocking")):
            row = gateway_row(work, mode, False) if system == "gateway" else qemu_row(work, mode, False)
            idle[system] = row["seconds"]
            rows.append(row)
        for system, mode in (("gateway", "mirror"), ("gateway", "dbt"),
                             ("qemu", "write-blocking"), ("qemu", "background")):
            row = gateway_row(work, mode, True) if system == "gateway" else qemu_row(work, mode, True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmigration of a {SIZE_MIB} MiB file at {RATE_MB} MB/s; writer 4 KiB random writes "
          f"at {IOPS}/s, iodepth 8, crc32c verify (noisy: shared 2-core machine)\n")
    for name, w in base.items():
        print(f"baseline writer alone on {name}: p50 {w.get('p50_us', 0):.0f} us, "
              f"p99 {w.get('p99_us', 0):.0f} us, max {w.get('max_us', 0):.0f} us, errors {w.get('error')}")
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
        fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)
        print(f"| {r['system']} | {r['mode']} | {'busy' if r['busy'] else 'idle'} | "
              f"{'yes' if r['converged'] else 'NO (' + r['state'] + ')'} | {r['seconds']:.1f} | "
              f"{x_idle:.2f} | {r['copied']:.2f} | {fmt(r['passes'])} | {fmt(r['stun_ms'], '{:.1f}')} | "
              f"{fmt(r['switch_ms'], '{:.1f}')} | {fmt(w.get('p50_us'))} | {fmt(p99)} | {ratio} | "
              f"{fmt(w.get('max_us'))} | {fmt(w.get('error'))} | {fmt(w.get('verify_failures'))} |")


if __name__ == "__main__":
    main()
