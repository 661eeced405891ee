//! fio's `nrfiles` (`nr_files`) and `openfiles` beside fio itself: each job runs through
//! fio (psync) and through iscsi-bench (io_uring) in a scratch directory of its own, and
//! what both did is compared: the files made (names and sizes) and, from each tool's
//! `write_iolog`, which file and offset each I/O went to, in order. Skipped (loudly) where
//! fio is missing, a failure under CI.

mod common;

use common::local_jobs::{files_in, logged_ios, run, Who};
use common::{describe, ScratchDir};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Both tools run `options` (each in a scratch directory of its own, logging its I/O):
/// the files each left, and its I/O in order.
type Outcome = (BTreeMap<String, u64>, Vec<(String, String, u64, u64)>);

fn both(name: &str, options: &[&str]) -> Option<(Outcome, Outcome)> {
    let fio = common::fio()?;
    let mut outcomes = Vec::new();
    for who in [Who::Fio, Who::Ours] {
        let dir = ScratchDir::new("fio_nrfiles", &format!("{name}-{who:?}"));
        let log = dir.join("io.log");
        let mut all = options.to_vec();
        let log_option = format!("--write_iolog={}", log.display());
        all.push(&log_option);
        let out = run(who, &fio, dir.path(), &all);
        assert!(
            out.status.success(),
            "{who:?} {options:?}: {}",
            describe(&out)
        );
        outcomes.push((files_in(dir.path()), logged_ios(&log)));
    }
    let ours = outcomes.pop()?;
    let fio = outcomes.pop()?;
    Some((fio, ours))
}

#[test]
fn nrfiles_makes_the_files_fio_makes_with_size_divided_between_them() {
    for (name, options) in [
        ("default", &["--rw=write", "--size=4m", "--nrfiles=4"][..]),
        ("alias", &["--rw=read", "--size=4m", "--nr_files=2"][..]),
        // 64 KiB does not divide by 3: each file is 21845 bytes, 5 blocks written to each.
        ("uneven", &["--rw=write", "--size=64k", "--nrfiles=3"][..]),
        (
            "format",
            &[
                "--rw=write",
                "--size=3m",
                "--nrfiles=3",
                "--filename_format=data.$filenum.$jobname",
            ][..],
        ),
    ] {
        let Some(((fio_files, fio_ios), (our_files, our_ios))) = both(name, options) else {
            return;
        };
        assert!(fio_files.len() > 1, "{name}: fio made {fio_files:?}");
        assert_eq!(our_files, fio_files, "{name}: the files made");
        // The same bytes went to each file.
        let per_file = |ios: &[(String, String, u64, u64)]| {
            let mut bytes = BTreeMap::new();
            for (file, _, _, len) in ios {
                *bytes.entry(file.clone()).or_insert(0u64) += len;
            }
            bytes
        };
        assert_eq!(
            per_file(&our_ios),
            per_file(&fio_ios),
            "{name}: bytes per file"
        );
    }
}

#[test]
fn sequential_io_goes_over_the_files_in_fios_order() {
    for (name, service, openfiles) in [
        ("rr", "roundrobin", "0"),
        ("rr3", "roundrobin:3", "0"),
        ("seq", "sequential", "0"),
        ("rr-open2", "roundrobin", "2"),
        ("rr3-open2", "roundrobin:3", "2"),
        ("rr-open3", "roundrobin", "3"),
        ("seq-open1", "sequential", "1"),
    ] {
        let service = format!("--file_service_type={service}");
        let openfiles = format!("--openfiles={openfiles}");
        let options = [
            "--rw=write",
            "--size=64k",
            "--nrfiles=4",
            &service,
            &openfiles,
        ];
        let Some(((_, fio_ios), (_, our_ios))) = both(name, &options) else {
            return;
        };
        assert_eq!(fio_ios.len(), 16, "{name}: fio's I/O {fio_ios:?}");
        assert_eq!(
            our_ios, fio_ios,
            "{name}: the order of the I/O over the files"
        );
    }
}

#[test]
fn random_io_covers_each_file_once_as_fio_does() {
    let options = ["--rw=randwrite", "--size=4m", "--nrfiles=4"];
    let Some(((fio_files, fio_ios), (our_files, our_ios))) = both("rand", &options) else {
        return;
    };
    assert_eq!(our_files, fio_files);
    // The offsets are random in both (and differ): each file's set of blocks is compared,
    // and the files alternate as in fio (roundrobin).
    let blocks = |ios: &[(String, String, u64, u64)]| {
        let mut blocks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (file, _, offset, _) in ios {
            blocks.entry(file.clone()).or_default().push(*offset);
        }
        blocks
            .values_mut()
            .for_each(|offsets| offsets.sort_unstable());
        blocks
    };
    assert_eq!(blocks(&our_ios), blocks(&fio_ios));
    let order = |ios: &[(String, String, u64, u64)]| -> Vec<String> {
        ios.iter().map(|io| io.0.clone()).collect()
    };
    assert_eq!(order(&our_ios), order(&fio_ios));
}

#[test]
fn a_list_of_local_files_is_served_as_fio_serves_it() {
    let options = ["--rw=write", "--size=64k", "--filename=a:b"];
    let Some(((fio_files, fio_ios), (our_files, our_ios))) = both("list", &options) else {
        return;
    };
    assert_eq!(our_files, fio_files);
    assert_eq!(our_ios, fio_ios);
}

#[test]
fn bad_values_are_refused_as_fio_refuses_them() {
    let Some(fio) = common::fio() else {
        return;
    };
    for bad in ["--nrfiles=x", "--openfiles=many"] {
        let dir = ScratchDir::new("fio_nrfiles", "bad");
        let options = ["--rw=write", "--size=64k", bad];
        let fio_out = run(Who::Fio, &fio, dir.path(), &options);
        let ours = run(Who::Ours, &fio, dir.path(), &options);
        assert!(!fio_out.status.success(), "fio took {bad}");
        assert!(!ours.status.success(), "{bad}: {}", describe(&ours));
        let option = bad
            .trim_start_matches("--")
            .split('=')
            .next()
            .unwrap_or(bad);
        assert!(
            String::from_utf8_lossy(&ours.stderr).contains(option),
            "{bad}: {}",
            describe(&ours)
        );
    }
}

/// `who` runs `options` under `strace -f` in a scratch directory of its own: the successful
/// `unlink` calls on the job's file, the file's size and mode after the run, and the
/// iolog's open and close lines.
fn unlinks(who: Who, fio: &Path, options: &[&str]) -> Option<(usize, u64, u32, Vec<String>)> {
    use std::os::unix::fs::PermissionsExt as _;
    let strace_runs = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::require_tool("strace", strace_runs) {
        return None;
    }
    let dir = ScratchDir::new("fio_nrfiles", &format!("unlink-{who:?}"));
    let trace = dir.join("trace.log");
    let log = dir.join("io.log");
    let mut command = Command::new("strace");
    command
        .args(["-f", "-e", "trace=unlink,unlinkat", "-o"])
        .arg(&trace)
        .arg("timeout")
        .arg("60");
    match who {
        Who::Fio => command.arg(fio).arg("--ioengine=psync"),
        Who::Ours => command
            .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
            .arg("--ioengine=io_uring"),
    };
    let out = command
        .current_dir(dir.path())
        .arg("--name=j")
        .arg(format!("--directory={}", dir.path().display()))
        .arg(format!("--write_iolog={}", log.display()))
        .args(["--bs=4k", "--output-format=json"])
        .args(options)
        .output()
        .expect("run the job under strace");
    assert!(out.status.success(), "{who:?}: {}", describe(&out));
    let traced = std::fs::read_to_string(&trace).expect("read the trace");
    let count = traced
        .lines()
        .filter(|line| line.contains("j.0.0") && line.trim_end().ends_with("= 0"))
        .count();
    let meta = std::fs::metadata(dir.join("j.0.0")).expect("the job's file is left");
    let opens = std::fs::read_to_string(&log)
        .expect("read the iolog")
        .lines()
        .filter_map(|line| {
            let action = line.split_whitespace().nth(2)?;
            matches!(action, "open" | "close").then(|| action.to_string())
        })
        .collect();
    Some((count, meta.len(), meta.permissions().mode() & 0o777, opens))
}

#[test]
fn unlink_each_loop_unlinks_between_loops_as_fio_does() {
    let Some(fio) = common::fio() else {
        return;
    };
    for loops in ["--loops=1", "--loops=3"] {
        for rw in ["--rw=write", "--rw=randwrite"] {
            let options = [rw, "--size=64k", loops, "--unlink_each_loop=1"];
            let Some(theirs) = unlinks(Who::Fio, &fio, &options) else {
                return;
            };
            let ours = unlinks(Who::Ours, &fio, &options).expect("strace ran for fio");
            assert_eq!(ours, theirs, "{options:?}: unlinks, size, mode, open/close");
        }
    }
}

#[test]
fn unlink_each_loop_on_a_job_that_only_reads_fails_as_in_fio() {
    let Some(fio) = common::fio() else {
        return;
    };
    let dir = ScratchDir::new("fio_nrfiles", "unlink-read");
    let options = [
        "--rw=read",
        "--size=64k",
        "--loops=2",
        "--unlink_each_loop=1",
    ];
    let theirs = run(Who::Fio, &fio, dir.path(), &options);
    let ours = run(Who::Ours, &fio, dir.path(), &options);
    // fio fails the second loop (its file is gone); we refuse the job before it starts.
    assert!(!theirs.status.success(), "fio: {}", describe(&theirs));
    assert!(!ours.status.success(), "{}", describe(&ours));
    assert!(
        String::from_utf8_lossy(&ours.stderr).contains("unlink_each_loop"),
        "{}",
        describe(&ours)
    );
}
