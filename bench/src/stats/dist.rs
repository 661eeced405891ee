//! fio's fixed-bucket distributions: the latency distribution ("lat (usec)   : 50=..."
//! lines; JSON `latency_ns`, `latency_us`, `latency_ms`) and the I/O depth distributions
//! ("IO depths", "submit", "complete"; JSON `iodepth_level`, `iodepth_submit`,
//! `iodepth_complete`).
//!
//! Bucket edges are fio's (`io_u_mark_lat_nsec/usec/msec`, `io_u_mark_depth`,
//! `io_u_mark_submit`, `io_u_mark_complete`), counted exactly here rather than derived from
//! the HdrHistogram, whose buckets do not fall on these edges. Percentages follow fio's
//! `stat_calc_lat` (a non-empty bucket shows at least 0.01%) and `stat_calc_dist` (at
//! least 0.1%).

/// Labels of the nanosecond and microsecond buckets: each holds values from the previous
/// label up to (not including) its own, the first from 0.
pub const LATENCY_LABELS_NS_US: [&str; 10] = [
    "2", "4", "10", "20", "50", "100", "250", "500", "750", "1000",
];
/// Labels of the millisecond buckets; the last holds 2000 ms and up.
pub const LATENCY_LABELS_MS: [&str; 12] = [
    "2", "4", "10", "20", "50", "100", "250", "500", "750", "1000", "2000", ">=2000",
];
/// Labels of the depth-level buckets (1, 2-3, 4-7, ... , 64 and up).
pub const DEPTH_LEVEL_LABELS: [&str; 7] = ["1", "2", "4", "8", "16", "32", ">=64"];
/// Labels of the submit/complete batch buckets (0, 1-4, 5-8, ... , 33-64, more).
pub const DEPTH_BATCH_LABELS: [&str; 7] = ["0", "4", "8", "16", "32", "64", ">=64"];

/// Completion latencies counted in fio's ns/us/ms buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyBuckets {
    pub ns: [u64; 10],
    pub us: [u64; 10],
    pub ms: [u64; 12],
}

/// Index of a value below 1000 in the 2/4/10/.../1000 ladder.
fn ladder_index(value: u64) -> usize {
    match value {
        0..=1 => 0,
        2..=3 => 1,
        4..=9 => 2,
        10..=19 => 3,
        20..=49 => 4,
        50..=99 => 5,
        100..=249 => 6,
        250..=499 => 7,
        500..=749 => 8,
        _ => 9,
    }
}

impl LatencyBuckets {
    /// Counts one completion latency.
    pub fn record(&mut self, latency_ns: u64) {
        if latency_ns < 1_000 {
            self.ns[ladder_index(latency_ns)] += 1;
        } else if latency_ns < 1_000_000 {
            self.us[ladder_index(latency_ns / 1_000)] += 1;
        } else {
            let ms = latency_ns / 1_000_000;
            let index = match ms {
                0..=999 => ladder_index(ms),
                1_000..=1_999 => 10,
                _ => 11,
            };
            self.ms[index] += 1;
        }
    }

    pub fn merge(&mut self, other: &LatencyBuckets) {
        add_arrays(&mut self.ns, &other.ns);
        add_arrays(&mut self.us, &other.us);
        add_arrays(&mut self.ms, &other.ms);
    }

    /// Percent of `total_ios` in each bucket, fio's way (a non-empty bucket shows >= 0.01).
    pub fn percentages(&self, total_ios: u64) -> ([f64; 10], [f64; 10], [f64; 12]) {
        (
            lat_percent(&self.ns, total_ios),
            lat_percent(&self.us, total_ios),
            lat_percent(&self.ms, total_ios),
        )
    }
}

fn lat_percent<const N: usize>(counts: &[u64; N], total: u64) -> [f64; N] {
    percent_with_floor(counts, total, 0.01)
}

/// `count / total * 100`, raised to `floor` for a bucket that is not empty.
fn percent_with_floor<const N: usize>(counts: &[u64; N], total: u64, floor: f64) -> [f64; N] {
    let mut out = [0.0; N];
    if total == 0 {
        return out;
    }
    for (slot, &count) in out.iter_mut().zip(counts.iter()) {
        let percent = count as f64 / total as f64 * 100.0;
        *slot = if count > 0 && percent < floor {
            floor
        } else {
            percent
        };
    }
    out
}

fn add_arrays<const N: usize>(into: &mut [u64; N], from: &[u64; N]) {
    for (a, b) in into.iter_mut().zip(from.iter()) {
        *a += *b;
    }
}

/// How deep the queue was and how I/Os were batched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepthDistribution {
    /// I/Os submitted while the queue held 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+ I/Os.
    pub level: [u64; 7],
    /// Submit calls that carried 0, 1-4, 5-8, 9-16, 17-32, 33-64, 65+ I/Os.
    pub submit: [u64; 7],
    /// Reaps that returned 0, 1-4, 5-8, 9-16, 17-32, 33-64, 65+ completions.
    pub complete: [u64; 7],
    pub total_submit: u64,
    pub total_complete: u64,
}

fn level_index(depth: u32) -> usize {
    match depth {
        0..=1 => 0,
        2..=3 => 1,
        4..=7 => 2,
        8..=15 => 3,
        16..=31 => 4,
        32..=63 => 5,
        _ => 6,
    }
}

fn batch_index(ios: u32) -> usize {
    match ios {
        0 => 0,
        1..=4 => 1,
        5..=8 => 2,
        9..=16 => 3,
        17..=32 => 4,
        33..=64 => 5,
        _ => 6,
    }
}

impl DepthDistribution {
    /// One submit call of `ios` I/Os that left `depth_in_flight` I/Os in flight.
    pub fn record_submit(&mut self, ios: u32, depth_in_flight: u32) {
        self.level[level_index(depth_in_flight)] += u64::from(ios);
        self.submit[batch_index(ios)] += 1;
        self.total_submit += 1;
    }

    /// One reap that returned `ios` completions.
    pub fn record_complete(&mut self, ios: u32) {
        self.complete[batch_index(ios)] += 1;
        self.total_complete += 1;
    }

    pub fn merge(&mut self, other: &DepthDistribution) {
        add_arrays(&mut self.level, &other.level);
        add_arrays(&mut self.submit, &other.submit);
        add_arrays(&mut self.complete, &other.complete);
        self.total_submit += other.total_submit;
        self.total_complete += other.total_complete;
    }

    /// Percentages of the level, submit and complete buckets, fio's way: levels over the
    /// I/Os issued (`total_ios`), batches over the calls (a non-empty bucket shows >= 0.1).
    pub fn percentages(&self, total_ios: u64) -> ([f64; 7], [f64; 7], [f64; 7]) {
        (
            percent_with_floor(&self.level, total_ios, 0.1),
            percent_with_floor(&self.submit, self.total_submit, 0.1),
            percent_with_floor(&self.complete, self.total_complete, 0.1),
        )
    }
}
