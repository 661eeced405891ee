//! fio's io_uring engine options beside fio itself: the same small job (a file of a few MiB
//! in a scratch directory) runs through fio and through iscsi-bench, and what can be seen
//! of each option is compared: success or the errno the job fails with, the I/O count, the
//! page cache after `uncached` (`fincore`), the io_uring threads of the running job
//! (`force_async`'s workers, `sqthread_poll_cpu`'s pinned poller) and the `EPERM` a
//! realtime `cmdprio` gets without `CAP_SYS_NICE` (`setpriv`). Debian's fio (3.33) is the
//! reference where it has the option; fio 3.42 (the anchor) for `uncached` (3.33's is an
//! older flag the kernel refuses) and `cmdprio_hint`. Skipped loudly where a tool is
//! missing, a failure under CI.

mod common;

use common::local_jobs::resident_bytes;
use common::{describe, json_of, ScratchDir};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Fio,
    Ours,
}

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench"))
}

/// Debian's fio on the PATH, or `None` (skipped loudly; a failure under CI).
fn installed_fio() -> Option<PathBuf> {
    let fio = PathBuf::from("fio");
    common::require_tool("fio", common::runs(&fio)).then_some(fio)
}

/// fio 3.42, or `None` as above.
fn anchor_fio() -> Option<PathBuf> {
    let anchor = common::fio_anchor();
    common::require_tool(
        "fio 3.42 (the anchor, shared/anchors/fio)",
        anchor.is_some(),
    )
    .then_some(anchor)
    .flatten()
}

/// The job both tools run: 4 KiB I/O to `file`, JSON out, then `options`.
fn command(who: Who, fio: &Path, file: &Path, options: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command.arg("30");
    command.arg(match who {
        Who::Fio => fio.to_path_buf(),
        Who::Ours => ours(),
    });
    command
        .arg("--name=j")
        .arg("--ioengine=io_uring")
        .arg(format!("--filename={}", file.display()))
        .args(["--bs=4k", "--output-format=json"])
        .args(options);
    command
}

/// What a run shows: the job's error (0, or the errno it stopped with) and the reads and
/// writes that completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    error: i64,
    ios: u64,
}

fn seen(out: &Output) -> Seen {
    let json = json_of(out);
    let job = &json["jobs"][0];
    let ios = ["read", "write"]
        .iter()
        .map(|dir| job[*dir]["total_ios"].as_u64().unwrap_or(0))
        .sum();
    Seen {
        error: job["error"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error field\n{}", describe(out))),
        ios,
    }
}

/// Both tools run the job on a 4 MiB file of their own; what each shows.
fn both(name: &str, fio: &Path, options: &[&str]) -> (Seen, Seen) {
    let dir = ScratchDir::new("fio_uring_options", name);
    let run = |who: Who| {
        let file = dir.join(&format!("{who:?}.dat"));
        let out = command(who, fio, &file, options)
            .output()
            .expect("run the job");
        seen(&out)
    };
    (run(Who::Fio), run(Who::Ours))
}

#[test]
fn submission_options_run_as_fio_runs_them() {
    let Some(fio) = installed_fio() else {
        return;
    };
    for (name, options) in [
        (
            "force_async",
            &["--rw=randread", "--size=4m", "--force_async=2"][..],
        ),
        (
            "vectored",
            &["--rw=randwrite", "--size=4m", "--nonvectored=0"][..],
        ),
        (
            "nonvectored",
            &["--rw=randread", "--size=4m", "--nonvectored=1"][..],
        ),
        (
            "sqpoll_cpu",
            &[
                "--rw=read",
                "--size=4m",
                "--sqthread_poll",
                "--sqthread_poll_cpu=0",
            ][..],
        ),
        // fio ignores the CPU without sqthread_poll.
        (
            "cpu_alone",
            &["--rw=read", "--size=4m", "--sqthread_poll_cpu=0"][..],
        ),
        // Without sqthread_poll a CPU the machine lacks is not looked at.
        (
            "cpu_unused",
            &["--rw=read", "--size=4m", "--sqthread_poll_cpu=100000"][..],
        ),
        // The whole file is in the page cache first: no read has to wait.
        (
            "nowait_cached",
            &["--rw=randread", "--size=4m", "--nowait=1", "--pre_read=1"][..],
        ),
        (
            "cmdprio_be",
            &[
                "--rw=randrw",
                "--size=4m",
                "--cmdprio_percentage=50,20",
                "--cmdprio_class=2",
                "--cmdprio=7",
            ][..],
        ),
    ] {
        let (fio_seen, our_seen) = both(name, &fio, options);
        assert_eq!(
            fio_seen,
            Seen {
                error: 0,
                ios: 1024
            },
            "{name}: fio"
        );
        assert_eq!(our_seen, fio_seen, "{name}: ours against fio");
    }
}

#[test]
fn failing_options_fail_with_fios_errno() {
    let Some(fio) = installed_fio() else {
        return;
    };
    for (name, options, errno) in [
        // The file was just laid out and dropped from the cache: a read would wait.
        (
            "nowait",
            &["--rw=randread", "--size=4m", "--nowait=1"][..],
            libc::EAGAIN,
        ),
        // An ext4 or tmpfs file has no poll queue: each polled I/O fails.
        (
            "hipri",
            &["--rw=randread", "--size=4m", "--hipri"][..],
            libc::EOPNOTSUPP,
        ),
    ] {
        let (fio_seen, our_seen) = both(name, &fio, options);
        // On tmpfs (no disk under the scratch directory) pages cannot leave the cache, so
        // a nowait read never waits: there only the two tools' agreement is checked.
        let on_disk = common::block_device_dir(&std::env::temp_dir()).is_some();
        if on_disk || name != "nowait" {
            assert_eq!(fio_seen.error, i64::from(errno), "{name}: fio");
        }
        assert_eq!(our_seen.error, fio_seen.error, "{name}: ours against fio");
    }
}

#[test]
fn an_sq_thread_on_a_cpu_the_machine_lacks_fails_the_job_as_in_fio() {
    let Some(fio) = installed_fio() else {
        return;
    };
    let dir = ScratchDir::new("fio_uring_options", "sqpoll_cpu_missing");
    let options = [
        "--rw=read",
        "--size=1m",
        "--sqthread_poll",
        "--sqthread_poll_cpu=100000",
    ];
    // fio: the ring's setup fails (EINVAL) and so does the job.
    let out = command(Who::Fio, &fio, &dir.join("fio.dat"), &options)
        .output()
        .expect("run fio");
    assert_eq!(seen(&out).error, i64::from(libc::EINVAL), "fio");
    // Ours: the engine does not open, and says why.
    let out = command(Who::Ours, &fio, &dir.join("ours.dat"), &options)
        .output()
        .expect("run ours");
    assert!(!out.status.success(), "ours ran: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sqthread_poll_cpu=100000") && stderr.contains("Invalid argument"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_realtime_cmdprio_needs_cap_sys_nice_as_in_fio() {
    let Some(fio) = installed_fio() else {
        return;
    };
    if !common::tool_present("setpriv") {
        return;
    }
    // Without CAP_SYS_NICE and CAP_SYS_ADMIN the kernel refuses an I/O whose entry asks for
    // the realtime class (cmdprio_class's default) with EPERM; best effort is anyone's.
    let dir = ScratchDir::new("fio_uring_options", "cmdprio_caps");
    for (options, errno) in [
        (&["--cmdprio_percentage=100"][..], libc::EPERM),
        (
            &["--cmdprio_percentage=100", "--cmdprio_class=1"][..],
            libc::EPERM,
        ),
        (&["--cmdprio_percentage=100", "--cmdprio_class=2"][..], 0),
        (&["--cmdprio_percentage=0,100"][..], 0),
        // cmdprio_bssplit: per I/O length, the entry's own priority or cmdprio_class's.
        (&["--cmdprio_bssplit=4k/100"][..], libc::EPERM),
        (&["--cmdprio_bssplit=4k/100/2/0"][..], 0),
        (&["--cmdprio_bssplit=4k/100", "--cmdprio_class=2"][..], 0),
        (&["--cmdprio_bssplit=4k/0:4k/100/1/0"][..], libc::EPERM),
        // Not the job's length, or only for writes: no read takes it.
        (&["--cmdprio_bssplit=8k/100"][..], 0),
        (&["--cmdprio_bssplit=,4k/100"][..], 0),
    ] {
        let mut errors = Vec::new();
        for who in [Who::Fio, Who::Ours] {
            let file = dir.join(&format!("{who:?}.dat"));
            let job = command(
                who,
                &fio,
                &file,
                &[&["--rw=randread", "--size=1m"], options].concat(),
            );
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--bounding-set=-sys_nice,-sys_admin",
                    "--inh-caps=-sys_nice,-sys_admin",
                ])
                .arg(job.get_program())
                .args(job.get_args());
            let out = command.output().expect("run setpriv");
            errors.push(seen(&out).error);
        }
        assert_eq!(errors[0], i64::from(errno), "{options:?}: fio");
        assert_eq!(errors[1], errors[0], "{options:?}: ours against fio");
    }
}

#[test]
fn cmdprio_percentage_and_bssplit_exclude_each_other_as_in_fio() {
    let Some(fio) = installed_fio() else {
        return;
    };
    let dir = ScratchDir::new("fio_uring_options", "cmdprio_both");
    let options = [
        "--rw=randread",
        "--size=1m",
        "--cmdprio_bssplit=4k/50",
        "--cmdprio_percentage=10",
    ];
    for who in [Who::Fio, Who::Ours] {
        let file = dir.join(&format!("{who:?}.dat"));
        let out = command(who, &fio, &file, &options)
            .output()
            .expect("run the job");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("cmdprio_percentage and cmdprio_bssplit options are mutually exclusive"),
            "{who:?}: {}",
            describe(&out)
        );
        let failed = !out.status.success() || seen(&out).error != 0;
        assert!(failed, "{who:?} ran: {}", describe(&out));
    }
}

#[test]
fn cmdprio_hint_runs_as_fio_3_42_runs_it() {
    let Some(fio) = anchor_fio() else {
        return;
    };
    let options = [
        "--rw=randread",
        "--size=4m",
        "--cmdprio_percentage=30",
        "--cmdprio_class=3",
        "--cmdprio_hint=2",
    ];
    let (fio_seen, our_seen) = both("cmdprio_hint", &fio, &options);
    assert_eq!(
        fio_seen,
        Seen {
            error: 0,
            ios: 1024
        },
        "fio"
    );
    assert_eq!(our_seen, fio_seen, "ours against fio");
}

#[test]
fn uncached_leaves_nothing_in_the_page_cache_as_fio_3_42() {
    let Some(fio) = anchor_fio() else {
        return;
    };
    if !common::tool_present("fincore") {
        return;
    }
    if common::block_device_dir(&std::env::temp_dir()).is_none() {
        // tmpfs keeps every page in memory and refuses RWF_DONTCACHE.
        eprintln!(
            "\n!!!!!!!! SKIPPED: the temporary directory is not on a disk file system !!!!!!!!\n"
        );
        return;
    }
    let dir = ScratchDir::new("fio_uring_options", "uncached");
    for rw in ["randread", "randwrite"] {
        for uncached in ["0", "1"] {
            let mut resident = Vec::new();
            for who in [Who::Fio, Who::Ours] {
                let file = dir.join(&format!("{who:?}-{rw}-{uncached}.dat"));
                let uncached_option = format!("--uncached={uncached}");
                let rw_option = format!("--rw={rw}");
                let out = command(
                    who,
                    &fio,
                    &file,
                    &[&rw_option, "--size=4m", &uncached_option],
                )
                .output()
                .expect("run the job");
                assert_eq!(
                    seen(&out),
                    Seen {
                        error: 0,
                        ios: 1024
                    },
                    "{who:?} {rw} uncached={uncached}: {}",
                    describe(&out)
                );
                // An uncached write's pages go once their writeback ends: allow it 1 s.
                let mut bytes = resident_bytes(&file);
                for _ in 0..20 {
                    if uncached == "0" || bytes == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    bytes = resident_bytes(&file);
                }
                resident.push(bytes);
            }
            let expected = if uncached == "1" { 0 } else { 4 << 20 };
            assert_eq!(
                resident,
                vec![expected, expected],
                "{rw} uncached={uncached}: bytes cached after fio and after ours"
            );
        }
    }
}

/// The io_uring kernel threads (`iou-wrk-*`, `iou-sqp-*`) of `pid` and its children, each
/// with the CPUs it may run on.
fn io_uring_threads(pid: u32) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pids = vec![pid];
    while let Some(pid) = pids.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let comm = comm.trim();
            if let Ok(children) = std::fs::read_to_string(path.join("children")) {
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
            if !comm.starts_with("iou-") {
                continue;
            }
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            let cpus = status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or("")
                .trim()
                .to_string();
            // `iou-wrk-1234` -> `iou-wrk`: the issuing thread's id differs between runs.
            let kind = comm.rsplit_once('-').map_or(comm, |(kind, _)| kind);
            found.push((kind.to_string(), cpus));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Runs a 1 s job and looks at its io_uring threads half-way.
fn threads_while_running(
    who: Who,
    fio: &Path,
    file: &Path,
    options: &[&str],
) -> Vec<(String, String)> {
    let all = [
        &[
            "--rw=randread",
            "--size=4m",
            "--pre_read=1",
            "--time_based",
            "--runtime=1",
        ][..],
        options,
    ]
    .concat();
    let mut child: Child = command(who, fio, file, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the job");
    std::thread::sleep(Duration::from_millis(700));
    let threads = io_uring_threads(child.id());
    let status = child.wait().expect("wait for the job");
    assert!(status.success(), "{who:?} {options:?}: {status}");
    threads
}

#[test]
fn force_async_and_sqthread_poll_cpu_make_the_threads_fio_makes() {
    let Some(fio) = installed_fio() else {
        return;
    };
    let dir = ScratchDir::new("fio_uring_options", "threads");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last_cpu = (cpus - 1).to_string();
    let pinned = format!("--sqthread_poll_cpu={last_cpu}");
    for (options, expected) in [
        // Cached reads complete inline: no worker, no poller.
        (vec![], vec![]),
        // IOSQE_ASYNC: the reads go through io_uring's workers.
        (vec!["--force_async=1"], vec!["iou-wrk"]),
        // The SQ poller, pinned to the last CPU.
        (vec!["--sqthread_poll", pinned.as_str()], vec!["iou-sqp"]),
    ] {
        let mut per_tool = Vec::new();
        for who in [Who::Fio, Who::Ours] {
            let file = dir.join(&format!("{who:?}.dat"));
            per_tool.push(threads_while_running(who, &fio, &file, &options));
        }
        let kinds = |threads: &[(String, String)]| {
            let mut kinds: Vec<String> = threads.iter().map(|(kind, _)| kind.clone()).collect();
            kinds.dedup();
            kinds
        };
        assert_eq!(kinds(&per_tool[0]), expected, "{options:?}: fio's threads");
        assert_eq!(per_tool[1], per_tool[0], "{options:?}: ours against fio's");
        if options.contains(&pinned.as_str()) {
            assert_eq!(per_tool[1], vec![("iou-sqp".to_string(), last_cpu.clone())]);
        }
    }
}

#[test]
fn values_fio_refuses_are_refused() {
    let dir = ScratchDir::new("fio_uring_options", "refused");
    let file = dir.join("x.dat");
    for options in [
        &["--cmdprio_percentage=101"][..],
        &["--cmdprio_class=4"][..],
        &["--cmdprio=8"][..],
        &["--sqthread_poll_cpu=-1"][..],
    ] {
        let out = command(
            Who::Ours,
            Path::new("unused"),
            &file,
            &[&["--rw=read", "--size=1m"], options].concat(),
        )
        .output()
        .expect("run ours");
        assert!(
            !out.status.success(),
            "{options:?} accepted: {}",
            describe(&out)
        );
        let name = options[0]
            .trim_start_matches("--")
            .split('=')
            .next()
            .unwrap_or("");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(name),
            "{options:?}: the error names the option: {}",
            describe(&out)
        );
    }
}
