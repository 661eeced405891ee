//! Statistics: what fio measures per job and direction, kept so that results of shards,
//! jobs and groups merge exactly.
//!
//! - [`JobStats`] records one job (or one shard of it): I/O counts and bytes per
//!   direction; slat/clat/lat as [`LatencyStat`] (HdrHistogram, 3 significant digits,
//!   1 ns to an hour, beside exact min/max/mean/stddev); short I/Os and failures by kind
//!   ([`ErrorCounts`]: CHECK CONDITION by sense key and ASC/ASCQ); bandwidth and IOPS
//!   samples every `bwavgtime`/`iopsavgtime` (500 ms by default), as fio's `bw_*`/`iops_*`
//!   figures; fio's
//!   latency and I/O depth distributions; runtime; CPU usage of the job's threads
//!   ([`ResourceUsage`]).
//! - Intervals: [`JobStats::take_interval`] hands over what happened since the previous
//!   call ([`IntervalSnapshot`], mergeable), summarized into an [`IntervalRecord`].
//! - [`LiveCounters`]: atomic totals for the live status line.
//! - [`disk_util`]: fio's disk statistics of the block devices under a run's local files.
//!
//! Coordinated omission: [`JobStats::record`] takes `lat_ns` measured from the I/O's
//! scheduled start when the job is paced (see [`IoTimes`]), so a stall that delays the
//! schedule shows in the total latency instead of vanishing.
//!
//! Sources: fio's HOWTO ("Interpreting the output", "Log File Formats") and the behaviour
//! of fio 3.33's `stat.c`, which this module follows where it says "fio's way".

pub mod disk_util;
mod dist;
mod errors;
pub mod hdr_v2;
mod interval;
mod job;
mod latency;
mod live;
mod portable;
mod rusage;

#[cfg(test)]
mod tests;

pub use dist::{
    DepthDistribution, LatencyBuckets, DEPTH_BATCH_LABELS, DEPTH_LEVEL_LABELS, LATENCY_LABELS_MS,
    LATENCY_LABELS_NS_US,
};
pub use errors::{ErrorCounts, SenseCode};
pub use interval::{
    IntervalDir, IntervalDirRecord, IntervalRecord, IntervalSnapshot, LatencySummary, PathInterval,
};
pub use job::{
    DirStats, IoTimes, JobStats, Measured, RateSample, StatsConfig, DEFAULT_SAMPLE_INTERVAL_MS,
    LATENCY_DEFINITIONS,
};
pub use latency::{LatencyStat, Moments, LATENCY_HIGHEST_NS, LATENCY_SIGNIFICANT_DIGITS};
pub use live::{LiveCounters, LiveTotals};
pub use portable::{PortableDir, PortableErrors, PortableLatency, PortableMoments, PortableStats};
pub use rusage::ResourceUsage;

use crate::io::Direction;

/// The three data directions in fio's order (its `ddir` 0, 1, 2).
pub const DIRECTIONS: [Direction; 3] = [Direction::Read, Direction::Write, Direction::Trim];

/// fio's index of a direction: read 0, write 1, trim 2 (log files use the same numbers).
pub fn dir_index(direction: Direction) -> usize {
    match direction {
        Direction::Read => 0,
        Direction::Write => 1,
        Direction::Trim => 2,
    }
}

/// fio's default `percentile_list`.
pub const FIO_DEFAULT_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];
