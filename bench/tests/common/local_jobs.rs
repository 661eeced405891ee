//! One job on local files through fio (psync) and through iscsi-bench (io_uring), and what
//! both left behind: the files made, the I/O each logged, the pages cached. Shared by the
//! tests that compare file options with fio.
#![allow(dead_code)] // not every test binary uses every helper

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Fio,
    Ours,
}

/// `who` runs job `j` with `options` in `dir` (at most 60 s), its files made there.
pub fn run(who: Who, fio: &Path, dir: &Path, options: &[&str]) -> Output {
    let mut command = Command::new("timeout");
    command.arg("60");
    match who {
        Who::Fio => command.arg(fio).arg("--ioengine=psync"),
        Who::Ours => command
            .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
            .arg("--ioengine=io_uring"),
    };
    command
        .current_dir(dir)
        .arg("--name=j")
        .arg(format!("--directory={}", dir.display()))
        .args(["--bs=4k", "--output-format=json"])
        .args(options)
        .output()
        .expect("run the job")
}

/// The regular files in `dir` (not the logs), by name with their sizes.
pub fn files_in(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .expect("read the scratch directory")
        .map(|entry| entry.expect("a directory entry"))
        .filter(|entry| !entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| {
            let size = entry.metadata().expect("metadata").len();
            (entry.file_name().to_string_lossy().into_owned(), size)
        })
        .collect()
}

/// One read or write of a `write_iolog`: the file's name (not its directory), the action,
/// offset and length.
pub type Io = (String, String, u64, u64);

/// The reads and writes of a `write_iolog` (version 3: `<us> <file> <action> <offset>
/// <len>`), in order.
pub fn logged_ios(log: &Path) -> Vec<Io> {
    let text = std::fs::read_to_string(log).expect("read the iolog");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, file, action @ ("read" | "write"), offset, len] = fields[..] else {
                return None;
            };
            let name = Path::new(file).file_name()?.to_string_lossy().into_owned();
            Some((
                name,
                action.to_string(),
                offset.parse().ok()?,
                len.parse().ok()?,
            ))
        })
        .collect()
}

/// The pages of `file` in the page cache (`fincore`).
pub fn resident_bytes(file: &Path) -> u64 {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output=RES"])
        .arg(file)
        .output()
        .expect("run fincore");
    assert!(out.status.success(), "fincore: {}", super::describe(&out));
    super::stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore said {}", super::describe(&out)))
}
