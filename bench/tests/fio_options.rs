//! fio's options beside fio itself (issue 13, item 4): each job here runs (or parses) the
//! same text through fio's `null` engine and through iscsi-bench's library, and compares
//! what both do: offsets issued (fio's `write_iolog` against our workload's plan), counts,
//! and acceptance. Skipped (loudly) where fio is missing, a failure under CI.

#![allow(clippy::result_large_err)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bench::job::{parse_job_str, JobSpec};

fn fio_present() -> bool {
    let ok = Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    common::require_tool("fio", ok)
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fio-options-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parse(text: &str) -> Vec<JobSpec> {
    parse_job_str(Path::new("t.fio"), text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// fio's verdict on a job file (`--parse-only`, at most 20 s): accepted with nothing on
/// stderr.
fn fio_accepts(dir: &Scratch, text: &str) -> Result<(), String> {
    let path = dir.join("job.fio");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("timeout")
        .args(["20", "fio", "--parse-only"])
        .arg(&path)
        .output()
        .expect("run fio");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(stderr)
    }
}

/// Every alias fio 3.42's options.c names for an option iscsi-bench supports, with the
/// option it stands for: fio takes both spellings, and so do we, to the same spec.
#[test]
fn fio_aliases_mean_their_options() {
    let pairs = [
        ("readwrite=randread", "rw=randread"),
        ("iodepth_batch_submit=2", "iodepth_batch=2"),
        ("iodepth_batch_complete=2", "iodepth_batch_complete_min=2"),
        ("io_limit=1m", "io_size=1m"),
        ("fileoffset=64k", "offset=64k"),
        ("blocksize=8k", "bs=8k"),
        ("blockalign=8k", "ba=8k"),
        ("blocksize_range=4k-8k", "bsrange=4k-8k"),
        ("allrandrepeat=0", "randrepeat=0"),
        ("timeout=2", "runtime=2"),
        ("ratemin=1m", "rate_min=1m"),
        ("ratecycle=500", "rate_cycle=500"),
        ("wait_for_previous=1", "stonewall=1"),
    ];
    let fio = fio_present();
    let dir = Scratch::new("aliases");
    let base = "[j]\nioengine=null\nsize=4m\niodepth=4\n";
    for (alias, name) in pairs {
        let ours_alias = parse(&format!("{base}{alias}\n"));
        let ours_name = parse(&format!("{base}{name}\n"));
        assert_eq!(ours_alias, ours_name, "{alias} is not {name}");
        assert_ne!(ours_alias, parse(base), "{alias} changed nothing");
        if fio {
            fio_accepts(&dir, &format!("{base}{alias}\n"))
                .unwrap_or_else(|e| panic!("fio refuses {alias}: {e}"));
        }
    }
    // `threads` is the tiobench profile's option, which fio registers as a job option and
    // reads only under profile=tiobench: taken, no effect, as in fio.
    assert_eq!(parse(&format!("{base}threads=4\n")), parse(base));
    if fio {
        fio_accepts(&dir, &format!("{base}threads=4\n")).unwrap();
    }
}

/// fio's libiscsi syntax (colons escaped) names the same LUN as the plain URL.
#[test]
fn escaped_iscsi_filename_is_the_plain_url() {
    let escaped = parse("[j]\nioengine=libiscsi\nfilename=iscsi\\://127.0.0.1\\:3260/iqn.2016-02.com.fio\\:system\\:fio/1\n");
    let plain = parse("[j]\nioengine=libiscsi\nfilename=iscsi://127.0.0.1:3260/iqn.2016-02.com.fio:system:fio/1\n");
    assert_eq!(escaped, plain);
    assert!(format!("{:?}", escaped[0].filename).contains("iqn.2016-02.com.fio:system:fio"));
}
