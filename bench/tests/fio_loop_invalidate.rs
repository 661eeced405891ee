//! fio drops a buffered file's page cache again each time a job starts over on it
//! (io_u.c `loop_cache_invalidate`: a time-based job's new pass of the random map or
//! sequential wrap; a new loop reopens the file), so every pass reads from the device. A
//! time-based random read of a small file through both tools: the device's reads (JSON
//! `disk_util`) are several times the file's blocks in each, and with `invalidate=0` the
//! file is read from the device about once. On a disk-backed scratch directory only
//! (skipped loudly on tmpfs).

mod common;

use common::{describe, json_of};

use std::path::{Path, PathBuf};
use std::process::Command;

/// A 4 MiB file: 1,024 blocks of 4 KiB.
const BLOCKS: u64 = 1024;

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench"))
}

/// The device's reads while `program` read the file at random for 1 s, and the job's reads.
fn device_reads(program: &Path, dir: &Path, engine: &str, invalidate: bool) -> (u64, u64) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(program)
        .current_dir(dir)
        .arg("--name=j")
        .arg(format!("--ioengine={engine}"))
        .arg(format!("--filename={}", dir.join("data").display()))
        .args([
            "--rw=randread",
            "--bs=4k",
            "--size=4m",
            "--runtime=1",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--invalidate={}", u8::from(invalidate)))
        .output()
        .expect("run the job");
    assert!(out.status.success(), "{}", describe(&out));
    let doc = json_of(&out);
    let disk = doc["disk_util"][0]["read_ios"].as_u64().unwrap_or(0);
    let job = doc["jobs"][0]["read"]["total_ios"].as_u64().unwrap_or(0);
    (disk, job)
}

#[test]
fn each_pass_of_a_time_based_job_reads_the_file_from_the_device_again() {
    let Some(fio) = common::fio() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fio-loop-invalidate");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    if common::block_device_dir(&dir).is_none() {
        eprintln!("SKIPPED: no block device backs {}", dir.display());
        return;
    }
    for engine in ["io_uring", "psync"] {
        for (who, program) in [("fio", fio.clone()), ("ours", ours())] {
            let (disk, job) = device_reads(&program, &dir, engine, true);
            // More than two passes' worth of blocks read, and most of the job's reads went
            // to the device (the rest: the few the device merged or raced with a drop).
            assert!(
                job > 2 * BLOCKS && disk > job / 2,
                "{who} {engine}: {disk} device reads for {job} reads of a {BLOCKS}-block file"
            );
            let (disk, job) = device_reads(&program, &dir, engine, false);
            assert!(
                job > 2 * BLOCKS && disk <= BLOCKS + BLOCKS / 2,
                "{who} {engine} invalidate=0: {disk} device reads for {job} reads"
            );
        }
    }
}
