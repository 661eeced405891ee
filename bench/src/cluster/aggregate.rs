//! Per-host results merged (no I/O): the "All clients" entry, each host's own window, the
//! window every host ran (stonewalled), and IOPS and bandwidth aligned in time.
//!
//! - Latency: every job's recorder of every host merges into one
//!   ([`crate::stats::JobStats::merge`]): histograms add bucket for bucket, so the merged
//!   percentiles are those of one process that saw every I/O.
//! - Windows: a host's window runs from its actual start to its end, both on the
//!   controller's clock (each agent's clock mapped through its measured offset). The common
//!   window runs from the latest start to the earliest end among the hosts that finished;
//!   its I/Os are each host's interval totals inside it, an interval cut by the window's
//!   edge counted in proportion to its overlap (exact when intervals fall inside; a finer
//!   `--cluster-interval` tightens the edges).
//! - Series: each interval's end is placed on a common grid of the interval period from the
//!   earliest start; the hosts' totals in one slot add up.

use crate::output::portable::PortableJob;
use crate::output::JobReport;
use crate::stats::hdr_v2::HistogramDecodeError;

/// How a host's run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStatus {
    /// Results in.
    Done,
    /// The agent reported a failure (it could not parse, open or run).
    Failed { stage: String, error: String },
    /// The agent went away or fell silent (killed, cut off): no results, or partial.
    Lost { reason: String },
}

impl HostStatus {
    pub fn is_done(&self) -> bool {
        matches!(self, HostStatus::Done)
    }

    pub fn word(&self) -> &'static str {
        match self {
            HostStatus::Done => "ok",
            HostStatus::Failed { .. } => "failed",
            HostStatus::Lost { .. } => "lost",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            HostStatus::Done => String::new(),
            HostStatus::Failed { stage, error } => format!("{stage}: {error}"),
            HostStatus::Lost { reason } => reason.clone(),
        }
    }
}

/// One host's part of the run, times on the controller's clock (ns).
#[derive(Debug, Clone)]
pub struct HostResult {
    /// How the controller named it ("host,port").
    pub label: String,
    /// The host name the agent gave.
    pub hostname: String,
    pub rank: u32,
    pub status: HostStatus,
    pub jobs: Vec<PortableJob>,
    pub start_ns: Option<u64>,
    pub end_ns: Option<u64>,
    /// How far its clock mapping may be off (half the best probe round trip).
    pub clock_uncertainty_ns: u64,
}

/// One direction's I/O over a span.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub ios: f64,
    pub bytes: f64,
}

/// The window all hosts ran.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonWindow {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Read, write, trim, over the window, every finished host's I/O.
    pub totals: [Totals; 3],
}

impl CommonWindow {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// (IOPS, bytes/s) of direction `index` over the window.
    pub fn rates(&self, index: usize) -> (f64, f64) {
        let seconds = self.duration_ns() as f64 / 1e9;
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        (
            self.totals[index].ios / seconds,
            self.totals[index].bytes / seconds,
        )
    }
}

/// One slot of the aligned series.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedSlot {
    /// End of the slot, ms after the earliest start.
    pub time_ms: u64,
    /// How many hosts' intervals fell in it.
    pub hosts: u32,
    pub ios: [u64; 3],
    pub bytes: [u64; 3],
}

/// Everything the cluster report shows.
#[derive(Debug, Clone)]
pub struct ClusterSummary {
    pub hosts: Vec<HostResult>,
    /// "All clients": every job of every host merged (`None` when no host sent results).
    pub all_clients: Option<JobReport>,
    /// Max - min of the finished-or-started hosts' actual starts.
    pub start_skew_ns: u64,
    /// The largest clock uncertainty among them (the skew is known to within about this).
    pub clock_uncertainty_ns: u64,
    pub common: Option<CommonWindow>,
    pub interval_ms: u64,
    pub series: Vec<AlignedSlot>,
}

impl ClusterSummary {
    /// Hosts that did not finish.
    pub fn flagged(&self) -> impl Iterator<Item = &HostResult> {
        self.hosts.iter().filter(|h| !h.status.is_done())
    }
}

/// Merges the hosts' results; a histogram that is not ours is refused by name.
pub fn summarize(
    hosts: Vec<HostResult>,
    interval_ms: u64,
) -> Result<ClusterSummary, HistogramDecodeError> {
    let interval_ms = interval_ms.max(1);
    let mut all: Option<JobReport> = None;
    for host in &hosts {
        for job in &host.jobs {
            let report = job.to_report()?;
            match &mut all {
                None => {
                    let mut first = report;
                    first.name = "All clients".to_string();
                    first.options.clear();
                    first.intervals.clear();
                    all = Some(first);
                }
                Some(into) => {
                    into.stats.merge(&report.stats);
                    into.members += report.members;
                    into.recovery.merge(&report.recovery);
                    if into.error == 0 && report.error != 0 {
                        into.error = report.error;
                        into.error_text = report.error_text.clone();
                    }
                }
            }
        }
    }
    if let Some(all) = &mut all {
        all.groupid = 0;
    }
    let starts: Vec<u64> = hosts.iter().filter_map(|h| h.start_ns).collect();
    let start_skew_ns = super::clock::skew_ns(&starts);
    let clock_uncertainty_ns = hosts
        .iter()
        .filter(|h| h.start_ns.is_some())
        .map(|h| h.clock_uncertainty_ns)
        .max()
        .unwrap_or(0);
    let finished: Vec<&HostResult> = hosts
        .iter()
        .filter(|h| h.status.is_done() && h.start_ns.is_some() && h.end_ns.is_some())
        .collect();
    let common = common_window(&finished);
    let series = aligned_series(&hosts, interval_ms);
    Ok(ClusterSummary {
        all_clients: all,
        start_skew_ns,
        clock_uncertainty_ns,
        common,
        interval_ms,
        series,
        hosts,
    })
}

/// The intervals of a host on the controller's clock: (start, end, interval).
fn host_intervals(
    host: &HostResult,
) -> impl Iterator<Item = (u64, u64, &crate::output::portable::PortableInterval)> {
    let origin = host.start_ns;
    host.jobs.iter().flat_map(move |job| {
        job.intervals.iter().filter_map(move |interval| {
            let origin = origin?;
            Some((
                origin + interval.start_ms * 1_000_000,
                origin + interval.end_ms * 1_000_000,
                interval,
            ))
        })
    })
}

fn common_window(finished: &[&HostResult]) -> Option<CommonWindow> {
    let start_ns = finished.iter().filter_map(|h| h.start_ns).max()?;
    let end_ns = finished.iter().filter_map(|h| h.end_ns).min()?;
    if end_ns <= start_ns {
        return None;
    }
    let mut totals = [Totals::default(); 3];
    for host in finished {
        for (from, to, interval) in host_intervals(host) {
            let overlap = to.min(end_ns).saturating_sub(from.max(start_ns));
            let span = to.saturating_sub(from);
            if overlap == 0 || span == 0 {
                continue;
            }
            let share = overlap as f64 / span as f64;
            for (i, total) in totals.iter_mut().enumerate() {
                total.ios += interval.ios[i] as f64 * share;
                total.bytes += interval.bytes[i] as f64 * share;
            }
        }
    }
    Some(CommonWindow {
        start_ns,
        end_ns,
        totals,
    })
}

fn aligned_series(hosts: &[HostResult], interval_ms: u64) -> Vec<AlignedSlot> {
    let Some(t0) = hosts.iter().filter_map(|h| h.start_ns).min() else {
        return Vec::new();
    };
    let period_ns = interval_ms * 1_000_000;
    let mut slots: std::collections::BTreeMap<u64, AlignedSlot> = Default::default();
    for host in hosts {
        let mut seen = std::collections::BTreeSet::new();
        for (_, to, interval) in host_intervals(host) {
            let slot = (to - t0 + period_ns / 2) / period_ns;
            let entry = slots.entry(slot).or_insert_with(|| AlignedSlot {
                time_ms: slot * interval_ms,
                hosts: 0,
                ios: [0; 3],
                bytes: [0; 3],
            });
            if seen.insert(slot) {
                entry.hosts += 1;
            }
            for i in 0..3 {
                entry.ios[i] += interval.ios[i];
                entry.bytes[i] += interval.bytes[i];
            }
        }
    }
    slots.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Direction;
    use crate::output::portable::PortableInterval;
    use crate::stats::{JobStats, StatsConfig};

    fn job(latencies: &[u64], intervals: Vec<PortableInterval>) -> PortableJob {
        let mut stats = JobStats::new(0, StatsConfig::default());
        for &l in latencies {
            stats.record(Direction::Read, 4096, 1, l, l);
        }
        stats.finish(2_000_000_000);
        let mut report = JobReport::new("j", 0, stats);
        report.start_ms = 0;
        let mut portable = PortableJob::of(&report);
        portable.intervals = intervals;
        portable
    }

    fn interval(start_ms: u64, end_ms: u64, ios: u64) -> PortableInterval {
        PortableInterval {
            start_ms,
            end_ms,
            ios: [ios, 0, 0],
            bytes: [ios * 4096, 0, 0],
        }
    }

    fn host(label: &str, start_ns: u64, end_ns: u64, job: PortableJob) -> HostResult {
        HostResult {
            label: label.into(),
            hostname: label.into(),
            rank: 0,
            status: HostStatus::Done,
            jobs: vec![job],
            start_ns: Some(start_ns),
            end_ns: Some(end_ns),
            clock_uncertainty_ns: 10,
        }
    }

    #[test]
    fn all_clients_is_every_io_and_the_window_is_the_overlap() {
        let a = host(
            "a",
            0,
            2_000_000_000,
            job(
                &[1_000, 2_000],
                vec![interval(0, 1000, 100), interval(1000, 2000, 100)],
            ),
        );
        let b = host(
            "b",
            500_000_000,
            2_500_000_000,
            job(
                &[3_000],
                vec![interval(0, 1000, 50), interval(1000, 2000, 50)],
            ),
        );
        let mut lost = host("c", 100, 200, job(&[], vec![]));
        lost.status = HostStatus::Lost {
            reason: "connection reset".into(),
        };
        let summary = summarize(vec![a, b, lost], 1000).unwrap();
        let all = summary.all_clients.as_ref().unwrap();
        assert_eq!(all.stats.dir(Direction::Read).unwrap().ios, 3);
        assert_eq!(all.members, 3);
        assert_eq!(summary.start_skew_ns, 500_000_000);
        let common = summary.common.as_ref().unwrap();
        assert_eq!(
            (common.start_ns, common.end_ns),
            (500_000_000, 2_000_000_000)
        );
        // a: half of its first interval and all of its second; b: all of its first and
        // half of its second.
        assert!((common.totals[0].ios - (50.0 + 100.0 + 50.0 + 25.0)).abs() < 1e-9);
        assert_eq!(summary.flagged().count(), 1);
        // Slots at 1 s (a's first), 1.5 s -> 2 s (b's first, a's second), 2.5 s -> 3 s.
        let times: Vec<u64> = summary.series.iter().map(|s| s.time_ms).collect();
        assert_eq!(times, vec![1000, 2000, 3000]);
        assert_eq!(summary.series[1].ios[0], 150);
        assert_eq!(summary.series[1].hosts, 2);
    }
}
