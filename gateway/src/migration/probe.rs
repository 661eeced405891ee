//! TEMPORARY (k19p measurements; removed before the branch ends): where a mirrored
//! write's time goes on a migration's worker, and how long the copy holds a stripe.
//! Log2 histograms in µs, on when `K19P_TRACE` names a file; written there (appended)
//! when a copy ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

const BUCKETS: usize = 24;

pub(crate) struct Histogram {
    name: &'static str,
    counts: [AtomicU64; BUCKETS],
}

impl Histogram {
    const fn new(name: &'static str) -> Histogram {
        Histogram {
            name,
            counts: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    pub(crate) fn since(&self, start: Option<Instant>) {
        if let Some(start) = start {
            let us = start.elapsed().as_micros() as u64;
            let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn line(&self) -> String {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            let want = (q * total as f64).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want.max(1) {
                    return if i == 0 { 0 } else { 1u64 << i };
                }
            }
            0
        };
        let max = counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(0, |i| if i == 0 { 0 } else { 1u64 << i });
        format!(
            "{:<14} n {:>7} p50<{:>6} p90<{:>6} p99<{:>6} p99.9<{:>6} max<{:>7} us | {:?}",
            self.name,
            total,
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            max,
            counts
        )
    }
}

pub(crate) static QUEUE_WAIT: Histogram = Histogram::new("queue wait");
pub(crate) static STRIPE_WAIT: Histogram = Histogram::new("stripe wait");
pub(crate) static SOURCE_LEG: Histogram = Histogram::new("source leg");
pub(crate) static DEST_LEG: Histogram = Histogram::new("dest leg");
pub(crate) static WORKER_TOTAL: Histogram = Histogram::new("worker total");
pub(crate) static COPY_LOCK_WAIT: Histogram = Histogram::new("copy lock wait");
pub(crate) static COPY_HOLD: Histogram = Histogram::new("copy hold");
pub(crate) static COPY_GAP: Histogram = Histogram::new("copy pace");

fn path() -> Option<&'static str> {
    static PATH: OnceLock<Option<String>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var("K19P_TRACE").ok())
        .as_deref()
}

/// Now, when probing.
pub(crate) fn now() -> Option<Instant> {
    path().map(|_| Instant::now())
}

/// Appends every histogram to the trace file (and zeroes them).
pub(crate) fn dump(what: &str) {
    let Some(path) = path() else {
        return;
    };
    let mut text = format!("== {what}\n");
    for h in [
        &QUEUE_WAIT,
        &STRIPE_WAIT,
        &SOURCE_LEG,
        &DEST_LEG,
        &WORKER_TOTAL,
        &COPY_LOCK_WAIT,
        &COPY_HOLD,
        &COPY_GAP,
    ] {
        text.push_str(&h.line());
        text.push('\n');
    }
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}
