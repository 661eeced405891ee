//! Output in fio's formats, so fio's users and tools read ours unchanged.
//!
//! - [`json`]: `--output-format=json` and `json+`, fio 3.33's keys and nesting, plus our
//!   additions under `"iscsi_bench"` keys (ignored by fio parsers);
//! - [`human`]: fio's normal text summary per job and per group, plus our extra lines;
//! - [`live`]: the once-a-second status line and when to print it;
//! - [`logs`]: `write_lat_log`/`write_bw_log`/`write_iops_log` files, fio's names and
//!   line format;
//! - [`format`]: fio's `num2str` and time formatting.
//!
//! All of them render a [`RunReport`]: the finished jobs (merged per group when
//! `group_reporting` is on) with what the report needs to know about each.

pub mod format;
pub mod hist_log;
pub mod human;
pub mod iolog;
pub mod json;
pub mod live;
pub mod log_sink;
pub mod logs;
pub mod portable;
pub mod terse;

use crate::stats::{
    dir_index, DirStats, IntervalRecord, JobStats, ResourceUsage, DIRECTIONS,
    FIO_DEFAULT_PERCENTILES,
};

/// The fio release whose output we speak; "fio version" carries it first so that version
/// checks of fio tools pass, then our own name and version.
pub const FIO_COMPAT_VERSION: &str = "fio-3.33";

/// "fio-3.33 (iscsi-bench 0.1.0)".
pub fn version_string() -> String {
    format!(
        "{FIO_COMPAT_VERSION} (iscsi-bench {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Which latency series get percentiles, and which percentiles (fio's `percentile_list`,
/// `slat_percentiles`, `clat_percentiles`, `lat_percentiles`).
#[derive(Debug, Clone, PartialEq)]
pub struct PercentileOptions {
    pub list: Vec<f64>,
    pub slat: bool,
    pub clat: bool,
    pub lat: bool,
}

impl Default for PercentileOptions {
    /// fio's defaults: completion latency, the 17 default percentiles.
    fn default() -> Self {
        PercentileOptions {
            list: FIO_DEFAULT_PERCENTILES.to_vec(),
            slat: false,
            clat: true,
            lat: false,
        }
    }
}

impl PercentileOptions {
    /// Decimals fio shows for the list in the text report: the most any entry has
    /// (the default list has 2).
    pub fn precision(&self) -> usize {
        self.list
            .iter()
            .map(|p| {
                let text = format!("{p}");
                text.split_once('.')
                    .map_or(0, |(_, decimals)| decimals.len())
            })
            .max()
            .unwrap_or(0)
            .min(6)
    }
}

/// How fio's normal (text) report writes its numbers: `significant_figures` (fio's
/// `sig_figs`) and `unit_base` (bandwidth in bits or bytes). fio's terse and JSON output
/// do not use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberStyle {
    pub sig_figs: usize,
    pub bits: bool,
}

impl Default for NumberStyle {
    fn default() -> Self {
        NumberStyle {
            sig_figs: 4,
            bits: false,
        }
    }
}

impl NumberStyle {
    /// The unit of a bandwidth in `num2str`.
    pub fn rate_unit(self) -> format::Unit {
        if self.bits {
            format::Unit::BitPerSec
        } else {
            format::Unit::BytePerSec
        }
    }
}

/// One entry of the report: a job, or a group merged under `group_reporting`.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub name: String,
    pub groupid: u32,
    /// How many jobs were merged into this entry (fio's "jobs=").
    pub members: u32,
    /// fio's `error`: 0, or the errno-like code of the first error that ended the job.
    pub error: i32,
    /// Text for a non-zero `error`.
    pub error_text: String,
    pub pid: u32,
    /// The job's options as written (fio's "job options"), in order.
    pub options: Vec<(String, String)>,
    pub percentiles: PercentileOptions,
    /// The job's iodepth (fio's `latency_depth`).
    pub iodepth: u32,
    pub stats: JobStats,
    /// Per-interval results, oldest first (JSON only).
    pub intervals: Vec<IntervalRecord>,
    /// When the job's measurements (and its interval times) start, in ms after the run's
    /// start: after the phases before it (`stonewall`), its start delay and its ramp.
    pub start_ms: u64,
    /// What the job ran against, for the HTML report (no secrets).
    pub target: String,
    /// How the job rode out faults: timeouts, session recoveries, unchecked blocks.
    pub recovery: RecoveryReport,
    /// Multipath: each path's state and counts at the end of the job.
    pub paths: Vec<datapath::shard::PathStatus>,
    /// What the engine counted about itself (kernel entries, bytes copied in user space);
    /// all zero for a job merged from other hosts, which does not carry them.
    pub engine: crate::engine::EngineCounters,
    /// How much of the rate schedule stalls beyond `rate_backlog` gave up (the I/Os
    /// due then were not issued rather than burst after the stall).
    pub rate_skipped_ns: u64,
    /// fio's `unified_rw_reporting`.
    pub unified: UnifiedRw,
    /// fio's JSON `steadystate` object, for a job with `ss_dur`.
    pub steadystate: Option<SteadyStateReport>,
    /// The job's flushes (`fsync`, `end_fsync`): fio's "sync" entry.
    pub sync: crate::stats::LatencyStat,
    /// fio's latency target mode: the target (ns, 0 when off), percentile and window (us).
    pub latency_target: u64,
    pub latency_percentile: f64,
    pub latency_window_us: u64,
    /// How the text report writes this entry's numbers.
    pub numbers: NumberStyle,
}

/// What fio's JSON `steadystate` object says: the criterion as fio prints it (`ss`,
/// `criterion`), the window, whether it was attained, and the window's samples (oldest
/// first; bandwidth in bytes/s, latency in ns).
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyStateReport {
    pub ss: String,
    pub duration_s: u64,
    pub attained: bool,
    pub criterion: String,
    pub max_deviation: f64,
    pub slope: f64,
    pub bw_mean: u64,
    pub iops_mean: u64,
    /// `Some` for the `lat` criteria, which add `lat_mean` and `lat_ns`.
    pub lat_mean: Option<u64>,
    pub lat_ns: Vec<u64>,
    pub iops: Vec<u64>,
    pub bw: Vec<u64>,
}

/// fio's `unified_rw_reporting`: the directions reported apart (`none`, fio's default),
/// summed into one `mixed` entry (`mixed`), or both (`both`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnifiedRw {
    #[default]
    Separate,
    Mixed,
    Both,
}

impl UnifiedRw {
    pub fn separate(self) -> bool {
        self != UnifiedRw::Mixed
    }
    pub fn mixed(self) -> bool {
        self != UnifiedRw::Separate
    }
}

/// A job's directions summed into one, as fio's `mixed` entry: I/Os, bytes and latencies
/// merge; bandwidth and IOPS samples add (the directions ran side by side); the runtime is
/// the longest. `None` when no direction saw an I/O.
pub fn mixed_dir(stats: &JobStats) -> Option<DirStats> {
    let mut mixed: Option<DirStats> = None;
    for direction in DIRECTIONS {
        let Some(dir) = stats.dir(direction) else {
            continue;
        };
        let into = mixed.get_or_insert_with(DirStats::default);
        into.ios += dir.ios;
        into.bytes += dir.bytes;
        into.short_ios += dir.short_ios;
        into.slat.merge(&dir.slat);
        into.clat.merge(&dir.clat);
        into.lat.merge(&dir.lat);
        into.bw_kib.merge_summed(&dir.bw_kib);
        into.iops.merge_summed(&dir.iops);
        into.runtime_ms = into.runtime_ms.max(dir.runtime_ms);
    }
    mixed
}

/// What a job did about faults (iscsi-bench's own; in the JSON job extension and one line
/// of the human report when not all zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Units failed by `io_timeout`, and their answers that came later (dropped).
    pub ios_timed_out: u64,
    pub late_completions: u64,
    /// Sessions recovered after a lost connection, the longest gap from the loss to the
    /// new login (ns), and commands sent again.
    pub reconnects: u64,
    pub reconnect_gap_ns_max: u64,
    pub commands_resent: u64,
    /// Verify intervals the read-back left unchecked: their last write failed or timed
    /// out, so their contents are unknown (never reported as a verify failure).
    pub verify_skipped: crate::workload::SkippedBlocks,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        *self == RecoveryReport::default()
    }

    pub fn merge(&mut self, other: &RecoveryReport) {
        self.ios_timed_out += other.ios_timed_out;
        self.late_completions += other.late_completions;
        self.reconnects += other.reconnects;
        self.reconnect_gap_ns_max = self.reconnect_gap_ns_max.max(other.reconnect_gap_ns_max);
        self.commands_resent += other.commands_resent;
        self.verify_skipped.add(&other.verify_skipped);
    }
}

impl JobReport {
    /// A report entry with fio's defaults for everything but name, group and stats.
    pub fn new(name: &str, groupid: u32, stats: JobStats) -> JobReport {
        JobReport {
            name: name.to_string(),
            groupid,
            members: 1,
            error: 0,
            error_text: String::new(),
            pid: std::process::id(),
            options: Vec::new(),
            percentiles: PercentileOptions::default(),
            iodepth: 1,
            stats,
            intervals: Vec::new(),
            start_ms: 0,
            target: String::new(),
            recovery: RecoveryReport::default(),
            engine: Default::default(),
            paths: Vec::new(),
            rate_skipped_ns: 0,
            unified: UnifiedRw::Separate,
            steadystate: None,
            sync: crate::stats::LatencyStat::new(),
            latency_target: 0,
            latency_percentile: 100.0,
            latency_window_us: 0,
            numbers: NumberStyle::default(),
        }
    }
}

/// A whole run, ready to render.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The "fio version" value; [`version_string`] by default.
    pub version: String,
    /// Wall-clock time of the report, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Seconds since the run started (fio's per-job "elapsed").
    pub elapsed_s: u64,
    /// fio's "global options", in order.
    pub global_options: Vec<(String, String)>,
    pub jobs: Vec<JobReport>,
    /// The whole process's CPU use over the run, for CPU per I/O.
    pub process_usage: Option<ResourceUsage>,
    /// `--json-histograms`: each job's JSON carries its recorder whole
    /// ([`portable::PortableJob`]), for `iscsi-bench merge` and the cluster controller.
    pub portable: bool,
    /// Groups whose every job ran with `stats=0`: fio still prints their "Run status
    /// group" heading, with no lines under it.
    pub unreported_groups: Vec<u32>,
    /// Whether any job asked for disk statistics (`disk_util`, fio's default). There are
    /// none to give for a LUN, so the JSON then carries an empty `disk_util` list, kept for
    /// parsers that expect the key, and leaves the key out when every job said
    /// `disk_util=0`, as fio leaves it out when it has no disk.
    pub disk_util: bool,
    /// The block devices under the local files of the jobs with `disk_util` on, each once,
    /// with their counters over the run (fio's "Disk stats").
    pub disks: Vec<crate::stats::disk_util::DiskUtil>,
}

impl RunReport {
    pub fn new(timestamp_ms: u64, jobs: Vec<JobReport>) -> RunReport {
        RunReport {
            version: version_string(),
            timestamp_ms,
            elapsed_s: 0,
            global_options: Vec::new(),
            jobs,
            process_usage: None,
            portable: false,
            unreported_groups: Vec::new(),
            disk_util: true,
            disks: Vec::new(),
        }
    }

    /// The run-status groups, by group id (fio's `group_run_stats`); a group of
    /// `stats=0` jobs only has its id.
    pub fn groups(&self) -> Vec<GroupStats> {
        let mut ids: Vec<u32> = self.jobs.iter().map(|job| job.groupid).collect();
        ids.extend(&self.unreported_groups);
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                GroupStats::of(
                    id,
                    self.jobs
                        .iter()
                        .filter(|job| job.groupid == id)
                        .map(|job| &job.stats),
                )
            })
            .collect()
    }

    /// Successful I/Os of all jobs.
    pub fn total_ios(&self) -> u64 {
        self.jobs.iter().map(|job| job.stats.total_ios()).sum()
    }

    /// The tool's own CPU time per I/O, ns: process user+system time over all I/Os.
    pub fn cpu_ns_per_io(&self) -> Option<f64> {
        let usage = self.process_usage?;
        let ios = self.total_ios();
        (ios > 0).then(|| usage.cpu_ns() as f64 / ios as f64)
    }
}

/// Totals of one group for the "Run status group" lines, per direction (fio's
/// `group_run_stats`): bytes, aggregate bandwidth over the longest runtime, the slowest
/// and fastest job's bandwidth, the shortest and longest runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub groupid: u32,
    pub io_bytes: [u64; 3],
    pub agg_bytes_per_s: [u64; 3],
    pub min_bw_bytes_per_s: [u64; 3],
    pub max_bw_bytes_per_s: [u64; 3],
    pub min_run_ms: [u64; 3],
    pub max_run_ms: [u64; 3],
}

impl GroupStats {
    pub fn of<'a>(groupid: u32, members: impl IntoIterator<Item = &'a JobStats>) -> GroupStats {
        let mut group = GroupStats {
            groupid,
            min_bw_bytes_per_s: [u64::MAX; 3],
            ..GroupStats::default()
        };
        for stats in members {
            for direction in DIRECTIONS {
                let index = dir_index(direction);
                let Some(dir) = stats.dir(direction) else {
                    continue;
                };
                if dir.runtime_ms == 0 {
                    continue;
                }
                if group.min_run_ms[index] == 0 || dir.runtime_ms < group.min_run_ms[index] {
                    group.min_run_ms[index] = dir.runtime_ms;
                }
                group.max_run_ms[index] = group.max_run_ms[index].max(dir.runtime_ms);
                let bw = dir.bytes.saturating_mul(1000) / dir.runtime_ms;
                group.min_bw_bytes_per_s[index] = group.min_bw_bytes_per_s[index].min(bw);
                group.max_bw_bytes_per_s[index] = group.max_bw_bytes_per_s[index].max(bw);
                group.io_bytes[index] += dir.bytes;
            }
        }
        for index in 0..3 {
            match group.io_bytes[index]
                .saturating_mul(1000)
                .checked_div(group.max_run_ms[index])
            {
                Some(agg) => group.agg_bytes_per_s[index] = agg,
                None => group.min_bw_bytes_per_s[index] = 0,
            }
        }
        group
    }

    /// A job's mean sampled bandwidth as a percent of the group's aggregate, capped at 100
    /// (fio's "per=" and `bw_agg`).
    pub fn percent_of_aggregate(&self, index: usize, mean_kib: f64) -> f64 {
        let agg = self.agg_bytes_per_s.get(index).copied().unwrap_or(0);
        if agg <= 1024 {
            return 100.0;
        }
        // fio passes the mean through an int.
        (mean_kib.trunc() * 100.0 / (agg as f64 / 1024.0)).min(100.0)
    }
}
