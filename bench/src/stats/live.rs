//! Running totals a status thread can read while the job threads record: one relaxed
//! atomic add per I/O, no lock. The status line differences two readings to get rates.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::io::Direction;

use super::dir_index;

/// I/Os and bytes done so far, per direction (read, write, trim).
#[derive(Debug, Default)]
pub struct LiveCounters {
    ios: [AtomicU64; 3],
    bytes: [AtomicU64; 3],
}

/// A reading of [`LiveCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTotals {
    pub ios: [u64; 3],
    pub bytes: [u64; 3],
}

impl LiveCounters {
    pub fn new() -> LiveCounters {
        LiveCounters::default()
    }

    pub fn add(&self, direction: Direction, bytes: u64) {
        let index = dir_index(direction);
        self.ios[index].fetch_add(1, Ordering::Relaxed);
        self.bytes[index].fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn read(&self) -> LiveTotals {
        let mut totals = LiveTotals::default();
        for index in 0..3 {
            totals.ios[index] = self.ios[index].load(Ordering::Relaxed);
            totals.bytes[index] = self.bytes[index].load(Ordering::Relaxed);
        }
        totals
    }
}

impl LiveTotals {
    /// Adds another job's totals (the status line sums all jobs).
    pub fn add(&mut self, other: &LiveTotals) {
        for index in 0..3 {
            self.ios[index] += other.ios[index];
            self.bytes[index] += other.bytes[index];
        }
    }

    /// Bytes per second and I/Os per second per direction from `earlier` to this reading,
    /// `elapsed_ms` apart (fio's `calc_rate`/`calc_iops`, in whole units).
    pub fn rates_since(&self, earlier: &LiveTotals, elapsed_ms: u64) -> ([u64; 3], [u64; 3]) {
        let mut bytes_per_s = [0; 3];
        let mut ios_per_s = [0; 3];
        if elapsed_ms == 0 {
            return (bytes_per_s, ios_per_s);
        }
        for index in 0..3 {
            let bytes = self.bytes[index].saturating_sub(earlier.bytes[index]);
            let ios = self.ios[index].saturating_sub(earlier.ios[index]);
            bytes_per_s[index] = bytes.saturating_mul(1000) / elapsed_ms;
            ios_per_s[index] = ios.saturating_mul(1000) / elapsed_ms;
        }
        (bytes_per_s, ios_per_s)
    }
}
