//! fio's pacing, scheduling and priority options beside fio itself: `max_latency`, the
//! `thinktime` family (`thinktime_spin`, `thinktime_blocks_type`, `thinktime_iotime`,
//! `rate_ignore_thinktime`), `nice`/`prio`/`prioclass` and `cpumask`/`cpus_allowed_policy`.
//! Each job runs through fio (Debian's, or the 3.42 anchor where 3.33 differs) and through
//! iscsi-bench with the same options, and the test compares what both did: the job's error
//! and exit status, I/O counts, the spacing of I/Os in the latency log, CPU use, and the
//! priorities the job thread ran at. Timed assertions are loose (a busy 2-CPU machine);
//! they compare relations, not exact times. Skipped (loudly) where fio is missing, a
//! failure under CI.

mod common;

use common::ScratchDir;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which tool runs a job.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool<'a> {
    Fio(&'a Path),
    Ours,
}

impl Tool<'_> {
    fn name(&self) -> &'static str {
        match self {
            Tool::Fio(_) => "fio",
            Tool::Ours => "iscsi-bench",
        }
    }
}

/// Runs `args` through `tool` (at most 60 s).
fn run(tool: Tool, args: &[String]) -> Output {
    let program: &Path = match tool {
        Tool::Fio(path) => path,
        Tool::Ours => Path::new(env!("CARGO_BIN_EXE_iscsi-bench")),
    };
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .output()
        .expect("run the tool")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The tools present: ours always, Debian's fio when installed.
fn tools(fio: &Path) -> Vec<Tool<'_>> {
    if common::tool_present("fio") {
        vec![Tool::Fio(fio), Tool::Ours]
    } else {
        vec![Tool::Ours]
    }
}

/// The run failed, and its stderr names `word`.
fn assert_refused_naming(out: &Output, word: &str) {
    assert!(
        !out.status.success(),
        "not refused: {}",
        common::describe(out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(word),
        "the refusal does not name {word:?}: {}",
        common::describe(out)
    );
}

/// `max_latency`: an I/O slower than the limit of its direction ends the job with
/// ETIMEDOUT (110) in the JSON `error`, a failing exit status and fio's message on
/// stderr; the I/Os that completed stay counted (one per slot of the queue, as in fio);
/// a limit for the other direction, a generous limit or `disable_lat` change nothing.
#[test]
fn max_latency_ends_the_job_with_etimedout_as_fio_does() {
    let dir = ScratchDir::new("fio-pacing", "max-latency");
    let fio = PathBuf::from("fio");
    // (max_latency, extra option, expected error): 1 us is beyond any I/O through a file.
    let cases: &[(&str, &str, i64)] = &[
        ("1us", "", 110),
        ("10s,1us", "", 110),
        ("1us,10s", "", 0),
        ("10s", "", 0),
        ("1us", "--disable_lat=1", 0),
    ];
    for tool in tools(&fio) {
        for (index, (limit, extra, expected)) in cases.iter().enumerate() {
            let file = dir.join(&format!("{}-{index}", tool.name()));
            let mut args = strings(&[
                "--name=j",
                "--ioengine=io_uring",
                "--rw=write",
                "--bs=4k",
                "--size=64k",
                "--iodepth=4",
                "--output-format=json",
            ]);
            args.push(format!("--filename={}", file.display()));
            args.push(format!("--max_latency={limit}"));
            if !extra.is_empty() {
                args.push(extra.to_string());
            }
            let out = run(tool, &args);
            let doc = common::json_of(&out);
            let job = &doc["jobs"][0];
            let what = format!("{} max_latency={limit} {extra}", tool.name());
            assert_eq!(
                job["error"],
                *expected,
                "{what}: {}",
                common::describe(&out)
            );
            assert_eq!(
                out.status.success(),
                *expected == 0,
                "{what}: {}",
                common::describe(&out)
            );
            let ios = job["write"]["total_ios"].as_u64().unwrap();
            if *expected == 0 {
                assert_eq!(ios, 16, "{what}: every write done");
            } else {
                // The first reaped batch: the whole queue of 4, as fio counts it.
                assert_eq!(ios, 4, "{what}: writes counted");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains("exceeds specified max (1000 nsec)")
                        && stderr.contains("write"),
                    "{what}: {stderr}"
                );
            }
        }
        // What fio refuses, we refuse, naming the option.
        let out = run(
            tool,
            &strings(&[
                "--name=j",
                "--ioengine=null",
                "--size=4k",
                "--max_latency=abc",
            ]),
        );
        assert_refused_naming(&out, "max_latency");
    }
}

/// fio ends a job the same way (io_u.c `lat_fatal`) when an I/O misses `latency_target`
/// at queue depth 1 with `latency_percentile=100`: ETIMEDOUT (110), not EIO.
#[test]
fn latency_target_missed_at_depth_one_is_etimedout_as_in_fio() {
    let dir = ScratchDir::new("fio-pacing", "latency-target");
    let fio = PathBuf::from("fio");
    for tool in tools(&fio) {
        let file = dir.join(tool.name());
        let mut args = strings(&[
            "--name=j",
            "--ioengine=io_uring",
            "--rw=write",
            "--bs=4k",
            "--size=64k",
            "--iodepth=1",
            "--latency_target=1us",
            "--output-format=json",
        ]);
        args.push(format!("--filename={}", file.display()));
        let out = run(tool, &args);
        let job = &common::json_of(&out)["jobs"][0];
        assert_eq!(
            job["error"],
            110,
            "{}: {}",
            tool.name(),
            common::describe(&out)
        );
        assert!(!out.status.success(), "{}", tool.name());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("exceeds specified max (1000 nsec)"),
            "{}: {}",
            tool.name(),
            common::describe(&out)
        );
    }
}

/// A job's `job_runtime` (ms) and `usr_cpu` (%) from its JSON, after checking it ran all
/// `ios` reads without error.
fn runtime_and_cpu(tool: Tool, args: &[String], ios: u64) -> (u64, f64) {
    let out = run(tool, args);
    let doc = common::json_of(&out);
    let job = &doc["jobs"][0];
    let what = format!("{} {args:?}", tool.name());
    assert_eq!(job["error"], 0, "{what}: {}", common::describe(&out));
    assert_eq!(job["read"]["total_ios"], ios, "{what}");
    (
        job["job_runtime"].as_u64().unwrap(),
        job["usr_cpu"].as_f64().unwrap(),
    )
}

/// `thinktime_blocks_type`: fio counts the blocks between pauses as completed (default)
/// or issued I/Os, drains the queue before every pause either way, and pauses after the
/// last I/O too. Eight 4 KiB reads through the null engine with 100 ms pauses: at depth 1
/// each I/O is reaped before the check, so both count 8 pauses; at depth 4 with
/// `thinktime_blocks=4` the issue count calls for a pause after I/O 4 and 8 (2), the
/// completion count only once the first four are reaped (1). The pauses are counted from
/// the runtime (floor of runtime / 100 ms: overshoot on a busy machine would need 12 ms
/// per pause to miscount).
#[test]
fn thinktime_blocks_type_counts_pauses_as_fio_does() {
    let fio = PathBuf::from("fio");
    for (depth, blocks, kind, pauses) in [
        (1, 1, "complete", 8),
        (1, 1, "issue", 8),
        (4, 4, "complete", 1),
        (4, 4, "issue", 2),
    ] {
        for tool in tools(&fio) {
            let mut args = strings(&[
                "--name=j",
                "--ioengine=null",
                "--size=32k",
                "--bs=4k",
                "--thinktime=100ms",
                "--output-format=json",
            ]);
            args.push(format!("--iodepth={depth}"));
            args.push(format!("--thinktime_blocks={blocks}"));
            args.push(format!("--thinktime_blocks_type={kind}"));
            let (runtime_ms, _) = runtime_and_cpu(tool, &args, 8);
            assert_eq!(
                runtime_ms / 100,
                pauses,
                "{} depth={depth} blocks={blocks} {kind}: {runtime_ms} ms",
                tool.name()
            );
        }
    }
}

/// `rate_ignore_thinktime`: 50 reads at `rate_iops=100` with a 200 ms pause every 10.
/// fio (and we) catch up after each pause by default (about 1.1 s: the pauses and the
/// bursts after them), or with the option go on at the rate from the pause's end (about
/// 1.45 s: 5 x (10 I/Os at 10 ms + 200 ms) less a slot per pause). Loose: each within
/// 200 ms of fio's figure, and ignoring at least 250 ms slower than catching up.
#[test]
fn rate_ignore_thinktime_stops_the_catch_up_as_in_fio() {
    let fio = PathBuf::from("fio");
    let mut runtimes: Vec<(&str, [u64; 2])> = Vec::new();
    for tool in tools(&fio) {
        let mut pair = [0; 2];
        for (index, ignore) in ["0", "1"].iter().enumerate() {
            let mut args = strings(&[
                "--name=j",
                "--ioengine=null",
                "--size=200k",
                "--bs=4k",
                "--rate_iops=100",
                "--thinktime=200ms",
                "--thinktime_blocks=10",
                "--output-format=json",
            ]);
            args.push(format!("--rate_ignore_thinktime={ignore}"));
            pair[index] = runtime_and_cpu(tool, &args, 50).0;
        }
        let [catch_up, ignore] = pair;
        assert!(
            (1000..1300).contains(&catch_up) && (1350..1700).contains(&ignore),
            "{}: {catch_up} ms catching up, {ignore} ms ignoring",
            tool.name()
        );
        assert!(ignore >= catch_up + 250, "{}: {pair:?}", tool.name());
        runtimes.push((tool.name(), pair));
    }
    if let [(_, fio), (_, ours)] = runtimes.as_slice() {
        for index in 0..2 {
            assert!(
                fio[index].abs_diff(ours[index]) < 200,
                "fio {fio:?} ms, ours {ours:?} ms"
            );
        }
    }
}

/// Completion times (ms) of the I/Os in a `write_lat_log` per-I/O log.
fn log_times(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|line| line.split(',').next()?.trim().parse().ok())
        .collect()
}

/// Gaps of at least `min_ms` between consecutive I/Os.
fn gaps(times: &[u64], min_ms: u64) -> usize {
    times
        .windows(2)
        .filter(|pair| pair[1].saturating_sub(pair[0]) >= min_ms)
        .count()
}

/// `thinktime_iotime`: a 300 ms pause after every 500 ms of I/O (`rate_iops=500`, 3 s):
/// three gaps in fio's latency log and ours (pauses at 0.5, 1.3 and 2.1 s; the one at 2.9 s
/// has no I/O after it), each ended by a catch-up burst. Given with `thinktime_blocks=100`
/// too, whichever comes first: every 100 I/Os (0.2 s, then bursts at once), nine gaps
/// (pauses ending at 0.5, 0.8, ... 2.9 s). Whole seconds: Debian's fio 3.33 misreads
/// `runtime=1900ms`.
#[test]
fn thinktime_iotime_pauses_where_fio_does() {
    let fio = PathBuf::from("fio");
    let dir = ScratchDir::new("fio-pacing", "iotime");
    for (extra, runtime, expected) in [(None, "3", 3), (Some("--thinktime_blocks=100"), "3", 9)] {
        for tool in tools(&fio) {
            let prefix = dir.join(&format!("{}-{expected}", tool.name()));
            let mut args = strings(&[
                "--name=j",
                "--ioengine=null",
                "--size=1g",
                "--bs=4k",
                "--time_based",
                "--rate_iops=500",
                "--thinktime=300ms",
                "--thinktime_iotime=500ms",
                "--output=/dev/null",
            ]);
            args.push(format!("--runtime={runtime}"));
            args.push(format!("--write_lat_log={}", prefix.display()));
            args.extend(extra.map(str::to_string));
            let out = run(tool, &args);
            assert!(out.status.success(), "{}", common::describe(&out));
            let log = PathBuf::from(format!("{}_lat.1.log", prefix.display()));
            let times = log_times(&log);
            assert_eq!(
                gaps(&times, 200),
                expected,
                "{} {extra:?}: {} I/Os",
                tool.name(),
                times.len()
            );
        }
    }
}

/// `thinktime_spin`: the first part of each pause is spent busy. 50 reads with a 10 ms
/// pause after each: spinning the whole pause the job thread is busy (fio 3.42 and we: a
/// large share of a CPU; loose, the machine is shared), busier than without spin. A
/// spin longer than `thinktime` is cut to it (fio's init.c): the job still takes about
/// 50 x 10 ms, not 50 x 20 ms. Debian's fio 3.33 hangs with a spin as long as the pause,
/// so fio 3.42 (the anchor) is the judge.
#[test]
fn thinktime_spin_busies_the_pause_as_fio_does() {
    let Some(anchor) = common::fio_anchor() else {
        common::require_tool("fio 3.42 (the anchor)", false);
        return;
    };
    for tool in [Tool::Fio(&anchor), Tool::Ours] {
        let mut by_spin = Vec::new();
        for spin in ["0", "10ms", "20ms"] {
            let mut args = strings(&[
                "--name=j",
                "--ioengine=null",
                "--size=200k",
                "--bs=4k",
                "--thinktime=10ms",
                "--output-format=json",
            ]);
            args.push(format!("--thinktime_spin={spin}"));
            by_spin.push(runtime_and_cpu(tool, &args, 50));
        }
        let name = tool.name();
        let [(idle_ms, idle_cpu), (busy_ms, busy_cpu), (long_ms, long_cpu)] = by_spin.as_slice()
        else {
            unreachable!()
        };
        // Busier than the idle run (fio itself spins the tail of short sleeps when its
        // measured clock granularity is coarse on a loaded machine, so the idle figure is
        // only bounded by the spinning ones).
        assert!(
            idle_cpu < busy_cpu && idle_cpu < long_cpu,
            "{name}: {by_spin:?} (ms, cpu%)"
        );
        assert!(
            *busy_cpu > 20.0 && *long_cpu > 20.0,
            "{name}: {busy_cpu}% and {long_cpu}% spinning"
        );
        for runtime in [idle_ms, busy_ms, long_ms] {
            assert!(
                (500..900).contains(runtime),
                "{name}: {by_spin:?} (ms, cpu%)"
            );
        }
    }
}

/// What one job thread runs with: nice value, I/O priority (`ioprio_get`) and the CPUs
/// it may run on (`Cpus_allowed_list`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ThreadState {
    nice: i64,
    ioprio: i64,
    cpus: String,
}

fn thread_state(task: &Path) -> Option<ThreadState> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // After the command name in parentheses: state is field 3, nice field 19.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let nice = fields.get(16)?.parse().ok()?;
    let tid: libc::c_int = task.file_name()?.to_str()?.parse().ok()?;
    // SAFETY: ioprio_get takes two integers and returns one.
    let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
    let status = std::fs::read_to_string(task.join("status")).ok()?;
    let cpus = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?
        .trim()
        .to_string();
    Some(ThreadState { nice, ioprio, cpus })
}

/// The job threads of a 1.5 s run of `args`, seen 0.7 s in: fio's job processes (children
/// of the fio it started), our `job-*` threads; sorted.
fn job_threads(tool: Tool, args: &[String]) -> Vec<ThreadState> {
    let program: &Path = match tool {
        Tool::Fio(path) => path,
        Tool::Ours => Path::new(env!("CARGO_BIN_EXE_iscsi-bench")),
    };
    let child = Command::new(program)
        .args(args)
        .args([
            "--ioengine=null",
            "--size=1g",
            "--time_based",
            "--runtime=1500ms",
            "--output=/dev/null",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the tool");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let pid = child.id().to_string();
    let mut tasks = Vec::new();
    match tool {
        Tool::Fio(_) => {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1));
                if ppid == Some(pid.as_str()) {
                    tasks.push(entry.path().join("task").join(entry.file_name()));
                }
            }
        }
        Tool::Ours => {
            for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if comm.starts_with("job-") {
                    tasks.push(entry.path());
                }
            }
        }
    }
    let mut states: Vec<ThreadState> = tasks.iter().filter_map(|t| thread_state(t)).collect();
    states.sort();
    let out = child.wait_with_output().expect("wait for the tool");
    assert!(out.status.success(), "{} {args:?}: {out:?}", tool.name());
    states
}

/// `nice`, `prio` and `prioclass` set the job thread's nice value and I/O priority, as
/// fio sets its job process's: seen in /proc and with ioprio_get while both run (class 0
/// with a level is best effort, as fio makes it). fio's range checks are ours.
#[test]
fn nice_and_io_priority_reach_the_job_thread_as_in_fio() {
    let fio = PathBuf::from("fio");
    let cases: &[(&[&str], i64, i64)] = &[
        (&["--nice=5", "--prioclass=3", "--prio=3"], 5, (3 << 13) | 3),
        (&["--prio=6"], 0, (2 << 13) | 6),
        (&["--nice=2", "--prioclass=2"], 2, 2 << 13),
    ];
    for tool in tools(&fio) {
        for (options, nice, ioprio) in cases {
            let mut args = strings(&["--name=j"]);
            args.extend(strings(options));
            let threads = job_threads(tool, &args);
            assert_eq!(threads.len(), 1, "{} {options:?}: {threads:?}", tool.name());
            assert_eq!(
                (threads[0].nice, threads[0].ioprio),
                (*nice, *ioprio),
                "{} {options:?}",
                tool.name()
            );
        }
        for refused in ["--nice=20", "--nice=-21", "--prio=8", "--prioclass=4"] {
            let out = run(
                tool,
                &strings(&["--name=j", "--ioengine=null", "--size=4k", refused]),
            );
            let option = refused.trim_start_matches("--").split('=').next().unwrap();
            assert_refused_naming(&out, option);
        }
    }
}

/// The CPUs this process may run on (`Cpus_allowed_list`, expanded), ascending.
fn allowed_cpus() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for item in list.split(',') {
        let (low, high) = item.split_once('-').unwrap_or((item, item));
        cpus.extend(low.parse::<u32>().unwrap()..=high.parse::<u32>().unwrap());
    }
    cpus
}

/// `cpus_allowed_policy=split` gives the Nth job of the run (clones counted) the set's
/// Nth CPU, round again past its end, as fio's `fio_cpus_split`; `shared` gives each the
/// set; `cpumask` is the set as a bit mask. Job threads' `Cpus_allowed_list`, fio's and
/// ours, while both run, on the first two CPUs this process may use. Needs two.
#[test]
fn cpus_allowed_policy_and_cpumask_place_jobs_as_fio_does() {
    let allowed = allowed_cpus();
    let (a, b) = match allowed.as_slice() {
        [a, b, ..] if *b < 32 => (*a, *b),
        _ => {
            eprintln!("SKIPPED: fewer than two CPUs below 32 (fio's cpumask is an int) to place jobs on ({allowed:?})");
            return;
        }
    };
    let fio = PathBuf::from("fio");
    // How the kernel lists the pair.
    let pair = if b == a + 1 {
        format!("{a}-{b}")
    } else {
        format!("{a},{b}")
    };
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec![
                "--numjobs=3".into(),
                format!("--cpus_allowed={a},{b}"),
                "--cpus_allowed_policy=split".into(),
            ],
            vec![a.to_string(), a.to_string(), b.to_string()],
        ),
        (
            vec![
                "--numjobs=2".into(),
                format!("--cpus_allowed={a},{b}"),
                "--cpus_allowed_policy=shared".into(),
            ],
            vec![pair.clone(), pair],
        ),
        (
            vec![format!("--cpumask={}", 1u64 << b)],
            vec![b.to_string()],
        ),
        (
            vec![
                format!("--cpumask={:#x}", (1u64 << a) | (1u64 << b)),
                "--cpus_allowed_policy=split".into(),
                "--numjobs=2".into(),
            ],
            vec![a.to_string(), b.to_string()],
        ),
    ];
    for tool in tools(&fio) {
        for (options, expected) in &cases {
            let mut args = strings(&["--name=j"]);
            args.extend(options.iter().cloned());
            let threads = job_threads(tool, &args);
            let mut placed: Vec<String> = threads.into_iter().map(|t| t.cpus).collect();
            placed.sort();
            let mut expected = expected.clone();
            expected.sort();
            assert_eq!(placed, expected, "{} {options:?}", tool.name());
        }
        let out = run(
            tool,
            &strings(&[
                "--name=j",
                "--ioengine=null",
                "--size=4k",
                "--cpus_allowed_policy=spread",
            ]),
        );
        assert_refused_naming(&out, "cpus_allowed_policy");
    }
}
