//! The cluster report in fio's shapes: per-host job reports (text lines prefixed with
//! `<host> `, as fio's client prints them), then "All clients"; in JSON fio's
//! `client_stats` array (each host's jobs with a `"hostname"`, then the "All clients"
//! entry), with the cluster's own figures under `"iscsi_bench"."cluster"`.

use std::fmt::Write as _;

use super::aggregate::{ClusterSummary, HostResult};
use crate::output::json::{self, Flavor, Json};
use crate::output::{human, JobReport, RunReport};
use crate::stats::DIRECTIONS;

/// How the report is asked for.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    pub flavor: Flavor,
    /// Host entries carry their recorders (`--json-histograms`), so the controller's own
    /// JSON can be merged again.
    pub portable: bool,
    pub timestamp_ms: u64,
}

fn host_report(host: &HostResult, options: &RenderOptions) -> RunReport {
    let jobs: Vec<JobReport> = host
        .jobs
        .iter()
        .filter_map(|j| j.to_report().ok())
        .collect();
    let mut report = RunReport::new(options.timestamp_ms, jobs);
    report.portable = options.portable;
    report
}

fn all_report(summary: &ClusterSummary, options: &RenderOptions) -> Option<RunReport> {
    let all = summary.all_clients.clone()?;
    let mut report = RunReport::new(options.timestamp_ms, vec![all]);
    report.portable = options.portable;
    Some(report)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// fio's text: each host's report, its lines prefixed `<host> `; "All clients"; then the
/// cluster's lines (start skew, windows, the common window's rates, flagged hosts).
pub fn text(summary: &ClusterSummary, options: &RenderOptions) -> String {
    let mut out = String::new();
    for host in &summary.hosts {
        let body = human::render(&host_report(host, options));
        for line in body.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "<{}> {line}", host.hostname);
            }
        }
    }
    if let Some(all) = all_report(summary, options) {
        out.push_str(&human::render(&all));
    }
    let _ = writeln!(
        out,
        "\nCluster: {} hosts, start skew {:.3} ms (clocks known to +/-{:.3} ms), {} flagged",
        summary.hosts.len(),
        ms(summary.start_skew_ns),
        ms(summary.clock_uncertainty_ns),
        summary.flagged().count()
    );
    let origin = summary
        .hosts
        .iter()
        .filter_map(|h| h.start_ns)
        .min()
        .unwrap_or(0);
    for host in &summary.hosts {
        let window = match (host.start_ns, host.end_ns) {
            (Some(s), Some(e)) => format!(
                "window {:.3}-{:.3} ms",
                ms(s - origin),
                ms(e.saturating_sub(origin))
            ),
            (Some(s), None) => format!("started {:.3} ms, no end", ms(s - origin)),
            _ => "not started".to_string(),
        };
        let flag = if host.status.is_done() {
            String::new()
        } else {
            format!(": {}", host.status.reason())
        };
        let _ = writeln!(
            out,
            "  host {} ({}) rank {}: {} {window}{flag}",
            host.hostname,
            host.label,
            host.rank,
            host.status.word().to_uppercase()
        );
    }
    match &summary.common {
        Some(common) => {
            let _ = write!(
                out,
                "  common window {:.3}-{:.3} ms ({:.3} ms):",
                ms(common.start_ns - origin),
                ms(common.end_ns - origin),
                ms(common.duration_ns())
            );
            for direction in DIRECTIONS {
                let i = crate::stats::dir_index(direction);
                if common.totals[i].ios > 0.0 {
                    let (iops, bw) = common.rates(i);
                    let _ = write!(
                        out,
                        " {} IOPS={:.0} BW={:.1}MiB/s",
                        direction.fio_name(),
                        iops,
                        bw / 1_048_576.0
                    );
                }
            }
            out.push('\n');
        }
        None => out.push_str(
            "  common window: none (no finished host, or their windows do not overlap)\n",
        ),
    }
    out
}

fn number(value: f64) -> Json {
    Json::Float(value)
}

fn cluster_json(summary: &ClusterSummary) -> Json {
    let origin = summary
        .hosts
        .iter()
        .filter_map(|h| h.start_ns)
        .min()
        .unwrap_or(0);
    let rel = |ns: Option<u64>| ns.map_or(Json::Int(-1), |ns| Json::UInt(ns - origin.min(ns)));
    let hosts = summary
        .hosts
        .iter()
        .map(|h| {
            Json::Object(vec![
                ("hostname".into(), Json::Str(h.hostname.clone())),
                ("client".into(), Json::Str(h.label.clone())),
                ("rank".into(), Json::UInt(u64::from(h.rank))),
                ("status".into(), Json::Str(h.status.word().into())),
                ("reason".into(), Json::Str(h.status.reason())),
                ("start_ns".into(), rel(h.start_ns)),
                ("end_ns".into(), rel(h.end_ns)),
                (
                    "clock_uncertainty_ns".into(),
                    Json::UInt(h.clock_uncertainty_ns),
                ),
            ])
        })
        .collect();
    let common = match &summary.common {
        None => Json::Object(Vec::new()),
        Some(c) => {
            let mut entries = vec![
                ("start_ns".into(), Json::UInt(c.start_ns - origin)),
                ("end_ns".into(), Json::UInt(c.end_ns - origin)),
            ];
            for direction in DIRECTIONS {
                let i = crate::stats::dir_index(direction);
                let (iops, bw) = c.rates(i);
                entries.push((
                    direction.fio_name().into(),
                    Json::Object(vec![
                        ("total_ios".into(), number(c.totals[i].ios)),
                        ("io_bytes".into(), number(c.totals[i].bytes)),
                        ("iops".into(), number(iops)),
                        ("bw_bytes".into(), number(bw)),
                    ]),
                ));
            }
            Json::Object(entries)
        }
    };
    let series = summary
        .series
        .iter()
        .map(|slot| {
            let mut entries = vec![
                ("time_ms".into(), Json::UInt(slot.time_ms)),
                ("hosts".into(), Json::UInt(u64::from(slot.hosts))),
            ];
            for direction in DIRECTIONS {
                let i = crate::stats::dir_index(direction);
                if slot.ios[i] > 0 || slot.bytes[i] > 0 {
                    let per_s = 1000.0 / summary.interval_ms as f64;
                    entries.push((
                        direction.fio_name().into(),
                        Json::Object(vec![
                            ("total_ios".into(), Json::UInt(slot.ios[i])),
                            ("io_bytes".into(), Json::UInt(slot.bytes[i])),
                            ("iops".into(), number(slot.ios[i] as f64 * per_s)),
                            ("bw_bytes".into(), number(slot.bytes[i] as f64 * per_s)),
                        ]),
                    ));
                }
            }
            Json::Object(entries)
        })
        .collect();
    Json::Object(vec![
        ("start_skew_ns".into(), Json::UInt(summary.start_skew_ns)),
        (
            "clock_uncertainty_ns".into(),
            Json::UInt(summary.clock_uncertainty_ns),
        ),
        (
            "flagged".into(),
            Json::UInt(summary.flagged().count() as u64),
        ),
        ("hosts".into(), Json::Array(hosts)),
        ("common_window".into(), common),
        ("interval_ms".into(), Json::UInt(summary.interval_ms)),
        ("aligned".into(), Json::Array(series)),
    ])
}

fn jobs_of(document: Json) -> Vec<Json> {
    match document {
        Json::Object(entries) => entries
            .into_iter()
            .find(|(k, _)| k == "jobs")
            .and_then(|(_, v)| match v {
                Json::Array(items) => Some(items),
                _ => None,
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// fio's client JSON: `client_stats` with every host's jobs, then "All clients".
pub fn json_document(summary: &ClusterSummary, options: &RenderOptions) -> Json {
    let mut stats = Vec::new();
    for host in &summary.hosts {
        for job in jobs_of(json::document(&host_report(host, options), options.flavor)) {
            let Json::Object(mut entries) = job else {
                continue;
            };
            entries.push(("hostname".into(), Json::Str(host.hostname.clone())));
            stats.push(Json::Object(entries));
        }
    }
    if let Some(all) = all_report(summary, options) {
        let mut all_report = all;
        // "All clients" is a sum: its own recorder would double the hosts' in a re-merge.
        all_report.portable = false;
        stats.extend(jobs_of(json::document(&all_report, options.flavor)));
    }
    let timestamp_s = options.timestamp_ms / 1000;
    Json::Object(vec![
        (
            "fio version".into(),
            Json::Str(crate::output::version_string()),
        ),
        ("timestamp".into(), Json::UInt(timestamp_s)),
        ("timestamp_ms".into(), Json::UInt(options.timestamp_ms)),
        (
            "time".into(),
            Json::Str(crate::output::format::ctime(
                i64::try_from(timestamp_s).unwrap_or(i64::MAX),
            )),
        ),
        ("client_stats".into(), Json::Array(stats)),
        ("disk_util".into(), Json::Array(Vec::new())),
        (
            json::EXTENSION_KEY.into(),
            Json::Object(vec![
                (
                    "version".into(),
                    Json::Str(env!("CARGO_PKG_VERSION").into()),
                ),
                ("cluster".into(), cluster_json(summary)),
            ]),
        ),
    ])
}

/// The JSON document as text in fio's layout.
pub fn json_text(summary: &ClusterSummary, options: &RenderOptions) -> String {
    let mut out = Vec::new();
    let _ = json::write_value(&json_document(summary, options), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
