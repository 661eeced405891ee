//! Our text report and log files beside what fio 3.33 itself writes for a similar job:
//! the same lines in the same order, the same log file names and columns. Runs fio on a
//! small temporary file for one second; skipped (with a message) where fio is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::io::Direction;
use bench::output::logs::{log_file_name, JobLogs, LogKind, LogOptions};
use bench::output::{human, JobReport, RunReport};
use bench::stats::{JobStats, ResourceUsage, StatsConfig};

const MS: u64 = 1_000_000;

fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("bench-vs-fio-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs fio with `args`, at most 60 s; returns its stdout.
fn run_fio(args: &[String], cwd: &Path) -> String {
    let mut child = Command::new("fio")
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fio starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait for fio").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fio did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("fio output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The label of each report line (text before the first ':', units normalised), runs of
/// the same label collapsed: the shape of the report without its numbers.
fn labels(report: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in report.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let label = if trimmed.starts_with('|') {
            "|".to_string()
        } else {
            let head = trimmed.split(':').next().unwrap_or("");
            let mut label = head.to_string();
            for unit in ["(nsec)", "(usec)", "(msec)", "(  KiB/s)", "(  MiB/s)"] {
                label = label.replace(unit, "(unit)");
            }
            if label.contains("(groupid=") {
                "header".to_string()
            } else {
                label
            }
        };
        if out.last() != Some(&label) {
            out.push(label);
        }
    }
    out
}

fn randrw_job() -> JobStats {
    let mut stats = JobStats::new(0, StatsConfig::default());
    let mut now = 0;
    for i in 0..20_000u64 {
        let direction = if i % 2 == 0 {
            Direction::Read
        } else {
            Direction::Write
        };
        stats.record_submit(1, 4);
        stats.record(
            direction,
            4096,
            2_500 + i % 7_000,
            30_000 + (i * 37) % 150_000,
            35_000 + (i * 37) % 150_000,
        );
        stats.record_complete(1);
        now += 50_000;
        stats.tick(now);
    }
    stats.finish(now);
    stats.set_usage(ResourceUsage {
        user_ns: 50 * MS,
        system_ns: 200 * MS,
        ..ResourceUsage::default()
    });
    stats
}

#[test]
fn text_report_has_fios_lines_in_fios_order() {
    if !common::require_tool("fio", fio_available()) {
        return;
    }
    let tmp = TempDir::new("text");
    let fio_text = run_fio(
        &[
            "--name=t".into(),
            format!("--filename={}", tmp.path("data")),
            "--size=4m".into(),
            "--rw=randrw".into(),
            "--bs=4k".into(),
            "--ioengine=io_uring".into(),
            "--iodepth=4".into(),
            "--runtime=1".into(),
            "--time_based".into(),
        ],
        &tmp.0,
    );
    let fio_report = fio_text
        .find("(groupid=")
        .and_then(|at| fio_text[..at].rfind('\n').map(|nl| &fio_text[nl + 1..]))
        .expect("fio printed a job report");
    let fio_report = fio_report.split("Disk stats").next().unwrap_or(fio_report);

    let mut job = JobReport::new("t", 0, randrw_job());
    job.iodepth = 4;
    let ours = human::render(&RunReport::new(1_795_285_142_000, vec![job]));
    let ours: String = ours
        .lines()
        .filter(|l| {
            !l.contains("scsi errors") && !l.contains("cpu per IO") && !l.starts_with("iscsi-bench")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        labels(&ours),
        labels(fio_report),
        "ours:\n{ours}\nfio's:\n{fio_report}"
    );
}

#[test]
fn log_files_have_fios_names_and_columns() {
    if !common::require_tool("fio", fio_available()) {
        return;
    }
    for (avg_msec, log_offset) in [(0u64, false), (200, false), (200, true)] {
        let fio_dir = TempDir::new(&format!("fio-logs-{avg_msec}-{log_offset}"));
        let mut args = vec![
            "--name=t".to_string(),
            format!("--filename={}", fio_dir.path("data")),
            "--size=4m".into(),
            "--rw=randrw".into(),
            "--bs=4k".into(),
            // Synchronous engines log no submission latency: io_uring does.
            "--ioengine=io_uring".into(),
            "--runtime=1".into(),
            "--time_based".into(),
            "--write_lat_log=fl".into(),
            "--write_bw_log=fb".into(),
            "--write_iops_log=fi".into(),
            format!("--log_offset={}", u8::from(log_offset)),
        ];
        if avg_msec > 0 {
            args.push(format!("--log_avg_msec={avg_msec}"));
        }
        run_fio(&args, &fio_dir.0);

        let ours_dir = TempDir::new(&format!("our-logs-{avg_msec}-{log_offset}"));
        let mut logs = JobLogs::create(LogOptions {
            lat_prefix: Some(ours_dir.path("fl")),
            bw_prefix: Some(ours_dir.path("fb")),
            iops_prefix: Some(ours_dir.path("fi")),
            avg_msec,
            log_offset,
            job_number: 1,
            ..LogOptions::default()
        })
        .unwrap();
        let mut stats = JobStats::new(
            0,
            StatsConfig {
                sample_interval_ms: if avg_msec > 0 { avg_msec } else { 500 },
                ..StatsConfig::default()
            },
        );
        for i in 0..2_000u64 {
            let now = i * MS;
            stats.record(Direction::Read, 4096, 1_000, 20_000, 21_000);
            logs.record_io(i, Direction::Read, 4096, i * 4096, 1_000, 20_000, 21_000)
                .unwrap();
            if let Some(sample) = stats.tick(now) {
                logs.record_rates(&sample, [4096; 3]).unwrap();
            }
        }
        logs.finish(2_000).unwrap();

        for (prefix, kind) in [
            ("fl", LogKind::Lat),
            ("fl", LogKind::Clat),
            ("fl", LogKind::Slat),
            ("fb", LogKind::Bw),
            ("fi", LogKind::Iops),
        ] {
            let fio_file = fio_dir.0.join(log_file_name(prefix, kind, 1));
            let fio_log = std::fs::read_to_string(&fio_file)
                .unwrap_or_else(|e| panic!("fio wrote no {}: {e}", fio_file.display()));
            let our_log =
                std::fs::read_to_string(log_file_name(&ours_dir.path(prefix), kind, 1)).unwrap();
            let columns = |text: &str| {
                text.lines()
                    .next()
                    .map(|l| l.split(", ").count())
                    .unwrap_or(0)
            };
            assert_eq!(
                columns(&our_log),
                columns(&fio_log),
                "{kind:?} avg={avg_msec} offset={log_offset}: ours {:?}, fio's {:?}",
                our_log.lines().next(),
                fio_log.lines().next()
            );
            if avg_msec > 0 {
                // Windowed lines carry block size (and offset) 0, as fio's.
                for line in our_log.lines().chain(fio_log.lines()).take(3) {
                    let fields: Vec<&str> = line.split(", ").collect();
                    assert_eq!(fields[3], "0", "{line}");
                }
            }
        }
    }
}
