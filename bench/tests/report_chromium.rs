//! The `--report` page as a browser sees it: headless Chromium loads the page from a file
//! with no network (no proxy, every host name unresolvable, background networking off), and
//! the DOM it builds must hold the four charts with the expected number of lines each; a
//! screenshot must show a page that is not blank.
//!
//! Skips with a message when no `chromium` is installed. Each Chromium run is bounded by
//! a timeout after which its whole process group is killed, and uses its own profile
//! directory, removed afterwards.

mod common;

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bench::io::Direction;
use bench::report::{
    write_report, IntervalPoint, JobSeries, JobSummary, ReportData, CHART_BANDWIDTH, CHART_IOPS,
    CHART_LATENCY_CDF, CHART_PERCENTILES, NO_SAMPLES,
};

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// One Chromium at a time: the machine is small and shared.
static CHROMIUM: Mutex<()> = Mutex::new(());

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("iscsi-bench-report-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

macro_rules! require_chromium {
    () => {
        match find_chromium() {
            Some(path) => path,
            None => {
                common::require_tool("chromium (or chromium-browser, in PATH)", false);
                return;
            }
        }
    };
}

/// Run Chromium headless on `page` with `extra` arguments; its stdout goes to a file (a DOM
/// is larger than a pipe's buffer) whose contents are returned. Panics on timeout (after
/// killing Chromium's process group) or a non-zero exit.
fn run_chromium(chromium: &Path, work: &Path, page: &Path, extra: &[String]) -> String {
    let profile = work.join("profile");
    let stdout_path = work.join("chromium.stdout");
    let stderr_path = work.join("chromium.stderr");
    let url = format!("file://{}", page.display());
    let mut child = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        // Its own process group, so a timeout can end Chromium and every helper it started.
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let group = child.id() as i32;
                // SAFETY: kill(2) with a negative pid signals the process group this test
                // created for Chromium above; no memory is involved.
                unsafe {
                    libc::kill(-group, libc::SIGKILL);
                }
                let _ = child.wait();
                panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut stdout = String::new();
    std::fs::File::open(&stdout_path)
        .expect("open stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("chromium failed: {status}\n{stderr}");
    }
    stdout
}

/// The serialized `<svg>` element with this id in Chromium's DOM.
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!(r#"id="{id}""#);
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("the DOM has no element with id {id}"));
    let start = dom[..at].rfind('<').expect("element start");
    assert!(
        dom[start..].starts_with("<svg"),
        "{id} is not an <svg>: {}",
        &dom[start..at + needle.len()]
    );
    let end = at + dom[at..].find("</svg>").expect("chart closes");
    &dom[start..end]
}

fn series_paths(dom: &str, id: &str) -> usize {
    chart(dom, id).matches(r#"<path class="series""#).count()
}

fn summary(iops: f64) -> JobSummary {
    JobSummary {
        ios: (iops * 30.0) as u64,
        iops,
        bw_bytes_per_s: iops * 4096.0,
        lat_mean_ns: Some(85_000.0),
        lat_p50_ns: Some(80_000),
        lat_p99_ns: Some(400_000),
        lat_p99_9_ns: Some(2_100_000),
        lat_max_ns: Some(9_000_000),
        errors: 0,
    }
}

/// A job's series shaped like a real run: noisy rates, a stall, a tail.
fn job(name: &str, direction: Direction, base_iops: f64, seconds: u64) -> JobSeries {
    // Slower jobs have proportionally higher latency, so their lines stand apart.
    let slowness = (42_000.0 / base_iops).max(1.0) as u64;
    let points = (1..=seconds)
        .map(|s| {
            // A stall at second 7: no I/O completed, so no latency either.
            let stalled = s == 7;
            let wobble = ((s * 37) % 11) as f64 / 10.0;
            let iops = if stalled {
                0.0
            } else {
                base_iops * (0.9 + 0.2 * wobble)
            };
            IntervalPoint {
                t_ms: s * 1000,
                iops,
                bw_bytes_per_s: iops * 4096.0,
                latency_percentiles_ns: if stalled {
                    Vec::new()
                } else {
                    vec![
                        (50.0, (70_000 + s * 1_000) * slowness),
                        (99.0, (350_000 + s * 10_000) * slowness),
                        (99.9, (1_500_000 + s * 90_000) * slowness),
                    ]
                },
            }
        })
        .collect();
    let cdf = (0..=60)
        .map(|i| {
            let ns = (10_000.0 * slowness as f64 * 10f64.powf(i as f64 / 20.0)) as u64;
            let fraction = 1.0 - (-(i as f64) / 8.0).exp();
            (ns, if i == 60 { 1.0 } else { fraction })
        })
        .collect();
    JobSeries {
        name: name.to_string(),
        direction,
        interval_ms: 1000,
        points,
        cdf,
        summary: summary(base_iops),
    }
}

#[test]
fn chromium_renders_the_four_charts() {
    let chromium = require_chromium!();
    let _one_at_a_time = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let work = TempDir::new("full");
    let tricky = r#"mix<ed> & "quoted""#;
    let data = ReportData {
        title: "randrw <4k> & friends".into(),
        started: "2024-05-01T12:00:00Z".into(),
        command_line: r#"iscsi-bench --name="mix<ed>" --rw=randrw --bs=4k --iodepth=32"#.into(),
        notes: vec!["latency: lat, from each I/O's scheduled start".into()],
        series: vec![
            job(tricky, Direction::Read, 42_000.0, 30),
            job(tricky, Direction::Write, 18_000.0, 30),
            job("seqread", Direction::Read, 3_000.0, 30),
            // A job that finished after one interval: drawn as a point.
            job("short", Direction::Read, 900.0, 1),
        ],
        ..ReportData::default()
    };
    let page = write_report(&work.0.join("report"), &data).expect("write report");

    let dom = run_chromium(&chromium, &work.0, &page, &["--dump-dom".to_string()]);
    assert!(dom.contains("</html>"), "no DOM came back: {dom:.200}");
    assert_eq!(dom.matches(r#"<svg class="chart""#).count(), 4);
    assert_eq!(series_paths(&dom, CHART_IOPS), 4);
    assert_eq!(series_paths(&dom, CHART_BANDWIDTH), 4);
    // Three percentiles for each of the four series.
    assert_eq!(series_paths(&dom, CHART_PERCENTILES), 12);
    assert_eq!(series_paths(&dom, CHART_LATENCY_CDF), 4);
    assert!(!dom.contains(NO_SAMPLES));
    // The markup in names stayed text: no element was made of it.
    assert!(!dom.contains("<ed>"), "a job name became markup");
    assert!(dom.contains("mix&lt;ed&gt; &amp; \"quoted\" (read)"));
    assert!(dom.contains("randrw &lt;4k&gt; &amp; friends"));
    // The summary table has one row per series.
    let table_start = dom
        .find(r#"<table class="summary""#)
        .expect("summary table");
    let table_end = table_start + dom[table_start..].find("</table>").expect("table ends");
    assert_eq!(dom[table_start..table_end].matches("<tr>").count(), 5);

    let shot = work.0.join("page.png");
    run_chromium(
        &chromium,
        &work.0,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,2600".to_string(),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank 1200x2600 page compresses to a few KB; four charts with text do not.
    assert!(
        png.len() > 40_000,
        "screenshot is only {} bytes: blank page?",
        png.len()
    );
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
}

#[test]
fn chromium_renders_an_empty_report() {
    let chromium = require_chromium!();
    let _one_at_a_time = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let work = TempDir::new("empty");
    let page = write_report(&work.0.join("report"), &ReportData::default()).expect("write");
    let dom = run_chromium(&chromium, &work.0, &page, &["--dump-dom".to_string()]);
    for id in [
        CHART_IOPS,
        CHART_BANDWIDTH,
        CHART_PERCENTILES,
        CHART_LATENCY_CDF,
    ] {
        assert_eq!(series_paths(&dom, id), 0, "{id}");
        assert!(chart(&dom, id).contains(NO_SAMPLES), "{id} does not say so");
    }
}
