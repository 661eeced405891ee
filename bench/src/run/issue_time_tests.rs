//! Where clat starts for an engine whose submit hands units to another thread (the iSCSI
//! shards): a unit may be sent and answered before `submit` returns to a job thread that was
//! preempted meanwhile, so its issue time is taken when the hand-over starts.

use std::time::Duration;

use super::job::{run_job, JobSetup};
use crate::engine::{Engine, EngineCounters, EngineError, NullEngine, NullOptions};
use crate::io::{Direction, IoDone, IoUnit, RwKind};
use crate::workload::{Workload, WorkloadConfig};

/// How long the job thread is "preempted" inside each hand-over, after the other thread
/// already completed the units.
const PREEMPTED: Duration = Duration::from_millis(2);

/// The null engine, completing every unit at the start of `submit` and then losing the CPU.
struct PreemptedHandOver {
    inner: NullEngine,
    starts_at_hand_over: bool,
}

impl Engine for PreemptedHandOver {
    fn name(&self) -> &'static str {
        "preempted"
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
        self.inner.queue(unit)
    }
    fn issues_when_submit_starts(&self) -> bool {
        self.starts_at_hand_over
    }
    fn submit(&mut self) -> Result<usize, EngineError> {
        let submitted = self.inner.submit()?;
        std::thread::sleep(PREEMPTED);
        Ok(submitted)
    }
    fn reap(
        &mut self,
        min: usize,
        timeout: Duration,
        out: &mut Vec<IoDone>,
    ) -> Result<usize, EngineError> {
        self.inner.reap(min, timeout, out)
    }
    fn counters(&self) -> EngineCounters {
        self.inner.counters()
    }
    fn close(self: Box<Self>) -> Result<EngineCounters, EngineError> {
        Box::new(self.inner).close()
    }
}

fn min_clat_ns(starts_at_hand_over: bool) -> u64 {
    let inner = NullEngine::open(&NullOptions::new(1 << 20, 1)).expect("null engine");
    let workload = Workload::new(WorkloadConfig {
        size_bytes: 1 << 20,
        rw: RwKind::RandRead,
        number_ios: Some(20),
        ..WorkloadConfig::default()
    })
    .expect("workload");
    let engine = Box::new(PreemptedHandOver {
        inner,
        starts_at_hand_over,
    });
    let outcome = run_job(JobSetup {
        iodepth_low: usize::MAX,
        ..JobSetup::for_test("preempted", engine, workload, 1)
    });
    assert_eq!(outcome.error, 0, "{}", outcome.error_text);
    let read = outcome.stats.dir(Direction::Read).expect("reads");
    assert_eq!(read.ios, 20);
    read.clat.moments().min()
}

#[test]
fn clat_starts_when_the_hand_over_starts() {
    // Every unit was done before its hand-over returned: its clat covers the hand-over.
    assert!(min_clat_ns(true) >= PREEMPTED.as_nanos() as u64);
    // Stamped when the hand-over returns (right for io_uring), the same units would show a
    // clat of microseconds: the defect of issue 21 item 11.
    assert!(min_clat_ns(false) < PREEMPTED.as_nanos() as u64 / 2);
}
