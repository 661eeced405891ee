//! fio's verify and log-window options beside fio itself: `verify_backlog_batch` reads back
//! the blocks fio reads back, in fio's order; `log_max_value` (`log_window_value`) writes
//! the lines fio writes, column for column; `verify_async` checks what fio checks and fails
//! where fio fails; so does `experimental_verify`. Skipped (loudly) where fio is missing, a
//! failure under CI.

mod common;

use common::{describe, ScratchDir};

use std::path::Path;
use std::process::{Command, Output};

/// Runs fio with `args` (at most 60 s).
fn fio(args: &[String]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(common::fio_or_installed())
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
    if common::fio().is_none() {
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
    if common::fio().is_none() {
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

/// The lines of a log, each split into its numbers.
fn numbers_of(path: &Path) -> Vec<Vec<u64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            line.split(',')
                .map(|f| f.trim().parse().unwrap_or_else(|_| panic!("{line:?}")))
                .collect()
        })
        .collect()
}

/// A 1 s random-read job on the null engine with latency and IOPS logs averaged over
/// 100 ms and `log_max_value=value`; the tool's lat and IOPS log lines.
fn windowed_logs(
    tool: &dyn Fn(&[String]) -> Output,
    dir: &ScratchDir,
    name: &str,
    value: &str,
) -> [Vec<Vec<u64>>; 2] {
    let prefix = dir.join(name);
    let args: Vec<String> = vec![
        "--name=j".into(),
        "--ioengine=null".into(),
        "--size=1g".into(),
        "--rw=randread".into(),
        "--bs=4k".into(),
        "--time_based".into(),
        "--runtime=1".into(),
        "--log_avg_msec=100".into(),
        format!("--log_max_value={value}"),
        format!("--write_lat_log={}", prefix.display()),
        format!("--write_iops_log={}", prefix.display()),
        "--output=/dev/null".into(),
    ];
    let out = tool(&args);
    assert!(out.status.success(), "{name} {args:?}: {}", describe(&out));
    ["lat", "iops"].map(|kind| numbers_of(&dir.join(&format!("{name}_{kind}.1.log"))))
}

#[test]
fn log_max_value_writes_fios_columns_and_the_window_maximum() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-verify-options", "log-max");
    for value in ["0", "1", "avg", "max", "both"] {
        let theirs = windowed_logs(&fio, &dir, &format!("fio{value}"), value);
        let mine = windowed_logs(&ours, &dir, &format!("ours{value}"), value);
        for (kind, (mine, theirs)) in ["lat", "iops"].iter().zip(mine.iter().zip(&theirs)) {
            assert!(!mine.is_empty() && !theirs.is_empty(), "{value} {kind}");
            // The same columns: time, value, [max,] direction 0, block size 0, priority.
            let shape = |lines: &[Vec<u64>]| -> Vec<(usize, u64, u64)> {
                let mut shapes: Vec<_> = lines
                    .iter()
                    .map(|l| (l.len(), l[l.len() - 3], l[l.len() - 2]))
                    .collect();
                shapes.dedup();
                shapes
            };
            assert_eq!(shape(mine), shape(theirs), "{value} {kind}");
        }
        if value == "both" {
            for (tool, [lat, iops]) in [("fio", &theirs), ("ours", &mine)] {
                assert!(lat.iter().all(|l| l.len() == 6), "{tool}: {lat:?}");
                // A latency window's maximum is at least its mean, and above it where
                // latencies differ (always, over 100 ms of I/O); an IOPS window holds one
                // sample, its mean and maximum equal.
                assert!(lat.iter().all(|l| l[2] >= l[1]), "{tool}: {lat:?}");
                assert!(lat.iter().any(|l| l[2] > l[1]), "{tool}: {lat:?}");
                assert!(iops.iter().all(|l| l[2] == l[1]), "{tool}: {iops:?}");
            }
        }
    }
}

#[test]
fn log_max_value_refuses_what_fio_refuses() {
    if common::fio().is_none() {
        return;
    }
    for value in ["2", "mean", "-1"] {
        let args: Vec<String> = vec![
            "--name=j".into(),
            "--ioengine=null".into(),
            "--size=1m".into(),
            format!("--log_max_value={value}"),
            "--output=/dev/null".into(),
        ];
        let theirs = fio(&args);
        let mine = ours(&args);
        assert!(
            !theirs.status.success(),
            "fio {value}: {}",
            describe(&theirs)
        );
        assert!(!mine.status.success(), "ours {value}: {}", describe(&mine));
        let text = String::from_utf8_lossy(&mine.stderr);
        assert!(text.contains("log_max_value"), "{text}");
    }
}

/// A verified write of 64 blocks of 4 KiB to `file` with `extra` (fio through psync, ours
/// through io_uring), JSON out: the job's error and its read and write I/O counts.
fn verify_run(tool: &str, file: &Path, extra: &[&str]) -> (i64, u64, u64) {
    let mut args: Vec<String> = vec![
        "--name=j".into(),
        format!("--filename={}", file.display()),
        "--size=256k".into(),
        "--bs=4k".into(),
        "--rw=write".into(),
        "--verify=crc32c".into(),
        "--output-format=json".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let out = if tool == "fio" {
        args.push("--ioengine=psync".into());
        fio(&args)
    } else {
        args.push("--ioengine=io_uring".into());
        ours(&args)
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON.
    let json = &text[text
        .find('{')
        .unwrap_or_else(|| panic!("{tool}: {}", describe(&out)))..];
    let doc: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{tool}: {e}: {}", describe(&out)));
    let job = &doc["jobs"][0];
    (
        job["error"].as_i64().unwrap_or(-1),
        job["read"]["total_ios"].as_u64().unwrap_or(0),
        job["write"]["total_ios"].as_u64().unwrap_or(0),
    )
}

#[test]
fn verify_async_checks_and_fails_as_fio_does() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-verify-options", "verify-async");
    let asynchronous = ["--verify_async=2", "--verify_async_cpus=0"];
    let mut results = Vec::new();
    for tool in ["fio", "ours"] {
        let file = dir.join(&format!("data-{tool}"));
        let written = verify_run(tool, &file, &asynchronous);
        let mut only = asynchronous.to_vec();
        only.push("--verify_only=1");
        let clean = verify_run(tool, &file, &only);
        // A block changed behind the job's back: verify_only with verify_async finds it.
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[70_000..70_004].copy_from_slice(b"XXXX");
        std::fs::write(&file, bytes).unwrap();
        let bad = verify_run(tool, &file, &only);
        results.push((written, clean, (bad.0, bad.2)));
    }
    assert_eq!(results[0], ((0, 64, 64), (0, 64, 64), (84, 64)), "fio");
    assert_eq!(results[1], results[0], "ours beside fio");
}

#[test]
fn verify_async_refuses_what_fio_refuses() {
    if common::fio().is_none() {
        return;
    }
    // fio refuses a count that is not a number and a CPU the machine does not have (it
    // crashes on a negative count, which we refuse).
    for bad in ["--verify_async=x", "--verify_async_cpus=9999"] {
        let args: Vec<String> = vec![
            "--name=j".into(),
            "--ioengine=null".into(),
            "--size=64k".into(),
            "--verify_async=1".into(),
            bad.into(),
            "--output=/dev/null".into(),
        ];
        let theirs = fio(&args);
        let mine = ours(&args);
        assert!(!theirs.status.success(), "fio {bad}: {}", describe(&theirs));
        assert!(!mine.status.success(), "ours {bad}: {}", describe(&mine));
        let option = &bad[2..bad.find('=').unwrap()];
        let text = String::from_utf8_lossy(&mine.stderr);
        assert!(text.contains(option), "{bad}: {text}");
    }
}

#[test]
fn experimental_verify_ends_as_fios() {
    if common::fio().is_none() {
        return;
    }
    let dir = ScratchDir::new("fio-verify-options", "experimental");
    let experimental = "--experimental_verify=1";
    // Without blocks written twice both tools read each written block once: the same
    // counts and no error (with verify_backlog fio keeps no history, so reads them all at
    // the end; the count is the same).
    for extra in [
        &["--rw=write"][..],
        &["--rw=randwrite"],
        &["--rw=write", "--verify_backlog=8"],
    ] {
        let mut args = extra.to_vec();
        args.push(experimental);
        let [theirs, mine] = ["fio", "ours"].map(|tool| {
            let file = dir.join(&format!("{tool}.dat"));
            let _ = std::fs::remove_file(&file);
            verify_run(tool, &file, &args)
        });
        assert_eq!(theirs, (0, 64, 64), "fio {extra:?}");
        assert_eq!(mine, theirs, "ours {extra:?}");
    }
    // With verify_backlog fio checks nothing while writing: every read comes after the
    // last write, as ours.
    let extra = ["--verify_backlog=8", experimental];
    let theirs = write_job_ios(&fio, &dir, "fio-backlog", &extra);
    let mine = write_job_ios(&ours, &dir, "ours-backlog", &extra);
    assert_eq!(mine, theirs, "(direction, offset) per I/O");
    assert!(mine[..64].iter().all(|io| io.0 == 1), "{mine:?}");
    // Blocks written twice: fio replays every write, iscsi-bench reads each block once at
    // its last write; both pass.
    let args = [
        "--rw=randwrite",
        "--norandommap",
        "--io_size=512k",
        experimental,
    ];
    let [theirs, mine] = ["fio", "ours"].map(|tool| {
        let file = dir.join(&format!("{tool}-overlap.dat"));
        verify_run(tool, &file, &args)
    });
    assert_eq!((theirs.0, theirs.2), (0, 128), "fio");
    assert_eq!((mine.0, mine.2), (0, 128), "ours");
    assert!(
        mine.1 > 0 && mine.1 <= theirs.1,
        "ours {mine:?}, fio {theirs:?}"
    );
    // A block changed behind the job's back fails both.
    let mut only = vec!["--rw=write", experimental];
    let [theirs, mine] = ["fio", "ours"].map(|tool| {
        let file = dir.join(&format!("{tool}-bad.dat"));
        verify_run(tool, &file, &only);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[70_000..70_004].copy_from_slice(b"XXXX");
        std::fs::write(&file, bytes).unwrap();
        only.push("--verify_only=1");
        let bad = verify_run(tool, &file, &only);
        only.pop();
        bad
    });
    assert_eq!(theirs.0, 84, "fio");
    assert_eq!(mine.0, theirs.0, "ours");
}
