//! The run's results as the HTML report takes them (`--report DIR`): one series per job
//! and direction, from the interval records and the completion-latency histogram.

use crate::output::RunReport;
use crate::report::{IntervalPoint, JobSeries, JobSummary, ReportData};
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
                        t_ms: interval.end_ms,
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
                        t_ms: interval.end_ms,
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
    }
}
