//! Statistics per logical unit: commands and bytes by kind, and the latency of each
//! command inside the gateway in an HdrHistogram: from the event loop turn that received
//! it to the end of the turn's service of its connection after its result came (when the
//! response is handed to the send). The clock is read once per connection serviced, not
//! per command: the turn's time is already at hand.
//!
//! Each event loop keeps its own table, written only by its thread (no lock, no shared
//! cache line on the I/O path); the control plane asks every loop for a copy between turns
//! and merges them (HdrHistogram merges are exact). Units are keyed by
//! [`super::LunInfo::unit_id`], so a LUN detached and attached again starts afresh.
//!
//! A bound volume (a subsidiary LU, `crate::conglomerate`) has no LUN number of its own
//! and no `LunInfo`: its entry is keyed by its `LogicalUnit` and holds a `Weak` to it.
//! Entries exist only for units that ran a command (65,536 bound volumes without I/O
//! cost no histogram), and one whose unit is gone (unbound, its last command done) is
//! dropped at the loop's next configuration change or statistics copy. While an entry
//! (or a copy of it) holds its `Weak`, the unit's allocation cannot be reused, so the
//! address is an exact key.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::disk::LogicalUnit;
use crate::reservation::UnitKeyHasher;

/// Latencies are kept in microseconds, from 1 µs to a minute, to 2 significant digits
/// (1%): about 27 KiB per unit and loop, made on the unit's first command.
const LATENCY_MAX_US: u64 = 60_000_000;
const LATENCY_DIGITS: u8 = 2;

/// What a command did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read,
    Write,
    Other,
}

/// The kind of a CDB: READ and WRITE (6, 10, 12, 16) and WRITE AND VERIFY by opcode.
pub(crate) fn op_kind(cdb: &[u8]) -> OpKind {
    match cdb.first() {
        Some(0x08 | 0x28 | 0xa8 | 0x88) => OpKind::Read,
        Some(0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e) => OpKind::Write,
        _ => OpKind::Other,
    }
}

/// The unit a command ran on, as the statistics key it.
#[derive(Debug, Clone)]
pub(crate) enum StatsUnit {
    /// A LUN of the target's map: its [`super::LunInfo::unit_id`].
    Attached(u64),
    /// A bound volume, reached through an endpoint.
    Bound(Arc<LogicalUnit>),
}

/// One finished command; its latency is taken when the loop counts it.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) unit: StatsUnit,
    pub(crate) kind: OpKind,
    pub(crate) bytes: u64,
    pub(crate) started: Instant,
}

/// The figures of one unit.
#[derive(Debug, Clone)]
pub struct LunCounters {
    pub reads: u64,
    pub writes: u64,
    pub others: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Microseconds.
    pub latency_us: Histogram<u64>,
}

impl LunCounters {
    pub fn new() -> LunCounters {
        LunCounters {
            reads: 0,
            writes: 0,
            others: 0,
            read_bytes: 0,
            write_bytes: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }

    fn record(&mut self, sample: &Sample, latency: Duration) {
        self.count(sample);
        // In bounds by the clamp, so recording cannot fail.
        let _ = self.latency_us.record(latency_us(latency));
    }

    /// The command's kind and bytes; its latency is recorded apart.
    fn count(&mut self, sample: &Sample) {
        match sample.kind {
            OpKind::Read => {
                self.reads += 1;
                self.read_bytes += sample.bytes;
            }
            OpKind::Write => {
                self.writes += 1;
                self.write_bytes += sample.bytes;
            }
            OpKind::Other => self.others += 1,
        }
    }

    /// Adds `other`'s figures (another loop's, for the same unit).
    pub fn merge(&mut self, other: &LunCounters) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.others += other.others;
        self.read_bytes += other.read_bytes;
        self.write_bytes += other.write_bytes;
        // Same bounds on both sides: cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// The figures since `earlier` (a copy of the same unit's figures taken before).
    pub fn since(&self, earlier: &LunCounters) -> LunCounters {
        let mut latency_us = self.latency_us.clone();
        let _ = latency_us.subtract(&earlier.latency_us);
        LunCounters {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
            others: self.others.saturating_sub(earlier.others),
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
            latency_us,
        }
    }

    pub fn commands(&self) -> u64 {
        self.reads + self.writes + self.others
    }
}

impl Default for LunCounters {
    fn default() -> LunCounters {
        LunCounters::new()
    }
}

/// A latency in the histogram's unit and bounds.
fn latency_us(latency: Duration) -> u64 {
    (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US)
}

/// How many latencies a bound volume's entry holds before they go into its histogram.
const PENDING_LATENCIES: usize = 15;

/// The figures of one bound volume in one loop.
///
/// Its latest latencies wait in the entry (one cache line) and go into the histogram
/// [`PENDING_LATENCIES`] at a time, or when the figures are copied: with a thousand
/// volumes taking turns, recording each command touched two or three cold lines of a
/// 27 KiB histogram (`record_n_inner` was 6% of the loop's time in
/// `scripts/profile-endpoints.sh`), while a batch of latencies mostly falls into a few
/// neighbouring buckets.
#[derive(Debug)]
struct BoundEntry {
    unit: Weak<LogicalUnit>,
    counters: LunCounters,
    pending: PendingLatencies,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct PendingLatencies {
    len: u32,
    us: [u32; PENDING_LATENCIES],
}

impl BoundEntry {
    fn record(&mut self, sample: &Sample, latency: Duration) {
        self.counters.count(sample);
        let pending = &mut self.pending;
        // At most a minute (the clamp), so it fits.
        pending.us[pending.len as usize] = latency_us(latency) as u32;
        pending.len += 1;
        if pending.len as usize == PENDING_LATENCIES {
            self.fold();
        }
    }

    /// Records the pending latencies into the histogram.
    fn fold(&mut self) {
        let pending = &mut self.pending;
        for &us in &pending.us[..pending.len as usize] {
            // In bounds (clamped when stored), so recording cannot fail.
            let _ = self.counters.latency_us.record(u64::from(us));
        }
        pending.len = 0;
    }
}

/// Integer keys (unit ids, addresses) hashed with one multiplication, not SipHash: a
/// lookup per command, and the keys are ours, not a peer's.
type IntegerKeyed<K, V> = HashMap<K, V, BuildHasherDefault<UnitKeyHasher>>;

/// One event loop's table.
#[derive(Debug, Default)]
pub(crate) struct LoopLunStats {
    by_unit: IntegerKeyed<u64, LunCounters>,
    /// Units in the table after the last [`LoopLunStats::retain`].
    kept_at_last_retain: usize,
    /// By the unit's address (see the module documentation).
    bound: IntegerKeyed<usize, BoundEntry>,
}

/// A copy of one loop's figures, or their sum over the loops.
#[derive(Debug, Default, Clone)]
pub struct LunFigures {
    /// By [`super::LunInfo::unit_id`].
    pub attached: HashMap<u64, LunCounters>,
    /// Bound volumes, by the unit's address ([`LunFigures::bound_figures`] finds one).
    bound: HashMap<usize, (Weak<LogicalUnit>, LunCounters)>,
}

impl LunFigures {
    /// The figures of a bound volume's unit, if it ran a command.
    pub fn bound_figures(&self, unit: &Arc<LogicalUnit>) -> Option<&LunCounters> {
        self.bound
            .get(&(Arc::as_ptr(unit) as usize))
            .map(|(_, counters)| counters)
    }

    /// How many bound volumes have figures.
    pub fn bound_len(&self) -> usize {
        self.bound.len()
    }

    /// Adds another loop's copy.
    pub fn merge(&mut self, other: LunFigures) {
        for (unit, counters) in other.attached {
            self.attached.entry(unit).or_default().merge(&counters);
        }
        for (key, (unit, counters)) in other.bound {
            match self.bound.get_mut(&key) {
                Some((_, mine)) => mine.merge(&counters),
                None => {
                    self.bound.insert(key, (unit, counters));
                }
            }
        }
    }

    /// The figures gathered since `earlier` (a copy taken before); a unit `earlier`
    /// lacks counts whole.
    pub fn since(&self, earlier: &LunFigures) -> LunFigures {
        let attached = self
            .attached
            .iter()
            .map(|(unit, now)| {
                let delta = match earlier.attached.get(unit) {
                    Some(before) => now.since(before),
                    None => now.clone(),
                };
                (*unit, delta)
            })
            .collect();
        let bound = self
            .bound
            .iter()
            .map(|(key, (unit, now))| {
                let delta = match earlier.bound.get(key) {
                    Some((_, before)) => now.since(before),
                    None => now.clone(),
                };
                (*key, (unit.clone(), delta))
            })
            .collect();
        LunFigures { attached, bound }
    }
}

impl LoopLunStats {
    /// Counts `sample`, finished at `end`.
    pub(crate) fn record(&mut self, sample: &Sample, end: Instant) {
        let latency = end.saturating_duration_since(sample.started);
        match &sample.unit {
            StatsUnit::Attached(unit_id) => self
                .by_unit
                .entry(*unit_id)
                .or_default()
                .record(sample, latency),
            StatsUnit::Bound(unit) => self
                .bound
                .entry(Arc::as_ptr(unit) as usize)
                .or_insert_with(|| BoundEntry {
                    unit: Arc::downgrade(unit),
                    counters: LunCounters::new(),
                    pending: PendingLatencies::default(),
                })
                .record(sample, latency),
        }
    }

    /// Drops the figures of units no longer attached, and of bound volumes gone.
    pub(crate) fn retain(&mut self, attached: impl Fn(u64) -> bool) {
        self.by_unit.retain(|unit, _| attached(*unit));
        self.kept_at_last_retain = self.by_unit.len();
        self.drop_unbound();
    }

    /// Whether the table grew enough since the last [`LoopLunStats::retain`] to look for
    /// detached units again. A look walks the whole configuration, too much for every
    /// published change (thousands of targets, thousands of changes per second); figures
    /// of a detached unit are only memory (unit ids are never reused), at most about as
    /// many as the units attached. Bound volumes gone are dropped at each copy anyway.
    pub(crate) fn retain_due(&self) -> bool {
        self.by_unit.len() > 2 * self.kept_at_last_retain + 64
    }

    /// Drops the figures of bound volumes whose unit is gone (unbound, last command done).
    fn drop_unbound(&mut self) {
        self.bound.retain(|_, entry| entry.unit.strong_count() > 0);
    }

    /// A copy for the control plane; bound volumes gone are dropped first.
    pub(crate) fn copy(&mut self) -> LunFigures {
        self.drop_unbound();
        for entry in self.bound.values_mut() {
            entry.fold();
        }
        LunFigures {
            attached: self
                .by_unit
                .iter()
                .map(|(unit, counters)| (*unit, counters.clone()))
                .collect(),
            bound: self
                .bound
                .iter()
                .map(|(key, entry)| (*key, (entry.unit.clone(), entry.counters.clone())))
                .collect(),
        }
    }

    /// How many entries the table holds (attached LUNs, bound volumes).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.by_unit.len(), self.bound.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample and the end that gives it `us` of latency.
    fn sample(unit_id: u64, kind: OpKind, us: u64) -> (Sample, Instant) {
        sample_of(StatsUnit::Attached(unit_id), kind, us)
    }

    fn sample_of(unit: StatsUnit, kind: OpKind, us: u64) -> (Sample, Instant) {
        let started = Instant::now();
        let sample = Sample {
            unit,
            kind,
            bytes: 4096,
            started,
        };
        (sample, started + Duration::from_micros(us))
    }

    #[test]
    fn loops_merge_into_exact_counts_and_percentiles() {
        let mut a = LoopLunStats::default();
        let mut b = LoopLunStats::default();
        for us in 1..=50 {
            let (s, end) = sample(7, OpKind::Read, us);
            a.record(&s, end);
        }
        for us in 51..=100 {
            let (s, end) = sample(7, OpKind::Write, us);
            b.record(&s, end);
        }
        let (s, end) = sample(8, OpKind::Other, 5);
        b.record(&s, end);
        let mut all = a.copy();
        all.merge(b.copy());
        let merged = all.attached[&7].clone();
        assert_eq!((merged.reads, merged.writes, merged.others), (50, 50, 0));
        assert_eq!(merged.read_bytes, 50 * 4096);
        assert_eq!(merged.latency_us.len(), 100);
        let p50 = merged.latency_us.value_at_quantile(0.5);
        assert!((49..=51).contains(&p50), "p50 {p50}");
        let later = {
            let mut c = merged.clone();
            let (s, _) = sample(7, OpKind::Read, 1000);
            c.record(&s, Duration::from_micros(1000));
            c
        };
        let delta = later.since(&merged);
        assert_eq!((delta.reads, delta.latency_us.len()), (1, 1));
        b.retain(|unit| unit != 8);
        assert_eq!(b.copy().attached.len(), 1);
    }

    fn unit() -> Arc<LogicalUnit> {
        Arc::new(LogicalUnit::new(
            Box::new(crate::backend::NullBackend::new(1 << 20)),
            crate::disk::LuConfig::default(),
        ))
    }

    #[test]
    fn a_bound_volume_is_counted_by_its_unit_and_dropped_once_the_unit_is_gone() {
        let (x, y) = (unit(), unit());
        let mut a = LoopLunStats::default();
        let mut b = LoopLunStats::default();
        for us in 1..=10 {
            let (s, end) = sample_of(StatsUnit::Bound(Arc::clone(&x)), OpKind::Read, us);
            a.record(&s, end);
            let (s, end) = sample_of(StatsUnit::Bound(Arc::clone(&x)), OpKind::Write, us);
            b.record(&s, end);
        }
        let (s, end) = sample_of(StatsUnit::Bound(Arc::clone(&y)), OpKind::Read, 3);
        a.record(&s, end);
        drop(s);
        let mut all = a.copy();
        all.merge(b.copy());
        let fx = all.bound_figures(&x).expect("x ran commands");
        assert_eq!((fx.reads, fx.writes, fx.latency_us.len()), (10, 10, 20));
        assert_eq!(all.bound_figures(&y).map(|c| c.reads), Some(1));
        assert!(all.bound_figures(&unit()).is_none(), "no I/O, no entry");
        let earlier = all.clone();
        let (s, end) = sample_of(StatsUnit::Bound(Arc::clone(&x)), OpKind::Read, 5);
        a.record(&s, end);
        drop(s);
        let delta = a.copy().since(&earlier);
        assert_eq!(delta.bound_figures(&x).map(|c| c.reads), Some(1));
        // Unbound: the table held no strong reference, so the unit is gone and its
        // histogram goes at the next copy or configuration change.
        drop((all, earlier, delta));
        drop(y);
        assert_eq!(a.len(), (0, 2));
        a.retain(|_| true);
        assert_eq!(a.len(), (0, 1));
        drop(x);
        assert_eq!(a.copy().bound_len(), 0);
        assert_eq!(b.copy().bound_len(), 0);
    }

    #[test]
    fn a_bound_volumes_latencies_wait_in_its_entry_and_every_one_reaches_the_histogram() {
        let x = unit();
        let mut stats = LoopLunStats::default();
        let total = 2 * PENDING_LATENCIES as u64 + 1;
        for us in 1..=total {
            let (s, end) = sample_of(StatsUnit::Bound(Arc::clone(&x)), OpKind::Read, us * 10);
            stats.record(&s, end);
        }
        // Two batches went in; the last latency still waits in the entry.
        let entry = stats.bound.values().next().unwrap();
        assert_eq!(
            entry.counters.latency_us.len(),
            2 * PENDING_LATENCIES as u64
        );
        assert_eq!(entry.counters.reads, total, "counts are not deferred");
        // A copy folds it in, once.
        for _ in 0..2 {
            let figures = stats.copy();
            let counted = figures.bound_figures(&x).unwrap();
            assert_eq!(counted.latency_us.len(), total);
            assert_eq!(counted.reads, total);
            let max = counted.latency_us.max();
            assert!(counted.latency_us.equivalent(max, total * 10), "max {max}");
        }
    }

    #[test]
    fn opcodes_map_to_their_kind() {
        assert_eq!(op_kind(&[0x88]), OpKind::Read);
        assert_eq!(op_kind(&[0x2a]), OpKind::Write);
        assert_eq!(op_kind(&[0x00]), OpKind::Other);
        assert_eq!(op_kind(&[]), OpKind::Other);
    }
}
