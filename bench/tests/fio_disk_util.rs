//! fio's disk statistics (`disk_util`) beside fio itself: the same small io_uring job on a
//! file under the target directory (a block device backs it, unlike a tmpfs /tmp) through
//! fio and ours, comparing the disks listed, the keys of each, the text line's shape, and
//! that disk_util=0, a tmpfs file, the null engine and an iSCSI LUN list none. Skipped
//! (loudly) where fio is missing or no block device backs the file.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The job's I/Os: 64 MiB in 128 KiB reads.
const IOS: u64 = 512;

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench"))
}

/// Runs `program` with `args` in `dir` (at most 120 s); fails on a failed run.
fn run_in(dir: &Path, program: &Path, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("120")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{program:?} {args:?}\n{}",
        common::describe(&out)
    );
    out
}

/// The report's "disk_util" list (`None`: no such key).
fn disks(report: &serde_json::Value) -> Option<Vec<serde_json::Value>> {
    report
        .get("disk_util")
        .map(|d| d.as_array().expect("disk_util is a list").clone())
}

fn names(disks: &[serde_json::Value]) -> Vec<String> {
    disks
        .iter()
        .map(|d| d["name"].as_str().expect("name").to_string())
        .collect()
}

/// A text report's "Disk stats" lines with each run of digits made `#` and fio 3.42's
/// `sectors=` field (not in 3.33, whose output ours follows) taken out.
fn disk_line_shapes(text: &str) -> Vec<String> {
    let Some(at) = text.find("Disk stats (read/write):\n") else {
        return Vec::new();
    };
    text[at..]
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  ") && line.contains(": ios="))
        .map(|line| {
            let line = match (line.find(", sectors="), line.find(", merge=")) {
                (Some(a), Some(b)) => format!("{}{}", &line[..a], &line[b..]),
                _ => line.to_string(),
            };
            let mut shape = String::new();
            for c in line.chars() {
                if c.is_ascii_digit() {
                    if !shape.ends_with('#') {
                        shape.push('#');
                    }
                } else {
                    shape.push(c);
                }
            }
            shape
        })
        .collect()
}

fn job_args<'a>(filename: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--name=du",
        filename,
        "--ioengine=io_uring",
        "--direct=1",
        "--rw=read",
        "--bs=128k",
        "--size=64m",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn disk_stats_of_a_local_file_as_fio() {
    let Some(fio) = common::fio() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fio-disk-util");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    if common::block_device_dir(&dir).is_none() {
        eprintln!("SKIPPED: no block device backs {}", dir.display());
        return;
    }
    let file = dir.join("data");
    let filename = format!("--filename={}", file.display());
    // Lay the file out first, so the measured runs only read.
    run_in(
        &dir,
        &ours(),
        &[
            "--name=layout",
            &filename,
            "--ioengine=io_uring",
            "--rw=write",
            "--bs=1m",
            "--size=64m",
            "--end_fsync=1",
        ],
    );

    let fio_json = common::json_of(&run_in(
        &dir,
        &fio,
        &job_args(&filename, &["--output-format=json"]),
    ));
    let our_json = common::json_of(&run_in(
        &dir,
        &ours(),
        &job_args(&filename, &["--output-format=json"]),
    ));
    let fio_disks = disks(&fio_json).expect("fio lists the file's disk");
    let our_disks = disks(&our_json).expect("ours lists the file's disk");
    assert!(!fio_disks.is_empty(), "{fio_json}");
    assert_eq!(names(&our_disks), names(&fio_disks));
    for (ours, theirs) in our_disks.iter().zip(&fio_disks) {
        // fio 3.42 added read_sectors/write_sectors; our JSON follows fio 3.33's keys.
        let keys = |d: &serde_json::Value| -> BTreeSet<String> {
            d.as_object()
                .expect("object")
                .keys()
                .filter(|k| !k.ends_with("_sectors"))
                .cloned()
                .collect()
        };
        assert_eq!(keys(ours), keys(theirs), "ours {ours}\nfio {theirs}");
        let n = |key: &str| {
            ours[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key}: {ours}"))
        };
        assert!(n("read_ios") > 0, "{ours}");
        assert!(n("read_ios") + n("read_merges") >= IOS, "{ours}");
        assert!(n("read_ticks") <= n("in_queue") + 1000, "{ours}");
        let util = ours["util"].as_f64().expect("util");
        assert!((0.0..=100.0).contains(&util), "{ours}");
    }

    // The text: fio's heading and line, field for field.
    let fio_text = common::stdout(&run_in(&dir, &fio, &job_args(&filename, &[])));
    let our_text = common::stdout(&run_in(&dir, &ours(), &job_args(&filename, &[])));
    assert!(
        our_text.contains("\nDisk stats (read/write):\n"),
        "{our_text}"
    );
    let shapes = disk_line_shapes(&our_text);
    assert_eq!(shapes.len(), fio_disks.len(), "{our_text}");
    assert_eq!(
        shapes,
        disk_line_shapes(&fio_text),
        "{our_text}\n{fio_text}"
    );
    assert!(
        shapes[0].starts_with(&format!(
            "  {}: ios=#/#, merge=#/#, ticks=#/#, in_queue=#, util=#.#%",
            names(&fio_disks)[0]
        )),
        "{shapes:?}"
    );

    // Terse v3: the disk's fields end the job's line.
    let terse = common::stdout(&run_in(
        &dir,
        &ours(),
        &job_args(&filename, &["--output-format=terse"]),
    ));
    let fields: Vec<&str> = terse.trim_end().split(';').collect();
    let at = fields.len() - 9;
    assert_eq!(fields[at], names(&fio_disks)[0], "{terse}");
    assert!(fields[fields.len() - 1].ends_with('%'), "{terse}");

    // disk_util=0: no list and no text, as fio.
    for program in [fio.clone(), ours()] {
        let report = common::json_of(&run_in(
            &dir,
            &program,
            &job_args(&filename, &["--disk_util=0", "--output-format=json"]),
        ));
        assert!(disks(&report).is_none(), "{program:?}: {report}");
        let text = common::stdout(&run_in(
            &dir,
            &program,
            &job_args(&filename, &["--disk_util=0"]),
        ));
        assert!(!text.contains("Disk stats"), "{program:?}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_disk_stats_without_a_block_device() {
    let Some(fio) = common::fio() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // A file on tmpfs: no disk in either tool (fio leaves the key out, ours an empty list).
    let shm = Path::new("/dev/shm");
    if shm.exists() && common::block_device_dir(shm).is_none() {
        let file = shm.join(format!("fio-disk-util-{}", std::process::id()));
        let filename = format!("--filename={}", file.display());
        let args = [
            "--name=du",
            filename.as_str(),
            "--ioengine=io_uring",
            "--rw=read",
            "--bs=128k",
            "--size=8m",
            "--output-format=json",
        ];
        for program in [fio.clone(), ours()] {
            let report = common::json_of(&run_in(&dir, &program, &args));
            assert!(
                disks(&report).is_none_or(|d| d.is_empty()),
                "{program:?}: {report}"
            );
        }
        let text = common::stdout(&run_in(&dir, &ours(), &args[..args.len() - 1]));
        assert!(!text.contains("Disk stats"), "{text}");
        let _ = std::fs::remove_file(&file);
    } else {
        eprintln!("SKIPPED (tmpfs part): /dev/shm is not a tmpfs here");
    }
    // The null engine: none in either tool.
    let null = [
        "--name=du",
        "--ioengine=null",
        "--rw=read",
        "--bs=4k",
        "--size=8m",
        "--output-format=json",
    ];
    for program in [fio.clone(), ours()] {
        let report = common::json_of(&run_in(&dir, &program, &null));
        assert!(
            disks(&report).is_none_or(|d| d.is_empty()),
            "{program:?}: {report}"
        );
    }
    // An iSCSI LUN (our embedded target): an empty list, no text block.
    let iscsi = [
        "--name=du",
        "--rw=read",
        "--bs=4k",
        "--size=1m",
        "--output-format=json",
    ];
    let report = common::json_of(&run_in(&dir, &ours(), &iscsi));
    assert_eq!(disks(&report), Some(Vec::new()), "{report}");
    let text = common::stdout(&run_in(&dir, &ours(), &iscsi[..iscsi.len() - 1]));
    assert!(!text.contains("Disk stats"), "{text}");
}
