//! fio's I/O logs beside fio itself: `write_iolog` writes what fio writes for the same job
//! (line by line for a sequential job, by format and counts for a random one), and
//! `read_iolog` replays a log as fio replays it (the I/Os, their order and, for a
//! version 3 log, their timing). Skipped (loudly) where fio is missing, a failure under CI.

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
fn fio(args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg(fio_path())
        .args(args)
        .output()
        .expect("run fio");
    assert!(out.status.success(), "fio {args:?}: {}", describe(&out));
    out
}

/// Runs iscsi-bench with `args` (at most 60 s).
fn ours(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args(args)
        .output()
        .expect("run iscsi-bench")
}

fn ours_ok(args: &[&str]) -> Output {
    let out = ours(args);
    assert!(
        out.status.success(),
        "iscsi-bench {args:?}: {}",
        describe(&out)
    );
    out
}

/// One line of a version 3 log after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    time_us: u64,
    file: String,
    action: String,
    /// Offset and length of an I/O line.
    io: Option<(u64, u64)>,
}

/// A version 3 log as fio writes it: the header, then lines of three or five fields, each
/// starting with a time in µs.
fn read_v3(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("fio version 3 iolog"), "{text}");
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let number = |i: usize| -> u64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("field {i} of {line:?} is not a number"))
            };
            match fields.len() {
                3 => Line {
                    time_us: number(0),
                    file: fields[1].into(),
                    action: fields[2].into(),
                    io: None,
                },
                5 => Line {
                    time_us: number(0),
                    file: fields[1].into(),
                    action: fields[2].into(),
                    io: Some((number(3), number(4))),
                },
                _ => panic!("not a version 3 line: {line:?}"),
            }
        })
        .collect()
}

/// The lines without their times, with the file named `file` renamed `F` (fio and we name
/// files alike, but the two runs may use different ones).
fn untimed(lines: &[Line]) -> Vec<(String, Option<(u64, u64)>)> {
    lines
        .iter()
        .map(|line| (line.action.clone(), line.io))
        .collect()
}

fn assert_times_rise(lines: &[Line]) {
    for pair in lines.windows(2) {
        assert!(pair[0].time_us <= pair[1].time_us, "{pair:?}");
    }
}

fn count(lines: &[Line], action: &str) -> usize {
    lines.iter().filter(|l| l.action == action).count()
}

/// A sequential job on the null engine: the same lines as fio's, times aside, and the same
/// file name (fio names the null engine's file `<job>.<clone>.<file>`).
#[test]
fn write_iolog_sequential_null_matches_fio_line_by_line() {
    if !fio_present() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "seq-null");
    let fio_log = dir.join("fio.log");
    let our_log = dir.join("ours.log");
    let job = [
        "--name=seq",
        "--ioengine=null",
        "--size=256k",
        "--bs=16k",
        "--rw=rw",
    ];
    let arg = |p: &Path| format!("--write_iolog={}", p.display());
    let mut args = job.to_vec();
    let fio_arg = arg(&fio_log);
    args.extend([fio_arg.as_str(), "--output=/dev/null"]);
    fio(&args);
    let mut args = job.to_vec();
    let our_arg = arg(&our_log);
    args.extend([our_arg.as_str(), "--output=/dev/null"]);
    ours_ok(&args);
    let theirs = read_v3(&fio_log);
    let mine = read_v3(&our_log);
    assert_times_rise(&mine);
    assert_eq!(
        mine.iter().map(|l| &l.file).collect::<Vec<_>>(),
        theirs.iter().map(|l| &l.file).collect::<Vec<_>>()
    );
    assert_eq!(mine[0].file, "seq.0.0");
    // rw=rw draws each I/O's direction (each tool its own draw); each direction walks the
    // region on its own from 0, in fio as here.
    for lines in [&mine, &theirs] {
        assert_eq!(
            lines.iter().filter(|l| l.io.is_some()).count(),
            16,
            "{lines:?}"
        );
        for direction in ["read", "write"] {
            let offsets: Vec<u64> = lines
                .iter()
                .filter(|l| l.action == direction)
                .map(|l| l.io.unwrap().0)
                .collect();
            let walk: Vec<u64> = (0..offsets.len() as u64).map(|i| i * 16384).collect();
            assert_eq!(offsets, walk, "{direction}: {lines:?}");
            assert!(lines
                .iter()
                .filter(|l| l.action == direction)
                .all(|l| l.io.unwrap().1 == 16384));
        }
    }
    let actions = |lines: &[Line]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.io.is_none())
            .map(|l| l.action.clone())
            .collect()
    };
    assert_eq!(actions(&mine), ["add", "open", "close"]);
    assert_eq!(actions(&mine), actions(&theirs));
}

/// A sequential write with `fsync=4` to a file: every line as fio's, sync lines (their
/// offsets: the last write's) included, and the file named by its path.
#[test]
fn write_iolog_file_with_fsync_matches_fio_line_by_line() {
    if !fio_present() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "seq-file");
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str, engine: &str| -> Vec<Line> {
        let data = dir.join("data");
        let log = dir.join(&format!("{name}.log"));
        let _ = std::fs::remove_file(&data);
        let args = [
            "--name=f".to_string(),
            format!("--ioengine={engine}"),
            format!("--filename={}", data.display()),
            "--size=128k".into(),
            "--bs=8k".into(),
            "--rw=write".into(),
            "--fsync=4".into(),
            format!("--write_iolog={}", log.display()),
            "--output=/dev/null".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool(&args);
        let lines = read_v3(&log);
        for line in &lines {
            assert_eq!(line.file, data.display().to_string(), "{line:?}");
        }
        lines
    };
    let theirs = run(&|a| fio(a), "fio", "psync");
    let mine = run(&|a| ours_ok(a), "ours", "io_uring");
    assert_times_rise(&mine);
    assert_eq!(untimed(&mine), untimed(&theirs));
    // After writes 4, 8 and 12: the 16th has no I/O after it to carry its sync (fio).
    assert_eq!(count(&mine, "sync"), 3);
}

/// `rw=randrw` with a fixed seed: our generator is not fio's, so the offsets come in
/// another order; the format, the count of I/Os and (with fio's random map, one pass
/// touching each block once) the set of offsets are fio's.
#[test]
fn write_iolog_random_matches_fio_format_and_counts() {
    if !fio_present() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "rand");
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str| -> Vec<Line> {
        let log = dir.join(&format!("{name}.log"));
        let arg = format!("--write_iolog={}", log.display());
        tool(&[
            "--name=r",
            "--ioengine=null",
            "--size=1m",
            "--bs=4k",
            "--rw=randrw",
            "--randseed=42",
            &arg,
            "--output=/dev/null",
        ]);
        read_v3(&log)
    };
    let theirs = run(&|a| fio(a), "fio");
    let mine = run(&|a| ours_ok(a), "ours");
    let ios = |lines: &[Line]| {
        let mut offsets: Vec<(u64, u64)> = lines.iter().filter_map(|l| l.io).collect();
        offsets.sort_unstable();
        offsets
    };
    assert_eq!(ios(&mine), ios(&theirs));
    assert_eq!(ios(&mine).len(), 256);
    assert_eq!(count(&mine, "read") + count(&mine, "write"), 256);
    assert!(
        count(&mine, "read") > 64 && count(&mine, "write") > 64,
        "{mine:?}"
    );
    assert_eq!(mine.len(), theirs.len());
}

/// fio opens the log for appending: a second run adds a second header and its lines.
#[test]
fn write_iolog_appends_as_fio_does() {
    if !fio_present() {
        return;
    }
    let dir = ScratchDir::new("fio-iolog", "append");
    let run = |tool: &dyn Fn(&[&str]) -> Output, name: &str| -> String {
        let log = dir.join(&format!("{name}.log"));
        let arg = format!("--write_iolog={}", log.display());
        for _ in 0..2 {
            tool(&[
                "--name=a",
                "--ioengine=null",
                "--size=8k",
                "--bs=4k",
                &arg,
                "--output=/dev/null",
            ]);
        }
        std::fs::read_to_string(&log).unwrap()
    };
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split_once(' ')
                    .map_or(
                        l,
                        |(t, rest)| if t.parse::<u64>().is_ok() { rest } else { l },
                    )
                    .to_string()
            })
            .collect()
    };
    let theirs = run(&|a| fio(a), "fio");
    let mine = run(&|a| ours_ok(a), "ours");
    assert_eq!(strip(&mine), strip(&theirs));
    assert_eq!(mine.matches("fio version 3 iolog").count(), 2);
}
