//! fio's steady-state detection (`steadystate`/`ss`, `ss_dur`, `ss_ramp`, `ss_interval`;
//! fio's steadystate.c): every check interval the job's IOPS, bandwidth and mean
//! completion latency over that interval go into a window of `ss_dur / ss_interval`
//! samples; once the window is full, the criterion (the largest deviation from the
//! window's mean, or the least-squares slope, either absolute or in percent of the mean)
//! is checked against the limit, and the job ends when it is below. Data are collected
//! from one interval after `ss_ramp`. Per job: fio's pooling of a reporting group's jobs
//! under `group_reporting` is not done here.

use std::collections::VecDeque;
use std::time::Duration;

use crate::job::spec::{SteadyStateMetric, SteadyStateSpec};
use crate::output::SteadyStateReport;

#[derive(Debug, Clone)]
pub struct SteadyState {
    spec: SteadyStateSpec,
    duration: Duration,
    ramp: Duration,
    interval: Duration,
    /// Samples in the window (at least 1).
    window: usize,
    iops: VecDeque<u64>,
    bw: VecDeque<u64>,
    lat: VecDeque<u64>,
    /// Totals at the last check: I/Os, bytes, completion latency sum (ns) and count.
    prev: (u64, u64, f64, u64),
    next_check: Duration,
    attained: bool,
    criterion: f64,
    deviation: f64,
    slope: f64,
}

impl SteadyState {
    pub fn new(
        spec: SteadyStateSpec,
        duration: Duration,
        ramp: Duration,
        interval: Duration,
    ) -> SteadyState {
        let interval = interval.max(Duration::from_secs(1));
        let window = ((duration.as_millis() / interval.as_millis()) as usize).max(1);
        SteadyState {
            spec,
            duration,
            ramp,
            interval,
            window,
            iops: VecDeque::with_capacity(window),
            bw: VecDeque::with_capacity(window),
            lat: VecDeque::with_capacity(window),
            prev: (0, 0, 0.0, 0),
            next_check: interval,
            attained: false,
            criterion: 0.0,
            deviation: 0.0,
            slope: 0.0,
        }
    }

    /// When the next check is due (time since the job started).
    pub fn due(&self, now: Duration) -> bool {
        !self.attained && now >= self.next_check
    }

    /// One check at `now` with the job's totals; true when steady state is attained now.
    pub fn check(
        &mut self,
        now: Duration,
        ios: u64,
        bytes: u64,
        lat_sum: f64,
        lat_count: u64,
    ) -> bool {
        self.next_check = now + self.interval;
        let (prev_ios, prev_bytes, prev_lat_sum, prev_lat_count) = self.prev;
        self.prev = (ios, bytes, lat_sum, lat_count);
        // Data count from one interval after the ramp (fio: FIO_SS_RAMP_OVER). Totals
        // that went down were reset (the end of ramp_time): no sample from them.
        if now < self.ramp + self.interval || ios < prev_ios || bytes < prev_bytes {
            return false;
        }
        let per_s =
            |delta: u64| (u128::from(delta) * 1000 / self.interval.as_millis().max(1)) as u64;
        let lat_samples = lat_count.saturating_sub(prev_lat_count);
        let lat = if lat_samples > 0 {
            ((lat_sum - prev_lat_sum) / lat_samples as f64).max(0.0) as u64
        } else {
            0
        };
        for (window, value) in [
            (&mut self.iops, per_s(ios - prev_ios)),
            (&mut self.bw, per_s(bytes - prev_bytes)),
            (&mut self.lat, lat),
        ] {
            if window.len() == self.window {
                window.pop_front();
            }
            window.push_back(value);
        }
        if self.iops.len() < self.window {
            return false;
        }
        let data: Vec<f64> = match self.spec.metric {
            SteadyStateMetric::Iops => &self.iops,
            SteadyStateMetric::Bw => &self.bw,
            SteadyStateMetric::Lat => &self.lat,
        }
        .iter()
        .map(|&v| v as f64)
        .collect();
        let n = data.len() as f64;
        let mean = data.iter().sum::<f64>() / n;
        if self.spec.slope {
            let x_mean = (n - 1.0) / 2.0;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (x, y) in data.iter().enumerate() {
                sxy += (x as f64 - x_mean) * (y - mean);
                sxx += (x as f64 - x_mean) * (x as f64 - x_mean);
            }
            self.slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            self.criterion = if self.spec.percent {
                if mean > 0.0 {
                    100.0 * self.slope / mean
                } else {
                    0.0
                }
            } else {
                self.slope
            };
            self.attained = self.criterion.abs() < self.spec.limit;
        } else {
            self.deviation = data.iter().map(|y| (y - mean).abs()).fold(0.0, f64::max);
            self.criterion = if self.spec.percent {
                if mean > 0.0 {
                    100.0 * self.deviation / mean
                } else {
                    f64::INFINITY
                }
            } else {
                self.deviation
            };
            self.attained = self.criterion < self.spec.limit;
        }
        self.attained
    }

    /// fio's JSON `steadystate` object, as data.
    pub fn report(&self) -> SteadyStateReport {
        let padded = |window: &VecDeque<u64>| {
            let mut values: Vec<u64> = window.iter().copied().collect();
            values.resize(self.window, 0);
            values
        };
        let mean = |values: &[u64]| values.iter().sum::<u64>() / self.window as u64;
        let (iops, bw, lat) = (padded(&self.iops), padded(&self.bw), padded(&self.lat));
        let percent = if self.spec.percent { "%" } else { "" };
        SteadyStateReport {
            ss: format!("{}:{:.6}{percent}", self.spec.name(), self.spec.limit),
            duration_s: self.duration.as_secs(),
            attained: self.attained,
            criterion: format!(
                "{:.6}{percent}",
                if self.criterion.is_finite() {
                    self.criterion
                } else {
                    0.0
                }
            ),
            max_deviation: self.deviation,
            slope: self.slope,
            bw_mean: mean(&bw),
            iops_mean: mean(&iops),
            lat_mean: (self.spec.metric == SteadyStateMetric::Lat).then(|| mean(&lat)),
            lat_ns: lat,
            iops,
            bw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(metric: SteadyStateMetric, slope: bool, limit: f64) -> SteadyStateSpec {
        SteadyStateSpec {
            metric,
            slope,
            limit,
            percent: true,
        }
    }

    #[test]
    fn a_flat_rate_is_steady_and_a_ramp_is_not() {
        let s = Duration::from_secs(1);
        let mut flat = SteadyState::new(
            spec(SteadyStateMetric::Iops, false, 5.0),
            3 * s,
            Duration::ZERO,
            s,
        );
        let mut ios = 0;
        let mut attained_at = None;
        for t in 1..=6u64 {
            ios += 1000 + (t % 2) * 10;
            if flat.check(Duration::from_secs(t), ios, ios * 4096, 0.0, 0) {
                attained_at = Some(t);
                break;
            }
        }
        // Three samples are needed: the window is full at 3 s.
        assert_eq!(attained_at, Some(3));
        let report = flat.report();
        assert!(report.attained);
        assert_eq!(report.iops.len(), 3);
        assert_eq!(report.ss, "iops:5.000000%");

        let mut ramp = SteadyState::new(
            spec(SteadyStateMetric::Bw, true, 1.0),
            3 * s,
            Duration::ZERO,
            s,
        );
        let mut bytes = 0;
        for t in 1..=6u64 {
            bytes += t * 1_000_000;
            assert!(
                !ramp.check(Duration::from_secs(t), t, bytes, 0.0, 0),
                "a growing rate at {t} s"
            );
        }
        assert!(ramp.report().slope > 0.0);
    }

    #[test]
    fn nothing_counts_before_the_ramp_and_one_interval() {
        let s = Duration::from_secs(1);
        let mut ss = SteadyState::new(spec(SteadyStateMetric::Iops, false, 50.0), s, 2 * s, s);
        assert!(!ss.check(s, 100, 100, 0.0, 0));
        assert!(!ss.check(2 * s, 200, 200, 0.0, 0));
        assert!(ss.check(3 * s, 300, 300, 0.0, 0));
    }
}
