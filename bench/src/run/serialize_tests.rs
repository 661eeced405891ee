//! fio's `serialize_overlap` in the runner: with it, no two I/Os that share a byte are
//! in the engine at once; without it, a random writer over a few blocks at depth 16 has
//! such pairs.

use std::sync::Arc;
use std::time::Duration;

use super::job::{run_job, JobProgress, JobSetup};
use crate::engine::{Engine, EngineCounters, EngineError, NullEngine, NullOptions};
use crate::io::{BufferOptions, IoDone, IoUnit, RwKind};
use crate::stats::{LiveCounters, StatsConfig};
use crate::workload::{ContentGenerator, Workload, WorkloadConfig};

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
    let outcome = run_job(JobSetup {
        name: "serialize".into(),
        job_number: 1,
        engine: Box::new(OverlapWatch {
            inner,
            held: Vec::new(),
            overlaps: Arc::clone(&seen),
        }),
        workload,
        content: ContentGenerator::new(&BufferOptions::default(), 1).expect("content"),
        rate_floor: None,
        iodepth,
        iodepth_low: iodepth,
        flow: None,
        steadystate: None,
        fsync_every: 0,
        fdatasync_every: 0,
        sync_file_range: None,
        verify_only: false,
        verify_state_save: None,
        latency_target: None,
        end_fsync: false,
        batch_submit: iodepth,
        batch_complete_min: 1,
        batch_complete_max: iodepth,
        runtime: None,
        ramp: Duration::ZERO,
        startdelay: Duration::ZERO,
        verify_fatal: false,
        verify_dump: None,
        error_policy: Default::default(),
        file_names: Vec::new(),
        stats_config: StatsConfig::default(),
        interval: None,
        percentiles: Vec::new(),
        logs: None,
        cpus: None,
        live: Arc::new(LiveCounters::new()),
        progress: Arc::new(JobProgress::default()),
        shared_verify: None,
        exec_prerun: None,
        exec_postrun: None,
        create_only: false,
        lockmem_bytes: 0,
        serialize_overlap,
        unlink_each_loop: false,
        max_latency_ns: Default::default(),
        priority: Default::default(),
        iolog: None,
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
