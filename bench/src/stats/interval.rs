//! Per-interval results: what happened between two status ticks only.
//!
//! A job's recorder accumulates the current interval beside its totals; the runner calls
//! [`JobStats::take_interval`](super::JobStats::take_interval) every status interval and
//! gets an [`IntervalSnapshot`] that still holds histograms, so the snapshots of shards
//! and jobs reported together merge exactly ([`IntervalSnapshot::merge`]). Summarizing
//! ([`IntervalSnapshot::summarize`]) keeps only counts, rates and percentiles: an
//! [`IntervalRecord`] is small enough to keep one per second for hours.

use crate::io::Direction;

use super::latency::LatencyStat;
use super::{dir_index, DIRECTIONS};

/// One direction's I/O within one interval.
#[derive(Debug, Clone, Default)]
pub struct IntervalDir {
    pub ios: u64,
    pub bytes: u64,
    pub clat: LatencyStat,
    pub lat: LatencyStat,
}

/// The I/O of one interval, histograms included.
#[derive(Debug, Clone, Default)]
pub struct IntervalSnapshot {
    /// Start and end of the interval on the runner's monotonic clock.
    pub start_ns: u64,
    pub end_ns: u64,
    pub(super) dirs: [Option<Box<IntervalDir>>; 3],
    /// The longest time without a completion that ended in the interval, or that was
    /// still open at its end (see `JobStats::longest_gap_ns`).
    pub longest_gap_ns: u64,
}

/// Count, moments and percentiles of one latency series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    pub stddev_ns: f64,
    /// (percentile, value in ns), ascending.
    pub percentiles: Vec<(f64, u64)>,
}

impl LatencySummary {
    pub fn of(stat: &LatencyStat, percentile_list: &[f64]) -> LatencySummary {
        let moments = stat.moments();
        LatencySummary {
            count: moments.count(),
            min_ns: moments.min(),
            max_ns: moments.max(),
            mean_ns: moments.mean(),
            stddev_ns: moments.stddev(),
            percentiles: stat.percentiles(percentile_list),
        }
    }
}

/// One direction of an [`IntervalRecord`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalDirRecord {
    pub ios: u64,
    pub bytes: u64,
    pub iops: f64,
    pub bw_bytes_per_s: u64,
    pub clat: LatencySummary,
    /// Total latency; from the scheduled start when the job is paced (see `JobStats::record`).
    pub lat: LatencySummary,
}

/// The summary of one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalRecord {
    /// Interval bounds in ms since the report's origin (the run's start).
    pub start_ms: u64,
    pub end_ms: u64,
    /// Read, write, trim; `None` for a direction without I/O in the interval.
    pub dirs: [Option<IntervalDirRecord>; 3],
    /// The longest time without a completion in the interval (a stall is this number).
    pub longest_gap_ns: u64,
    /// Multipath: what each path completed in the interval.
    pub paths: Vec<PathInterval>,
}

/// One path's share of an interval (multipath iSCSI jobs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathInterval {
    pub portal: String,
    pub ios: u64,
    pub iops: f64,
}

impl IntervalSnapshot {
    pub fn new(start_ns: u64, end_ns: u64) -> IntervalSnapshot {
        IntervalSnapshot {
            start_ns,
            end_ns,
            dirs: Default::default(),
            longest_gap_ns: 0,
        }
    }

    pub fn dir(&self, direction: Direction) -> Option<&IntervalDir> {
        self.dirs[dir_index(direction)].as_deref()
    }

    /// Adds another snapshot of the same interval (another shard or job); the bounds
    /// widen to cover both.
    pub fn merge(&mut self, other: &IntervalSnapshot) {
        self.start_ns = self.start_ns.min(other.start_ns);
        self.end_ns = self.end_ns.max(other.end_ns);
        // Jobs merged: the longest of theirs (their union's gaps are no longer).
        self.longest_gap_ns = self.longest_gap_ns.max(other.longest_gap_ns);
        for (mine, theirs) in self.dirs.iter_mut().zip(other.dirs.iter()) {
            let Some(theirs) = theirs else { continue };
            match mine {
                Some(mine) => {
                    mine.ios += theirs.ios;
                    mine.bytes += theirs.bytes;
                    mine.clat.merge(&theirs.clat);
                    mine.lat.merge(&theirs.lat);
                }
                None => *mine = Some(theirs.clone()),
            }
        }
    }

    /// Counts, rates and percentiles of the interval; times in ms since `origin_ns`.
    pub fn summarize(&self, origin_ns: u64, percentile_list: &[f64]) -> IntervalRecord {
        let duration_ns = self.end_ns.saturating_sub(self.start_ns);
        let mut record = IntervalRecord {
            start_ms: self.start_ns.saturating_sub(origin_ns) / 1_000_000,
            end_ms: self.end_ns.saturating_sub(origin_ns) / 1_000_000,
            dirs: Default::default(),
            longest_gap_ns: self.longest_gap_ns,
            paths: Vec::new(),
        };
        for direction in DIRECTIONS {
            let Some(dir) = self.dir(direction) else {
                continue;
            };
            let per_second = |count: u64| -> u64 {
                if duration_ns == 0 {
                    return 0;
                }
                let value = u128::from(count) * 1_000_000_000 / u128::from(duration_ns);
                u64::try_from(value).unwrap_or(u64::MAX)
            };
            let iops = if duration_ns == 0 {
                0.0
            } else {
                dir.ios as f64 * 1e9 / duration_ns as f64
            };
            record.dirs[dir_index(direction)] = Some(IntervalDirRecord {
                ios: dir.ios,
                bytes: dir.bytes,
                iops,
                bw_bytes_per_s: per_second(dir.bytes),
                clat: LatencySummary::of(&dir.clat, percentile_list),
                lat: LatencySummary::of(&dir.lat, percentile_list),
            });
        }
        record
    }
}
