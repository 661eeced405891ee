//! The options fio 3.42 has that fio 3.33 had not, beside fio 3.42 itself (the anchor,
//! `common::fio_anchor`): every option name fio 3.42 knows is either taken by iscsi-bench
//! or refused as "a fio option that iscsi-bench does not support", never "unknown"; and
//! each one iscsi-bench implements runs the same small job through both tools, comparing
//! what can be seen (JSON fields, log columns, system calls, thread names, exit status).
//! Skipped (loudly) where the anchor is missing, a failure under CI.

mod common;

use common::{describe, json_of, ScratchDir};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Fio,
    Ours,
}

const BOTH: [Who; 2] = [Who::Fio, Who::Ours];

/// fio 3.42, or `None` after the loud skip (a failure under CI).
fn anchor() -> Option<PathBuf> {
    let found = common::fio_anchor();
    common::require_tool("fio 3.42 (the anchor, $FIO_ANCHOR)", found.is_some())
        .then(|| found.expect("present"))
}

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_iscsi-bench"))
}

/// `who` runs `args` in `dir` (at most 30 s); local files go through psync for fio and
/// io_uring for ours where `file_engine`, else both use the null engine.
fn run(who: Who, fio: &Path, dir: &Path, file_engine: bool, args: &[&str]) -> Output {
    command(who, fio, dir, file_engine, args)
        .output()
        .expect("run the job")
}

fn command(who: Who, fio: &Path, dir: &Path, file_engine: bool, args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command.arg("30");
    command.arg(match who {
        Who::Fio => fio,
        Who::Ours => ours(),
    });
    let engine = match (who, file_engine) {
        (_, false) => "--ioengine=null",
        (Who::Fio, true) => "--ioengine=psync",
        (Who::Ours, true) => "--ioengine=io_uring",
    };
    command
        .current_dir(dir)
        .arg("--name=j")
        .arg(engine)
        .args(args);
    command
}

fn ok(who: Who, out: &Output) {
    assert!(out.status.success(), "{who:?}: {}", describe(out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// Every name fio 3.42 knows.

/// The option names fio's `--cmdhelp=all` lists (the part of each line before " :").
fn cmdhelp_names(program: &Path) -> BTreeSet<String> {
    let out = Command::new(program)
        .arg("--cmdhelp=all")
        .output()
        .expect("run --cmdhelp=all");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|name| !name.is_empty() && !name.contains(' '))
        .collect()
}

/// The aliases fio's `--cmdhelp=<name>` shows for `name` (its "alias: x" line).
fn fio_aliases(fio: &Path, name: &str) -> Vec<String> {
    let out = Command::new(fio)
        .arg(format!("--cmdhelp={name}"))
        .output()
        .expect("run --cmdhelp=<name>");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("alias:"))
        .map(|alias| alias.trim().to_string())
        .collect()
}

/// fio 3.42 options its `--cmdhelp=all` leaves out (deprecated ones, and the children of
/// an option that has an alias), which it still takes.
const UNLISTED: &[&str] = &[
    "iomem_align",
    "spr_num_regions",
    "spr_op",
    "spr_cs",
    "flow_watermark",
    "rwmixcycle",
    "percentage_sequential",
    "softrandommap",
    "verifysort",
    "verifysort_nr",
];

#[test]
fn every_fio_342_option_and_alias_is_taken_or_refused_as_unsupported_never_unknown() {
    let Some(fio) = anchor() else { return };
    let fio_names = cmdhelp_names(&fio);
    assert!(
        fio_names.len() > 200 && fio_names.contains("thinkcycles"),
        "fio 3.42's --cmdhelp=all: {fio_names:?}"
    );
    let our_names = cmdhelp_names(ours());
    let mut names: BTreeSet<String> = fio_names.clone();
    for name in UNLISTED {
        let out = Command::new(&fio)
            .arg(format!("--cmdhelp={name}"))
            .output()
            .expect("run --cmdhelp=<name>");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("No such command"),
            "fio 3.42 does not know {name}"
        );
        names.insert(name.to_string());
    }
    for name in names.clone() {
        names.extend(fio_aliases(&fio, &name));
    }
    // The aliases fio's options.c names for the options new in 3.42 are among them.
    for alias in ["data_placement", "fdp_pli_select", "fdp_pli", "mem_align"] {
        assert!(names.contains(alias), "{alias} not found through fio");
    }
    let scratch = ScratchDir::new("fio342-names", "parse");
    let mut unknown = Vec::new();
    let mut refused = Vec::new();
    for name in &names {
        let out = Command::new(ours())
            .current_dir(scratch.path())
            .args(["--parse-only", "--name=j", "--ioengine=null", "--size=1m"])
            .arg(format!("--{name}=1"))
            .output()
            .expect("run iscsi-bench --parse-only");
        let text = stderr(&out);
        if text.contains("unknown command-line option") || text.contains("unknown option") {
            unknown.push(format!("{name}: {}", text.trim()));
        } else if text.contains("does not support") {
            refused.push(name.clone());
        }
        // Otherwise taken: parsed, or its value "1" refused as a bad one (a known option).
    }
    assert!(
        unknown.is_empty(),
        "fio 3.42 options ours calls unknown:\n{}",
        unknown.join("\n")
    );
    // The names ours lists itself are the ones it takes: none of them is refused.
    let listed_yet_refused: Vec<&String> = refused
        .iter()
        .filter(|name| our_names.contains(*name))
        .collect();
    assert!(
        listed_yet_refused.is_empty(),
        "ours lists these as options yet refuses them: {listed_yet_refused:?}"
    );
    // What this branch refuses, with its reason where one is given.
    for name in [
        "fdp",
        "dataplacement",
        "sprandom",
        "job_start_clock_id",
        "filetype",
    ] {
        assert!(refused.contains(&name.to_string()), "{name} is not refused");
    }
    let out = Command::new(ours())
        .args(["--parse-only", "--name=j", "--ioengine=null", "--size=1m"])
        .arg("--write_zone_remainder=1")
        .output()
        .expect("run iscsi-bench --parse-only");
    assert!(
        stderr(&out).contains("does not support") && stderr(&out).contains("zoned"),
        "{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------
// thinkcycles

/// The job's runtime in ms, from its JSON report.
fn job_runtime_ms(out: &Output) -> u64 {
    json_of(out)["jobs"][0]["job_runtime"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job_runtime\n{}", describe(out)))
}

#[test]
fn thinkcycles_spins_after_each_io_as_long_as_fio_does() {
    let Some(fio) = anchor() else { return };
    let scratch = ScratchDir::new("fio342-thinkcycles", "null");
    let job = |who, cycles: &str| {
        let out = run(
            who,
            &fio,
            scratch.path(),
            false,
            &[
                "--rw=read",
                "--bs=4k",
                "--size=400k",
                &format!("--thinkcycles={cycles}"),
                "--output-format=json",
            ],
        );
        ok(who, &out);
        let reads = json_of(&out)["jobs"][0]["read"]["total_ios"].as_u64();
        assert_eq!(reads, Some(100), "{who:?}: {}", describe(&out));
        job_runtime_ms(&out)
    };
    // 100 I/Os of 100,000 spins each: a few hundred ms where a spin is a PAUSE of some
    // tens of cycles, never under 10 ms; without, the null engine's 100 I/Os take ~0.
    let fio_spun = job(Who::Fio, "100000");
    let ours_spun = job(Who::Ours, "100000");
    let ours_plain = job(Who::Ours, "0");
    assert!(
        ours_spun >= 10 && ours_spun >= 5 * ours_plain.max(1),
        "ours: {ours_spun} ms with thinkcycles, {ours_plain} ms without"
    );
    assert!(
        ours_spun * 4 >= fio_spun && fio_spun * 4 >= ours_spun,
        "thinkcycles=100000 over 100 I/Os: fio {fio_spun} ms, ours {ours_spun} ms"
    );
}

// ---------------------------------------------------------------------------------------
// ramp_size

#[test]
fn ramp_size_measures_only_after_that_much_io_and_then_for_the_runtime() {
    let Some(fio) = anchor() else { return };
    let scratch = ScratchDir::new("fio342-ramp-size", "null");
    // 1 MiB at 4 MiB/s: a 250 ms ramp, then 1 s measured.
    let args = [
        "--rw=read",
        "--bs=4k",
        "--size=64m",
        "--rate=4m",
        "--time_based",
        "--runtime=1",
        "--ramp_size=1m",
        "--output-format=json",
    ];
    for who in BOTH {
        let start = Instant::now();
        let out = run(who, &fio, scratch.path(), false, &args);
        let wall = start.elapsed();
        ok(who, &out);
        let runtime = job_runtime_ms(&out);
        let bytes = json_of(&out)["jobs"][0]["read"]["io_bytes"]
            .as_u64()
            .expect("io_bytes");
        assert!(
            (900..=1400).contains(&runtime),
            "{who:?}: job_runtime {runtime} ms\n{}",
            describe(&out)
        );
        // What the ramp moved is not counted: about 1 s at the rate.
        assert!(
            (3_400_000..=4_900_000).contains(&bytes),
            "{who:?}: {bytes} bytes measured\n{}",
            describe(&out)
        );
        assert!(
            wall >= Duration::from_millis(1_200),
            "{who:?}: the ramp and the runtime in {wall:?}"
        );
    }
    // Both refuse ramp_size with ramp_time, and a ramp_size that differs from an earlier
    // job's in the same reporting group.
    let both_ramps = ["--size=1m", "--ramp_size=64k", "--ramp_time=1"];
    let job_file = scratch.join("groups.fio");
    std::fs::write(
        &job_file,
        "[a]\nioengine=null\nsize=1m\n[b]\nioengine=null\nsize=1m\nramp_size=64k\n",
    )
    .expect("write the job file");
    for who in BOTH {
        let out = run(who, &fio, scratch.path(), false, &both_ramps);
        assert!(!out.status.success(), "{who:?}: {}", describe(&out));
        let program = if who == Who::Fio { &fio } else { ours() };
        let out = Command::new(program)
            .arg(&job_file)
            .output()
            .expect("run the job file");
        assert!(!out.status.success(), "{who:?}: {}", describe(&out));
    }
    let out = run(Who::Ours, &fio, scratch.path(), false, &both_ramps);
    assert!(
        stderr(&out).contains("cannot specify both ramp_time and ramp_size"),
        "{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------
// end_syncfs

/// The system calls named in `calls` the run of `args` under strace made, by name.
fn traced(who: Who, fio: &Path, dir: &Path, args: &[&str], calls: &str) -> Vec<String> {
    let trace = dir.join(format!("{who:?}.strace"));
    let inner = command(who, fio, dir, true, args);
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-qq", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&trace)
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(dir);
    let out = strace.output().expect("run strace");
    ok(who, &out);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let call = line.split_whitespace().nth(1)?;
            Some(call.split('(').next()?.to_string())
        })
        .collect()
}

#[test]
fn end_syncfs_syncs_the_file_system_once_as_fio_does() {
    let Some(fio) = anchor() else { return };
    // strace must run and be able to trace (ptrace allowed).
    let traces = Command::new("strace")
        .args(["-qq", "-e", "trace=none", "true"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !common::require_tool("strace", traces) {
        return;
    }
    let scratch = ScratchDir::new("fio342-end-syncfs", "files");
    let dir = scratch.path().display().to_string();
    let directory = format!("--directory={dir}");
    let count = |who, extra: &[&str]| {
        let mut args = vec![directory.as_str(), "--bs=4k", "--size=256k"];
        args.extend_from_slice(extra);
        let calls = traced(who, &fio, scratch.path(), &args, "syncfs");
        calls.iter().filter(|c| *c == "syncfs").count()
    };
    for who in BOTH {
        let written = count(who, &["--rw=write", "--end_syncfs=1"]);
        assert_eq!(written, 1, "{who:?}: syncfs calls of a writing job");
        // end_fsync flushes the file, not the file system; a reading job syncs nothing.
        assert_eq!(count(who, &["--rw=write", "--end_fsync=1"]), 0, "{who:?}");
        assert_eq!(count(who, &["--rw=read", "--end_syncfs=1"]), 0, "{who:?}");
    }
}

// ---------------------------------------------------------------------------------------
// comm and priohint

/// The id of a thread named `comm` (any process), looked for until `within` is over.
fn thread_named(comm: &str, within: Duration) -> Option<libc::pid_t> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        for process in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(tasks) = std::fs::read_dir(process.path().join("task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if name.trim_end() == comm {
                    if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                        return Some(tid);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn comm_names_the_job_and_priohint_goes_into_its_io_priority_as_in_fio() {
    let Some(fio) = anchor() else { return };
    let scratch = ScratchDir::new("fio342-comm", "null");
    for who in BOTH {
        let comm = format!("f342c{}{}", std::process::id() % 10_000, who as u8);
        // 1.5 s of I/O at 400 KiB/s, long enough to find the thread.
        let mut child = command(
            who,
            &fio,
            scratch.path(),
            false,
            &[
                "--rw=read",
                "--bs=4k",
                "--size=600k",
                "--rate=400k",
                &format!("--comm={comm}"),
                "--priohint=3",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the job");
        let tid = thread_named(&comm, Duration::from_secs(3));
        // The name comes first (fio names its process, then sets the priority before its
        // first I/O; ours names the thread as it starts): read until it is set, or gone.
        let wanted = (2 << 13) | (3 << 3);
        let ioprio = tid.map(|tid| {
            let mut seen = -1;
            for _ in 0..50 {
                // SAFETY: ioprio_get of a thread id takes and returns plain integers.
                let now = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
                if now < 0 {
                    break;
                }
                seen = now;
                if seen == wanted {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        let status = child.wait().expect("wait for the job");
        assert!(status.success(), "{who:?}: {status:?}");
        let tid = tid.unwrap_or_else(|| panic!("{who:?}: no thread named {comm}"));
        let ioprio = ioprio.expect("read");
        assert!(ioprio >= 0, "{who:?}: ioprio_get of {tid} failed");
        // Best effort (2), level 0, hint 3: fio's ioprio_value.
        assert_eq!(ioprio, wanted, "{who:?}: ioprio {ioprio:#x}");
    }
    // A hint over IOPRIO_MAX_PRIO_HINT (1023) is refused by both.
    for who in BOTH {
        let out = run(
            who,
            &fio,
            scratch.path(),
            false,
            &["--size=4k", "--priohint=1024"],
        );
        assert!(!out.status.success(), "{who:?}: {}", describe(&out));
    }
}

// ---------------------------------------------------------------------------------------
// log_issue_time

/// The lines of a log, split at ", " into numbers.
fn log_rows(path: &Path) -> Vec<Vec<u64>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| {
            line.split(", ")
                .map(|field| field.trim().parse().expect("a number"))
                .collect()
        })
        .collect()
}

#[test]
fn log_issue_time_ends_the_clat_log_lines_with_the_issue_time_as_fio_does() {
    let Some(fio) = anchor() else { return };
    for who in BOTH {
        let scratch = ScratchDir::new("fio342-issue-time", &format!("{who:?}"));
        // 20 reads at 200 a second: issued 5 ms apart.
        let out = run(
            who,
            &fio,
            scratch.path(),
            false,
            &[
                "--rw=read",
                "--bs=4k",
                "--size=80k",
                "--rate_iops=200",
                "--write_lat_log=t",
                "--log_offset=1",
                "--log_issue_time=1",
            ],
        );
        ok(who, &out);
        let clat = log_rows(&scratch.join("t_clat.1.log"));
        assert_eq!(clat.len(), 20, "{who:?}: {clat:?}");
        for row in &clat {
            // time, value, direction, bs, offset, priority, issue time (ns).
            assert_eq!(row.len(), 7, "{who:?}: {row:?}");
            let (time_ms, issue_ns) = (row[0], row[6]);
            assert!(
                issue_ns / 1_000_000 <= time_ms + 1 && issue_ns / 1_000_000 + 50 >= time_ms,
                "{who:?}: issued at {issue_ns} ns, done at {time_ms} ms"
            );
        }
        let issued: Vec<u64> = clat.iter().map(|row| row[6]).collect();
        assert!(
            issued.windows(2).all(|w| w[0] <= w[1]),
            "{who:?}: {issued:?}"
        );
        let span_ms = (issued[19] - issued[0]) / 1_000_000;
        assert!((70..=250).contains(&span_ms), "{who:?}: {issued:?}");
        // fio's lat samples carry no issue time: the column is there, 0.
        let lat = log_rows(&scratch.join("t_lat.1.log"));
        assert!(
            !lat.is_empty() && lat.iter().all(|row| row.len() == 7 && row[6] == 0),
            "{who:?}: {lat:?}"
        );
        // It needs log_offset (and write_lat_log), in both.
        let out = run(
            who,
            &fio,
            scratch.path(),
            false,
            &["--size=4k", "--write_lat_log=u", "--log_issue_time=1"],
        );
        let text = format!("{}{}", stderr(&out), common::stdout(&out));
        assert!(
            text.contains("log_issue_time option requires write_lat_log and log_offset"),
            "{who:?}: {}",
            describe(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// verify_header_seed and verify_write_sequence

#[test]
fn verify_header_seed_and_write_sequence_off_still_check_the_data_as_in_fio() {
    let Some(fio) = anchor() else { return };
    for who in BOTH {
        let scratch = ScratchDir::new("fio342-verify-checks", &format!("{who:?}"));
        let file = scratch.join("data");
        let filename = format!("--filename={}", file.display());
        let common_args = [
            filename.as_str(),
            "--bs=4k",
            "--size=64k",
            "--verify=crc32c",
        ];
        let job = |extra: &[&str]| {
            let mut args = common_args.to_vec();
            args.extend_from_slice(extra);
            run(who, &fio, scratch.path(), true, &args)
        };
        let write = job(&["--rw=write", "--do_verify=0", "--verify_state_save=0"]);
        ok(who, &write);
        let off = ["--verify_header_seed=0", "--verify_write_sequence=0"];
        let read = |checks_off: bool| {
            let mut extra = vec!["--rw=read"];
            if checks_off {
                extra.extend_from_slice(&off);
            }
            job(&extra)
        };
        for checks_off in [false, true] {
            let out = read(checks_off);
            assert!(out.status.success(), "{who:?}: intact, {}", describe(&out));
        }
        // A write job verifying its own blocks with the checks off passes too.
        let mut extra = vec!["--rw=randwrite"];
        extra.extend_from_slice(&off);
        ok(who, &job(&extra));
        // One byte changed in a block's data: the digest still catches it.
        let mut bytes = std::fs::read(&file).expect("read the data file");
        bytes[20_000] ^= 0xff;
        std::fs::write(&file, &bytes).expect("corrupt the data file");
        for checks_off in [false, true] {
            let out = read(checks_off);
            assert!(
                !out.status.success(),
                "{who:?}: corrupt data passed (checks off: {checks_off})\n{}",
                describe(&out)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// num_range

#[test]
fn num_range_above_one_is_refused_for_trims_as_fio_refuses_it_on_these_engines() {
    let Some(fio) = anchor() else { return };
    let scratch = ScratchDir::new("fio342-num-range", "null");
    for who in BOTH {
        let out = run(
            who,
            &fio,
            scratch.path(),
            false,
            &["--size=64k", "--rw=trim", "--num_range=2"],
        );
        assert!(!out.status.success(), "{who:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("can't use multiple ranges with IO engine null"),
            "{who:?}: {}",
            describe(&out)
        );
        // 1 is every engine's, and a job that does not trim takes any count.
        for args in [
            ["--size=64k", "--rw=trim", "--num_range=1"],
            ["--size=64k", "--rw=read", "--num_range=4"],
        ] {
            let out = run(who, &fio, scratch.path(), false, &args);
            ok(who, &out);
        }
        let out = run(
            who,
            &fio,
            scratch.path(),
            false,
            &["--size=4k", "--num_range=257"],
        );
        assert!(!out.status.success(), "{who:?}: {}", describe(&out));
    }
}
