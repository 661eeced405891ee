//! One latency series: exact moments beside an HdrHistogram.
//!
//! The moments (count, min, max, mean, standard deviation) are kept exactly as fio keeps
//! them (`add_stat_sample`: Welford's running mean and sum of squared deviations; merged
//! with Chan et al.'s parallel formula, fio's `__sum_stat`). The histogram is HdrHistogram
//! at 3 significant decimal digits from 1 ns to an hour (values above saturate into the top
//! bucket; min and max stay exact). Histograms of the same shape add exactly, so merged
//! percentiles are the percentiles of the combined data at 3 significant digits.
//!
//! Percentiles follow fio's rule (`calc_clat_percentiles`): percentile `p` is the first
//! bucket whose cumulative count reaches `p / 100 * N`. The value reported for a bucket is
//! the highest value equivalent to it (so a percentile is never understated), clamped to
//! the exact min and max.

use hdrhistogram::Histogram;

/// Significant decimal digits the histograms keep.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Largest latency the histograms resolve (one hour); larger values count in the top bucket.
pub const LATENCY_HIGHEST_NS: u64 = 3_600_000_000_000;

/// Count, min, max, mean and the sum of squared deviations of a series of integers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    count: u64,
    min: u64,
    max: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds one value (Welford's update).
    pub fn add(&mut self, value: u64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        let x = value as f64;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Merges another series as if its values had been added here (Chan et al.).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let count_a = self.count as f64;
        let count_b = other.count as f64;
        let total = count_a + count_b;
        let delta = other.mean - self.mean;
        self.mean = (self.mean * count_a + other.mean * count_b) / total;
        self.m2 += other.m2 + delta * delta * count_a * count_b / total;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Merges a concurrent rate series the way fio's group reporting does (`sum_stat` with
    /// `pure_sum`): bandwidth and IOPS samples of jobs that ran side by side add up, so min,
    /// max, mean, squared deviations and sample counts are summed.
    pub fn merge_summed(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.min += other.min;
        self.max += other.max;
        self.count += other.count;
        self.mean += other.mean;
        self.m2 += other.m2;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Count, min, max, mean and sum of squared deviations, for [`super::portable`].
    pub(super) fn raw(&self) -> (u64, u64, u64, f64, f64) {
        (self.count, self.min, self.max, self.mean, self.m2)
    }

    pub(super) fn from_raw(count: u64, min: u64, max: u64, mean: f64, m2: f64) -> Moments {
        Moments {
            count,
            min,
            max,
            mean,
            m2,
        }
    }

    /// Smallest value, 0 when empty.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Largest value, 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean, 0 when empty.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Sample standard deviation (`n - 1` in the denominator, as fio's `calc_lat`); 0 with
    /// fewer than two values.
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        (self.m2.max(0.0) / (self.count as f64 - 1.0)).sqrt()
    }
}

/// A latency series in nanoseconds: exact moments and a histogram.
#[derive(Clone)]
pub struct LatencyStat {
    moments: Moments,
    histogram: Histogram<u64>,
}

impl std::fmt::Debug for LatencyStat {
    // The histogram's 33,792 counters are no use in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyStat")
            .field("moments", &self.moments)
            .field("buckets_used", &self.histogram.distinct_values())
            .finish()
    }
}

impl Default for LatencyStat {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyStat {
    /// An empty series (one histogram of about 270 KiB).
    pub fn new() -> LatencyStat {
        let histogram =
            Histogram::new_with_bounds(1, LATENCY_HIGHEST_NS, LATENCY_SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid");
        LatencyStat {
            moments: Moments::default(),
            histogram,
        }
    }

    /// Adds one latency.
    pub fn record(&mut self, latency_ns: u64) {
        self.moments.add(latency_ns);
        self.histogram.saturating_record(latency_ns);
    }

    /// Adds all of `other` (exact for the histogram).
    pub fn merge(&mut self, other: &LatencyStat) {
        self.moments.merge(&other.moments);
        if self.histogram.add(&other.histogram).is_err() {
            // Same bounds on both sides, so this does not happen; if it ever did, fold the
            // other's buckets in one by one rather than lose them.
            for bucket in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
            }
        }
    }

    /// A series from its parts (a histogram decoded by [`super::hdr_v2`]).
    pub(super) fn from_parts(moments: Moments, histogram: Histogram<u64>) -> LatencyStat {
        LatencyStat { moments, histogram }
    }

    pub fn moments(&self) -> &Moments {
        &self.moments
    }

    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    pub fn count(&self) -> u64 {
        self.moments.count
    }

    /// The value at each percentile of `list` (0 < p <= 100; others are skipped), sorted by
    /// percentile as fio sorts its list. Empty when nothing was recorded.
    pub fn percentiles(&self, list: &[f64]) -> Vec<(f64, u64)> {
        let mut wanted: Vec<f64> = list
            .iter()
            .copied()
            .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0)
            .collect();
        wanted.sort_by(f64::total_cmp);
        let total = self.histogram.len();
        if total == 0 || wanted.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(wanted.len());
        let mut next = 0usize;
        let mut cumulative = 0u64;
        for bucket in self.histogram.iter_recorded() {
            cumulative += bucket.count_at_value();
            let value = self.report_value(bucket.value_iterated_to());
            while let Some(&p) = wanted.get(next) {
                if cumulative as f64 >= p / 100.0 * total as f64 {
                    out.push((p, value));
                    next += 1;
                } else {
                    break;
                }
            }
            if next == wanted.len() {
                break;
            }
        }
        // Rounding can leave 100.0 unreached by a hair: those are the maximum.
        for &p in wanted.get(next..).unwrap_or(&[]) {
            out.push((p, self.moments.max));
        }
        out
    }

    /// Non-empty histogram buckets as (highest value equivalent to the bucket, count),
    /// ascending: the exact-value "bins" of json+ output.
    pub fn bins(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.histogram
            .iter_recorded()
            .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
    }

    /// The number to report for a histogram bucket: its highest equivalent value within
    /// the exact range seen.
    fn report_value(&self, bucket_value: u64) -> u64 {
        let value = self.histogram.highest_equivalent(bucket_value);
        value.clamp(self.moments.min, self.moments.max.max(self.moments.min))
    }
}
