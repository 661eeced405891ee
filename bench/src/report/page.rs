//! The report page: heading, summary table, and the four charts with their legends.

use std::fmt::Write as _;

use super::chart::{render_svg, Chart, Line};
use super::scale::{format_value, linear_axis, log_axis, non_negative, Axis, Unit};
use super::{escape, JobSeries, ReportData};

/// The ids of the four chart `<svg>` elements (each also has class `chart`).
pub const CHART_IOPS: &str = "chart-iops";
pub const CHART_BANDWIDTH: &str = "chart-bandwidth";
pub const CHART_PERCENTILES: &str = "chart-latency-percentiles";
pub const CHART_LATENCY_CDF: &str = "chart-latency-cdf";
pub const CHART_PATHS: &str = "chart-paths";

/// Line colours, one per job and direction: the Tableau 10 palette, distinct on white and
/// for the common kinds of colour blindness in its first entries. Cycles after ten.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// Dash patterns telling a job's percentile lines apart (the colour tells the jobs apart).
const PERCENTILE_DASHES: [Option<&str>; 4] = [None, Some("8 4"), Some("2 3"), Some("10 3 2 3")];

/// Percentiles drawn over time when a job reports more than fit the dash patterns (fio's
/// default list has 17): the median and the tail.
const PREFERRED_PERCENTILES: [f64; 4] = [50.0, 99.0, 99.9, 99.99];

fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

fn series_label(series: &JobSeries) -> String {
    format!("{} ({})", series.name, series.direction.fio_name())
}

/// A percentile as people write it: 50 -> "p50", 99.9 -> "p99.9".
fn percentile_label(percentile: f64) -> String {
    let text = format!("{percentile:.4}");
    format!("p{}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A percentile as a map key, exact to 1/10000 of a percent (fio's percentile_list takes
/// values such as 99.9999).
fn percentile_key(percentile: f64) -> Option<i64> {
    (percentile.is_finite() && (0.0..=100.0).contains(&percentile))
        .then(|| (percentile * 10_000.0).round() as i64)
}

/// The percentiles to draw for one job: all of them if they fit the dash patterns, else the
/// preferred ones it has, else its highest ones.
fn chosen_percentiles(series: &JobSeries) -> Vec<i64> {
    let mut present = std::collections::BTreeSet::new();
    for point in &series.points {
        for (percentile, _) in &point.latency_percentiles_ns {
            if let Some(key) = percentile_key(*percentile) {
                present.insert(key);
            }
        }
    }
    if present.len() <= PERCENTILE_DASHES.len() {
        return present.into_iter().collect();
    }
    let preferred: Vec<i64> = PREFERRED_PERCENTILES
        .iter()
        .filter_map(|p| percentile_key(*p))
        .filter(|key| present.contains(key))
        .collect();
    if !preferred.is_empty() {
        return preferred;
    }
    let mut highest: Vec<i64> = present
        .into_iter()
        .rev()
        .take(PERCENTILE_DASHES.len())
        .collect();
    highest.reverse();
    highest
}

fn t_of(point: &super::IntervalPoint) -> f64 {
    point.t_ms as f64
}

fn rate_lines(data: &ReportData, unit: Unit, value: fn(&super::IntervalPoint) -> f64) -> Vec<Line> {
    data.series
        .iter()
        .enumerate()
        .map(|(index, series)| {
            let label = series_label(series);
            let samples: Vec<Option<(f64, f64)>> = series
                .points
                .iter()
                .map(|point| {
                    let v = value(point);
                    v.is_finite().then(|| (t_of(point), v.max(0.0)))
                })
                .collect();
            let tip = |x: f64, y: f64| {
                format!(
                    "{label} at {}: {}",
                    format_value(Unit::Milliseconds, x),
                    rate_text(unit, y)
                )
            };
            Line::new(label.clone(), colour(index), None, &samples, &tip)
        })
        .collect()
}

/// Multipath jobs: IOPS per path over time, and each path's state and counts.
fn paths_section(data: &ReportData, time_axis: &Axis, interval: &str) -> String {
    let lines: Vec<Line> = data
        .paths
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let label = format!("{} via {}", path.job, path.portal);
            let samples: Vec<Option<(f64, f64)>> = path
                .points
                .iter()
                .map(|&(t, iops)| Some((t as f64, iops.max(0.0))))
                .collect();
            let tip = |x: f64, y: f64| {
                format!(
                    "{label} at {}: {}",
                    format_value(Unit::Milliseconds, x),
                    rate_text(Unit::PerSecond, y)
                )
            };
            Line::new(label.clone(), colour(index), None, &samples, &tip)
        })
        .collect();
    let axis = linear_axis(Unit::PerSecond, extremes(&lines).3);
    let svg = render_svg(&Chart {
        id: CHART_PATHS,
        title: "IOPS over time, per path",
        x_axis: time_axis,
        x_title: "time since start",
        y_axis: &axis,
        y_title: "IOPS",
        lines: &lines,
    });
    let mut out = section(
        "Paths",
        &svg,
        &lines,
        &format!("I/Os each path completed per second in each interval; a lost path drops to 0.{interval}"),
    );
    out.push_str(
        "<table class=\"summary paths\" id=\"paths\">\n<thead><tr><th>job</th><th>portal</th><th>state</th><th>I/Os</th><th>losses</th></tr></thead>\n<tbody>\n",
    );
    for path in &data.paths {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td></tr>",
            escape(&path.job),
            escape(&path.portal),
            escape(&path.state),
            path.ios,
            if path.losses > 0 { " bad" } else { "" },
            path.losses
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn rate_text(unit: Unit, v: f64) -> String {
    match unit {
        Unit::PerSecond => format!("{} IOPS", format_value(unit, v)),
        _ => format_value(unit, v),
    }
}

fn percentile_lines(data: &ReportData) -> Vec<Line> {
    let mut lines = Vec::new();
    for (index, series) in data.series.iter().enumerate() {
        let label = series_label(series);
        for (nth, key) in chosen_percentiles(series).into_iter().enumerate() {
            let percentile = key as f64 / 10_000.0;
            let samples: Vec<Option<(f64, f64)>> = series
                .points
                .iter()
                .map(|point| {
                    point
                        .latency_percentiles_ns
                        .iter()
                        .find(|(p, _)| percentile_key(*p) == Some(key))
                        .map(|&(_, ns)| (t_of(point), ns as f64))
                })
                .collect();
            let line_label = format!("{label} {}", percentile_label(percentile));
            let tip = |x: f64, y: f64| {
                format!(
                    "{line_label} at {}: {}",
                    format_value(Unit::Milliseconds, x),
                    format_value(Unit::Nanoseconds, y)
                )
            };
            let dash = PERCENTILE_DASHES[nth % PERCENTILE_DASHES.len()];
            lines.push(Line::new(
                line_label.clone(),
                colour(index),
                dash,
                &samples,
                &tip,
            ));
        }
    }
    lines
}

fn cdf_lines(data: &ReportData) -> Vec<Line> {
    data.series
        .iter()
        .enumerate()
        .map(|(index, series)| {
            let label = series_label(series);
            let mut cdf: Vec<(u64, f64)> = series
                .cdf
                .iter()
                .filter(|(_, fraction)| fraction.is_finite())
                .map(|&(ns, fraction)| (ns, fraction.clamp(0.0, 1.0)))
                .collect();
            cdf.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let samples: Vec<Option<(f64, f64)>> = cdf
                .iter()
                .map(|&(ns, fraction)| Some((ns as f64, fraction)))
                .collect();
            let tip = |x: f64, y: f64| {
                format!(
                    "{label}: {} of I/Os within {}",
                    format_value(Unit::Fraction, y),
                    format_value(Unit::Nanoseconds, x)
                )
            };
            Line::new(label.clone(), colour(index), None, &samples, &tip)
        })
        .collect()
}

/// The extreme x and y of a chart's lines (0 for none).
fn extremes(lines: &[Line]) -> (f64, f64, f64, f64) {
    let mut min_x = f64::INFINITY;
    let mut max_x: f64 = 0.0;
    let mut min_y = f64::INFINITY;
    let mut max_y: f64 = 0.0;
    for &(x, y) in lines.iter().flat_map(|line| line.runs.iter().flatten()) {
        min_x = min_x.min(x);
        max_x = max_x.max(x);
        min_y = min_y.min(y);
        max_y = max_y.max(y);
    }
    let zero_if_none = |v: f64| if v.is_finite() { v } else { 0.0 };
    (zero_if_none(min_x), max_x, zero_if_none(min_y), max_y)
}

/// The largest time of any interval point, so the rate charts share their time axis.
fn max_time_ms(data: &ReportData) -> f64 {
    data.series
        .iter()
        .flat_map(|series| series.points.iter())
        .map(t_of)
        .fold(0.0, f64::max)
}

fn legend(lines: &[Line]) -> String {
    let mut out = String::from(r#"<ul class="legend">"#);
    for line in lines.iter().filter(|line| !line.is_empty()) {
        let dash = line
            .dash
            .map(|dash| format!(r#" stroke-dasharray="{dash}""#))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<li><svg class="swatch" width="32" height="10" viewBox="0 0 32 10" aria-hidden="true"><line x1="1" y1="5" x2="31" y2="5" stroke="{colour}" stroke-width="2.5"{dash}/></svg>{label}</li>"#,
            colour = line.colour,
            label = escape(&line.label),
        );
    }
    out.push_str("</ul>\n");
    out
}

fn section(heading: &str, svg: &str, lines: &[Line], caption: &str) -> String {
    format!(
        "<section class=\"chart-section\">\n<h2>{heading}</h2>\n<figure>\n{svg}<figcaption>{legend}<p class=\"caption\">{caption}</p></figcaption>\n</figure>\n</section>\n",
        heading = escape(heading),
        legend = legend(lines),
        caption = escape(caption),
    )
}

fn cell_or_dash(value: Option<String>) -> String {
    value.map_or_else(|| "&#8211;".to_string(), |text| escape(&text))
}

/// One row per job: when it started, what it ran against, with which options.
fn jobs_table(data: &ReportData) -> String {
    let mut out = String::from(
        "<table class=\"summary jobs\" id=\"jobs\">\n<thead><tr><th>job</th><th>starts at</th><th>target</th><th>options</th></tr></thead>\n<tbody>\n",
    );
    for job in &data.jobs {
        let options = job
            .options
            .iter()
            .map(|(key, value)| {
                if value.is_empty() {
                    key.clone()
                } else {
                    format!("{key}={value}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            r#"<tr><td>{name}</td><td class="num">{start}</td><td><code>{target}</code></td><td><code>{options}</code></td></tr>"#,
            name = escape(&job.name),
            start = escape(&format_value(Unit::Milliseconds, job.start_ms as f64)),
            target = escape(&job.target),
            options = escape(&options),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// "each point is one interval of 1 s", from the series' interval length.
fn interval_note(data: &ReportData) -> String {
    match data.series.first() {
        Some(series) => format!(
            " Each point is one interval of {}, drawn at its end; a job after a stonewall starts where the jobs before it ended.",
            format_value(Unit::Milliseconds, series.interval_ms as f64)
        ),
        None => String::new(),
    }
}

fn summary_table(data: &ReportData) -> String {
    let mut out = String::from(
        "<table class=\"summary\">\n<thead><tr><th>job</th><th>direction</th><th>I/Os</th><th>IOPS</th><th>bandwidth</th><th>lat mean</th><th>p50</th><th>p99</th><th>p99.9</th><th>lat max</th><th>errors</th></tr></thead>\n<tbody>\n",
    );
    if data.series.is_empty() {
        out.push_str("<tr><td colspan=\"11\">no jobs: no samples</td></tr>\n");
    }
    let ns = |v: Option<u64>| v.map(|ns| format_value(Unit::Nanoseconds, ns as f64));
    for (index, series) in data.series.iter().enumerate() {
        let summary = &series.summary;
        let finite = |v: f64| v.is_finite().then_some(v);
        let _ = writeln!(
            out,
            r#"<tr><td><span class="dot" style="background:{colour}"></span>{name}</td><td>{direction}</td><td class="num">{ios}</td><td class="num" title="{iops_exact:.1}">{iops}</td><td class="num" title="{bw_exact:.0} bytes/s">{bw}</td><td class="num">{mean}</td><td class="num">{p50}</td><td class="num">{p99}</td><td class="num">{p999}</td><td class="num">{max}</td><td class="num{error_class}">{errors}</td></tr>"#,
            colour = colour(index),
            name = escape(&series.name),
            direction = series.direction.fio_name(),
            ios = summary.ios,
            iops_exact = non_negative(summary.iops),
            iops = cell_or_dash(finite(summary.iops).map(|v| format_value(Unit::PerSecond, v))),
            bw_exact = non_negative(summary.bw_bytes_per_s),
            bw = cell_or_dash(
                finite(summary.bw_bytes_per_s).map(|v| format_value(Unit::BytesPerSecond, v))
            ),
            mean = cell_or_dash(
                summary
                    .lat_mean_ns
                    .and_then(finite)
                    .map(|v| format_value(Unit::Nanoseconds, v))
            ),
            p50 = cell_or_dash(ns(summary.lat_p50_ns)),
            p99 = cell_or_dash(ns(summary.lat_p99_ns)),
            p999 = cell_or_dash(ns(summary.lat_p99_9_ns)),
            max = cell_or_dash(ns(summary.lat_max_ns)),
            error_class = if summary.errors > 0 { " bad" } else { "" },
            errors = summary.errors,
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 1100px; color: #111; background: #fafafa; }
h1 { font-size: 1.5rem; margin: 0.5rem 0; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 0.4rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0.5rem 0; }
dl.meta dt { color: #555; }
dl.meta dd { margin: 0; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em;
       word-break: break-all; }
p.note { margin: 0.2rem 0; color: #333; }
table.summary { border-collapse: collapse; width: 100%; font-size: 0.9rem; background: #fff; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; }
table.summary th { background: #f0f0f0; }
table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary td.bad { color: #b00020; font-weight: bold; }
.dot { display: inline-block; width: 0.7em; height: 0.7em; border-radius: 50%; margin-right: 0.4em; }
figure { margin: 0; }
svg.chart { display: block; width: 100%; height: auto; font-family: inherit; }
svg.chart path.series:hover { stroke-width: 3.5; }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 0.3rem 1.2rem; padding: 0; margin: 0.4rem 0; }
ul.legend li { display: flex; align-items: center; gap: 0.4rem; font-size: 0.9rem; }
p.caption { color: #555; font-size: 0.85rem; margin: 0.2rem 0; }
footer { margin-top: 2rem; color: #777; font-size: 0.8rem; }
"#;

/// The whole report page as one HTML document.
pub fn render_html(data: &ReportData) -> String {
    let time_axis = linear_axis(Unit::Milliseconds, max_time_ms(data));

    let iops = rate_lines(data, Unit::PerSecond, |p| p.iops);
    let iops_axis = linear_axis(Unit::PerSecond, extremes(&iops).3);
    let iops_svg = render_svg(&Chart {
        id: CHART_IOPS,
        title: "IOPS over time, per job",
        x_axis: &time_axis,
        x_title: "time since start",
        y_axis: &iops_axis,
        y_title: "IOPS",
        lines: &iops,
    });

    let bandwidth = rate_lines(data, Unit::BytesPerSecond, |p| p.bw_bytes_per_s);
    let bandwidth_axis = linear_axis(Unit::BytesPerSecond, extremes(&bandwidth).3);
    let bandwidth_svg = render_svg(&Chart {
        id: CHART_BANDWIDTH,
        title: "Bandwidth over time, per job",
        x_axis: &time_axis,
        x_title: "time since start",
        y_axis: &bandwidth_axis,
        y_title: "bandwidth",
        lines: &bandwidth,
    });

    let percentiles = percentile_lines(data);
    let (_, _, low_ns, high_ns) = extremes(&percentiles);
    let percentile_axis = log_axis(Unit::Nanoseconds, low_ns, high_ns);
    let percentile_svg = render_svg(&Chart {
        id: CHART_PERCENTILES,
        title: "Latency percentiles over time, per job",
        x_axis: &time_axis,
        x_title: "time since start",
        y_axis: &percentile_axis,
        y_title: "latency (log scale)",
        lines: &percentiles,
    });

    let cdf = cdf_lines(data);
    let (low_ns, high_ns, _, _) = extremes(&cdf);
    let cdf_x_axis = log_axis(Unit::Nanoseconds, low_ns, high_ns);
    let cdf_y_axis = linear_axis(Unit::Fraction, 1.0);
    let cdf_svg = render_svg(&Chart {
        id: CHART_LATENCY_CDF,
        title: "Latency CDF, per job and direction",
        x_axis: &cdf_x_axis,
        x_title: "latency (log scale)",
        y_axis: &cdf_y_axis,
        y_title: "I/Os completed within",
        lines: &cdf,
    });

    let mut out = String::with_capacity(64 * 1024);
    let title = if data.title.is_empty() {
        "iscsi-bench report"
    } else {
        data.title.as_str()
    };
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="generator" content="iscsi-bench">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<dl class="meta"><dt>started</dt><dd>{started}</dd><dt>command</dt><dd><code>{command}</code></dd></dl>
"#,
        title = escape(title),
        started = escape(&data.started),
        command = escape(&data.command_line),
    );
    for note in &data.notes {
        let _ = writeln!(out, r#"<p class="note">{}</p>"#, escape(note));
    }
    out.push_str("</header>\n<main>\n<section id=\"summary\">\n<h2>Jobs</h2>\n");
    out.push_str(&jobs_table(data));
    out.push_str("<h2>Summary</h2>\n");
    out.push_str(&summary_table(data));
    out.push_str("</section>\n");
    let interval = interval_note(data);
    out.push_str(&section(
        "IOPS over time",
        &iops_svg,
        &iops,
        &format!(
            "I/Os completed per second in each interval.{interval} Hover a point for its value."
        ),
    ));
    out.push_str(&section(
        "Bandwidth over time",
        &bandwidth_svg,
        &bandwidth,
        &format!("Bytes moved per second in each interval (binary units: 1 MiB/s = 1048576 bytes/s).{interval}"),
    ));
    out.push_str(&section(
        "Latency percentiles over time",
        &percentile_svg,
        &percentiles,
        &format!("Per interval; colour is the job, the dash pattern the percentile. A gap is an interval with no completed I/O.{interval}"),
    ));
    out.push_str(&section(
        "Latency CDF",
        &cdf_svg,
        &cdf,
        "Share of I/Os that completed within a given latency, over the whole run.",
    ));
    if !data.paths.is_empty() {
        out.push_str(&paths_section(data, &time_axis, &interval));
    }
    out.push_str("</main>\n<footer>Written by iscsi-bench. This page loads nothing from the network.</footer>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::{IntervalPoint, JobDescription, JobSummary, PathSeries, NO_SAMPLES};
    use super::*;
    use crate::io::Direction;

    fn point(t_ms: u64, iops: f64, percentiles: &[(f64, u64)]) -> IntervalPoint {
        IntervalPoint {
            t_ms,
            iops,
            bw_bytes_per_s: iops * 4096.0,
            latency_percentiles_ns: percentiles.to_vec(),
        }
    }

    fn series(name: &str, direction: Direction, points: Vec<IntervalPoint>) -> JobSeries {
        JobSeries {
            name: name.to_string(),
            direction,
            interval_ms: 1000,
            cdf: vec![(10_000, 0.1), (50_000, 0.5), (2_000_000, 1.0)],
            points,
            summary: JobSummary {
                ios: 100,
                iops: 10_000.0,
                bw_bytes_per_s: 40_960_000.0,
                lat_mean_ns: Some(60_000.0),
                lat_p50_ns: Some(50_000),
                lat_p99_ns: Some(900_000),
                lat_p99_9_ns: Some(1_900_000),
                lat_max_ns: Some(2_000_000),
                errors: 0,
            },
        }
    }

    fn sample_data() -> ReportData {
        let pct = [(50.0, 50_000), (99.0, 900_000), (99.9, 1_900_000)];
        ReportData {
            title: "sample".into(),
            started: "2024-01-01T00:00:00Z".into(),
            command_line: "iscsi-bench --rw=randrw".into(),
            notes: vec!["lat: from the scheduled start".into()],
            series: vec![
                series(
                    "a",
                    Direction::Read,
                    (1..=5).map(|s| point(s * 1000, 10_000.0, &pct)).collect(),
                ),
                series(
                    "a",
                    Direction::Write,
                    (1..=5).map(|s| point(s * 1000, 5_000.0, &pct)).collect(),
                ),
            ],
            jobs: vec![JobDescription {
                name: "a".into(),
                start_ms: 0,
                target: "embedded target".into(),
                options: vec![("rw".into(), "randrw".into()), ("bs".into(), "4k".into())],
            }],
            paths: Vec::new(),
        }
    }

    #[test]
    fn multipath_jobs_get_a_chart_and_a_table_of_paths() {
        let plain = render_html(&sample_data());
        assert!(!plain.contains(CHART_PATHS), "no paths, no section");
        let mut data = sample_data();
        let path = |portal: &str, iops: f64, state: &str, losses| PathSeries {
            job: "a".into(),
            portal: portal.into(),
            points: (1..=5)
                .map(|s| (s * 1000, if s > 3 { iops } else { 0.0 }))
                .collect(),
            state: state.into(),
            ios: 1234,
            losses,
        };
        data.paths = vec![
            path("10.0.0.1:3260", 7_000.0, "up, active/optimized", 0),
            path("10.0.0.2:3260", 0.0, "down", 1),
        ];
        let html = render_html(&data);
        assert_eq!(series_paths(&html, CHART_PATHS), 2);
        assert!(html.contains("a via 10.0.0.2:3260"));
        assert!(html.contains("<td>down</td>"));
        assert!(html.contains("up, active/optimized"));
        assert!(html.contains(r#"<td class="num bad">1</td>"#));
        assert_no_urls(&html);
    }

    #[test]
    fn each_job_is_stated_and_the_interval_explained() {
        let mut data = sample_data();
        data.jobs.push(JobDescription {
            name: "after-stonewall".into(),
            start_ms: 5_000,
            target: "null engine (no target)".into(),
            options: vec![("stonewall".into(), String::new())],
        });
        let html = render_html(&data);
        let jobs = &html[html.find(r#"id="jobs""#).expect("a jobs table")..];
        let jobs = &jobs[..jobs.find("</table>").expect("the table closes")];
        assert!(jobs.contains("<td>a</td>"), "{jobs}");
        assert!(jobs.contains("<code>embedded target</code>"), "{jobs}");
        assert!(jobs.contains("<code>rw=randrw bs=4k</code>"), "{jobs}");
        assert!(
            jobs.contains("<td>after-stonewall</td><td class=\"num\">5 s</td>"),
            "{jobs}"
        );
        assert!(jobs.contains("<code>stonewall</code>"), "{jobs}");
        // No unexplained interval column; the captions say what a point is.
        assert!(!html.contains("<th>interval</th>"));
        assert!(
            html.contains("Each point is one interval of 1000 ms"),
            "no interval note"
        );
    }

    /// The text of the `<svg>` element with this id.
    fn chart<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html
            .find(&format!(r#"id="{id}""#))
            .unwrap_or_else(|| panic!("no chart {id}"));
        let end = start + html[start..].find("</svg>").expect("chart closes");
        &html[start..end]
    }

    fn series_paths(html: &str, id: &str) -> usize {
        chart(html, id).matches(r#"<path class="series""#).count()
    }

    /// Every "http://" or "https://" in the page must be the SVG namespace name.
    fn assert_no_urls(html: &str) {
        let without_namespace = html.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
        assert!(!without_namespace.contains("http://"), "page has a URL");
        assert!(!without_namespace.contains("https://"), "page has a URL");
        assert!(
            !without_namespace.contains("//"),
            "page has a protocol-relative URL"
        );
        assert!(!html.contains("<script"), "page has a script");
        assert!(!html.contains("<link"), "page links something");
        assert!(!html.contains("@import"), "page imports a style sheet");
        assert!(!html.contains("url("), "page refers to a resource");
    }

    fn assert_no_non_finite(html: &str) {
        for bad in ["NaN", "inf", "Infinity"] {
            assert!(!html.contains(bad), "page contains {bad}");
        }
    }

    #[test]
    fn four_charts_with_one_line_per_series() {
        let html = render_html(&sample_data());
        assert_eq!(series_paths(&html, CHART_IOPS), 2);
        assert_eq!(series_paths(&html, CHART_BANDWIDTH), 2);
        assert_eq!(series_paths(&html, CHART_PERCENTILES), 6);
        assert_eq!(series_paths(&html, CHART_LATENCY_CDF), 2);
        assert_eq!(html.matches(r#"<svg class="chart""#).count(), 4);
        assert!(!html.contains(NO_SAMPLES));
        assert!(html.contains("a (read) p99.9"));
        assert!(html.contains("a (write)"));
        assert!(html.contains("10k"));
        assert!(html.contains("1.9 ms"));
        assert!(html.contains("lat: from the scheduled start"));
        assert_no_urls(&html);
        assert_no_non_finite(&html);
    }

    #[test]
    fn empty_data_says_no_samples() {
        let html = render_html(&ReportData::default());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        for id in [
            CHART_IOPS,
            CHART_BANDWIDTH,
            CHART_PERCENTILES,
            CHART_LATENCY_CDF,
        ] {
            assert_eq!(series_paths(&html, id), 0, "{id}");
            assert!(chart(&html, id).contains(NO_SAMPLES), "{id}");
        }
        assert!(html.contains("iscsi-bench report"));
        assert_no_urls(&html);
        assert_no_non_finite(&html);
    }

    #[test]
    fn names_are_escaped_everywhere() {
        let mut data = sample_data();
        data.title = r#"<b>"t"&</b>"#.into();
        data.command_line = "iscsi-bench --name='<x>' && rm".into();
        data.series[0].name = r#"<script>alert("x")</script>&"#.into();
        let html = render_html(&data);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<b>"));
        assert!(!html.contains("<x>"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"));
        assert!(html.contains("&#39;&lt;x&gt;&#39; &amp;&amp; rm"));
        // The structure survives: still four charts, two IOPS lines.
        assert_eq!(series_paths(&html, CHART_IOPS), 2);
    }

    #[test]
    fn one_point_is_drawn_with_a_marker() {
        let data = ReportData {
            series: vec![series(
                "one",
                Direction::Read,
                vec![point(1000, 123.0, &[(50.0, 1000)])],
            )],
            ..ReportData::default()
        };
        let html = render_html(&data);
        assert_eq!(series_paths(&html, CHART_IOPS), 1);
        assert!(chart(&html, CHART_IOPS).contains("<circle"));
        assert!(chart(&html, CHART_IOPS).contains("123 IOPS"));
        assert_no_non_finite(&html);
    }

    #[test]
    fn zeros_huge_and_non_finite_values_stay_finite() {
        let points = vec![
            point(0, 0.0, &[(50.0, 0)]),
            point(1000, f64::NAN, &[(99.0, u64::MAX)]),
            point(2000, f64::INFINITY, &[(f64::NAN, 5)]),
            point(3000, 1e300, &[(150.0, 5)]),
            IntervalPoint {
                t_ms: u64::MAX,
                iops: -4.0,
                bw_bytes_per_s: f64::NEG_INFINITY,
                latency_percentiles_ns: vec![],
            },
        ];
        let mut job = series("edge", Direction::Trim, points);
        job.cdf = vec![(0, f64::NAN), (u64::MAX, 2.0), (0, 0.0)];
        job.summary.iops = f64::NAN;
        job.summary.lat_mean_ns = Some(f64::INFINITY);
        let mut all_zero = series(
            "zero",
            Direction::Read,
            (0..3).map(|s| point(s * 1000, 0.0, &[])).collect(),
        );
        all_zero.cdf.clear();
        let html = render_html(&ReportData {
            series: vec![job, all_zero],
            ..ReportData::default()
        });
        assert_no_non_finite(&html);
        assert_eq!(series_paths(&html, CHART_IOPS), 2);
        // Percentiles outside 0..=100 and NaN are dropped; 50 and 99 remain.
        assert_eq!(series_paths(&html, CHART_PERCENTILES), 2);
        assert_eq!(series_paths(&html, CHART_LATENCY_CDF), 1);
    }

    #[test]
    fn many_percentiles_are_narrowed_to_the_tail() {
        let fio_default = [
            1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9,
            99.95, 99.99,
        ];
        let pct: Vec<(f64, u64)> = fio_default
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, 1000 * (i as u64 + 1)))
            .collect();
        let data = ReportData {
            series: vec![series(
                "j",
                Direction::Read,
                vec![point(1000, 1.0, &pct), point(2000, 1.0, &pct)],
            )],
            ..ReportData::default()
        };
        let html = render_html(&data);
        assert_eq!(series_paths(&html, CHART_PERCENTILES), 4);
        for label in [
            "j (read) p50",
            "j (read) p99",
            "j (read) p99.9",
            "j (read) p99.99",
        ] {
            assert!(
                html.contains(&format!(r#"data-label="{label}""#)),
                "{label}"
            );
        }
    }

    #[test]
    fn percentile_labels_read_naturally() {
        assert_eq!(percentile_label(50.0), "p50");
        assert_eq!(percentile_label(99.9), "p99.9");
        assert_eq!(percentile_label(99.9999), "p99.9999");
        assert_eq!(percentile_key(100.5), None);
        assert_eq!(percentile_key(f64::NAN), None);
    }

    #[test]
    fn long_runs_stay_bounded() {
        let pct = [(50.0, 50_000), (99.0, 900_000)];
        let points: Vec<_> = (0..20_000u64)
            .map(|s| point(s * 1000, (s % 100) as f64, &pct))
            .collect();
        let data = ReportData {
            series: vec![series("long", Direction::Read, points)],
            ..ReportData::default()
        };
        let html = render_html(&data);
        // Four charts of at most MAX_POINTS_PER_RUN points each, about 16 bytes a point.
        assert!(html.len() < 1_000_000, "{} bytes", html.len());
        assert!(!chart(&html, CHART_IOPS).contains("<circle"));
    }
}
