//! fio's file options beside fio itself: each job runs through fio and through
//! iscsi-bench on a file in a scratch directory, and what both did to the file is compared:
//! the page-cache and sync system calls (`strace -f -y`), whether the file is still there,
//! how much of it is allocated, and what the JSON reports. Skipped (loudly) where fio or
//! strace is missing, a failure under CI.

mod common;

use common::{describe, ScratchDir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Fio,
    Ours,
}

const BOTH: [Who; 2] = [Who::Fio, Who::Ours];

/// The command for `who` (at most 30 s), in `dir`.
fn command(who: Who, dir: &Path) -> Command {
    let mut command = Command::new("timeout");
    command.arg("30");
    match who {
        Who::Fio => command.arg(common::fio_or_installed()),
        Who::Ours => command.arg(env!("CARGO_BIN_EXE_iscsi-bench")),
    };
    command.current_dir(dir);
    command
}

/// `who` runs one job `j` on `file` through io_uring (4 KiB blocks, JSON output) with
/// `extra` options.
fn run(who: Who, dir: &Path, file: &Path, extra: &[&str]) -> Output {
    job_command(command(who, dir), file, extra)
        .output()
        .expect("run the job")
}

fn job_command(mut command: Command, file: &Path, extra: &[&str]) -> Command {
    command
        .arg("--name=j")
        .arg(format!("--filename={}", file.display()))
        .args(["--ioengine=io_uring", "--bs=4k", "--output-format=json"])
        .args(extra);
    command
}

/// As [`run`], under `strace -f -y` for `calls`: the calls made on `file`, each with its
/// descriptor written `F` (the numbers differ between the tools), in order.
fn traced(who: Who, dir: &Path, file: &Path, extra: &[&str], calls: &str) -> Vec<String> {
    let trace = dir.join(format!("trace-{who:?}"));
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-y", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&trace);
    strace.current_dir(dir).arg("timeout").arg("30");
    match who {
        Who::Fio => strace.arg(common::fio_or_installed()),
        Who::Ours => strace.arg(env!("CARGO_BIN_EXE_iscsi-bench")),
    };
    let out = job_command(strace, file, extra).output().expect("strace");
    assert!(
        out.status.success(),
        "{who:?} {extra:?}: {}",
        describe(&out)
    );
    let text = std::fs::read_to_string(&trace).expect("the trace");
    let marker = format!("<{}>", file.display());
    text.lines()
        .filter(|line| line.contains(&marker))
        .filter_map(|line| {
            // "123 fadvise64(6</x/f>, 0, 4096, POSIX_FADV_DONTNEED) = 0"
            let call = line.split_once(' ')?.1.trim_start();
            let (name, rest) = call.split_once('(')?;
            let rest = rest.split_once('>')?.1;
            Some(format!("{name}(F{rest}"))
        })
        .collect()
}

fn ios(out: &Output) -> u64 {
    let job = &common::json_of(out)["jobs"][0];
    ["read", "write", "trim"]
        .iter()
        .map(|d| job[d]["total_ios"].as_u64().unwrap_or(0))
        .sum()
}

/// `invalidate`, `fadvise_hint` and `pre_read`: the `posix_fadvise` calls on the file,
/// from the layout (fio drops the cache of what it laid out) to the open (DONTNEED over
/// the job's range unless `invalidate=0` or `pre_read`, then the hint: RANDOM or
/// SEQUENTIAL as the job is, or what `fadvise_hint` names), are fio's, in fio's order.
#[test]
fn page_cache_calls_are_fios() {
    if !common::tool_present("fio") || !common::tool_present("strace") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "fadvise");
    let cases: &[&[&str]] = &[
        &["--rw=randread", "--size=256k"],
        &["--rw=read", "--size=256k", "--offset=64k"],
        &["--rw=randread", "--size=256k", "--invalidate=0"],
        &["--rw=read", "--size=256k", "--fadvise_hint=0"],
        &["--rw=read", "--size=256k", "--fadvise_hint=random"],
        &["--rw=randread", "--size=256k", "--fadvise_hint=sequential"],
        &["--rw=read", "--size=256k", "--fadvise_hint=noreuse"],
        &["--rw=read", "--size=256k", "--pre_read=1"],
        &["--rw=randwrite", "--size=256k", "--offset=64k"],
    ];
    for extra in cases {
        let calls: Vec<Vec<String>> = BOTH
            .iter()
            .map(|&who| {
                let file = dir.join("f");
                let _ = std::fs::remove_file(&file);
                traced(who, dir.path(), &file, extra, "fadvise64")
            })
            .collect();
        assert!(!calls[0].is_empty(), "{extra:?}: fio made no call");
        assert_eq!(calls[1], calls[0], "{extra:?}: ours, then fio's");
    }
}

/// `create_fsync` and `fsync_on_close`: the `fsync(2)` calls on the file. A read job's
/// layout is synced unless `create_fsync=0`; a writing job with `fsync_on_close` flushes
/// at its end through the ring (both tools' io_uring engines), after which the close has
/// nothing more to sync; a read job with it does not flush at all.
#[test]
fn fsync_calls_are_fios() {
    if !common::tool_present("fio") || !common::tool_present("strace") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "fsync");
    let cases: &[&[&str]] = &[
        &["--rw=read", "--size=256k"],
        &["--rw=read", "--size=256k", "--create_fsync=0"],
        &["--rw=read", "--size=256k", "--fsync_on_close=1"],
        &["--rw=write", "--size=256k", "--fsync_on_close=1"],
        &["--rw=randrw", "--size=256k", "--fsync_on_close=1"],
    ];
    for extra in cases {
        let calls: Vec<Vec<String>> = BOTH
            .iter()
            .map(|&who| {
                let file = dir.join("f");
                let _ = std::fs::remove_file(&file);
                traced(who, dir.path(), &file, extra, "fsync,fdatasync")
            })
            .collect();
        assert_eq!(calls[1], calls[0], "{extra:?}: ours, then fio's");
    }
}

/// `unlink`: the file is gone after the job with `unlink=1`, there with `unlink=0`.
#[test]
fn unlink_removes_the_file_as_fio_does() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "unlink");
    for (value, kept) in [("1", false), ("0", true)] {
        for who in BOTH {
            let file = dir.join("f");
            let option = format!("--unlink={value}");
            let out = run(
                who,
                dir.path(),
                &file,
                &["--rw=randrw", "--size=256k", &option],
            );
            assert!(out.status.success(), "{who:?} {option}: {}", describe(&out));
            assert_eq!(ios(&out), 64, "{who:?} {option}");
            assert_eq!(file.exists(), kept, "{who:?} {option}");
        }
    }
}

/// `allow_file_create=0`: a missing file is an error, an existing one is used.
#[test]
fn allow_file_create_0_refuses_only_a_missing_file() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "allow-create");
    for who in BOTH {
        let file = dir.join("f");
        let _ = std::fs::remove_file(&file);
        let args = ["--rw=read", "--size=256k", "--allow_file_create=0"];
        let out = run(who, dir.path(), &file, &args);
        let refused = !out.status.success() || common::json_of(&out)["jobs"][0]["error"] != 0;
        assert!(refused, "{who:?} made the file: {}", describe(&out));
        assert!(!file.exists(), "{who:?}");
        std::fs::write(&file, vec![1u8; 256 << 10]).unwrap();
        let out = run(who, dir.path(), &file, &args);
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        assert_eq!(ios(&out), 64, "{who:?}");
    }
    let file = dir.join("f");
    let _ = std::fs::remove_file(&file);
    let out = run(
        Who::Ours,
        dir.path(),
        &file,
        &["--rw=read", "--size=256k", "--allow_file_create=0"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_file_create"),
        "the refusal does not name the option: {}",
        describe(&out)
    );
}

/// `create_only`: the file is laid out to the job's size and the job does no I/O.
#[test]
fn create_only_lays_out_and_does_no_io() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "create-only");
    for who in BOTH {
        let file = dir.join(&format!("{who:?}"));
        let out = run(
            who,
            dir.path(),
            &file,
            &["--rw=randread", "--size=512k", "--create_only=1"],
        );
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        assert_eq!(ios(&out), 0, "{who:?}");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            512 << 10,
            "{who:?}"
        );
    }
}

/// `overwrite`: a write job that writes 64 KiB of a new 1 MiB file (without
/// preallocation) leaves the whole file allocated when the file is written out first
/// (`overwrite=1`), and only about what it wrote otherwise.
#[test]
fn overwrite_writes_the_file_out_first_as_fio_does() {
    use std::os::unix::fs::MetadataExt;
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "overwrite");
    for (value, whole) in [("1", true), ("0", false)] {
        for who in BOTH {
            let file = dir.join(&format!("{who:?}"));
            let _ = std::fs::remove_file(&file);
            let option = format!("--overwrite={value}");
            let out = run(
                who,
                dir.path(),
                &file,
                &[
                    "--rw=write",
                    "--size=1m",
                    "--io_size=64k",
                    "--fallocate=none",
                    &option,
                ],
            );
            assert!(out.status.success(), "{who:?} {option}: {}", describe(&out));
            assert_eq!(ios(&out), 16, "{who:?} {option}");
            let allocated = std::fs::metadata(&file).unwrap().blocks() * 512;
            assert_eq!(allocated >= 1 << 20, whole, "{who:?} {option}: {allocated}");
        }
    }
}

/// `pre_read` with `direct=1`: fio's pre-read goes through an unaligned buffer, which
/// O_DIRECT refuses, and the job fails; ours refuses the job, naming the option.
#[test]
fn pre_read_with_direct_fails_as_in_fio() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "pre-read-direct");
    let file = dir.join("f");
    std::fs::write(&file, vec![1u8; 256 << 10]).unwrap();
    let args = ["--rw=read", "--size=256k", "--pre_read=1", "--direct=1"];
    let fio = run(Who::Fio, dir.path(), &file, &args);
    if fio.status.success() {
        // A file system without O_DIRECT fails both the same way; nothing to compare.
        panic!("fio pre-read with direct=1: {}", describe(&fio));
    }
    let ours = run(Who::Ours, dir.path(), &file, &args);
    assert!(!ours.status.success(), "{}", describe(&ours));
    assert!(
        String::from_utf8_lossy(&ours.stderr).contains("pre_read"),
        "{}",
        describe(&ours)
    );
    // Without direct both read it.
    for who in BOTH {
        let out = run(
            who,
            dir.path(),
            &file,
            &["--rw=read", "--size=256k", "--pre_read=1"],
        );
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        assert_eq!(ios(&out), 64, "{who:?}");
    }
}

/// `exec_prerun`/`exec_postrun`: the output of each command lands in `j.prerun.txt` and
/// `j.postrun.txt` in the working directory (only the last command's of a list, as fio
/// appends the redirection); a prerun that fails skips the job's I/O and its postrun,
/// and the run still succeeds.
#[test]
fn exec_hooks_run_as_fios() {
    if !common::tool_present("fio") {
        return;
    }
    let read = |dir: &ScratchDir, name: &str| std::fs::read_to_string(dir.join(name)).ok();
    for who in BOTH {
        let dir = ScratchDir::new("fio-file-options", &format!("exec-{who:?}"));
        let file = dir.join("f");
        let out = run(
            who,
            dir.path(),
            &file,
            &[
                "--rw=read",
                "--size=64k",
                "--exec_prerun=echo first; echo pre $((1+2))",
                "--exec_postrun=echo post >&2",
            ],
        );
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        assert_eq!(ios(&out), 16, "{who:?}");
        assert_eq!(
            read(&dir, "j.prerun.txt").as_deref(),
            Some("pre 3\n"),
            "{who:?}"
        );
        assert_eq!(
            read(&dir, "j.postrun.txt").as_deref(),
            Some("post\n"),
            "{who:?}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("first"), "{who:?}: {stdout}");
        assert!(
            stdout.contains("j : Saving output of prerun in j.prerun.txt"),
            "{who:?}: {stdout}"
        );

        std::fs::remove_file(dir.join("j.postrun.txt")).unwrap();
        let out = run(
            who,
            dir.path(),
            &file,
            &[
                "--rw=read",
                "--size=64k",
                "--exec_prerun=exit 3",
                "--exec_postrun=echo post",
            ],
        );
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        assert_eq!(ios(&out), 0, "{who:?}");
        assert_eq!(common::json_of(&out)["jobs"][0]["error"], 0, "{who:?}");
        assert_eq!(read(&dir, "j.postrun.txt"), None, "{who:?}");
    }
}

/// The values fio refuses, we refuse, naming the option; the values it takes, we take.
#[test]
fn values_are_checked_as_fio_checks_them() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "values");
    let cases = [
        ("fadvise_hint=willneed", false),
        ("fadvise_hint=2", false),
        ("fadvise_hint=noreuse", true),
        ("fadvise_hint=0", true),
        ("invalidate=0", true),
        ("overwrite=1", true),
        ("create_serialize=0", true),
        ("allow_mounted_write=1", true),
        ("unlink=1", true),
    ];
    for (option, accepted) in cases {
        let job = dir.join("job.fio");
        std::fs::write(
            &job,
            format!("[j]\nioengine=io_uring\nfilename=f\nsize=1m\n{option}\n"),
        )
        .unwrap();
        for who in BOTH {
            let out = command(who, dir.path())
                .arg("--parse-only")
                .arg(&job)
                .output()
                .expect("parse");
            let ok = out.status.success() && out.stderr.is_empty();
            assert_eq!(ok, accepted, "{who:?} {option}: {}", describe(&out));
            if !accepted && who == Who::Ours {
                let name = option.split('=').next().unwrap();
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains(name),
                    "{}",
                    describe(&out)
                );
            }
        }
    }
}

/// `fdatasync=N` beside `fsync=M`: fio (psync, so each flush is a system call) issues an
/// fsync after every M-th write and an fdatasync after every other N-th (fsync first
/// where both fall due, none after the last write), and counts both in its "sync"
/// results (3.42; 3.33 counted only the fsyncs). Ours (through the ring) flushes as
/// often, by its engine's count of completions, and reports the same "sync" count.
#[test]
fn fdatasync_flushes_as_often_as_fios() {
    if !common::tool_present("fio") || !common::tool_present("strace") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "fdatasync");
    for extra in [
        &["--fdatasync=4", "--fsync=6"][..],
        &["--fdatasync=5"][..],
        &["--fsync=8"][..],
    ] {
        let file = dir.join("f");
        let _ = std::fs::remove_file(&file);
        let mut args = vec!["--rw=write", "--size=256k"];
        args.extend_from_slice(extra);
        let mut strace = Command::new("strace");
        strace
            .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(dir.join("trace"))
            .arg(common::fio_or_installed())
            .current_dir(dir.path());
        let mut fio = job_command(strace, &file, &args);
        let fio = fio.arg("--ioengine=psync").output().expect("strace fio");
        assert!(fio.status.success(), "{}", describe(&fio));
        let trace = std::fs::read_to_string(dir.join("trace")).unwrap();
        let count = |call: &str| trace.lines().filter(|l| l.contains(call)).count() as u64;
        let (fsyncs, fdatasyncs) = (count(" fsync("), count(" fdatasync("));
        let synced = common::json_of(&fio)["jobs"][0]["sync"]["total_ios"].as_u64();
        if common::fio_or_installed() != Path::new("fio") {
            assert_eq!(synced, Some(fsyncs + fdatasyncs), "{extra:?}");
        }

        let _ = std::fs::remove_file(&file);
        let ours = run(Who::Ours, dir.path(), &file, &args);
        assert!(ours.status.success(), "{}", describe(&ours));
        let job = &common::json_of(&ours)["jobs"][0];
        assert_eq!(job["sync"]["total_ios"], fsyncs + fdatasyncs, "{extra:?}");
        assert!(
            fdatasyncs > 0 || !extra[0].contains("fdatasync"),
            "{extra:?}"
        );
        let completed = job["iscsi_bench"]["engine"]["ios_completed"]
            .as_u64()
            .unwrap();
        assert_eq!(completed - 64, fsyncs + fdatasyncs, "{extra:?}");
    }
}

/// `offset_align`: an offset given as a percentage of a 1 MiB file is aligned up to the
/// minimum block size, or to `offset_align`, as fio's first I/O (its `write_iolog`) shows;
/// an offset in bytes is not aligned.
#[test]
fn offset_align_places_the_first_io_as_fio_does() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "offset-align");
    let file = dir.join("f");
    std::fs::write(&file, vec![1u8; 1 << 20]).unwrap();
    for extra in [
        "offset=33%\nbs=4k\n",
        "offset=33%\nbs=8k\n",
        "offset=33%\nbs=4k\noffset_align=16k\n",
        "offset=33%\nbs=4k\noffset_align=1000\n",
        "offset=10%\nbs=4k\noffset_align=3k\n",
        "offset=12345\nbs=4k\noffset_align=16k\n",
    ] {
        let log = dir.join("iolog");
        let _ = std::fs::remove_file(&log);
        let job = format!(
            "[j]\nioengine=psync\nfilename={}\nrw=read\nnumber_ios=1\n{extra}",
            file.display()
        );
        let path = dir.join("j.fio");
        std::fs::write(&path, format!("{job}write_iolog={}\n", log.display())).unwrap();
        let out = command(Who::Fio, dir.path())
            .arg("--output=/dev/null")
            .arg(&path)
            .output()
            .expect("fio");
        assert!(out.status.success(), "{extra}: {}", describe(&out));
        let text = std::fs::read_to_string(&log).unwrap();
        let fio_offset: u64 = text
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    [_, _, "read", offset, _] => offset.parse().ok(),
                    _ => None,
                }
            })
            .unwrap_or_else(|| panic!("no read in fio's log: {text}"));
        let ours_job = job.replace("psync", "io_uring");
        let spec = bench::job::parse_job_str(Path::new("j.fio"), &ours_job, &|_| None)
            .unwrap()
            .remove(0);
        let region = spec.check_target_size(1 << 20).unwrap();
        assert_eq!(region.offset_bytes, fio_offset, "{extra}");
    }
}

/// `lockmem`: the job locks as much memory as fio does (one `mlock` of the size given,
/// under strace), and unlocks it when done.
#[test]
fn lockmem_locks_what_fio_locks() {
    if !common::tool_present("fio") || !common::tool_present("strace") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "lockmem");
    for size in ["8m", "1m"] {
        let locked: Vec<Vec<String>> = BOTH
            .iter()
            .map(|&who| {
                let trace = dir.join("trace");
                let mut strace = Command::new("strace");
                strace
                    .args(["-f", "-e", "trace=mlock,munlock", "-o"])
                    .arg(&trace)
                    .arg(match who {
                        Who::Fio => common::fio_or_installed(),
                        Who::Ours => PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench")),
                    })
                    .args(["--name=j", "--ioengine=null", "--size=1m"])
                    .arg(format!("--lockmem={size}"))
                    .current_dir(dir.path());
                let out = strace.output().expect("strace");
                assert!(out.status.success(), "{who:?}: {}", describe(&out));
                std::fs::read_to_string(&trace)
                    .unwrap()
                    .lines()
                    .filter_map(|line| {
                        // "123 mlock(0x7f.., 8388608) = 0": the call and its length.
                        let call = line.split_once(' ')?.1;
                        let (name, rest) = call.split_once("(0x")?;
                        let len = rest.split_once(", ")?.1.split_once(')')?.0;
                        Some(format!("{name} {len}"))
                    })
                    .collect()
            })
            .collect();
        assert!(!locked[0].is_empty(), "fio locked nothing for {size}");
        assert_eq!(locked[1], locked[0], "{size}: ours, then fio's");
    }
}

/// `mem`/`iomem`: malloc (fio's default) is taken by both, a value fio does not know is
/// refused by both; fio's other buffer types are refused by ours, naming the option.
#[test]
fn mem_types_are_checked_as_fio_checks_them() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "mem");
    for (option, fio_ok, ours_ok) in [
        ("--mem=malloc", true, true),
        ("--iomem=malloc", true, true),
        ("--mem=bogus", false, false),
        ("--mem=mmap", true, false),
        ("--iomem=shm", true, false),
        ("--hugepage-size=4m", true, true),
    ] {
        for (who, ok) in [(Who::Fio, fio_ok), (Who::Ours, ours_ok)] {
            let out = command(who, dir.path())
                .args(["--parse-only", "--name=j", "--ioengine=null", "--size=1m"])
                .arg(option)
                .output()
                .expect("parse");
            let accepted = out.status.success() && out.stderr.is_empty();
            assert_eq!(accepted, ok, "{who:?} {option}: {}", describe(&out));
            if !ok && who == Who::Ours {
                let name = option.trim_start_matches("--").split('=').next().unwrap();
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains(name),
                    "{}",
                    describe(&out)
                );
            }
        }
    }
}

/// `create_on_open`: a write job's new file is not laid out (no fallocate, no ftruncate
/// under strace), it is created when opened (mode 0600, as fio opens it) and grows with
/// the writes; a random writer leaves it as long as its furthest write. Without the
/// option both allocate it first.
#[test]
fn create_on_open_creates_the_file_as_fio_does() {
    use std::os::unix::fs::PermissionsExt;
    if !common::tool_present("fio") || !common::tool_present("strace") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "create-on-open");
    let file = dir.join("f");
    for extra in [
        &["--rw=write", "--size=64k", "--create_on_open=1"][..],
        &["--rw=write", "--size=64k", "--create_on_open=0"][..],
    ] {
        let mut seen = Vec::new();
        for who in BOTH {
            let _ = std::fs::remove_file(&file);
            let calls = traced(who, dir.path(), &file, extra, "fallocate,ftruncate");
            let meta = std::fs::metadata(&file).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            seen.push((
                calls.is_empty(),
                meta.len(),
                extra[2].ends_with('1') && mode == 0o600,
            ));
        }
        assert_eq!(seen[1], seen[0], "{extra:?}: ours, then fio's");
        assert_eq!(seen[0].0, extra[2].ends_with('1'), "{extra:?}: {seen:?}");
    }
    let _ = std::fs::remove_file(&file);
    let out = run(
        Who::Ours,
        dir.path(),
        &file,
        &["--rw=randrw", "--size=64k", "--create_on_open=1"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("create_on_open"),
        "{}",
        describe(&out)
    );
}

/// `sync_file_range=flags:N` (with and beside `fdatasync`): as many range flushes as fio
/// makes `sync_file_range(2)` calls (psync, under strace), after the same writes (fsync
/// and fdatasync first where due), all counted in "sync" as fio 3.42 counts them; a
/// value fio does not know is refused by both.
#[test]
fn sync_file_range_flushes_as_often_as_fios() {
    if !common::tool_present("fio") || !common::tool_present("strace") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "sync-file-range");
    let file = dir.join("f");
    for extra in [
        &["--sync_file_range=wait_before,write:4"][..],
        &["--sync_file_range=write:3", "--fdatasync=6"][..],
        &["--sync_file_range=wait_after", "--fsync=5"][..],
    ] {
        let mut args = vec!["--rw=write", "--size=64k"];
        args.extend_from_slice(extra);
        let _ = std::fs::remove_file(&file);
        let mut strace = Command::new("strace");
        strace
            .args(["-f", "-e", "trace=sync_file_range,fdatasync,fsync", "-o"])
            .arg(dir.join("trace"))
            .arg(common::fio_or_installed())
            .current_dir(dir.path());
        let mut fio = job_command(strace, &file, &args);
        let fio = fio.arg("--ioengine=psync").output().expect("strace fio");
        assert!(fio.status.success(), "{}", describe(&fio));
        let trace = std::fs::read_to_string(dir.join("trace")).unwrap();
        let ranges = trace
            .lines()
            .filter(|l| l.contains("sync_file_range("))
            .count() as u64;
        let flushes = trace.lines().filter(|l| l.contains("sync")).count() as u64;
        assert!(ranges > 0, "{extra:?}: {trace}");
        if common::fio_or_installed() != Path::new("fio") {
            let synced = common::json_of(&fio)["jobs"][0]["sync"]["total_ios"].as_u64();
            assert_eq!(synced, Some(flushes), "{extra:?}");
        }

        let _ = std::fs::remove_file(&file);
        let ours = run(Who::Ours, dir.path(), &file, &args);
        assert!(ours.status.success(), "{}", describe(&ours));
        let job = &common::json_of(&ours)["jobs"][0];
        assert_eq!(job["sync"]["total_ios"], flushes, "{extra:?}");
        let completed = job["iscsi_bench"]["engine"]["ios_completed"]
            .as_u64()
            .unwrap();
        assert_eq!(completed - 16, flushes, "{extra:?}");
    }
    for who in BOTH {
        let out = command(who, dir.path())
            .args(["--parse-only", "--name=j", "--ioengine=null", "--size=1m"])
            .arg("--sync_file_range=bogus")
            .output()
            .expect("parse");
        assert!(!out.status.success(), "{who:?}: {}", describe(&out));
    }
}

/// `bs_unaligned`: a sequential job over 16 MiB with `bsrange=1k-8k` takes as many I/Os
/// (so the same mean length) in ours as in fio, with and without the option: fio's
/// unaligned draw (minimum plus a uniform draw below the maximum, capped at it) averages
/// about 4.9 KiB, the multiples of 1 KiB 4.5 KiB. fio's null engine; ours too.
#[test]
fn bs_unaligned_gives_fios_lengths() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "bs-unaligned");
    for extra in [&["--bs_unaligned"][..], &[][..]] {
        let counts: Vec<f64> = BOTH
            .iter()
            .map(|&who| {
                let out = command(who, dir.path())
                    .args([
                        "--name=j",
                        "--ioengine=null",
                        "--rw=read",
                        "--size=16m",
                        "--bsrange=1k-8k",
                        "--output-format=json",
                    ])
                    .args(extra)
                    .output()
                    .expect("run");
                assert!(out.status.success(), "{who:?}: {}", describe(&out));
                ios(&out) as f64
            })
            .collect();
        let ratio = counts[1] / counts[0];
        assert!(
            (0.96..1.04).contains(&ratio),
            "{extra:?}: ours {} I/Os, fio {}",
            counts[1],
            counts[0]
        );
    }
}

/// `serialize_overlap`: a random writer over 64 KiB at depth 16 runs to the same count in
/// both with the option (which holds overlapping I/Os back; the runner's own test checks
/// that none overlap in the engine), and both take it.
#[test]
fn serialize_overlap_runs_as_fios() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "serialize-overlap");
    let file = dir.join("f");
    for who in BOTH {
        let out = run(
            who,
            dir.path(),
            &file,
            &[
                "--rw=randwrite",
                "--size=64k",
                "--io_size=2m",
                "--norandommap",
                "--iodepth=16",
                "--serialize_overlap=1",
            ],
        );
        assert!(out.status.success(), "{who:?}: {}", describe(&out));
        assert_eq!(ios(&out), 512, "{who:?}");
        assert_eq!(common::json_of(&out)["jobs"][0]["error"], 0, "{who:?}");
    }
}

/// `file_append`: a write job of 32 KiB on a 64 KiB file writes past its end, leaving the
/// 64 KiB as they were and the file 96 KiB long, in both; without it both write over the
/// start. Ours refuses it for a job that reads, naming the option.
#[test]
fn file_append_writes_past_the_end_as_fio_does() {
    if !common::tool_present("fio") {
        return;
    }
    let dir = ScratchDir::new("fio-file-options", "file-append");
    let file = dir.join("f");
    let original = vec![7u8; 64 << 10];
    for (value, appends) in [("1", true), ("0", false)] {
        for who in BOTH {
            std::fs::write(&file, &original).unwrap();
            let option = format!("--file_append={value}");
            let out = run(
                who,
                dir.path(),
                &file,
                &["--rw=write", "--size=32k", &option],
            );
            assert!(out.status.success(), "{who:?} {option}: {}", describe(&out));
            assert_eq!(ios(&out), 8, "{who:?} {option}");
            let now = std::fs::read(&file).unwrap();
            let expected_len = if appends { 96 << 10 } else { 64 << 10 };
            assert_eq!(now.len(), expected_len, "{who:?} {option}");
            assert_eq!(now[..64 << 10] == original[..], appends, "{who:?} {option}");
        }
    }
    std::fs::write(&file, &original).unwrap();
    let out = run(
        Who::Ours,
        dir.path(),
        &file,
        &["--rw=randrw", "--size=32k", "--file_append=1"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file_append"),
        "{}",
        describe(&out)
    );
}

/// On a LUN the file options mean nothing and are taken, as fio 3.42's libiscsi engine
/// (diskless: nothing to lay out, invalidate or unlink) takes them; `--parse-only` in both.
#[test]
fn a_lun_job_takes_the_file_options_as_fios_libiscsi_does() {
    let options = [
        "invalidate=0",
        "overwrite=1",
        "fadvise_hint=random",
        "fsync_on_close=1",
        "unlink=1",
        "create_on_open=1",
        "create_fsync=0",
        "create_serialize=0",
        "allow_file_create=0",
        "allow_mounted_write=1",
        "fdatasync=4",
        "sync_file_range=write:4",
        "serialize_overlap=1",
        "lockmem=1m",
        "mem=malloc",
    ];
    let dir = ScratchDir::new("fio-file-options", "lun");
    let mut whos = vec![(Who::Ours, "iscsi")];
    // Only the anchor is built with libiscsi.
    if common::fio_or_installed() != Path::new("fio") {
        whos.push((Who::Fio, "libiscsi"));
    }
    for (who, engine) in whos {
        let mut command = command(who, dir.path());
        command.args([
            "--parse-only",
            "--name=j",
            "--rw=randrw",
            "--iodepth=4",
            &format!("--ioengine={engine}"),
            "--filename=iscsi://127.0.0.1/iqn.2000-01.com.example:t/0",
        ]);
        for option in options {
            command.arg(format!("--{option}"));
        }
        let out = command.output().expect("parse");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{who:?}: {}",
            describe(&out)
        );
    }
}
