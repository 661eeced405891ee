//! `iscsi-bench` run as a user runs it, on the null engine or the embedded target, for a
//! second or two: what it prints, writes and exits with (issue 21's first-day defects).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every run here ends well before this; a run still going is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iscsi-bench"))
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("bench-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
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

fn spawn_in(dir: &Path, args: &[&str]) -> Child {
    bench()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iscsi-bench starts")
}

/// Waits for the child, killing it after [`RUN_TIMEOUT`].
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("iscsi-bench ran past {RUN_TIMEOUT:?}: {}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    finish(spawn_in(dir, args))
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A long paced run on the null engine, told to stop by `signal` after a second.
fn interrupted_run(dir: &Scratch, signal: i32, extra: &[&str]) -> (Output, Duration) {
    let mut args = vec![
        "--name=long",
        "--ioengine=null",
        "--rw=read",
        "--bs=4k",
        "--size=16m",
        "--rate_iops=1000",
        "--runtime=30",
        "--time_based",
    ];
    args.extend_from_slice(extra);
    let child = spawn_in(dir.path(), &args);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1_200));
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    let out = finish(child);
    (out, started.elapsed())
}

#[test]
fn ctrl_c_ends_the_run_with_its_report_and_output_file() {
    let dir = Scratch::new("sigint");
    let results = dir.join("results.json");
    let output_arg = format!("--output={}", results.display());
    let (out, took) = interrupted_run(
        &dir,
        libc::SIGINT,
        &["--output-format=json", output_arg.as_str()],
    );
    assert_eq!(out.status.code(), Some(128), "{}", describe(&out));
    assert!(
        stderr(&out).contains("terminating on signal 2"),
        "{}",
        describe(&out)
    );
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let doc = json_file(&results);
    let read = &doc["jobs"][0]["read"];
    let runtime_ms = read["runtime"].as_u64().expect("read.runtime");
    let ios = read["total_ios"].as_u64().expect("read.total_ios");
    assert!(
        (900..5_000).contains(&runtime_ms),
        "the report covers {runtime_ms} ms, not the time run"
    );
    assert!(ios > 500, "{ios} I/Os in about a second at 1000 IOPS");
}

#[test]
fn sigterm_ends_the_run_with_the_text_report() {
    let dir = Scratch::new("sigterm");
    let (out, _) = interrupted_run(&dir, libc::SIGTERM, &[]);
    assert_eq!(out.status.code(), Some(128), "{}", describe(&out));
    assert!(
        stderr(&out).contains("terminating on signal 15"),
        "{}",
        describe(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("Run status group 0"), "{}", describe(&out));
    assert!(text.contains("READ: bw="), "{}", describe(&out));
}

#[test]
fn bad_result_paths_are_refused_before_any_io() {
    let dir = Scratch::new("bad-paths");
    std::fs::write(dir.join("a-file"), b"not a directory").unwrap();
    let cases = [
        ("--output=no/such/dir/out.json", "no/such/dir/out.json"),
        ("--report=a-file/report", "a-file/report"),
        ("--write_bw_log=no/such/dir/bw", "no/such/dir/bw_bw.1.log"),
        ("--write_lat_log=a-file/lat", "a-file/lat_lat.1.log"),
        ("--write_iops_log=no/such/iops", "no/such/iops_iops.1.log"),
    ];
    for (option, named) in cases {
        let started = Instant::now();
        // A 30 s run: refusing it after the run would show in the time taken.
        let out = run_in(
            dir.path(),
            &[
                "--name=j",
                "--ioengine=null",
                "--rw=read",
                "--bs=4k",
                "--size=1m",
                "--runtime=30",
                "--time_based",
                option,
            ],
        );
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(2), "{option}: {}", describe(&out));
        assert!(
            stderr(&out).contains(named),
            "{option}: the error does not name {named}: {}",
            describe(&out)
        );
        assert!(
            took < Duration::from_secs(5),
            "{option}: refused after {took:?}"
        );
        assert!(!stdout(&out).contains("Run status"), "{option}: it ran");
    }
}

#[test]
fn status_interval_prints_the_full_report_every_interval() {
    let dir = Scratch::new("status-interval");
    let results = dir.join("results.json");
    let output_arg = format!("--output={}", results.display());
    let out = run_in(
        dir.path(),
        &[
            "--name=paced",
            "--ioengine=null",
            "--rw=read",
            "--bs=4k",
            "--size=16m",
            "--rate_iops=1000",
            "--runtime=3",
            "--time_based",
            "--status-interval=1",
            "--output-format=json",
            output_arg.as_str(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // Reports at 1 s and 2 s (3 s races the end), then the final one: whole JSON documents
    // one after another, as fio writes them.
    let text = std::fs::read_to_string(&results).unwrap();
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not a stream of JSON documents ({e}): {text}"));
    assert!((3..=4).contains(&docs.len()), "{} reports", docs.len());
    let ios: Vec<u64> = docs
        .iter()
        .map(|d| {
            d["jobs"][0]["read"]["total_ios"]
                .as_u64()
                .expect("total_ios")
        })
        .collect();
    // Cumulative; a report at 3 s may come with no I/O left after it, equal to the last.
    assert!(
        ios.windows(2).all(|w| w[0] <= w[1]) && ios[0] < ios[1],
        "the reports are cumulative: {ios:?}"
    );
    assert!(
        (700..=1_300).contains(&ios[0]),
        "the first report covers about one second: {ios:?}"
    );

    // The text format: the whole summary each time.
    let out = run_in(
        dir.path(),
        &[
            "--name=paced",
            "--ioengine=null",
            "--rw=read",
            "--bs=4k",
            "--size=16m",
            "--rate_iops=1000",
            "--runtime=2",
            "--time_based",
            "--status-interval=1",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let reports = stdout(&out).matches("Run status group 0").count();
    assert!(
        (2..=3).contains(&reports),
        "{reports} reports: {}",
        describe(&out)
    );
}

/// Every entry of a log as (time ms, value, direction).
fn log_lines(path: &Path) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let fields: Vec<u64> = line
                .split(',')
                .map(|f| f.trim().parse().unwrap_or_else(|_| panic!("{line:?}")))
                .collect();
            (fields[0], fields[1], fields[2])
        })
        .collect()
}

#[test]
fn interval_data_has_one_entry_per_interval_through_a_stall() {
    let dir = Scratch::new("intervals");
    let results = dir.join("results.json");
    let output_arg = format!("--output={}", results.display());
    // 1000 IOPS for about a second, a 2 s pause, then I/O again until 4 s; half-second
    // intervals, so that some lie wholly inside the pause whatever the scheduling.
    let out = run_in(
        dir.path(),
        &[
            "--name=stall",
            "--ioengine=null",
            "--rw=read",
            "--bs=4k",
            "--size=16m",
            "--rate_iops=1000",
            "--thinktime=2s",
            "--thinktime_blocks=1000",
            "--runtime=4",
            "--time_based",
            "--log_avg_msec=500",
            "--write_iops_log=stall",
            "--write_bw_log=stall",
            "--write_lat_log=stall",
            "--interval-results=500ms",
            "--output-format=json",
            output_arg.as_str(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let doc = json_file(&results);
    let intervals = doc["jobs"][0]["iscsi_bench"]["intervals"]
        .as_array()
        .expect("intervals");
    let ios: Vec<u64> = intervals
        .iter()
        .map(|i| i["read"]["total_ios"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(ios.len(), 8, "4 s at 500 ms: {ios:?}");
    assert!(ios.contains(&0), "the stall is an entry of zeros: {ios:?}");
    for name in ["stall_iops.1.log", "stall_bw.1.log"] {
        let lines = log_lines(&dir.join(name));
        let times: Vec<u64> = lines.iter().map(|l| l.0).collect();
        assert!(
            (8..=9).contains(&lines.len()),
            "{name}: one line every 500 ms: {lines:?}"
        );
        assert!(
            times.windows(2).all(|w| w[1] - w[0] <= 600),
            "{name}: a second skipped: {times:?}"
        );
        assert!(
            lines.iter().any(|l| l.1 == 0),
            "{name}: the stall is a 0: {lines:?}"
        );
    }
    let clat = log_lines(&dir.join("stall_clat.1.log"));
    let times: Vec<u64> = clat.iter().map(|l| l.0).collect();
    let mut distinct = times.clone();
    distinct.dedup();
    assert_eq!(distinct, times, "a time written twice: {clat:?}");
}

#[test]
fn a_bad_block_is_described_once() {
    let dir = Scratch::new("verify-once");
    // The null engine reads zeros: no verify header anywhere.
    let args = [
        "--name=v",
        "--ioengine=null",
        "--rw=read",
        "--bs=4k",
        "--size=4k",
        "--verify=crc32c",
    ];
    let out = run_in(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let everything = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        everything.matches("expected [").count(),
        1,
        "the bytes are shown once: {}",
        describe(&out)
    );
    assert_eq!(
        everything.matches("bad magic").count(),
        2,
        "once in full, once as the report's err= summary: {}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("err=84 (1 block(s) failed verification; first: bad magic"),
        "{}",
        describe(&out)
    );

    // With the text report elsewhere, stderr names the failed job instead.
    let mut json_args = args.to_vec();
    json_args.push("--output-format=json");
    let out = run_in(dir.path(), &json_args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        stderr(&out).matches("bad magic").count(),
        2,
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("job v failed"), "{}", describe(&out));
}

#[test]
fn the_report_states_each_job_and_when_it_ran() {
    let dir = Scratch::new("report");
    let report_arg = format!("--report={}", dir.join("report").display());
    let out = run_in(
        dir.path(),
        &[
            "--ioengine=null",
            "--rw=read",
            "--bs=4k",
            "--size=1m",
            "--runtime=1",
            "--time_based",
            "--name=first",
            "--name=second",
            "--stonewall",
            "--iodepth=4",
            report_arg.as_str(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let page = std::fs::read_to_string(dir.join("report").join("index.html")).unwrap();
    let jobs = &page[page.find(r#"id="jobs""#).expect("a jobs table")..];
    let jobs = &jobs[..jobs.find("</table>").expect("the table closes")];
    assert!(
        jobs.contains("<td>first</td><td class=\"num\">0 ms</td>"),
        "{jobs}"
    );
    let second = &jobs[jobs.find("<td>second</td>").expect("second job")..];
    let starts: String = second
        .trim_start_matches("<td>second</td><td class=\"num\">")
        .chars()
        .take_while(|c| *c != '<')
        .collect();
    let starts_ms = match starts.split_once(' ') {
        Some((value, "ms")) => value.parse::<f64>().unwrap_or(0.0),
        Some((value, "s")) => value.parse::<f64>().unwrap_or(0.0) * 1000.0,
        _ => 0.0,
    };
    assert!(
        starts_ms >= 1_000.0,
        "the second job starts after the first: {starts:?}"
    );
    assert!(jobs.contains("null engine (no target)"), "{jobs}");
    assert!(jobs.contains("stonewall"), "{jobs}");
    assert!(jobs.contains("iodepth=4"), "{jobs}");
}
