//! What the two shard benchmark drivers (`iscsi-perfcmp`, `iscsi-transports`) share: the
//! access patterns, the preparation of a fresh pool (unit attention, capacity), the
//! per-shard workload (offsets, CDBs, buffers out; latencies and counts back) and the
//! process CPU clock.

use std::time::{Duration, Instant};

use clap::ValueEnum;
use datapath::scsi::probe::{probe_lun, ProbeConfig};
use datapath::scsi::Cdb;
use datapath::session::{DataDirection, Request};
use datapath::shard::{ShardCompletion, ShardExecutor, ShardPool};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// Uniformly random block-aligned offsets.
    Randread,
    /// Consecutive offsets, wrapping at the end of the LUN.
    Seqread,
    /// Random offsets, writes (zeroes): for null LUNs only.
    Randwrite,
    /// Consecutive offsets, writes (zeroes): for null LUNs only.
    Seqwrite,
}

impl Pattern {
    fn writes(self) -> bool {
        matches!(self, Pattern::Randwrite | Pattern::Seqwrite)
    }

    fn random(self) -> bool {
        matches!(self, Pattern::Randread | Pattern::Randwrite)
    }
}

/// User + system CPU time of this whole process so far (every thread).
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The LUN probe ([`datapath::scsi::probe`]) on a fresh pool: TEST UNIT READY past the unit
/// attention of each shard's new session, then the capacity on shard 0: (block length,
/// blocks).
pub fn prepare(pool: &ShardPool, lun: u64) -> Result<(u32, u64), String> {
    let wait = Duration::from_secs(10);
    let config = ProbeConfig {
        unit_attention_retries: 4,
        ..ProbeConfig::READY
    };
    for shard in 1..pool.len() {
        probe_lun(&mut ShardExecutor::new(pool, shard, wait), lun, config)
            .map_err(|e| format!("shard {shard}: {e}"))?;
    }
    let config = ProbeConfig {
        capacity: true,
        ..config
    };
    let facts = probe_lun(&mut ShardExecutor::new(pool, 0, wait), lun, config)
        .map_err(|e| format!("shard 0: {e}"))?;
    let (bytes, block_len) = facts.size().map_err(|e| e.to_string())?;
    Ok((block_len, bytes / u64::from(block_len)))
}

/// Prepares a fresh pool (`prepare`) and the run's spec from what it found, checked.
pub fn prepare_workload(
    pool: &ShardPool,
    pattern: Pattern,
    lun: u64,
    bs: u32,
    qd: usize,
) -> Result<WorkloadSpec, String> {
    let (block_len, blocks) = prepare(pool, lun)?;
    let spec = WorkloadSpec {
        pattern,
        lun,
        bs,
        qd,
        shards: pool.len(),
        block_len,
        blocks,
    };
    spec.check()?;
    Ok(spec)
}

/// The fixed facts of one run: what to issue, on which LUN, how much at once.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSpec {
    pub pattern: Pattern,
    pub lun: u64,
    /// Bytes per I/O (a multiple of `block_len`).
    pub bs: u32,
    /// I/Os in flight per shard.
    pub qd: usize,
    pub shards: usize,
    pub block_len: u32,
    /// The LUN's blocks.
    pub blocks: u64,
}

impl WorkloadSpec {
    /// Checks that at least one I/O fits and `bs` is whole blocks.
    pub fn check(&self) -> Result<(), String> {
        if self.qd == 0 || self.shards == 0 || self.bs == 0 {
            return Err("--qd, --shards and --bs must be positive".into());
        }
        if !self.bs.is_multiple_of(self.block_len) {
            return Err(format!(
                "--bs {} is not a multiple of the block length {}",
                self.bs, self.block_len
            ));
        }
        if self.slots() == 0 {
            return Err("the LUN is smaller than one I/O".into());
        }
        Ok(())
    }

    fn io_blocks(&self) -> u32 {
        self.bs / self.block_len.max(1)
    }

    /// I/O-sized slots of the LUN.
    fn slots(&self) -> u64 {
        self.blocks / u64::from(self.io_blocks().max(1))
    }
}

/// What one shard's workload measured.
pub struct DriverResult {
    pub ios: u64,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
}

impl DriverResult {
    pub fn new() -> DriverResult {
        DriverResult {
            ios: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            latency: Histogram::<u64>::new(3).expect("3 significant digits is valid"),
        }
    }
}

impl Default for DriverResult {
    fn default() -> Self {
        DriverResult::new()
    }
}

/// A small xorshift generator: random offsets without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The I/O one shard is given: `qd` slots, each with its buffer; offsets, CDBs and buffers
/// out, latencies and counts back. Used from a caller thread through the shard's queue and
/// from the shard's own thread alike.
pub struct Workload {
    spec: WorkloadSpec,
    rng: Rng,
    next_slot: u64,
    submitted_at: Vec<Instant>,
    free: Vec<(usize, Vec<u8>)>,
    in_flight: usize,
    end: Instant,
    /// A command failed outright (not with a SCSI status): submit no more.
    failed: bool,
    result: DriverResult,
}

impl Workload {
    /// Shard `shard`'s workload, issuing until `run_for` from now.
    pub fn new(spec: WorkloadSpec, shard: usize, run_for: Duration) -> Workload {
        Workload {
            spec,
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (shard as u64 + 1)),
            next_slot: (spec.slots() / spec.shards.max(1) as u64) * shard as u64,
            submitted_at: vec![Instant::now(); spec.qd],
            free: (0..spec.qd)
                .map(|i| (i, vec![0u8; spec.bs as usize]))
                .collect(),
            in_flight: 0,
            end: Instant::now() + run_for,
            failed: false,
            result: DriverResult::new(),
        }
    }

    /// Whether more I/O should be issued at `now`.
    pub fn issuing(&self, now: Instant) -> bool {
        now < self.end && !self.failed
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// When issuing stops.
    pub fn end(&self) -> Instant {
        self.end
    }

    /// The next request, if a slot is free.
    pub fn next_request(&mut self, now: Instant) -> Result<Option<Request>, String> {
        let Some((slot, buffer)) = self.free.pop() else {
            return Ok(None);
        };
        let slots = self.spec.slots().max(1);
        let io_slot = if self.spec.pattern.random() {
            self.rng.next() % slots
        } else {
            let s = self.next_slot % slots;
            self.next_slot += 1;
            s
        };
        let io_blocks = self.spec.io_blocks();
        let lba = io_slot * u64::from(io_blocks);
        let (cdb, direction) = if self.spec.pattern.writes() {
            (
                Cdb::write(lba, io_blocks, self.spec.block_len, false),
                DataDirection::Write { len: self.spec.bs },
            )
        } else {
            (
                Cdb::read(lba, io_blocks, self.spec.block_len, false),
                DataDirection::Read { len: self.spec.bs },
            )
        };
        let cdb = match cdb {
            Ok(cdb) => cdb,
            Err(e) => {
                self.free.push((slot, buffer));
                self.failed = true;
                return Err(e.to_string());
            }
        };
        self.submitted_at[slot] = now;
        self.in_flight += 1;
        Ok(Some(Request {
            direction,
            ..Request::new(self.spec.lun, cdb, buffer, slot as u64)
        }))
    }

    /// A request the shard did not take.
    pub fn give_back(&mut self, request: Request) {
        self.in_flight -= 1;
        self.free.push((request.user_data as usize, request.buffer));
    }

    /// Records one completion, seen at `completed_at`.
    pub fn complete(&mut self, done: ShardCompletion, completed_at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let slot = done.user_data as usize;
        let took = self.submitted_at.get(slot).map_or(Duration::ZERO, |t| {
            completed_at.saturating_duration_since(*t)
        });
        let r = &mut self.result;
        let buffer = match done.result {
            Ok(outcome) if outcome.status == 0 => {
                r.ios += 1;
                r.bytes += u64::from(outcome.transferred);
                let _ = r.latency.record(took.as_micros().max(1) as u64);
                outcome.buffer
            }
            Ok(outcome) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("SCSI status {:#x}", outcome.status));
                outcome.buffer
            }
            Err(failure) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| failure.error.to_string());
                self.failed = true;
                failure.buffer
            }
        };
        // A reset adapter may hand a buffer back empty.
        let buffer = if buffer.len() < self.spec.bs as usize {
            vec![0u8; self.spec.bs as usize]
        } else {
            buffer
        };
        self.free.push((slot, buffer));
    }

    /// The counts so far (the workload keeps fresh ones).
    pub fn take_result(&mut self) -> DriverResult {
        std::mem::take(&mut self.result)
    }
}

/// Keeps the workload's I/O in flight on shard `shard` from this thread, through the
/// shard's queue, until it stops issuing and everything has completed. Completions are
/// taken with `next`: the driver's way of waiting (polled or asleep).
pub fn drive_through_queue(
    pool: &ShardPool,
    shard: usize,
    w: &mut Workload,
    mut next: impl FnMut() -> Result<ShardCompletion, String>,
) -> Result<DriverResult, String> {
    loop {
        let now = Instant::now();
        if w.issuing(now) {
            while let Some(request) = w.next_request(now)? {
                if let Err(back) = pool.submit(shard, request) {
                    w.give_back(back);
                    break;
                }
            }
        } else if w.in_flight() == 0 {
            break;
        }
        let first = next()?;
        // Take every completion that is ready before submitting again, so the shard gets
        // its new requests in one burst (one doorbell at most). One clock reading serves
        // the burst: each of its completions was posted before it.
        let completed_at = Instant::now();
        let mut ready = Some(first);
        while let Some(done) = ready
            .take()
            .or_else(|| pool.completions(shard).and_then(|c| c.try_recv().ok()))
        {
            w.complete(done, completed_at);
            if w.in_flight() == 0 {
                break;
            }
        }
    }
    Ok(w.take_result())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::session::CommandOutcome;

    fn spec(pattern: Pattern) -> WorkloadSpec {
        WorkloadSpec {
            pattern,
            lun: 1,
            bs: 4096,
            qd: 4,
            shards: 2,
            block_len: 512,
            blocks: 64,
        }
    }

    #[test]
    fn sequential_offsets_start_at_the_shards_part_and_wrap() {
        let mut w = Workload::new(spec(Pattern::Seqread), 1, Duration::from_secs(10));
        let now = Instant::now();
        let lbas: Vec<u64> = (0..4)
            .map(|_| {
                let r = w.next_request(now).unwrap().unwrap();
                // READ(10): the LBA in bytes 2 to 5.
                u64::from(u32::from_be_bytes(r.cdb[2..6].try_into().unwrap()))
            })
            .collect();
        // 8 slots of 8 blocks; shard 1 of 2 starts at slot 4 and wraps after slot 7.
        assert_eq!(lbas, [32, 40, 48, 56]);
        assert!(w.next_request(now).unwrap().is_none(), "only qd slots");
        assert_eq!(w.in_flight(), 4);
    }

    #[test]
    fn completions_count_bytes_errors_and_free_their_slot() {
        let mut w = Workload::new(spec(Pattern::Randwrite), 0, Duration::from_secs(10));
        let now = Instant::now();
        let r = w.next_request(now).unwrap().unwrap();
        assert!(matches!(r.direction, DataDirection::Write { len: 4096 }));
        let good = ShardCompletion {
            user_data: r.user_data,
            result: Ok(CommandOutcome {
                status: 0,
                sense: None,
                residual: datapath::session::Residual::None,
                buffer: r.buffer,
                transferred: 4096,
            }),
        };
        w.complete(good, now + Duration::from_micros(30));
        let r2 = w.next_request(now).unwrap().unwrap();
        let failed = ShardCompletion {
            user_data: r2.user_data,
            result: Err(datapath::adapter::PathFailure {
                error: datapath::adapter::PathError::Command(
                    datapath::session::CommandError::TimedOut,
                ),
                buffer: Vec::new(),
            }),
        };
        w.complete(failed, now);
        assert!(!w.issuing(now), "a failed command stops the workload");
        let result = w.take_result();
        assert_eq!((result.ios, result.bytes, result.errors), (1, 4096, 1));
        assert!(result.first_error.is_some());
        assert_eq!(result.latency.max(), 30);
    }
}
