//! `verify_shared` as a user runs it: four jobs writing the same blocks verify cleanly,
//! jobs that cannot share a ledger are refused by name before any I/O, and a block
//! changed behind the writers' back (the backing file written by someone else) is caught.

mod common;

use common::describe;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iscsi-bench"))
}

fn run(args: &[&str]) -> Output {
    bench().args(args).output().expect("iscsi-bench runs")
}

/// A scratch file of `bytes`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: u64) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "iscsi-bench-{name}-{}-{:?}.img",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::File::create(&path).expect("scratch file");
        file.set_len(bytes).expect("size");
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Four clones on the same 1 MiB of one file, 4 KiB random writes.
fn overlapping(file: &Scratch, seconds: u32) -> Vec<String> {
    vec![
        "--name=overlap".into(),
        format!("--filename={}", file.path()),
        "--rw=randwrite".into(),
        "--bs=4k".into(),
        "--size=1m".into(),
        "--numjobs=4".into(),
        "--iodepth=8".into(),
        "--verify=crc32c".into(),
        "--verify_shared=1".into(),
        "--time_based".into(),
        format!("--runtime={seconds}"),
        "--output-format=json".into(),
    ]
}

#[test]
fn four_jobs_writing_the_same_blocks_verify_cleanly() {
    let file = Scratch::new("shared-clean", 1 << 20);
    let args = overlapping(&file, 2);
    let out = bench().args(&args).output().expect("iscsi-bench runs");
    assert!(out.status.success(), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let jobs = doc["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 4);
    for job in jobs {
        assert_eq!(job["error"], 0, "{}", describe(&out));
        assert!(job["write"]["total_ios"].as_u64().unwrap_or(0) > 0);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every job did its share of the final check (256 blocks among four).
    let finals: u64 = stderr
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("iscsi-bench: verify_shared: ")?;
            rest.split(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(finals, 256, "{}", describe(&out));
    assert!(!stderr.contains("verify:"), "{}", describe(&out));
}

#[test]
fn a_block_changed_behind_the_writers_back_is_caught() {
    let file = Scratch::new("shared-corrupt", 1 << 20);
    let args = overlapping(&file, 2);
    let mut child = bench()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iscsi-bench starts");
    // Someone else zeroes one block of the file over and over until the run ends (the
    // final check, after every writer stopped, reads it too).
    let started = Instant::now();
    let mut raw = std::fs::OpenOptions::new()
        .write(true)
        .open(&file.0)
        .expect("open the file");
    while child.try_wait().expect("wait").is_none() && started.elapsed() < Duration::from_secs(60) {
        raw.seek(SeekFrom::Start(12 << 12)).expect("seek");
        raw.write_all(&[0u8; 4096]).expect("zero a block");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad magic")
            && stderr.contains("offset 0xc000")
            && stderr.contains("verify_shared expected one of [generation"),
        "{}",
        describe(&out)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let failed = doc["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|job| job["error"] != 0)
        .count();
    assert!(failed >= 1, "{}", describe(&out));
}

#[test]
fn jobs_that_cannot_share_a_ledger_are_refused_by_name() {
    let file = Scratch::new("shared-refused", 1 << 20);
    let target = format!("--filename={}", file.path());
    let base = [
        "--name=w",
        target.as_str(),
        "--rw=randwrite",
        "--bs=4k",
        "--size=1m",
        "--numjobs=2",
        "--verify_shared=1",
    ];
    for (extra, expected) in [
        (vec![], "verify_shared needs a checksum"),
        (
            vec!["--verify=pattern", "--verify_pattern=0xaa"],
            "header with a digest",
        ),
        (vec!["--verify=meta"], "header with a digest"),
        (
            vec!["--verify=crc32c", "--offset=2k", "--size=512k"],
            "verify_shared needs every write to cover whole verify blocks",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().copied());
        let out = run(&args);
        assert!(!out.status.success(), "{extra:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{extra:?}: {}", describe(&out));
        assert!(stderr.contains("verify_shared"), "{}", describe(&out));
    }
    // Sharers must verify alike, and a writer without verify_shared cannot join in.
    let job_file = std::env::temp_dir().join(format!("shared-{}.fio", std::process::id()));
    for (second, expected) in [
        ("verify=md5\nverify_shared=1\n", "sharers must verify alike"),
        ("verify=crc32c\n", "give every writer verify_shared=1"),
    ] {
        std::fs::write(
            &job_file,
            format!(
                "[global]\nfilename={}\nrw=randwrite\nbs=4k\nsize=1m\n\
                 [a]\nverify=crc32c\nverify_shared=1\n[b]\n{second}",
                file.path()
            ),
        )
        .expect("job file");
        let out = run(&[job_file.to_str().expect("utf-8")]);
        let _ = std::fs::remove_file(&job_file);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{}",
            describe(&out)
        );
    }
}
