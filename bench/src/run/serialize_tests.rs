//! fio's `serialize_overlap` in the runner: with it, no two I/Os that share a byte are
//! in the engine at once; without it, a random writer over a few blocks at depth 16 has
//! such pairs.

use std::sync::Arc;
use std::time::Duration;

use super::job::{run_job, JobSetup};
use crate::engine::{Engine, EngineCounters, EngineError, NullEngine, NullOptions};
use crate::io::{IoDone, IoUnit, RwKind};
use crate::workload::{Workload, WorkloadConfig};

/// The null engine, counting units queued while an overlapping one was still held (from
/// its queue to its reap).
struct OverlapWatch {
    inner: NullEngine,
    held: Vec<(u64, u64)>,
    overlaps: Arc<std::sync::atomic::AtomicU64>,
}

impl Engine for OverlapWatch {
    fn name(&self) -> &'static str {
        "overlap-watch"
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn block_size_bytes(&self) -> u32 {
        self.inner.block_size_bytes()
    }
    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    fn queue(&mut self, unit: IoUnit) -> Result<(), IoUnit> {
        let (start, end) = (unit.offset, unit.offset + u64::from(unit.len));
        let overlapping = self.held.iter().any(|&(s, e)| s < end && start < e);
        self.inner.queue(unit)?;
        if overlapping {
            self.overlaps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.held.push((start, end));
        Ok(())
    }
    fn submit(&mut self) -> Result<usize, EngineError> {
        self.inner.submit()
    }
    fn reap(
        &mut self,
        min: usize,
        timeout: Duration,
        out: &mut Vec<IoDone>,
    ) -> Result<usize, EngineError> {
        let from = out.len();
        let reaped = self.inner.reap(min, timeout, out)?;
        for done in &out[from..] {
            let key = (
                done.unit.offset,
                done.unit.offset + u64::from(done.unit.len),
            );
            if let Some(at) = self.held.iter().position(|held| *held == key) {
                self.held.swap_remove(at);
            }
        }
        Ok(reaped)
    }
    fn counters(&self) -> EngineCounters {
        self.inner.counters()
    }
    fn close(self: Box<Self>) -> Result<EngineCounters, EngineError> {
        Box::new(self.inner).close()
    }
}

/// Overlapping pairs seen over 2,000 random 4 KiB writes to 64 KiB at depth 16.
fn overlaps(serialize_overlap: bool) -> u64 {
    let iodepth = 16;
    let inner = NullEngine::open(&NullOptions::new(64 << 10, iodepth)).expect("null engine");
    let workload = Workload::new(WorkloadConfig {
        size_bytes: 64 << 10,
        rw: RwKind::RandWrite,
        norandommap: true,
        io_size_bytes: Some(2_000 * 4096),
        ..WorkloadConfig::default()
    })
    .expect("workload");
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine = Box::new(OverlapWatch {
        inner,
        held: Vec::new(),
        overlaps: Arc::clone(&seen),
    });
    let outcome = run_job(JobSetup {
        serialize_overlap,
        ..JobSetup::for_test("serialize", engine, workload, iodepth)
    });
    assert_eq!(outcome.error, 0, "{}", outcome.error_text);
    let writes = outcome
        .stats
        .dir(crate::io::Direction::Write)
        .expect("writes");
    assert_eq!(writes.ios, 2_000);
    seen.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn serialize_overlap_keeps_overlapping_ios_apart() {
    assert!(
        overlaps(false) > 0,
        "the test job has no overlap to keep apart"
    );
    assert_eq!(overlaps(true), 0);
}
