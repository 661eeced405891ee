//! The recorder of one job (or one shard of a job): everything fio reports per job, kept
//! so that recorders merge exactly.

use std::sync::Arc;

use crate::io::{Direction, IoError};

use super::dist::{DepthDistribution, LatencyBuckets};
use super::errors::ErrorCounts;
use super::interval::{IntervalDir, IntervalSnapshot};
use super::latency::{LatencyStat, Moments};
use super::live::LiveCounters;
use super::rusage::ResourceUsage;
use super::{dir_index, DIRECTIONS};

/// fio's default bandwidth/IOPS sampling period (`bwavgtime`/`iopsavgtime`), used when
/// neither they nor a rate log's `log_avg_msec` set one (`JobSpec::bw_sample_period`).
pub const DEFAULT_SAMPLE_INTERVAL_MS: u64 = 500;

/// fio lets a sample come up to 1 ms early (`LOG_MSEC_SLACK`) rather than wait a tick.
const SAMPLE_SLACK_MS: u64 = 1;

/// How a recorder samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// Period of the bandwidth samples (fio's `bw_avg_time`: `bwavgtime`, else
    /// `log_avg_msec` for a job with a bandwidth log, else 500 ms).
    pub sample_interval_ms: u64,
    /// Period of the IOPS samples (fio's `iops_avg_time`, chosen the same way).
    pub iops_sample_interval_ms: u64,
    /// Keep per-interval histograms for [`JobStats::take_interval`]. Off saves two
    /// histograms per direction and two records per I/O.
    pub track_intervals: bool,
    /// What is measured (fio's `disable_*` and `gtod_reduce` turn these off).
    pub measure: Measured,
}

/// The statistics a job keeps beyond its I/O and byte counts: each latency (and the
/// latency distribution with the completion latency), and the bandwidth and IOPS samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    pub slat: bool,
    pub clat: bool,
    pub lat: bool,
    pub bandwidth: bool,
}

impl Default for Measured {
    fn default() -> Self {
        Measured {
            slat: true,
            clat: true,
            lat: true,
            bandwidth: true,
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            sample_interval_ms: DEFAULT_SAMPLE_INTERVAL_MS,
            iops_sample_interval_ms: DEFAULT_SAMPLE_INTERVAL_MS,
            track_intervals: true,
            measure: Measured::default(),
        }
    }
}

/// One direction of a job.
#[derive(Debug, Clone, Default)]
pub struct DirStats {
    pub ios: u64,
    pub bytes: u64,
    /// I/Os that moved fewer bytes than asked (`IoError::Short`).
    pub short_ios: u64,
    /// Submission latency: from the I/O's start to its hand-off to the engine.
    pub slat: LatencyStat,
    /// Completion latency: from hand-off to completion.
    pub clat: LatencyStat,
    /// Total latency: from the I/O's start -- its scheduled start when paced -- to completion.
    pub lat: LatencyStat,
    /// Bandwidth samples in KiB/s, one per sample period with I/O in this direction.
    pub bw_kib: Moments,
    /// IOPS samples, one per sample period with I/O in this direction.
    pub iops: Moments,
    /// How long the job ran with this direction in use, ms (0 until `finish`).
    pub runtime_ms: u64,
}

/// What slat, clat and lat measure, in the words the JSON report carries under
/// `"iscsi_bench"."latency"` (and the README): fio's names, our engines' moments.
pub const LATENCY_DEFINITIONS: [(&str, &str); 3] = [
    (
        "slat",
        "from when the job takes the I/O from its workload (its buffer then filled) to its \
         issue: for iscsi, when the job starts handing its batch to the shard's queue (the \
         shard thread sends the PDU after that, within clat); for io_uring, when the \
         io_uring_enter that carried it returns; for null, 0",
    ),
    (
        "clat",
        "from the issue to when the job reaps the completion: for iscsi, the hand-over to \
         the shard, the wait in its queue, the PDU on the wire, the target, the response \
         and the shard's wake-up of the job (at once when nothing else is in flight, else \
         per queue depth or after 100 us); for io_uring, the kernel and the device",
    ),
    (
        "lat",
        "from the I/O's start, or its scheduled start when rate, rate_iops or thinktime \
         pace the job, to when the job reaps the completion: slat + clat, plus any time \
         the I/O waited behind its schedule",
    ),
];

/// The moments of one I/O, on the runner's monotonic clock (ns).
///
/// `scheduled_ns` is when a paced job (rate, rate_iops, thinktime) meant the I/O to start;
/// the I/O may start later because the queue was full or the target stalled. Measuring
/// total latency from the schedule rather than from the late start is what keeps a stall
/// from being hidden (coordinated omission). Unpaced jobs leave it `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoTimes {
    pub scheduled_ns: Option<u64>,
    /// The workload produced the I/O (fio's `start_time`).
    pub start_ns: u64,
    /// The engine accepted it (fio's `issue_time`).
    pub issue_ns: u64,
    pub complete_ns: u64,
}

impl IoTimes {
    /// (slat, clat, lat) in ns: `issue - start`, `complete - issue`, and
    /// `complete - min(scheduled, start)`.
    pub fn latencies(&self) -> (u64, u64, u64) {
        let origin = self
            .scheduled_ns
            .map_or(self.start_ns, |scheduled| scheduled.min(self.start_ns));
        (
            self.issue_ns.saturating_sub(self.start_ns),
            self.complete_ns.saturating_sub(self.issue_ns),
            self.complete_ns.saturating_sub(origin),
        )
    }
}

/// Bandwidth and IOPS sampled over one period, per direction (read, write, trim);
/// `None` where the direction had no I/O in the period (fio logs no entry then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateSample {
    /// End of the period, ms since the recorder's start.
    pub time_ms: u64,
    pub bw_kib: [Option<u64>; 3],
    pub iops: [Option<u64>; 3],
}

/// Everything fio reports for one job. Time is passed in (ns on the runner's monotonic
/// clock); the recorder does no I/O and takes no lock.
#[derive(Debug, Clone)]
pub struct JobStats {
    pub(super) config: StatsConfig,
    pub(super) start_ns: u64,
    pub(super) dirs: [Option<Box<DirStats>>; 3],
    pub(super) latency_buckets: LatencyBuckets,
    pub(super) depth: DepthDistribution,
    pub(super) errors: ErrorCounts,
    pub(super) usage: ResourceUsage,
    pub(super) job_runtime_ms: u64,
    pub(super) last_sample_ns: u64,
    /// When the last IOPS sample was taken (its period may differ from bandwidth's).
    pub(super) last_iops_sample_ns: u64,
    pub(super) sampled_bytes: [u64; 3],
    pub(super) sampled_ios: [u64; 3],
    pub(super) interval_start_ns: u64,
    pub(super) interval: [Option<Box<IntervalDir>>; 3],
    pub(super) live: Option<Arc<LiveCounters>>,
    /// The last completion, and the longest time between two completions (or from the
    /// start to the first), for the run and for the current interval.
    pub(super) last_completion_ns: u64,
    pub(super) longest_gap_ns: u64,
    pub(super) interval_gap_ns: u64,
    /// When the workload stopped issuing (`stop_gaps`): later quiet is not a stall.
    pub(super) gaps_end_ns: Option<u64>,
}

impl JobStats {
    /// A recorder whose run starts at `start_ns`.
    pub fn new(start_ns: u64, config: StatsConfig) -> JobStats {
        JobStats {
            config,
            start_ns,
            dirs: Default::default(),
            latency_buckets: LatencyBuckets::default(),
            depth: DepthDistribution::default(),
            errors: ErrorCounts::default(),
            usage: ResourceUsage::default(),
            job_runtime_ms: 0,
            last_sample_ns: start_ns,
            last_iops_sample_ns: start_ns,
            sampled_bytes: [0; 3],
            sampled_ios: [0; 3],
            interval_start_ns: start_ns,
            last_completion_ns: start_ns,
            longest_gap_ns: 0,
            interval_gap_ns: 0,
            gaps_end_ns: None,
            interval: Default::default(),
            live: None,
        }
    }

    /// Also count every I/O into `counters` for the live status line.
    pub fn attach_live(&mut self, counters: Arc<LiveCounters>) {
        self.live = Some(counters);
    }

    /// Starts over at `now_ns` (after `ramp_time`, as fio's `reset_io_stats`); the
    /// configuration and live counters stay.
    pub fn reset(&mut self, now_ns: u64) {
        let live = self.live.take();
        *self = JobStats::new(now_ns, self.config.clone());
        self.live = live;
    }

    /// Counts one successful I/O of `bytes` bytes.
    ///
    /// `slat_ns` is submission latency (start to hand-off to the engine), `clat_ns`
    /// completion latency (hand-off to completion), and `lat_ns` total latency measured
    /// from the I/O's *scheduled* start when the job is paced, else from its start: it
    /// already includes any delay between schedule and start, so `lat_ns` may exceed
    /// `slat_ns + clat_ns`. [`IoTimes::latencies`] computes the three from timestamps.
    /// The latency distribution (`lat (usec)` lines) counts `clat_ns`, as fio does.
    pub fn record(
        &mut self,
        direction: Direction,
        bytes: u64,
        slat_ns: u64,
        clat_ns: u64,
        lat_ns: u64,
    ) {
        let index = dir_index(direction);
        let dir = self.dirs[index].get_or_insert_with(Box::default);
        dir.ios += 1;
        dir.bytes += bytes;
        let measure = self.config.measure;
        if measure.slat {
            dir.slat.record(slat_ns);
        }
        if measure.clat {
            dir.clat.record(clat_ns);
            self.latency_buckets.record(clat_ns);
        }
        if measure.lat {
            dir.lat.record(lat_ns);
        }
        if self.config.track_intervals {
            let interval = self.interval[index].get_or_insert_with(Box::default);
            interval.ios += 1;
            interval.bytes += bytes;
            if measure.clat {
                interval.clat.record(clat_ns);
            }
            if measure.lat {
                interval.lat.record(lat_ns);
            }
        }
        if let Some(live) = &self.live {
            live.add(direction, bytes);
        }
    }

    /// [`record`](Self::record) from the I/O's timestamps.
    pub fn record_times(&mut self, direction: Direction, bytes: u64, times: &IoTimes) {
        let (slat_ns, clat_ns, lat_ns) = times.latencies();
        self.record(direction, bytes, slat_ns, clat_ns, lat_ns);
        self.note_completion(times.complete_ns);
    }

    /// A successful completion at `now_ns`: ends the gap since the one before.
    fn note_completion(&mut self, now_ns: u64) {
        if self.gaps_end_ns.is_some() {
            return;
        }
        let gap = now_ns.saturating_sub(self.last_completion_ns);
        self.longest_gap_ns = self.longest_gap_ns.max(gap);
        self.interval_gap_ns = self.interval_gap_ns.max(gap);
        self.last_completion_ns = self.last_completion_ns.max(now_ns);
    }

    /// The longest time the job went without a successful completion (from its start to
    /// the first, between two, or from the last to when the workload stopped): a stall,
    /// such as a lost path, is this number.
    pub fn longest_gap_ns(&self) -> u64 {
        self.longest_gap_ns
    }

    /// The workload stopped issuing at `now_ns` (its runtime is over): a gap still open
    /// ends here, and the quiet of a drain, a read-back or a flush after it is no stall.
    pub fn stop_gaps(&mut self, now_ns: u64) {
        if self.gaps_end_ns.is_none() {
            let open = now_ns.saturating_sub(self.last_completion_ns);
            self.longest_gap_ns = self.longest_gap_ns.max(open);
            self.interval_gap_ns = self.interval_gap_ns.max(open);
            self.gaps_end_ns = Some(now_ns);
        }
    }

    /// Counts one failed I/O by kind. Its latency and bytes are not counted; a short
    /// transfer also counts in the direction's `short_ios`.
    pub fn record_error(&mut self, direction: Direction, error: &IoError) {
        self.errors.record(error);
        if let IoError::Short { .. } = error {
            self.dirs[dir_index(direction)]
                .get_or_insert_with(Box::default)
                .short_ios += 1;
        }
    }

    /// One submit call of `ios` I/Os that left `depth_in_flight` I/Os in flight.
    pub fn record_submit(&mut self, ios: u32, depth_in_flight: u32) {
        self.depth.record_submit(ios, depth_in_flight);
    }

    /// One reap that returned `ios` completions.
    pub fn record_complete(&mut self, ios: u32) {
        self.depth.record_complete(ios);
    }

    /// Takes the bandwidth and IOPS samples whose period has passed since their last
    /// (call it often: after each reap); the two periods are apart, as fio's `bwavgtime`
    /// and `iopsavgtime`. fio's rule: rate = delta * 1000 / ms spent, bandwidth in KiB/s.
    /// A direction that has moved data before but none in the period (a stall) gets a
    /// sample of 0 for the logs, so they have one line per period; like fio, the
    /// bandwidth and IOPS statistics of the report count only periods with I/O.
    pub fn tick(&mut self, now_ns: u64) -> Option<RateSample> {
        let due = |last_ns: u64, period_ms: u64| {
            let spent_ms = now_ns.saturating_sub(last_ns) / 1_000_000;
            spent_ms + SAMPLE_SLACK_MS >= period_ms
        };
        let bw = due(self.last_sample_ns, self.config.sample_interval_ms);
        let iops = due(
            self.last_iops_sample_ns,
            self.config.iops_sample_interval_ms,
        );
        (bw || iops).then(|| self.sample(now_ns, true, bw, iops))
    }

    /// The samples of the periods the end of the job cut short, for the logs (so the last
    /// period has its line, as the last interval has its entry); `None` when the last
    /// samples were taken this millisecond. Not counted in the report's rate statistics,
    /// which, like fio's, hold whole periods.
    pub fn final_sample(&mut self, now_ns: u64) -> Option<RateSample> {
        let open = |last_ns: u64| now_ns.saturating_sub(last_ns) / 1_000_000 > 0;
        let bw = open(self.last_sample_ns);
        let iops = open(self.last_iops_sample_ns);
        (bw || iops).then(|| self.sample(now_ns, false, bw, iops))
    }

    fn sample(&mut self, now_ns: u64, whole_period: bool, bw: bool, iops: bool) -> RateSample {
        let bw_spent_ms = now_ns.saturating_sub(self.last_sample_ns) / 1_000_000;
        let iops_spent_ms = now_ns.saturating_sub(self.last_iops_sample_ns) / 1_000_000;
        let mut sample = RateSample {
            time_ms: now_ns.saturating_sub(self.start_ns) / 1_000_000,
            ..RateSample::default()
        };
        let counted = whole_period && self.config.measure.bandwidth;
        // fio reports 0 for a zero-length period.
        let rate = |delta: u64, spent_ms: u64| {
            delta
                .saturating_mul(1000)
                .checked_div(spent_ms)
                .unwrap_or(0)
        };
        for (index, slot) in self.dirs.iter_mut().enumerate() {
            let Some(dir) = slot.as_deref_mut() else {
                continue;
            };
            if bw {
                let bytes = dir.bytes - self.sampled_bytes[index];
                let kib = rate(bytes, bw_spent_ms) / 1024;
                if bytes > 0 && counted {
                    dir.bw_kib.add(kib);
                }
                sample.bw_kib[index] = Some(kib);
                self.sampled_bytes[index] = dir.bytes;
            }
            if iops {
                let ios = dir.ios - self.sampled_ios[index];
                let per_s = rate(ios, iops_spent_ms);
                if ios > 0 && counted {
                    dir.iops.add(per_s);
                }
                sample.iops[index] = Some(per_s);
                self.sampled_ios[index] = dir.ios;
            }
        }
        if bw {
            self.last_sample_ns = now_ns;
        }
        if iops {
            self.last_iops_sample_ns = now_ns;
        }
        sample
    }

    /// Ends the current interval at `now_ns` and hands it over; the next one starts now.
    /// Empty when `track_intervals` is off. A direction that has moved data before but
    /// none in the interval (a stall) is there with zeros, not left out.
    pub fn take_interval(&mut self, now_ns: u64) -> IntervalSnapshot {
        let mut snapshot = IntervalSnapshot::new(self.interval_start_ns, now_ns);
        snapshot.dirs = std::mem::take(&mut self.interval);
        // A gap still open at the interval's end counts in it too (so an interval inside
        // a stall shows it), and the next interval's gaps start from here.
        let until = self.gaps_end_ns.map_or(now_ns, |end| end.min(now_ns));
        let open = until.saturating_sub(self.last_completion_ns.max(self.interval_start_ns));
        snapshot.longest_gap_ns = std::mem::take(&mut self.interval_gap_ns).max(open);
        if self.config.track_intervals {
            for (taken, seen) in snapshot.dirs.iter_mut().zip(&self.dirs) {
                if taken.is_none() && seen.is_some() {
                    *taken = Some(Box::default());
                }
            }
        }
        self.interval_start_ns = now_ns;
        snapshot
    }

    /// Ends the run at `now_ns`: sets the job's runtime and that of each direction that
    /// moved data (fio's `runtime` per direction and `job_runtime`). As fio, a direction's
    /// runtime is its microseconds rounded up to whole milliseconds (a job shorter than
    /// one still has a rate: fio's "(1024KiB/1msec)"), the job's rounded down.
    pub fn finish(&mut self, now_ns: u64) {
        let elapsed_us = now_ns.saturating_sub(self.start_ns) / 1_000;
        self.job_runtime_ms = elapsed_us / 1_000;
        self.stop_gaps(now_ns);
        for dir in self.dirs.iter_mut().flatten() {
            if dir.ios > 0 {
                dir.runtime_ms = elapsed_us.div_ceil(1_000);
            }
        }
    }

    /// The CPU time, context switches and faults of the thread(s) that ran the job.
    pub fn set_usage(&mut self, usage: ResourceUsage) {
        self.usage = usage;
    }

    /// Adds another job's or shard's results, as fio's group reporting does
    /// (`sum_thread_stats`): counters, histograms and distributions add; latency moments
    /// merge exactly; bandwidth and IOPS samples add as concurrent rates; each direction's
    /// runtime is the longest; job runtime and CPU usage add up.
    pub fn merge(&mut self, other: &JobStats) {
        for (mine, theirs) in self.dirs.iter_mut().zip(other.dirs.iter()) {
            let Some(theirs) = theirs else { continue };
            let mine = mine.get_or_insert_with(Box::default);
            mine.ios += theirs.ios;
            mine.bytes += theirs.bytes;
            mine.short_ios += theirs.short_ios;
            mine.slat.merge(&theirs.slat);
            mine.clat.merge(&theirs.clat);
            mine.lat.merge(&theirs.lat);
            mine.bw_kib.merge_summed(&theirs.bw_kib);
            mine.iops.merge_summed(&theirs.iops);
            mine.runtime_ms = mine.runtime_ms.max(theirs.runtime_ms);
        }
        self.latency_buckets.merge(&other.latency_buckets);
        self.depth.merge(&other.depth);
        self.errors.merge(&other.errors);
        self.usage.add(&other.usage);
        self.job_runtime_ms += other.job_runtime_ms;
        self.longest_gap_ns = self.longest_gap_ns.max(other.longest_gap_ns);
    }

    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    pub fn config(&self) -> &StatsConfig {
        &self.config
    }

    /// A direction's results; `None` if it never saw an I/O or error.
    pub fn dir(&self, direction: Direction) -> Option<&DirStats> {
        self.dirs[dir_index(direction)].as_deref()
    }

    pub fn latency_buckets(&self) -> &LatencyBuckets {
        &self.latency_buckets
    }

    pub fn depth(&self) -> &DepthDistribution {
        &self.depth
    }

    pub fn errors(&self) -> &ErrorCounts {
        &self.errors
    }

    pub fn usage(&self) -> &ResourceUsage {
        &self.usage
    }

    /// Runtime of the job in ms (summed over jobs after a group merge, as fio does).
    pub fn job_runtime_ms(&self) -> u64 {
        self.job_runtime_ms
    }

    /// `cpu_ns` of CPU time as a percentage of the job's runtime (fio's `usr_cpu` and
    /// `sys_cpu`; 0 for a job that did not run).
    pub fn cpu_percent(&self, cpu_ns: u64) -> f64 {
        if self.job_runtime_ms == 0 {
            0.0
        } else {
            cpu_ns as f64 / 1e6 * 100.0 / self.job_runtime_ms as f64
        }
    }

    /// Successful I/Os over all directions.
    pub fn total_ios(&self) -> u64 {
        DIRECTIONS
            .iter()
            .filter_map(|&direction| self.dir(direction))
            .map(|dir| dir.ios)
            .sum()
    }

    /// CPU time of the job's threads per successful I/O, ns (`None` without I/O).
    pub fn cpu_ns_per_io(&self) -> Option<f64> {
        let ios = self.total_ios();
        (ios > 0).then(|| self.usage.cpu_ns() as f64 / ios as f64)
    }
}
