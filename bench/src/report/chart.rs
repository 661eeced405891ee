//! One line chart as inline SVG, written by hand: a plot area, grid lines at the axes' ticks,
//! tick labels, axis titles, and one `<path class="series">` per line. Points carry `<title>`
//! children so a browser shows their values on hover without any script.
//!
//! The SVG has a `viewBox` and no fixed size, so it scales with the page. Colours are
//! presentation attributes, so the SVG reads the same when copied out of the page.

use std::fmt::Write as _;

use super::escape;
use super::scale::Axis;

/// The drawing's coordinate system (the `viewBox`); the page scales it to its width.
pub const WIDTH: f64 = 960.0;
pub const HEIGHT: f64 = 340.0;
const MARGIN_LEFT: f64 = 88.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 52.0;

/// A run longer than this is thinned to the lowest and highest point of each of half as many
/// buckets, which keeps spikes visible and the page small on long runs.
pub const MAX_POINTS_PER_RUN: usize = 2000;
/// Lines with at most this many points get a hover marker on every point.
pub const MARKER_POINTS_MAX: usize = 240;

/// One line of a chart, in data units.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub colour: &'static str,
    /// An SVG `stroke-dasharray`, or `None` for a solid line.
    pub dash: Option<&'static str>,
    /// Runs of points; the line has a gap between runs (an interval with no samples).
    pub runs: Vec<Vec<(f64, f64)>>,
    /// Points drawn as small circles with a tooltip: x, y, text.
    pub markers: Vec<(f64, f64, String)>,
}

impl Line {
    /// A line through `samples` in order; a `None` or a non-finite coordinate breaks it.
    /// `tooltip` writes a marker's hover text from its x and y.
    pub fn new(
        label: String,
        colour: &'static str,
        dash: Option<&'static str>,
        samples: &[Option<(f64, f64)>],
        tooltip: &dyn Fn(f64, f64) -> String,
    ) -> Line {
        let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut current = Vec::new();
        for sample in samples {
            match sample {
                Some((x, y)) if x.is_finite() && y.is_finite() => current.push((*x, *y)),
                _ => {
                    if !current.is_empty() {
                        runs.push(std::mem::take(&mut current));
                    }
                }
            }
        }
        if !current.is_empty() {
            runs.push(current);
        }
        let total: usize = runs.iter().map(Vec::len).sum();
        // Every point gets a marker on short lines; on long ones only isolated points do,
        // since a one-point run draws no visible line.
        let markers = runs
            .iter()
            .filter(|run| total <= MARKER_POINTS_MAX || run.len() == 1)
            .flatten()
            .map(|&(x, y)| (x, y, tooltip(x, y)))
            .collect();
        let runs = runs
            .into_iter()
            .map(|run| thin(run, MAX_POINTS_PER_RUN))
            .collect();
        Line {
            label,
            colour,
            dash,
            runs,
            markers,
        }
    }

    /// True if the line draws anything.
    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(Vec::is_empty)
    }
}

/// Thin `run` to at most `max_points` (at least 2): split it into `max_points / 2` buckets in
/// order and keep each bucket's lowest and highest point, in their original order.
pub fn thin(run: Vec<(f64, f64)>, max_points: usize) -> Vec<(f64, f64)> {
    let max_points = max_points.max(2);
    if run.len() <= max_points {
        return run;
    }
    let buckets = max_points / 2;
    let bucket_len = run.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max_points);
    for bucket in run.chunks(bucket_len) {
        let mut low = 0;
        let mut high = 0;
        for (i, point) in bucket.iter().enumerate() {
            if point.1 < bucket[low].1 {
                low = i;
            }
            if point.1 > bucket[high].1 {
                high = i;
            }
        }
        let (first, second) = if low <= high {
            (low, high)
        } else {
            (high, low)
        };
        out.push(bucket[first]);
        if second != first {
            out.push(bucket[second]);
        }
    }
    out
}

/// Everything one chart shows.
pub struct Chart<'a> {
    /// The SVG element's id (unique in the page).
    pub id: &'a str,
    /// What the chart shows, for screen readers and the SVG's own `<title>`.
    pub title: &'a str,
    pub x_axis: &'a Axis,
    pub x_title: &'a str,
    pub y_axis: &'a Axis,
    pub y_title: &'a str,
    pub lines: &'a [Line],
}

/// Text shown in a chart that has no line to draw.
pub const NO_SAMPLES: &str = "no samples";

/// Pixel position of a data point in the plot area.
fn to_pixels(chart: &Chart<'_>, x: f64, y: f64) -> (f64, f64) {
    (
        chart.x_axis.scale.map(x, MARGIN_LEFT, WIDTH - MARGIN_RIGHT),
        chart
            .y_axis
            .scale
            .map(y, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP),
    )
}

/// The chart as an `<svg class="chart">` element.
pub fn render_svg(chart: &Chart<'_>) -> String {
    let mut out = String::new();
    let plot_left = MARGIN_LEFT;
    let plot_right = WIDTH - MARGIN_RIGHT;
    let plot_top = MARGIN_TOP;
    let plot_bottom = HEIGHT - MARGIN_BOTTOM;
    let title = escape(chart.title);
    let _ = writeln!(
        out,
        r#"<svg class="chart" id="{id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}">"#,
        id = escape(chart.id),
    );
    let _ = writeln!(out, "<title>{title}</title>");
    let _ = writeln!(
        out,
        r##"<rect class="plot" x="{plot_left}" y="{plot_top}" width="{w}" height="{h}" fill="#ffffff" stroke="#b0b0b0"/>"##,
        w = plot_right - plot_left,
        h = plot_bottom - plot_top,
    );

    // Grid lines and labels at each tick.
    out.push_str(r##"<g class="grid" stroke="#e4e4e4" stroke-width="1">"##);
    for tick in &chart.y_axis.ticks {
        let y = chart.y_axis.scale.map(tick.value, plot_bottom, plot_top);
        let _ = write!(
            out,
            r#"<line x1="{plot_left}" y1="{y:.1}" x2="{plot_right}" y2="{y:.1}"/>"#
        );
    }
    for tick in &chart.x_axis.ticks {
        let x = chart.x_axis.scale.map(tick.value, plot_left, plot_right);
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{plot_top}" x2="{x:.1}" y2="{plot_bottom}"/>"#
        );
    }
    out.push_str("</g>\n");
    out.push_str(r##"<g class="tick-labels y" fill="#333333" font-size="12" text-anchor="end">"##);
    for tick in &chart.y_axis.ticks {
        let y = chart.y_axis.scale.map(tick.value, plot_bottom, plot_top);
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" dy="0.32em">{label}</text>"#,
            x = plot_left - 8.0,
            label = escape(&tick.label),
        );
    }
    out.push_str("</g>\n");
    out.push_str(
        r##"<g class="tick-labels x" fill="#333333" font-size="12" text-anchor="middle">"##,
    );
    for tick in &chart.x_axis.ticks {
        let x = chart.x_axis.scale.map(tick.value, plot_left, plot_right);
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}">{label}</text>"#,
            y = plot_bottom + 18.0,
            label = escape(&tick.label),
        );
    }
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        r##"<text class="axis-title" fill="#111111" font-size="13" text-anchor="middle" transform="translate(18 {y:.1}) rotate(-90)">{text}</text>"##,
        y = (plot_top + plot_bottom) / 2.0,
        text = escape(chart.y_title),
    );
    let _ = writeln!(
        out,
        r##"<text class="axis-title" fill="#111111" font-size="13" text-anchor="middle" x="{x:.1}" y="{y:.1}">{text}</text>"##,
        x = (plot_left + plot_right) / 2.0,
        y = HEIGHT - 8.0,
        text = escape(chart.x_title),
    );

    let mut drawn = 0usize;
    for line in chart.lines.iter().filter(|line| !line.is_empty()) {
        drawn += 1;
        let mut d = String::new();
        for run in &line.runs {
            for (i, &(x, y)) in run.iter().enumerate() {
                let (px, py) = to_pixels(chart, x, y);
                let command = if i == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{command}{px:.1},{py:.1}");
            }
        }
        let dash = line
            .dash
            .map(|dash| format!(r#" stroke-dasharray="{dash}""#))
            .unwrap_or_default();
        let label = escape(&line.label);
        let _ = writeln!(
            out,
            r#"<path class="series" data-label="{label}" d="{d}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"{dash}><title>{label}</title></path>"#,
            colour = line.colour,
        );
        if !line.markers.is_empty() {
            let _ = write!(
                out,
                r#"<g class="markers" fill="{colour}">"#,
                colour = line.colour
            );
            for (x, y, text) in &line.markers {
                let (px, py) = to_pixels(chart, *x, *y);
                let _ = write!(
                    out,
                    r#"<circle cx="{px:.1}" cy="{py:.1}" r="3"><title>{text}</title></circle>"#,
                    text = escape(text),
                );
            }
            out.push_str("</g>\n");
        }
    }
    if drawn == 0 {
        let _ = writeln!(
            out,
            r##"<text class="empty" fill="#666666" font-size="16" text-anchor="middle" x="{x:.1}" y="{y:.1}">{NO_SAMPLES}</text>"##,
            x = (plot_left + plot_right) / 2.0,
            y = (plot_top + plot_bottom) / 2.0,
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::scale::{linear_axis, Unit};
    use super::*;

    fn tip(x: f64, y: f64) -> String {
        format!("{x}/{y}")
    }

    #[test]
    fn gaps_split_a_line_into_runs() {
        let samples = [
            Some((0.0, 1.0)),
            Some((1.0, 2.0)),
            None,
            Some((3.0, f64::NAN)),
            Some((4.0, 5.0)),
        ];
        let line = Line::new("a".into(), "#000", None, &samples, &tip);
        assert_eq!(
            line.runs,
            vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 5.0)]]
        );
        assert_eq!(line.markers.len(), 3);
        assert_eq!(line.markers[2].2, "4/5");
    }

    #[test]
    fn long_lines_mark_only_isolated_points() {
        let mut samples: Vec<_> = (0..1000).map(|i| Some((i as f64, 1.0))).collect();
        samples.push(None);
        samples.push(Some((2000.0, 7.0)));
        let line = Line::new("a".into(), "#000", None, &samples, &tip);
        assert_eq!(line.markers, vec![(2000.0, 7.0, "2000/7".to_string())]);
    }

    #[test]
    fn thinning_keeps_extremes_in_order() {
        let run: Vec<_> = (0..10_000)
            .map(|i| (i as f64, if i == 4321 { 1e9 } else { (i % 7) as f64 }))
            .collect();
        let thinned = thin(run, 100);
        assert!(thinned.len() <= 100, "{}", thinned.len());
        assert!(thinned.contains(&(4321.0, 1e9)));
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0));
        let short = vec![(0.0, 1.0), (1.0, 2.0)];
        assert_eq!(thin(short.clone(), 100), short);
    }

    /// Chart "c" of IOPS over time with `lines`, rendered.
    fn iops_over_time(x: &Axis, y: &Axis, lines: &[Line]) -> String {
        render_svg(&Chart {
            id: "c",
            title: "t",
            x_axis: x,
            x_title: "time",
            y_axis: y,
            y_title: "IOPS",
            lines,
        })
    }

    #[test]
    fn empty_chart_says_no_samples() {
        let x = linear_axis(Unit::Milliseconds, 0.0);
        let y = linear_axis(Unit::PerSecond, 0.0);
        let svg = iops_over_time(&x, &y, &[]);
        assert!(svg.contains(NO_SAMPLES));
        assert!(!svg.contains(r#"class="series""#));
        assert!(svg.starts_with(r#"<svg class="chart" id="c""#));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn points_land_inside_the_plot() {
        let x = linear_axis(Unit::Milliseconds, 2000.0);
        let y = linear_axis(Unit::PerSecond, 100.0);
        let line = Line::new(
            "a".into(),
            "#000",
            Some("4 2"),
            &[Some((0.0, 0.0)), Some((2000.0, 100.0))],
            &tip,
        );
        let svg = iops_over_time(&x, &y, &[line]);
        // Bottom-left corner of the plot, then the top-right.
        let d = format!(
            "M{:.1},{:.1}L{:.1},{:.1}",
            MARGIN_LEFT,
            HEIGHT - MARGIN_BOTTOM,
            WIDTH - MARGIN_RIGHT,
            MARGIN_TOP
        );
        assert!(svg.contains(&d), "{svg}");
        assert!(svg.contains(r#"stroke-dasharray="4 2""#));
        assert!(!svg.contains(NO_SAMPLES));
    }
}
