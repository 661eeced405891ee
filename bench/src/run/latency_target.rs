//! fio's latency target mode (`latency_target`, `latency_window`, `latency_percentile`,
//! `latency_run`; fio's io_u.c `lat_target_*`): the job starts at depth 1 and, every
//! `latency_window`, doubles its depth (or bisects towards the last failing one) when at
//! least `latency_percentile` of the window's I/Os completed within `latency_target`, and
//! bisects down when not; at 100% one late I/O is a failure at once, and a failure at depth
//! 1 ends the job with ETIMEDOUT. When the depth stops changing (and `latency_run` is off)
//! the job drains, resets its statistics and runs one more window at that depth, which is
//! what it reports; its `latency_depth` is the depth found. Pure control; the runner acts.

use std::time::Duration;

/// What the runner does after a completion or a window check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Let the I/O in flight complete (the depth went down).
    Quiesce,
    /// The depth is found: drain, reset the statistics, run one final window.
    FinalWindow,
    /// The final window is over: the job is done.
    Done,
    /// Late at depth 1: the job fails with ETIMEDOUT (fio's lat_fatal).
    Fatal,
}

#[derive(Debug, Clone)]
pub struct LatencyTarget {
    target_ns: u64,
    window: Duration,
    percentile: f64,
    run: bool,
    iodepth: u32,
    qd: u32,
    low: u32,
    high: u32,
    stable: u32,
    window_start: Duration,
    /// Completions since the window began, and the late ones among them.
    ios: u64,
    failed: u64,
    end_run: bool,
}

impl LatencyTarget {
    pub fn new(
        target: Duration,
        window: Duration,
        percentile: f64,
        run: bool,
        iodepth: u32,
    ) -> Self {
        let iodepth = iodepth.max(1);
        LatencyTarget {
            target_ns: target.as_nanos() as u64,
            window,
            percentile,
            run,
            iodepth,
            qd: 1,
            low: 1,
            high: iodepth,
            stable: 0,
            window_start: Duration::ZERO,
            ios: 0,
            failed: 0,
            end_run: false,
        }
    }

    /// The depth the job may use now.
    pub fn depth(&self) -> u32 {
        self.qd
    }

    pub fn target_ns(&self) -> u64 {
        self.target_ns
    }

    /// One completion with total latency `lat_ns` (fio's io_completed).
    pub fn on_completion(&mut self, lat_ns: u64, now: Duration) -> Step {
        self.ios += 1;
        if lat_ns <= self.target_ns {
            return Step::Continue;
        }
        if self.percentile < 100.0 {
            self.failed += 1;
            return Step::Continue;
        }
        if self.qd == 1 {
            return Step::Fatal;
        }
        self.ramp_down(now);
        Step::Quiesce
    }

    fn new_cycle(&mut self, now: Duration) {
        self.window_start = now;
        self.ios = 0;
        self.failed = 0;
    }

    fn ramp_down(&mut self, now: Duration) {
        self.high = self.qd;
        if self.qd == self.low {
            self.low = self.low.saturating_sub(1).max(1);
        }
        self.qd = ((self.qd + self.low) / 2).max(1);
        self.stable = 0;
        self.new_cycle(now);
    }

    /// fio's lat_target_check, called as the job goes.
    pub fn check(&mut self, now: Duration) -> Step {
        if now.saturating_sub(self.window_start) < self.window {
            return Step::Continue;
        }
        let ios = self.ios;
        if ios == 0 {
            return Step::Continue;
        }
        let success = 100.0 * (ios - self.failed.min(ios)) as f64 / ios as f64;
        if success < self.percentile {
            if self.qd == 1 {
                self.new_cycle(now);
                return Step::Continue;
            }
            self.ramp_down(now);
            return Step::Quiesce;
        }
        // lat_target_success
        let before = self.qd;
        self.low = self.qd;
        if self.qd + 1 == self.high {
            self.stable += 1;
            if self.stable >= 3 {
                self.high += 1;
                self.stable = 0;
            }
        }
        if self.high != self.iodepth {
            self.qd = (self.qd + self.high) / 2;
        } else {
            self.qd *= 2;
        }
        self.qd = self.qd.min(self.iodepth).max(1);
        let mut step = Step::Continue;
        if !self.run && self.qd == before {
            if self.end_run {
                step = Step::Done;
            } else {
                self.end_run = true;
                step = Step::FinalWindow;
            }
        }
        self.new_cycle(now);
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fast_ios_double_the_depth_then_run_a_final_window() {
        let mut lt = LatencyTarget::new(10 * MS, 100 * MS, 100.0, false, 8);
        let mut steps = Vec::new();
        for w in 1..=6u32 {
            lt.on_completion(1000, MS * (100 * w - 50));
            steps.push((lt.check(MS * (100 * w)), lt.depth()));
        }
        assert_eq!(
            steps,
            [
                (Step::Continue, 2),
                (Step::Continue, 4),
                (Step::Continue, 8),
                (Step::FinalWindow, 8),
                (Step::Done, 8),
                (Step::Done, 8),
            ]
        );
    }

    #[test]
    fn a_late_io_halves_the_depth_and_is_fatal_at_one() {
        let mut lt = LatencyTarget::new(MS, 100 * MS, 100.0, true, 8);
        lt.on_completion(1000, 50 * MS);
        lt.check(100 * MS);
        lt.on_completion(1000, 150 * MS);
        lt.check(200 * MS);
        assert_eq!(lt.depth(), 4);
        // Bisecting down between the last good depth and the failing one, as fio.
        let mut depths = Vec::new();
        for i in 0..3u32 {
            assert_eq!(lt.on_completion(2_000_000, (210 + i) * MS), Step::Quiesce);
            depths.push(lt.depth());
        }
        assert_eq!(depths, [3, 2, 1]);
        assert_eq!(lt.on_completion(2_000_000, 230 * MS), Step::Fatal);
    }
}
