//! fio's synchronous engines (`psync`, `sync`, `pvsync`, `pvsync2`) beside fio itself: the
//! same job runs through fio and through iscsi-bench on a file of its own, and both must
//! do the same I/O (offsets and lengths in order, from `write_iolog`), one at a time
//! (`iodepth_level` all at 1, as fio caps them), under the engine's name, and with that
//! engine's system calls (counted with `strace`); and pvsync2's own options beside fio
//! 3.42. Skipped (loudly) where fio or strace is missing, a failure under CI.

mod common;

use common::local_jobs::resident_bytes;
use common::{describe, json_of, ScratchDir};

use std::path::Path;
use std::process::{Command, Output};

/// The engines, with the system calls that carry their reads and writes.
const ENGINES: [(&str, &[&str]); 4] = [
    ("psync", &["pread64", "pwrite64"]),
    ("sync", &["lseek", "read", "write"]),
    ("pvsync", &["preadv", "pwritev"]),
    ("pvsync2", &["preadv2", "pwritev2"]),
];

/// 4 KiB I/Os over a 1 MiB file, 200 of them, 8 asked for in flight (after `--name=j`;
/// a random mix unless the caller gives `rw`).
const JOB: [&str; 6] = [
    "--rw=randrw",
    "--bs=4k",
    "--size=1m",
    "--iodepth=8",
    "--number_ios=200",
    "--randseed=7",
];

fn run(program: &Path, dir: &Path, engine: &str, extra: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .current_dir(dir)
        // After --name, so the engine is one of the job's options in fio's JSON too.
        .arg("--name=j")
        .arg(format!("--ioengine={engine}"))
        .arg(format!("--filename={}", dir.join("data").display()))
        .args(JOB)
        .arg(format!("--write_iolog={}", dir.join("io.log").display()))
        .arg("--output-format=json")
        .args(extra)
        .output()
        .expect("run the job")
}

/// The reads and writes of a `write_iolog`, in order: action, offset, length.
fn logged_ios(log: &Path) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(log).expect("read the iolog");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, _, action @ ("read" | "write"), offset, len] = fields[..] else {
                return None;
            };
            Some((action.to_string(), offset.parse().ok()?, len.parse().ok()?))
        })
        .collect()
}

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_iscsi-bench"))
}

#[test]
fn each_sync_engine_does_fios_io_one_at_a_time() {
    let Some(fio) = common::fio() else { return };
    for (engine, _) in ENGINES {
        let mut logs = Vec::new();
        // A sequential write then a sequential read (the same offsets in the same order
        // from both tools), and the random mix (its own draws: each block at most once).
        for rw in ["--rw=write", "--rw=read", "--rw=randrw"] {
            for (who, program) in [("fio", fio.as_path()), ("ours", ours())] {
                let dir = ScratchDir::new("fio_sync_engines", &format!("{engine}-{who}"));
                let out = run(program, dir.path(), engine, &[rw]);
                assert!(
                    out.status.success(),
                    "{who} {engine} {rw}: {}",
                    describe(&out)
                );
                let job = &json_of(&out)["jobs"][0];
                assert_eq!(
                    job["job options"]["ioengine"], engine,
                    "{who} {engine}: the engine's name in the JSON"
                );
                let at_one = job["iodepth_level"]["1"].as_f64().unwrap_or(0.0);
                assert!(
                    at_one > 99.9,
                    "{who} {engine} {rw}: depth capped at 1, got {}",
                    job["iodepth_level"]
                );
                let ios = job["read"]["total_ios"].as_u64().unwrap_or(0)
                    + job["write"]["total_ios"].as_u64().unwrap_or(0);
                assert_eq!(ios, 200, "{who} {engine} {rw}: number_ios");
                logs.push(logged_ios(&dir.join("io.log")));
            }
        }
        assert_eq!(logs[0].len(), 200, "{engine}: fio's log");
        assert_eq!(
            logs[1], logs[0],
            "{engine}: sequential writes, ours against fio's"
        );
        assert_eq!(
            logs[3], logs[2],
            "{engine}: sequential reads, ours against fio's"
        );
        for (who, log) in [("fio", &logs[4]), ("ours", &logs[5])] {
            let mut offsets: Vec<u64> = log.iter().map(|(_, offset, _)| *offset).collect();
            offsets.sort_unstable();
            offsets.dedup();
            assert_eq!(
                offsets.len(),
                200,
                "{who} {engine}: a block twice in {log:?}"
            );
            assert!(
                log.iter().all(|(_, offset, len)| offset % 4096 == 0
                    && *len == 4096
                    && *offset < 1 << 20),
                "{who} {engine}: {log:?}"
            );
        }
    }
}

/// How many times each system call in `names` ran in `program`'s threads (`strace -f -c`).
fn syscall_counts(dir: &Path, engine: &str) -> Vec<(String, u64)> {
    let summary = dir.join("strace.txt");
    let out = Command::new("strace")
        .arg("-f")
        .arg("-c")
        .arg("-o")
        .arg(&summary)
        .arg("timeout")
        .arg("60")
        .arg(ours())
        .current_dir(dir)
        .arg("--name=j")
        .arg(format!("--ioengine={engine}"))
        .arg(format!("--filename={}", dir.join("data").display()))
        .args(JOB)
        .arg("--output-format=json")
        .output()
        .expect("run strace");
    assert!(out.status.success(), "strace {engine}: {}", describe(&out));
    let text = std::fs::read_to_string(&summary).expect("strace's summary");
    // Lines: "% time seconds usecs/call calls [errors] syscall".
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.last()?.to_string();
            let calls = fields.get(3)?.parse().ok()?;
            Some((name, calls))
        })
        .collect()
}

#[test]
fn each_sync_engine_issues_its_own_system_calls() {
    if !common::tool_present("strace") {
        return;
    }
    for (engine, calls) in ENGINES {
        let dir = ScratchDir::new("fio_sync_engines", &format!("strace-{engine}"));
        let counts = syscall_counts(dir.path(), engine);
        let count = |name: &str| {
            counts
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c)
        };
        // Reads and writes split the 200 I/Os (plus the file's lay-out writes and the
        // tool's own reads): together the engine's calls are at least 200.
        let engine_calls: u64 = calls.iter().map(|name| count(name)).sum();
        assert!(
            engine_calls >= 200,
            "{engine}: {calls:?} ran {engine_calls} times: {counts:?}"
        );
        // No I/O went through io_uring: its submissions are io_uring_enter calls.
        assert!(
            count("io_uring_enter") < 10,
            "{engine}: io_uring_enter ran {} times",
            count("io_uring_enter")
        );
    }
}

#[test]
fn io_uring_options_and_vsync_are_refused_by_name() {
    let dir = ScratchDir::new("fio_sync_engines", "refused");
    let out = run(ours(), dir.path(), "psync", &["--fixedbufs=1"]);
    assert!(!out.status.success(), "psync with fixedbufs ran");
    let text = describe(&out);
    assert!(
        text.contains("fixedbufs") && text.contains("ioengine=psync"),
        "{text}"
    );
    let out = run(ours(), dir.path(), "vsync", &[]);
    assert!(!out.status.success(), "vsync ran");
    let text = describe(&out);
    assert!(text.contains("vsync") && text.contains("readv"), "{text}");
}

#[test]
fn psync_reads_back_what_it_wrote_with_o_direct() {
    let dir = ScratchDir::new("fio_sync_engines", "direct");
    let out = Command::new("timeout")
        .arg("60")
        .arg(ours())
        .current_dir(dir.path())
        .args([
            "--name=j",
            "--ioengine=psync",
            "--direct=1",
            "--rw=randwrite",
            "--bs=4k",
            "--size=1m",
            "--verify=crc32c",
            "--do_verify=1",
            "--output-format=json",
        ])
        .arg(format!("--filename={}", dir.join("data").display()))
        .output()
        .expect("run the job");
    assert!(out.status.success(), "{}", describe(&out));
    let job = &json_of(&out)["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    assert_eq!(job["write"]["total_ios"], 256, "{job}");
    assert_eq!(
        job["read"]["total_ios"], 256,
        "the verify phase read every block"
    );
}

/// One small job of `engine` in `dir` with `extra` options (after the job's name).
fn run_small(program: &Path, dir: &Path, engine: &str, extra: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .current_dir(dir)
        .arg("--name=j")
        .arg(format!("--ioengine={engine}"))
        .arg(format!("--filename={}", dir.join("data").display()))
        .args(["--bs=4k", "--size=1m", "--output-format=json"])
        .args(extra)
        .output()
        .expect("run the job")
}

/// pvsync2's own options, as fio 3.42 has them: `hipri` (RWF_HIPRI; a buffered read just
/// goes through), `nowait` (RWF_NOWAIT: the first read of a file whose cache was dropped
/// fails with EAGAIN, the job's error 11) and `uncached` (RWF_DONTCACHE: no page a read
/// brought in stays cached); `hipri` on psync is refused (fio does not know it there).
#[test]
fn pvsync2_takes_hipri_nowait_and_uncached_as_fio_does() {
    let Some(fio) = common::fio_anchor() else {
        common::require_tool("fio 3.42 (../shared/anchors/fio)", false);
        return;
    };
    let on_disk = common::block_device_dir(&std::env::temp_dir()).is_some();
    let fincore = common::tool_present("fincore");
    for (who, program) in [("fio", fio.as_path()), ("ours", ours())] {
        let dir = ScratchDir::new("fio_sync_engines", &format!("pvsync2-{who}"));
        let out = run_small(program, dir.path(), "pvsync2", &["--rw=read", "--hipri=1"]);
        assert!(out.status.success(), "{who} hipri: {}", describe(&out));
        let job = &json_of(&out)["jobs"][0];
        assert_eq!(job["read"]["total_ios"], 256, "{who} hipri: {job}");
        let out = run_small(program, dir.path(), "psync", &["--rw=read", "--hipri=1"]);
        assert!(!out.status.success(), "{who}: psync took hipri");
        if !on_disk {
            // tmpfs keeps every page: nothing would block, nothing leaves the cache.
            eprintln!("\n!!!!!!!! SKIPPED: nowait and uncached need a disk file system !!!!!!!!\n");
            continue;
        }
        let out = run_small(program, dir.path(), "pvsync2", &["--rw=read", "--nowait=1"]);
        let job = &json_of(&out)["jobs"][0];
        assert_eq!(job["error"], 11, "{who} nowait: {job}");
        if fincore {
            // Reads only: a write's pages leave once written back, which may come after
            // the job (fio 3.42 left all of them cached here).
            let out = run_small(
                program,
                dir.path(),
                "pvsync2",
                &["--rw=randread", "--uncached=1"],
            );
            assert!(out.status.success(), "{who} uncached: {}", describe(&out));
            assert_eq!(
                resident_bytes(&dir.join("data")),
                0,
                "{who} uncached: pages left in the cache"
            );
            let out = run_small(program, dir.path(), "pvsync2", &["--rw=randread"]);
            assert!(out.status.success(), "{who}: {}", describe(&out));
            assert!(
                resident_bytes(&dir.join("data")) > 0,
                "{who}: without uncached the reads leave pages"
            );
        }
    }
}
