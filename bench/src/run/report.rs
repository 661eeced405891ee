//! The run's results as the HTML report takes them (`--report DIR`): one series per job
//! and direction, from the interval records and the completion-latency histogram.

use crate::output::RunReport;
use crate::report::{IntervalPoint, JobDescription, JobSeries, JobSummary, PathSeries, ReportData};
use crate::stats::{dir_index, DIRECTIONS};

/// The percentiles charted over time.
const CHARTED_PERCENTILES: [f64; 3] = [50.0, 99.0, 99.9];
/// Points of the latency CDF at most (one per histogram bucket otherwise).
const CDF_POINTS_MAX: usize = 2_000;

/// Builds the report page's data from a finished run.
pub fn report_data(run: &RunReport, command_line: &str, interval_ms: u64) -> ReportData {
    let mut series = Vec::new();
    for job in &run.jobs {
        for direction in DIRECTIONS {
            let Some(dir) = job.stats.dir(direction).filter(|d| d.ios > 0) else {
                continue;
            };
            let index = dir_index(direction);
            let points = job
                .intervals
                .iter()
                .map(|interval| match &interval.dirs[index] {
                    Some(d) => IntervalPoint {
                        t_ms: job.start_ms + interval.end_ms,
                        iops: d.iops,
                        bw_bytes_per_s: d.bw_bytes_per_s as f64,
                        // An interval without I/O has no latency: a gap, not a 0.
                        latency_percentiles_ns: d
                            .clat
                            .percentiles
                            .iter()
                            .copied()
                            .filter(|(p, _)| d.ios > 0 && CHARTED_PERCENTILES.contains(p))
                            .collect(),
                    },
                    None => IntervalPoint {
                        t_ms: job.start_ms + interval.end_ms,
                        ..IntervalPoint::default()
                    },
                })
                .collect();
            let total = dir.clat.count().max(1) as f64;
            let mut seen = 0u64;
            let mut cdf: Vec<(u64, f64)> = dir
                .clat
                .bins()
                .map(|(value, count)| {
                    seen += count;
                    (value, seen as f64 / total)
                })
                .collect();
            if cdf.len() > CDF_POINTS_MAX {
                let step = cdf.len().div_ceil(CDF_POINTS_MAX);
                let last = cdf.last().copied();
                cdf = cdf.into_iter().step_by(step).collect();
                if let Some(last) = last {
                    cdf.push(last);
                }
            }
            let runtime_s = (dir.runtime_ms.max(1)) as f64 / 1000.0;
            let pct = dir.clat.percentiles(&[50.0, 99.0, 99.9]);
            let at = |p: f64| pct.iter().find(|(q, _)| *q == p).map(|(_, v)| *v);
            let moments = dir.clat.moments();
            series.push(JobSeries {
                name: job.name.clone(),
                direction,
                interval_ms,
                points,
                cdf,
                summary: JobSummary {
                    ios: dir.ios,
                    iops: dir.ios as f64 / runtime_s,
                    bw_bytes_per_s: dir.bytes as f64 / runtime_s,
                    lat_mean_ns: Some(moments.mean()),
                    lat_p50_ns: at(50.0),
                    lat_p99_ns: at(99.0),
                    lat_p99_9_ns: at(99.9),
                    lat_max_ns: Some(moments.max()),
                    errors: job.stats.errors().total(),
                },
            });
        }
    }
    ReportData {
        title: "iscsi-bench report".into(),
        started: crate::output::format::ctime((run.timestamp_ms / 1000) as i64),
        command_line: command_line.to_string(),
        notes: vec![
            "Latency is completion latency (clat), from HdrHistogram at 3 significant digits."
                .into(),
        ],
        series,
        paths: path_series(run),
        jobs: run
            .jobs
            .iter()
            .map(|job| JobDescription {
                name: job.name.clone(),
                start_ms: job.start_ms,
                target: job.target.clone(),
                options: shown_options(&run.global_options, &job.options),
            })
            .collect(),
    }
}

/// Each multipath job's paths: IOPS per interval and the state at the end.
fn path_series(run: &RunReport) -> Vec<PathSeries> {
    let mut all = Vec::new();
    for job in &run.jobs {
        for path in &job.paths {
            let portal = path.portal.to_string();
            let points = job
                .intervals
                .iter()
                .map(|interval| {
                    let iops = interval
                        .paths
                        .iter()
                        .find(|p| p.portal == portal)
                        .map_or(0.0, |p| p.iops);
                    (job.start_ms + interval.end_ms, iops)
                })
                .collect();
            let mut state = if path.up { "up" } else { "down" }.to_string();
            if let Some(alua) = path.alua {
                state.push_str(&format!(", {alua}"));
            }
            all.push(PathSeries {
                job: job.name.clone(),
                portal,
                points,
                state,
                ios: path.ios,
                losses: path.losses,
            });
        }
    }
    all
}

/// Options whose values the page must not show.
const SECRET_OPTIONS: [&str; 2] = ["chap_secret", "mutual_chap_secret"];

/// A job's options as the page lists them: global ones first, then its own; the name and
/// the target have their own columns, and secrets are masked.
fn shown_options(global: &[(String, String)], own: &[(String, String)]) -> Vec<(String, String)> {
    global
        .iter()
        .chain(own)
        .filter(|(key, _)| key != "name" && key != "filename")
        .map(|(key, value)| {
            let value = if SECRET_OPTIONS.contains(&key.as_str()) {
                "(hidden)".to_string()
            } else {
                value.clone()
            };
            (key.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Direction;
    use crate::output::JobReport;
    use crate::stats::{IntervalRecord, JobStats, StatsConfig};

    fn job(name: &str, start_ms: u64) -> JobReport {
        let mut stats = JobStats::new(0, StatsConfig::default());
        stats.record(Direction::Read, 4096, 10, 100, 110);
        stats.finish(2_000_000_000);
        let mut job = JobReport::new(name, 0, stats);
        job.start_ms = start_ms;
        job.target = "embedded target".into();
        job.options = vec![
            ("name".into(), name.into()),
            ("rw".into(), "read".into()),
            ("chap_secret".into(), "hunter2".into()),
        ];
        job.intervals = (1..=2)
            .map(|s| IntervalRecord {
                start_ms: (s - 1) * 1000,
                end_ms: s * 1000,
                ..IntervalRecord::default()
            })
            .collect();
        job
    }

    #[test]
    fn a_job_after_a_stonewall_is_drawn_from_its_start() {
        let mut run = RunReport::new(0, vec![job("first", 0), job("second", 2_100)]);
        run.global_options = vec![("bs".into(), "4k".into())];
        let data = report_data(&run, "iscsi-bench jobs.fio", 1000);
        let times: Vec<Vec<u64>> = data
            .series
            .iter()
            .map(|s| s.points.iter().map(|p| p.t_ms).collect())
            .collect();
        assert_eq!(times, vec![vec![1_000, 2_000], vec![3_100, 4_100]]);
        assert_eq!(data.jobs.len(), 2);
        assert_eq!(data.jobs[1].start_ms, 2_100);
        assert_eq!(data.jobs[1].target, "embedded target");
        assert_eq!(
            data.jobs[1].options,
            vec![
                ("bs".to_string(), "4k".to_string()),
                ("rw".to_string(), "read".to_string()),
                ("chap_secret".to_string(), "(hidden)".to_string()),
            ]
        );
    }
}
