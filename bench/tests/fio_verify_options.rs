//! fio's verify and log-window options beside fio itself: `verify_backlog_batch` reads back
//! the blocks fio reads back, in fio's order. Skipped (loudly) where fio is missing, a
//! failure under CI.

mod common;

use common::{describe, ScratchDir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// fio 3.42 where the project keeps it, else the one on the PATH.
fn fio_path() -> PathBuf {
    let anchor = Path::new("/work/shared/anchors/fio");
    if anchor.exists() {
        anchor.to_path_buf()
    } else {
        PathBuf::from("fio")
    }
}

fn fio_present() -> bool {
    let ok = Command::new(fio_path())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    common::require_tool("fio", ok)
}

/// Runs fio with `args` (at most 60 s).
fn fio(args: &[String]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(fio_path())
        .args(args)
        .output()
        .expect("run fio")
}

/// Runs iscsi-bench with `args` (at most 60 s).
fn ours(args: &[String]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args(args)
        .output()
        .expect("run iscsi-bench")
}

/// Each line of a per-I/O latency log written with `log_offset=1`: direction (0 read,
/// 1 write) and offset, in completion order (issue order at iodepth=1).
fn ios_of(lat_log: &Path) -> Vec<(u8, u64)> {
    let text =
        std::fs::read_to_string(lat_log).unwrap_or_else(|e| panic!("{}: {e}", lat_log.display()));
    text.lines()
        .map(|line| {
            let fields: Vec<u64> = line
                .split(',')
                .map(|f| f.trim().parse().unwrap_or_else(|_| panic!("{line:?}")))
                .collect();
            (fields[2] as u8, fields[4])
        })
        .collect()
}

/// A sequential verified write of 64 blocks on a file at iodepth=1, with `extra`; the
/// tool's I/Os as its latency log shows them.
fn write_job_ios(
    tool: &dyn Fn(&[String]) -> Output,
    dir: &ScratchDir,
    name: &str,
    extra: &[&str],
) -> Vec<(u8, u64)> {
    let mut args: Vec<String> = vec![
        "--name=j".into(),
        format!("--filename={}", dir.join(&format!("{name}.dat")).display()),
        "--size=256k".into(),
        "--bs=4k".into(),
        "--rw=write".into(),
        "--ioengine=io_uring".into(),
        "--iodepth=1".into(),
        "--verify=crc32c".into(),
        format!("--write_lat_log={}", dir.join(name).display()),
        "--log_offset=1".into(),
        "--output=/dev/null".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let out = tool(&args);
    assert!(out.status.success(), "{name} {args:?}: {}", describe(&out));
    ios_of(&dir.join(&format!("{name}_lat.1.log")))
}

#[test]
fn verify_backlog_batch_reads_back_what_fio_reads_back_in_its_order() {
    if !fio_present() {
        return;
    }
    let dir = ScratchDir::new("fio-verify-options", "backlog-batch");
    let mut seen = Vec::new();
    // Smaller than the backlog (the rest waits for the next check), equal (the default),
    // larger (the check stays open: each next write is read back at once), and a batch
    // that does not divide the backlog.
    for batch in ["4", "8", "16", "3"] {
        let extra = [
            "--verify_backlog=8".to_string(),
            format!("--verify_backlog_batch={batch}"),
        ];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let theirs = write_job_ios(&fio, &dir, &format!("fio{batch}"), &extra);
        let mine = write_job_ios(&ours, &dir, &format!("ours{batch}"), &extra);
        assert_eq!(
            mine, theirs,
            "verify_backlog=8 verify_backlog_batch={batch}: (direction, offset) per I/O"
        );
        // Every block written is read back exactly once.
        assert_eq!(mine.iter().filter(|io| io.0 == 0).count(), 64, "{batch}");
        seen.push(mine);
    }
    // The batch changes the order: a run that ignored it would match fio only once.
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
}

#[test]
fn verify_backlog_batch_refuses_what_fio_refuses() {
    if !fio_present() {
        return;
    }
    let dir = ScratchDir::new("fio-verify-options", "backlog-batch-bad");
    let extra = ["--verify_backlog=8", "--verify_backlog_batch=lots"];
    let job = |tool: &dyn Fn(&[String]) -> Output| {
        let mut args: Vec<String> = vec![
            "--name=j".into(),
            format!("--filename={}", dir.join("f.dat").display()),
            "--size=64k".into(),
            "--rw=write".into(),
            "--verify=crc32c".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        tool(&args)
    };
    let theirs = job(&fio);
    let mine = job(&ours);
    assert!(!theirs.status.success(), "fio: {}", describe(&theirs));
    assert!(!mine.status.success(), "ours: {}", describe(&mine));
    let text = String::from_utf8_lossy(&mine.stderr);
    assert!(text.contains("verify_backlog_batch"), "{text}");
}
