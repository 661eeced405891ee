//! `--report DIR`: one self-contained HTML page with the run's charts (issue 5, item 5).
//!
//! The page holds four inline SVG charts, drawn here by hand: IOPS over time and bandwidth
//! over time (one line per job and direction), latency percentiles over time (one line per
//! job, direction and percentile), and the latency CDF (one line per job and direction, on a
//! logarithmic latency axis), with a legend under each and a summary table per job above.
//!
//! The page opens with no network: no script, no font, no style sheet and no image comes
//! from anywhere, and a Content-Security-Policy forbids fetching any. The only URL in the file
//! is the SVG namespace name, which is an identifier that browsers never fetch.
//!
//! The caller maps its statistics onto [`ReportData`]; this module does no measuring.
//! Numbers that are not finite (NaN, infinity) are treated as missing, never written out.

mod chart;
mod page;
pub mod scale;

use std::path::{Path, PathBuf};

use crate::io::Direction;

pub use chart::NO_SAMPLES;
pub use page::{
    render_html, CHART_BANDWIDTH, CHART_IOPS, CHART_LATENCY_CDF, CHART_PATHS, CHART_PERCENTILES,
};

/// Everything the report shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportData {
    /// The page heading, e.g. the job file's name.
    pub title: String,
    /// When the run started, as the caller wants it shown (e.g. RFC 3339).
    pub started: String,
    /// The command line that ran, shown verbatim.
    pub command_line: String,
    /// Free lines shown under the heading, e.g. which latency is charted ("lat: from the
    /// scheduled start of each I/O").
    pub notes: Vec<String>,
    /// One entry per job and direction, in the order they are listed and coloured.
    pub series: Vec<JobSeries>,
    /// What each job was: when it started, its target and its options.
    pub jobs: Vec<JobDescription>,
    /// Multipath jobs: one entry per job and path (empty otherwise).
    pub paths: Vec<PathSeries>,
}

/// One path of a multipath job: its I/O over time and its state at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathSeries {
    pub job: String,
    pub portal: String,
    /// (end of the interval from the start of the run in ms, IOPS on this path).
    pub points: Vec<(u64, f64)>,
    /// "up" or "down", and the ALUA state when the LU reports one.
    pub state: String,
    pub ios: u64,
    pub losses: u64,
}

/// One job (or group under group_reporting) as the page states it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDescription {
    pub name: String,
    /// When its measurements start, in ms after the run's start (its points are drawn
    /// from there: a job after a `stonewall` starts where the one before it ended).
    pub start_ms: u64,
    /// What it ran against (a URL, a path, the embedded target).
    pub target: String,
    /// Its options, global ones first, as written (secrets already masked by the caller).
    pub options: Vec<(String, String)>,
}

/// One job's results in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSeries {
    /// The job's name (group name under group_reporting).
    pub name: String,
    pub direction: Direction,
    /// The length of one interval of `points` (`--interval-results`), named in the charts'
    /// captions.
    pub interval_ms: u64,
    /// One point per interval, in time order.
    pub points: Vec<IntervalPoint>,
    /// The latency distribution of the whole run: (latency in ns, fraction of I/Os at or
    /// below it, 0..=1), in any order.
    pub cdf: Vec<(u64, f64)>,
    pub summary: JobSummary,
}

/// The results of one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalPoint {
    /// The end of the interval, from the start of the run, in ms.
    pub t_ms: u64,
    pub iops: f64,
    pub bw_bytes_per_s: f64,
    /// (percentile 0..=100, latency in ns) pairs, e.g. (99.9, 1_250_000). Empty if the
    /// interval completed no I/O: the latency lines then have a gap there.
    pub latency_percentiles_ns: Vec<(f64, u64)>,
}

/// The whole-run figures for the summary table; `None` shows as a dash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSummary {
    /// I/Os completed.
    pub ios: u64,
    pub iops: f64,
    pub bw_bytes_per_s: f64,
    pub lat_mean_ns: Option<f64>,
    pub lat_p50_ns: Option<u64>,
    pub lat_p99_ns: Option<u64>,
    pub lat_p99_9_ns: Option<u64>,
    pub lat_max_ns: Option<u64>,
    /// I/Os that failed.
    pub errors: u64,
}

/// Why the report could not be written.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create report directory {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write report file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The name of the page in the report directory.
pub const INDEX_FILE: &str = "index.html";

/// Write the report page to `dir/index.html`, creating `dir` (and its parents) if needed;
/// returns the page's path. The page is written to a temporary name and renamed, so a
/// reader never sees half a page.
pub fn write_report(dir: &Path, data: &ReportData) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let html = render_html(data);
    let path = dir.join(INDEX_FILE);
    let partial = dir.join(format!(".{INDEX_FILE}.partial"));
    std::fs::write(&partial, html.as_bytes()).map_err(|source| ReportError::Write {
        path: partial.clone(),
        source,
    })?;
    std::fs::rename(&partial, &path).map_err(|source| {
        // Leave no stray partial file behind; the rename error is the one to report.
        let _ = std::fs::remove_file(&partial);
        ReportError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Checks, before a run, that [`write_report`] will be able to write into `dir`: creates
/// it (and its parents) and creates and removes the temporary page, so a bad path is
/// refused before any I/O instead of losing the results after the run.
pub fn check_report_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let partial = dir.join(format!(".{INDEX_FILE}.partial"));
    std::fs::write(&partial, b"").map_err(|source| ReportError::Write {
        path: partial.clone(),
        source,
    })?;
    let _ = std::fs::remove_file(&partial);
    Ok(())
}

/// `text` made safe for HTML and SVG text and attribute values: the five markup characters
/// become entities, and control characters (other than tab and newline), which HTML does not
/// allow, become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            escape(r#"<job a="1">&'x'"#),
            "&lt;job a=&quot;1&quot;&gt;&amp;&#39;x&#39;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c\td\ne"), "a\u{fffd}b\u{fffd}c\td\ne");
        assert_eq!(escape("plain µs"), "plain µs");
    }

    #[test]
    fn write_creates_the_directory_and_the_page() {
        let base = std::env::temp_dir().join(format!("report-unit-{}", std::process::id()));
        let dir = base.join("nested/deeper");
        let path = write_report(&dir, &ReportData::default()).expect("write report");
        assert_eq!(path, dir.join(INDEX_FILE));
        let html = std::fs::read_to_string(&path).expect("read report");
        assert!(html.contains(NO_SAMPLES));
        assert!(!dir.join(".index.html.partial").exists());
        std::fs::remove_dir_all(&base).expect("clean up");
    }

    #[test]
    fn check_refuses_a_directory_it_cannot_write() {
        let base = std::env::temp_dir().join(format!("report-unit-check-{}", std::process::id()));
        std::fs::write(&base, b"a file, not a directory").expect("make file");
        let err = check_report_dir(&base.join("report")).expect_err("must fail");
        assert!(matches!(err, ReportError::CreateDir { .. }), "{err:?}");
        std::fs::remove_file(&base).expect("clean up");
        let fine = std::env::temp_dir().join(format!("report-unit-ok-{}", std::process::id()));
        check_report_dir(&fine).expect("a new directory is fine");
        assert_eq!(
            std::fs::read_dir(&fine).unwrap().count(),
            0,
            "nothing left behind"
        );
        std::fs::remove_dir_all(&fine).expect("clean up");
    }

    #[test]
    fn write_errors_name_the_path() {
        let base = std::env::temp_dir().join(format!("report-unit-err-{}", std::process::id()));
        std::fs::write(&base, b"a file, not a directory").expect("make file");
        let dir = base.join("report");
        let err = write_report(&dir, &ReportData::default()).expect_err("must fail");
        assert!(matches!(err, ReportError::CreateDir { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        std::fs::remove_file(&base).expect("clean up");
    }
}
