//! One job's thread: it owns the job's engine and workload and drives them until the
//! workload is done or the runtime is over (fio's `thread_main`/`do_io`).
//!
//! Per turn: take planned I/Os from the workload while the engine has room and the next
//! one is due (a paced job waits for its schedule), submit them as a batch, reap
//! completions, record each (latency measured from the I/O's scheduled start, so a stall
//! is not hidden), check read data when verifying, and take rate samples and interval
//! snapshots on time.

use datapath::shard::TagMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineCounters};
use crate::io::{Direction, IoDone, IoError, IoUnit, PerDir};
use crate::job::error_policy::{errno_text, ErrorPolicy, ErrorType, EILSEQ, EIO};
use crate::output::iolog::IologWriter;
use crate::output::logs::JobLogs;
use crate::stats::{
    IntervalRecord, IntervalSnapshot, IoTimes, JobStats, LiveCounters, PathInterval, ResourceUsage,
    StatsConfig,
};
use crate::workload::{
    ContentGenerator, Next, PlannedIo, RateFloor, ReadBackIo, SkippedBlocks, UnknownCause,
    Verifier, VerifyAction, VerifyError, Workload,
};

use super::buffers::WriteBuffers;
use super::shared_verify::SharedVerify;
use crate::workload::{JudgedFailure, ReadTicket, SharedVerifyError};

/// The longest a job sleeps or waits for completions before it looks at the clock again.
const TURN_MAX: Duration = Duration::from_millis(50);
/// Verification failures printed in full per job; later ones are only counted.
const VERIFY_REPORTS_MAX: u64 = 10;

/// The job's state as the status line shows it (see [`crate::output::live::JobState`]).
pub mod state {
    pub const NOT_STARTED: u8 = 0;
    pub const RAMP: u8 = 1;
    pub const RUNNING: u8 = 2;
    pub const VERIFYING: u8 = 3;
    pub const DONE: u8 = 4;
    pub const FAILED: u8 = 5;
}

/// What the status line reads of a running job.
#[derive(Debug, Default)]
pub struct JobProgress {
    pub state: AtomicU8,
    /// Bytes moved so far (all directions, ramp included).
    pub bytes_done: AtomicU64,
    /// Set by the run (a signal arrived): the job stops at its next turn and reports.
    pub stop_requested: AtomicBool,
    /// Set by the run when it wants the job's results so far (`--status-interval`); the
    /// job puts a copy in `snapshot` at its next turn. Once per interval, off the I/O path.
    pub snapshot_wanted: AtomicBool,
    pub snapshot: Mutex<Option<JobStats>>,
    /// A gated run's common start: the job waits here once its engine is set up.
    pub start_latch: Mutex<Option<Arc<super::start_latch::StartLatch>>>,
    /// When the job's clock started (CLOCK_MONOTONIC, ns; 0 before), for the start skew.
    pub started_ns: AtomicU64,
}

impl JobProgress {
    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::Relaxed);
    }

    fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Relaxed)
    }
}

/// Everything a job thread needs, prepared (and checked) before any job starts.
pub struct JobSetup {
    pub name: String,
    /// 1-based over the run, as fio numbers its threads (log file names use it).
    pub job_number: u32,
    pub engine: Box<dyn Engine>,
    pub workload: Workload,
    /// What writes carry when they do not verify.
    pub content: ContentGenerator,
    /// `rate_min`/`rate_iops_min`: the job fails below them.
    pub rate_floor: Option<RateFloor>,
    pub iodepth: usize,
    /// fio's latency target mode (`latency_target`).
    pub latency_target: Option<super::latency_target::LatencyTarget>,
    /// fio's `max_latency` per direction, in ns (`None`: no limit; nothing is checked
    /// when `disable_lat` keeps no latency, as in fio).
    pub max_latency_ns: PerDir<Option<u64>>,
    /// fio's `nice`, `prio` and `prioclass` for the job thread.
    pub priority: super::priority::ThreadPriority,
    /// fio's `verify_only`: writes are counted, not carried out; the verify phase runs.
    pub verify_only: bool,
    /// fio's `verify_state_save`: where the job saves how far its writes got, if it does.
    pub verify_state_save: Option<std::path::PathBuf>,
    /// fio's `fsync`: a flush after every this many writes (0: never).
    pub fsync_every: u32,
    /// fio's `fdatasync`: a flush of the data after every this many writes (0: never),
    /// unless an `fsync` is due after the same write.
    pub fdatasync_every: u32,
    /// fio's `sync_file_range`: a flush of the range written since the last flush after
    /// every this many writes, unless an fsync or fdatasync is due.
    pub sync_file_range: Option<crate::job::file_options::SyncFileRange>,
    /// fio's `end_fsync`: a flush when the job's I/O is done.
    pub end_fsync: bool,
    /// fio's steady-state detection (`ss_dur` > 0).
    pub steadystate: Option<super::steadystate::SteadyState>,
    /// fio's `flow`/`flow_id`/`flow_sleep`: the job's share of its flow, if any.
    pub flow: Option<super::flow::JobFlow>,
    /// fio's `iodepth_low`: once the queue is full, reap until no more than this many are
    /// in flight before queueing again (default `iodepth`: queue again at once).
    pub iodepth_low: usize,
    pub batch_submit: usize,
    pub batch_complete_min: usize,
    /// fio's `iodepth_batch_complete_max`: completions handled per turn before the job
    /// queues again (fio's default: the minimum, so one at a time).
    pub batch_complete_max: usize,
    pub runtime: Option<Duration>,
    pub ramp: Duration,
    pub startdelay: Duration,
    pub verify_fatal: bool,
    /// fio's `verify_dump`: the base name of the dump files (`<base>.<offset>.received`
    /// and `.expected`), or `None`.
    pub verify_dump: Option<String>,
    /// fio's `continue_on_error`, `ignore_error` and `error_dump`: which failed I/Os end
    /// the job, and which are printed.
    pub error_policy: ErrorPolicy,
    /// Each file's (LUN's) name as a failed I/O's line shows it, by [`IoUnit::file`].
    pub file_names: Vec<String>,
    pub stats_config: StatsConfig,
    /// Take an interval record this often (status interval or report), or never.
    pub interval: Option<Duration>,
    pub percentiles: Vec<f64>,
    /// The job's log files, opened (and so checked) before any job starts.
    pub logs: Option<JobLogs>,
    /// `write_iolog`: the issued I/Os, in fio's iolog format (opened before any job starts).
    pub iolog: Option<IologWriter>,
    pub cpus: Option<Vec<u32>>,
    pub live: Arc<LiveCounters>,
    pub progress: Arc<JobProgress>,
    /// `verify_shared`: the ledger the job verifies against with the other writers of
    /// its target.
    pub shared_verify: Option<SharedVerify>,
    /// fio's `exec_prerun`/`exec_postrun` (see `hooks`).
    pub exec_prerun: Option<String>,
    pub exec_postrun: Option<String>,
    /// fio's `create_only`: the file is laid out (the engine is open); no I/O follows.
    pub create_only: bool,
    /// fio's `serialize_overlap`: an I/O that overlaps one in flight waits for it.
    pub serialize_overlap: bool,
    /// fio's `unlink_each_loop`: between two loops, the I/O drains and the engine unlinks
    /// and creates its files again.
    pub unlink_each_loop: bool,
    /// fio's `lockmem`: bytes held locked while the job runs (0: none).
    pub lockmem_bytes: u64,
    /// fio's `thinkcycles`: a busy loop of this many iterations after each read or write.
    pub thinkcycles: u64,
    /// fio's `end_syncfs` on local files: one path per file system to syncfs(2) once the
    /// job's I/O is done (empty: none).
    pub syncfs_paths: Vec<std::path::PathBuf>,
    /// fio's `ramp_size`, where given.
    pub ramp_size: Option<RampSize>,
}

/// fio's `ramp_size`: the ramp ends once the job has moved `bytes`; with
/// `group_reporting` the jobs of a group share `moved`, so it ends for all of them once
/// they have together (fio's `ramp_period_check`).
#[derive(Debug, Clone)]
pub struct RampSize {
    pub bytes: u64,
    pub moved: Arc<AtomicU64>,
}

impl RampSize {
    fn is_over(&self) -> bool {
        self.moved.load(Ordering::Relaxed) >= self.bytes
    }
}

/// fio's `cycles_spin`: `n` turns of a loop of one spin-wait hint each (fio's `nop` is
/// x86's `rep; nop`, PAUSE, as `spin_loop` is there), so a count costs what it costs fio.
fn cycles_spin(n: u64) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// fio's `end_syncfs`: syncfs(2) of the file system `path` is on. fio only logs a
/// failure ("syncfs ... failed"), so the caller warns.
fn syncfs(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: syncfs takes an open descriptor, which `file` holds until after the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a job thread hands back.
#[derive(Clone)]
pub struct JobOutcome {
    pub stats: JobStats,
    pub intervals: Vec<IntervalRecord>,
    /// fio's per-job `error` (errno) and its text; 0 and empty when all went well.
    pub error: i32,
    pub error_text: String,
    pub verify_failures: u64,
    /// Verify intervals the read-back left unchecked because a write to them failed or
    /// timed out (see `workload::unknown`).
    pub verify_skipped: SkippedBlocks,
    pub engine: EngineCounters,
    /// fio's `steadystate` results, for a job with `ss_dur`.
    pub steadystate: Option<crate::output::SteadyStateReport>,
    /// Latencies of the job's flushes (`fsync`, `end_fsync`): fio's "sync" entry.
    pub sync: crate::stats::LatencyStat,
    /// The depth latency target mode settled on (`None` without `latency_target`).
    pub latency_depth: Option<u32>,
    /// Multipath: each path's state and counts when the job ended.
    pub paths: Vec<datapath::shard::PathStatus>,
    /// How much of the rate schedule stalls beyond `rate_backlog` gave up.
    pub rate_skipped: Duration,
}

impl JobOutcome {
    /// The outcome of a job still running, for a report of the results so far.
    pub fn so_far(stats: JobStats) -> JobOutcome {
        JobOutcome {
            stats,
            intervals: Vec::new(),
            error: 0,
            error_text: String::new(),
            verify_failures: 0,
            verify_skipped: SkippedBlocks::default(),
            engine: EngineCounters::default(),
            steadystate: None,
            sync: crate::stats::LatencyStat::new(),
            latency_depth: None,
            paths: Vec::new(),
            rate_skipped: Duration::ZERO,
        }
    }
}

/// Per I/O in flight: what the completion needs.
struct Meta {
    planned: PlannedIo,
    start_ns: u64,
    issue_ns: u64,
    /// `verify_shared`: the generation the ledger gave the write (in its headers), or
    /// what the read may return.
    shared: Option<SharedIo>,
}

enum SharedIo {
    Write { generation: u64 },
    Read(ReadTicket),
}

/// A read that failed verification: a bad block, or (`verify_shared`) a sound block
/// holding a write the read could not return.
enum ReadFailure {
    /// With `verify_shared`, what the ledger would have accepted, in words.
    Block(VerifyError, Option<String>),
    Shared(Box<SharedVerifyError>),
}

impl ReadFailure {
    fn summary(&self) -> String {
        match self {
            ReadFailure::Block(e, _) => e.summary(),
            ReadFailure::Shared(e) => e.summary(),
        }
    }
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Block(e, None) => e.fmt(f),
            ReadFailure::Block(e, Some(candidates)) => write!(f, "{e}; {candidates}"),
            ReadFailure::Shared(e) => e.fmt(f),
        }
    }
}

/// The engine, the clock, the counters: what every phase of the job shares.
struct Driver {
    engine: Box<dyn Engine>,
    clock: Instant,
    next_id: u64,
    in_flight: TagMap<u64, Meta>,
    queued: Vec<u64>,
    stats: JobStats,
    logs: Option<JobLogs>,
    iolog: Option<IologWriter>,
    /// A loop or verify phase ended: the next I/O's log line follows a close and an open
    /// of the files (as fio closes and reopens them there).
    iolog_reopen_due: bool,
    write_buffers: WriteBuffers,
    rate_floor: Option<RateFloor>,
    done: Vec<IoDone>,
    iodepth: usize,
    latency_target: Option<super::latency_target::LatencyTarget>,
    /// What the latency target asked for at its last step, done at the next turn.
    latency_step: super::latency_target::Step,
    max_latency_ns: PerDir<Option<u64>>,
    verify_only: bool,
    /// `fsync`: writes between flushes (0: none), writes since the last, a flush owed.
    fsync_every: u32,
    fdatasync_every: u32,
    sync_file_range: Option<crate::job::file_options::SyncFileRange>,
    serialize_overlap: bool,
    unlink_each_loop: bool,
    /// Writes queued so far: fio's fsync/fdatasync fall due on its multiples.
    writes_issued: u64,
    flush_due: bool,
    /// The flush due is fdatasync=N's, not fsync=N's.
    datasync_due: bool,
    /// The flush due is sync_file_range's.
    range_due: bool,
    /// What completed writes covered since the last flush completed, `[start, end)`
    /// (fio's `first_write`/`last_write`).
    written: Option<(u64, u64)>,
    /// Flushes in flight (id to start time) and their latencies (fio's "sync" entry).
    flushes: TagMap<u64, (u64, bool)>,
    sync_lat: crate::stats::LatencyStat,
    steadystate: Option<super::steadystate::SteadyState>,
    flow: Option<super::flow::JobFlow>,
    iodepth_low: usize,
    batch_submit: usize,
    batch_complete_min: usize,
    batch_complete_max: usize,
    /// Completions reaped but not yet handled (over `batch_complete_max`).
    backlog: std::collections::VecDeque<IoDone>,
    progress: Arc<JobProgress>,
    intervals: Vec<IntervalRecord>,
    /// Multipath: each path's completed commands at the last interval's end.
    path_ios: Vec<(std::net::SocketAddr, u64)>,
    interval: Option<Duration>,
    next_interval_ns: u64,
    percentiles: Vec<f64>,
    /// The I/Os of the run so far carried this scheduled start (paced jobs).
    paced: bool,
    /// When the last reap read the clock, until the next turn starts (`turn_start`).
    reaped_at_ns: Option<u64>,
    verify_fatal: bool,
    verify_dump: Option<String>,
    error_policy: ErrorPolicy,
    file_names: Vec<String>,
    verify_failures: u64,
    verify_skipped: SkippedBlocks,
    /// Writes with verify data that ended since the workload last heard of them, and how
    /// (`None`: done; see [`Workload::on_write_result`]). At most the completions of one
    /// drain, which the queue depth bounds.
    write_results: Vec<(PlannedIo, Option<UnknownCause>)>,
    /// The engine refused a unit while nothing the runner counts was in flight: it holds
    /// timed-out commands, and the next reap waits for room rather than returning at once.
    engine_full: bool,
    io_failures: u64,
    first_error: Option<String>,
    /// The errno the first error carries where it is not EIO (`max_latency`: ETIMEDOUT).
    first_errno: Option<i32>,
    stop: bool,
    /// The thread's CPU use when the job started, for the results so far.
    usage_start: Option<ResourceUsage>,
    shared_verify: Option<SharedVerify>,
    /// `verify_shared`: blocks checked against the ledger.
    shared_checked_blocks: u64,
    /// fio's `thinkcycles`.
    thinkcycles: u64,
    /// fio's `ramp_size` while the ramp lasts, and the runtime that starts after it.
    ramp_size: Option<RampSize>,
    runtime: Option<Duration>,
}

impl Driver {
    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// The time at the top of a turn: the last reap's reading when the turn before ended
    /// with one (nothing happened since), else the clock's.
    fn turn_start(&mut self) -> Duration {
        match self.reaped_at_ns.take() {
            Some(ns) => Duration::from_nanos(ns),
            None => self.now(),
        }
    }

    fn has_room(&self) -> bool {
        let depth = self
            .latency_target
            .as_ref()
            .map_or(self.iodepth, |lt| (lt.depth() as usize).min(self.iodepth));
        self.outstanding() < depth
    }

    /// Hands a latency-target step to the next turn (the strongest one wins).
    fn latency_step(&mut self, step: super::latency_target::Step) {
        use super::latency_target::Step;
        match step {
            Step::Continue => {}
            Step::Fatal => {
                self.io_failures += 1;
                self.fail(format!(
                    "an I/O's latency exceeds latency_target={} ns at depth 1",
                    self.latency_target.as_ref().map_or(0, |lt| lt.target_ns())
                ));
            }
            Step::Done => self.stop = true,
            step => {
                if self.latency_step != Step::FinalWindow {
                    self.latency_step = step;
                }
            }
        }
    }

    /// Prepares the buffer of `planned` and queues it, its start (fio's slat start) being
    /// `start`, the reading it was planned with: units planned together in one turn share
    /// it rather than read the clock each (a reading per unit cost more than its sub-µs
    /// precision was worth). Returns false (and nothing is queued) when the engine is full.
    fn queue(&mut self, planned: PlannedIo, verifier: Option<&Verifier>, start: Duration) -> bool {
        let start_ns = start.as_nanos() as u64;
        let len = match planned.direction {
            Direction::Trim => 0,
            _ => planned.len,
        };
        let plain_write = Self::is_plain_write(&planned);
        let mut shared_io = None;
        let buffer = if plain_write {
            self.write_buffers
                .take(&mut *self.engine, len, planned.offset, start_ns)
        } else {
            let mut buffer = self.engine.buffer(len);
            buffer.resize(len as usize, 0);
            if let (VerifyAction::Fill { generation }, Some(verifier)) = (planned.verify, verifier)
            {
                // verify_shared: the generation names the write across the sharers.
                let generation = match &self.shared_verify {
                    Some(shared) => {
                        let generation =
                            shared
                                .ledger
                                .begin_write(shared.job, planned.offset, planned.len);
                        shared_io = Some(SharedIo::Write { generation });
                        generation
                    }
                    None => generation,
                };
                verifier.fill(&mut buffer, planned.offset, generation);
            }
            buffer
        };
        if let (VerifyAction::Check { .. }, Some(shared)) = (planned.verify, &self.shared_verify) {
            shared_io = Some(SharedIo::Read(
                shared.ledger.begin_read(planned.offset, planned.len),
            ));
        }
        let id = self.next_id;
        let unit = IoUnit {
            id,
            direction: planned.direction,
            file: planned.file,
            offset: planned.offset,
            len: planned.len,
            buffer,
        };
        match self.engine.queue(unit) {
            Ok(()) => {
                self.next_id += 1;
                if let Some(iolog) = self.iolog.as_mut() {
                    if std::mem::take(&mut self.iolog_reopen_due) {
                        iolog.reopen(start);
                    }
                    iolog.io(
                        start,
                        planned.file,
                        planned.direction,
                        planned.offset,
                        planned.len,
                    );
                }
                if planned.direction == Direction::Write {
                    // fio (io_u.c get_rw_ddir): fsync first where both fall due.
                    self.writes_issued += 1;
                    let writes = self.writes_issued;
                    let due = |every: u32| every > 0 && writes.is_multiple_of(u64::from(every));
                    let range_every = self.sync_file_range.map_or(0, |sfr| sfr.every);
                    if due(self.fsync_every) {
                        (self.flush_due, self.datasync_due, self.range_due) = (true, false, false);
                    } else if due(self.fdatasync_every) {
                        (self.flush_due, self.datasync_due, self.range_due) = (true, true, false);
                    } else if due(range_every) {
                        (self.flush_due, self.datasync_due, self.range_due) = (true, false, true);
                    }
                }
                self.in_flight.insert(
                    id,
                    Meta {
                        planned,
                        start_ns,
                        issue_ns: start_ns,
                        shared: shared_io,
                    },
                );
                self.queued.push(id);
                true
            }
            Err(unit) => {
                if let (Some(SharedIo::Write { generation }), Some(shared)) =
                    (shared_io, &self.shared_verify)
                {
                    shared
                        .ledger
                        .abandon_write(planned.offset, planned.len, generation);
                }
                self.recycle(&planned, unit.buffer);
                self.engine_full = self.engine.in_flight() == 0;
                false
            }
        }
    }

    /// fio's verify_only write: counted as done at once (fio completes it without I/O),
    /// and known to the read-back as written.
    fn skip_write(&mut self, planned: PlannedIo) {
        let now = self.now_ns();
        let times = IoTimes {
            scheduled_ns: None,
            start_ns: now,
            issue_ns: now,
            complete_ns: now,
        };
        self.stats
            .record_times(Direction::Write, u64::from(planned.len), &times);
        if let VerifyAction::Fill { .. } = planned.verify {
            self.write_results.push((planned, None));
        }
    }

    /// Whether `planned` shares a byte of its file with an I/O in flight.
    fn overlaps_in_flight(&self, planned: &PlannedIo) -> bool {
        let end = planned.offset.saturating_add(u64::from(planned.len));
        self.in_flight.values().any(|meta| {
            let other = &meta.planned;
            other.file == planned.file
                && other.offset < end
                && planned.offset < other.offset.saturating_add(u64::from(other.len))
        })
    }

    /// Queues a flush unit (fio's DDIR_SYNC I/O), counted in the "sync" results when
    /// `counted` (fio counts fsync=N's, not end_fsync's); false when the engine is full.
    /// An fdatasync=N flush that is due goes as a data flush, counted as fio 3.42 counts
    /// it (3.33 counted only the fsyncs).
    fn queue_flush(&mut self, counted: bool) -> bool {
        let id = self.next_id;
        let datasync = counted && self.datasync_due;
        // The action fio's write_iolog names (io_ddir_name).
        let sync_action = if counted && self.range_due && self.sync_file_range.is_some() {
            "sync_file_range"
        } else if datasync {
            "datasync"
        } else {
            "sync"
        };
        let range = match (counted && self.range_due, self.sync_file_range) {
            (true, Some(sfr)) => Some(crate::io::SyncRange {
                offset: self.written.map_or(0, |(start, _)| start),
                len: self.written.map_or(0, |(start, end)| end - start),
                flags: sfr.flags,
            }),
            _ => None,
        };
        let unit = match range {
            Some(range) => IoUnit::sync_range(id, 0, range),
            None if datasync => IoUnit::datasync(id, 0),
            None => IoUnit::flush(id, 0),
        };
        match self.engine.queue(unit) {
            Ok(()) => {
                self.next_id += 1;
                self.datasync_due = false;
                self.range_due = false;
                if let Some(iolog) = self.iolog.as_mut() {
                    iolog.sync(self.clock.elapsed(), 0, sync_action);
                }
                self.flushes.insert(id, (self.now_ns(), counted));
                self.queued.push(id);
                self.flush_due = false;
                true
            }
            Err(_) => {
                self.engine_full = self.engine.in_flight() == 0;
                false
            }
        }
    }

    /// A write whose content comes from the job's buffer options (not from verify).
    fn is_plain_write(planned: &PlannedIo) -> bool {
        planned.direction == Direction::Write && planned.verify == VerifyAction::None
    }

    /// Gives a unit's buffer back: a plain write's to the job's filled write buffers,
    /// others to the engine.
    fn recycle(&mut self, planned: &PlannedIo, buffer: Vec<u8>) {
        if Self::is_plain_write(planned) {
            self.write_buffers.give_back(&mut *self.engine, buffer);
        } else {
            self.engine.recycle(buffer);
        }
    }

    fn submit(&mut self) -> Result<(), String> {
        if self.queued.is_empty() {
            return Ok(());
        }
        // Read once, before or after the hand-over, by when the engine issues.
        let at_start = self.engine.issues_when_submit_starts();
        let handed_over_ns = at_start.then(|| self.now_ns());
        self.engine
            .submit()
            .map_err(|e| format!("submitting I/O: {e}"))?;
        let issue_ns = handed_over_ns.unwrap_or_else(|| self.now_ns());
        let submitted = self.queued.len().min(u32::MAX as usize) as u32;
        for id in self.queued.drain(..) {
            if let Some(meta) = self.in_flight.get_mut(&id) {
                meta.issue_ns = issue_ns;
            }
        }
        let depth = self.outstanding().min(u32::MAX as usize) as u32;
        self.stats.record_submit(submitted, depth);
        Ok(())
    }

    /// Reaps what has completed, waiting up to `wait` for at least `min`. Each completion
    /// is recorded and checked; `on_complete` is told of each.
    fn reap(
        &mut self,
        min: usize,
        wait: Duration,
        verifier: Option<&Verifier>,
        mut on_complete: impl FnMut(Duration),
    ) -> Result<(), String> {
        let mut result = Ok(());
        if self.backlog.is_empty() {
            // An engine full of units it timed out (and the runner no longer counts) is
            // asked for `min` anyway: it then waits for room instead of returning at once,
            // which would spin this thread (issue 11).
            let min = if std::mem::take(&mut self.engine_full) {
                min
            } else {
                min.min(self.engine.in_flight())
            };
            let mut done = std::mem::take(&mut self.done);
            done.clear();
            match self.engine.reap(min, wait, &mut done) {
                Ok(n) => {
                    if n > 0 {
                        self.stats.record_complete(n.min(u32::MAX as usize) as u32);
                    }
                    self.backlog.extend(done.drain(..));
                }
                Err(e) => result = Err(format!("reaping I/O: {e}")),
            }
            self.done = done;
        }
        // Handle at most batch_complete_max, so the job queues new I/O as soon as fio
        // would: completions that arrive together then do not go back out together.
        // One clock reading for the batch: its completions were reaped together.
        let complete_ns = self.now_ns();
        let complete_at = Duration::from_nanos(complete_ns);
        for _ in 0..self.batch_complete_max {
            let Some(io) = self.backlog.pop_front() else {
                break;
            };
            if self.complete(io, complete_ns, verifier) {
                on_complete(complete_at);
            }
        }
        self.tick_at(complete_ns);
        self.reaped_at_ns = Some(complete_ns);
        result
    }

    /// I/Os in flight or reaped and not yet handled.
    fn outstanding(&self) -> usize {
        self.engine.in_flight() + self.backlog.len()
    }

    /// Handles one completion; false for a flush (which the workload did not plan).
    fn complete(&mut self, io: IoDone, complete_ns: u64, verifier: Option<&Verifier>) -> bool {
        let IoDone { unit, result } = io;
        if let Some((start_ns, counted)) = self.flushes.remove(&unit.id) {
            // fio starts the written range anew once any flush completes.
            self.written = None;
            match result {
                Ok(()) if counted => self.sync_lat.record(complete_ns.saturating_sub(start_ns)),
                Ok(()) => {}
                Err(e) => {
                    self.io_failures += 1;
                    self.fail(format!("flush (fsync): {e}"));
                }
            }
            return false;
        }
        let Some(meta) = self.in_flight.remove(&unit.id) else {
            self.engine.recycle(unit.buffer);
            return true;
        };
        let direction = meta.planned.direction;
        if let (Some(SharedIo::Write { generation }), Some(shared)) =
            (&meta.shared, &self.shared_verify)
        {
            // A failed or timed-out write may still land: the ledger keeps it possible.
            shared
                .ledger
                .end_write(unit.offset, unit.len, *generation, result.is_ok());
        }
        if let VerifyAction::Fill { .. } = meta.planned.verify {
            let failure = match &result {
                Ok(()) => None,
                Err(IoError::Timeout(_)) => Some(UnknownCause::WriteTimedOut),
                Err(_) => Some(UnknownCause::WriteFailed),
            };
            self.write_results.push((meta.planned, failure));
        }
        if direction == Direction::Write && result.is_ok() {
            let end = unit.offset.saturating_add(u64::from(unit.len));
            self.written = Some(match self.written {
                Some((start, last)) => (start.min(unit.offset), last.max(end)),
                None => (unit.offset, end),
            });
        }
        match result {
            Ok(()) => {
                let scheduled_ns = self
                    .paced
                    .then_some(meta.planned.scheduled_at.as_nanos() as u64);
                let times = IoTimes {
                    scheduled_ns,
                    start_ns: meta.start_ns,
                    issue_ns: meta.issue_ns,
                    complete_ns,
                };
                self.stats
                    .record_times(direction, u64::from(unit.len), &times);
                if let Some(limit_ns) = *self.max_latency_ns.get(direction) {
                    let (_, _, lat) = times.latencies();
                    if lat > limit_ns {
                        self.exceed_latency(&unit, lat, limit_ns, "max_latency");
                    }
                }
                if let Some(lt) = self.latency_target.as_mut() {
                    let (_, _, lat) = times.latencies();
                    let now = self.clock.elapsed();
                    let step = lt.on_completion(lat, now);
                    if step == super::latency_target::Step::Fatal {
                        // Over the target at depth 1: fio ends the job as max_latency does.
                        let target_ns = lt.target_ns();
                        self.exceed_latency(&unit, lat, target_ns, "latency_target");
                    } else {
                        self.latency_step(step);
                    }
                }
                self.progress
                    .bytes_done
                    .fetch_add(u64::from(unit.len), Ordering::Relaxed);
                if let Some(ramp) = &self.ramp_size {
                    ramp.moved.fetch_add(u64::from(unit.len), Ordering::Relaxed);
                }
                if let Some(logs) = self.logs.as_mut().filter(|l| l.wants_io()) {
                    let (slat, clat, lat) = times.latencies();
                    let since_start = complete_ns.saturating_sub(self.stats.start_ns());
                    // log_issue_time: when it went to the engine, after the job's start.
                    let issue_ns = since_start.saturating_sub(clat);
                    if let Err(e) = logs.record_issued_io(
                        since_start / 1_000_000,
                        direction,
                        u64::from(unit.len),
                        unit.offset,
                        issue_ns,
                        [slat, clat, lat],
                    ) {
                        self.fail(format!("writing the latency log: {e}"));
                    }
                }
                if let (
                    VerifyAction::Check {
                        expected_generation,
                    },
                    Some(verifier),
                ) = (meta.planned.verify, verifier)
                {
                    let checked = match (&meta.shared, &self.shared_verify) {
                        (Some(SharedIo::Read(ticket)), Some(shared)) => {
                            self.shared_checked_blocks += u64::from(unit.len)
                                .div_ceil(u64::from(verifier.interval_bytes().max(1)));
                            verifier
                                .check_with(&unit.buffer, unit.offset, |block, generation, seed| {
                                    shared.ledger.judge(
                                        ticket,
                                        block,
                                        generation,
                                        seed,
                                        verifier.lba_size_bytes(),
                                    )
                                })
                                .map_err(|failure| match failure {
                                    JudgedFailure::Block(e) => {
                                        let candidates = shared
                                            .ledger
                                            .describe_candidates(ticket, e.block_offset);
                                        ReadFailure::Block(*e, Some(candidates))
                                    }
                                    JudgedFailure::Judged(e) => ReadFailure::Shared(e),
                                })
                        }
                        _ => verifier
                            .check(&unit.buffer, unit.offset, expected_generation)
                            .map_err(|e| ReadFailure::Block(e, None)),
                    };
                    if let Err(e) = checked {
                        self.verify_failures += 1;
                        // The bytes and digests once, here; the job's error (and so the
                        // report) carries the one-line summary.
                        if self.verify_failures <= VERIFY_REPORTS_MAX {
                            eprintln!("iscsi-bench: {e}");
                        }
                        if self.verify_failures == VERIFY_REPORTS_MAX {
                            eprintln!(
                                "iscsi-bench: later verification failures are counted, not shown"
                            );
                        }
                        if self.first_error.is_none() {
                            self.first_error = Some(e.summary());
                        }
                        if let (Some(base), ReadFailure::Block(e, _)) = (&self.verify_dump, &e) {
                            dump_block(
                                base,
                                verifier,
                                &unit.buffer,
                                unit.offset,
                                e,
                                expected_generation,
                            );
                        }
                        if self.verify_fatal {
                            self.stop = true;
                        }
                    }
                }
            }
            Err(error) => {
                // Counted whatever happens next (the report's errors and first error).
                self.stats.record_error(direction, &error);
                // fio's continue_on_error/ignore_error decide whether the job goes on; a
                // non-fatal error leaves the job's `error` at 0, as in fio. An engine that
                // can no longer reach its target (recovery gave up) ends the job whatever
                // they say, instead of failing every later I/O at once.
                let non_fatal = self
                    .error_policy
                    .is_non_fatal(ErrorType::of_io(direction), error.errno())
                    && !matches!(error, IoError::Disconnected(_));
                if self.error_policy.is_dumped(non_fatal) {
                    self.dump_io_error(&unit, &error);
                }
                if !non_fatal {
                    self.io_failures += 1;
                    if self.first_error.is_none() {
                        self.first_error = Some(format!(
                            "{} of {} bytes at offset {}: {error}",
                            direction.fio_name(),
                            unit.len,
                            unit.offset
                        ));
                        // The job's error is the I/O's errno, as fio's (EIO for SCSI and
                        // transport failures).
                        self.first_errno = Some(error.errno());
                    }
                    self.stop = true;
                }
            }
        }
        self.recycle(&meta.planned, unit.buffer);
        true
    }

    /// Tells the workload how its verify writes ended (their blocks become known or
    /// unknown for the read-back).
    fn settle_writes(&mut self, workload: &mut Workload) {
        for (planned, failure) in self.write_results.drain(..) {
            workload.on_write_result(&planned, failure);
        }
    }

    /// A failed I/O on stderr in fio's shape (io_u.c `__io_u_log_error`): file, errno's
    /// text, direction, offset and length, then the engine's details on a line of their
    /// own, as fio prints an engine's `errdetails`.
    fn dump_io_error(&self, unit: &IoUnit, error: &IoError) {
        let file = self
            .file_names
            .get(unit.file as usize)
            .map_or("", String::as_str);
        let direction = if unit.is_flush() {
            "sync"
        } else {
            unit.direction.fio_name()
        };
        eprintln!(
            "iscsi-bench: io_u error on file {file}: {}: {direction} offset={}, buflen={}\n\
             iscsi-bench: {error}",
            errno_text(error.errno()),
            unit.offset,
            unit.len
        );
    }

    fn fail(&mut self, message: String) {
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
        self.stop = true;
    }

    /// fio's `lat_fatal` (io_u.c): an I/O took longer than `max_latency`, or than
    /// `latency_target` at depth 1, and the job ends with ETIMEDOUT. The I/O itself
    /// succeeded and stays counted, as in fio.
    fn exceed_latency(&mut self, unit: &IoUnit, lat_ns: u64, limit_ns: u64, option: &str) {
        if self.first_error.is_some() {
            self.stop = true;
            return;
        }
        let file = self
            .file_names
            .get(unit.file as usize)
            .map_or("", String::as_str);
        let message = format!(
            "latency of {lat_ns} nsec exceeds specified max ({limit_ns} nsec): {file} {} {} {}",
            unit.direction.fio_name(),
            unit.offset,
            unit.len
        );
        // On stderr as it happens, as fio logs it.
        eprintln!("iscsi-bench: {message}");
        self.first_errno = Some(libc::ETIMEDOUT);
        self.fail(format!("{option}: {message}"));
    }

    /// fio's steady-state check, when due: the job ends once the criterion holds.
    fn check_steadystate(&mut self, now: Duration) {
        let Some(ss) = self.steadystate.as_mut().filter(|ss| ss.due(now)) else {
            return;
        };
        let (mut ios, mut bytes, mut lat_sum, mut lat_count) = (0, 0, 0.0, 0);
        for direction in [Direction::Read, Direction::Write, Direction::Trim] {
            if let Some(dir) = self.stats.dir(direction) {
                ios += dir.ios;
                bytes += dir.bytes;
                lat_sum += dir.clat.moments().mean() * dir.clat.count() as f64;
                lat_count += dir.clat.count();
            }
        }
        if ss.check(now, ios, bytes, lat_sum, lat_count) {
            self.stop = true;
        }
    }

    /// Rate samples for the logs and the report, interval records, the rate floor, and the
    /// results so far when the run asks for them.
    fn tick(&mut self) {
        self.tick_at(self.now_ns());
    }

    /// [`Driver::tick`] with the time just read (the clock is read several times per I/O
    /// otherwise; fio reads its own TSC clock for that reason).
    fn tick_at(&mut self, now_ns: u64) {
        let now = Duration::from_nanos(now_ns);
        if self.progress.snapshot_wanted.load(Ordering::Relaxed) {
            self.progress
                .snapshot_wanted
                .store(false, Ordering::Relaxed);
            let mut so_far = self.stats.clone();
            so_far.finish(now_ns);
            if let (Some(start), Ok(end)) = (&self.usage_start, ResourceUsage::thread()) {
                so_far.set_usage(end.since(start));
            }
            if let Ok(mut slot) = self.progress.snapshot.lock() {
                *slot = Some(so_far);
            }
        }
        if let Some(floor) = self.rate_floor.as_mut() {
            for direction in [Direction::Read, Direction::Write, Direction::Trim] {
                let Some(done) = self.stats.dir(direction) else {
                    continue;
                };
                if let Err(miss) = floor.check(now, direction, done.bytes, done.ios) {
                    self.fail(miss.to_string());
                    break;
                }
            }
        }
        self.check_steadystate(now);
        if let Some(lt) = self.latency_target.as_mut() {
            let step = lt.check(now);
            self.latency_step(step);
        }
        if let Some(sample) = self.stats.tick(now_ns) {
            if let Some(logs) = self.logs.as_mut() {
                if let Err(e) = logs.record_rates(&sample, [0; 3]) {
                    self.fail(format!("writing the bandwidth/IOPS log: {e}"));
                }
            }
        }
        if let Some(interval) = self.interval {
            if now_ns >= self.next_interval_ns {
                let snapshot = self.stats.take_interval(now_ns);
                let mut record = snapshot.summarize(self.stats.start_ns(), &self.percentiles);
                record.paths = self.path_intervals(&snapshot);
                self.intervals.push(record);
                self.next_interval_ns = now_ns + interval.as_nanos() as u64;
            }
        }
    }

    /// The interval (and rate-log period) the end of the job cut short is an entry too (a
    /// 5 s run at 1 s has 5), unless the last one ended with the job (under a millisecond
    /// left, no I/O in it).
    fn close_last_interval(&mut self, end_ns: u64) {
        if let (Some(sample), Some(logs)) = (self.stats.final_sample(end_ns), self.logs.as_mut()) {
            if let Err(e) = logs.record_rates(&sample, [0; 3]) {
                self.fail(format!("writing the bandwidth/IOPS log: {e}"));
            }
        }
        if self.interval.is_none() {
            return;
        }
        let snapshot = self.stats.take_interval(end_ns);
        let mut record = snapshot.summarize(self.stats.start_ns(), &self.percentiles);
        record.paths = self.path_intervals(&snapshot);
        let moved = record.dirs.iter().flatten().any(|d| d.ios > 0);
        if moved || record.end_ms > record.start_ms {
            self.intervals.push(record);
        }
    }

    /// What each path of a multipath job completed in the interval `snapshot` closed.
    fn path_intervals(&mut self, snapshot: &IntervalSnapshot) -> Vec<PathInterval> {
        let seconds = snapshot.end_ns.saturating_sub(snapshot.start_ns) as f64 / 1e9;
        let now = self.engine.paths();
        let intervals = now
            .iter()
            .map(|path| {
                let before = self
                    .path_ios
                    .iter()
                    .find(|(portal, _)| *portal == path.portal)
                    .map_or(0, |(_, ios)| *ios);
                let ios = path.ios.saturating_sub(before);
                PathInterval {
                    portal: path.portal.to_string(),
                    ios,
                    iops: if seconds > 0.0 {
                        ios as f64 / seconds
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        self.path_ios = now.iter().map(|p| (p.portal, p.ios)).collect();
        intervals
    }

    /// Waits for every I/O in flight.
    fn drain(
        &mut self,
        verifier: Option<&Verifier>,
        mut on_complete: impl FnMut(Duration),
    ) -> Result<(), String> {
        // Bounded: each turn waits at most TURN_MAX, and the engine fails an I/O after its
        // own timeout; a job that cannot drain in a minute is failed.
        let limit = Instant::now() + Duration::from_secs(60);
        while self.outstanding() > 0 {
            if Instant::now() > limit {
                return Err(format!(
                    "{} I/Os still in flight a minute after the job ended",
                    self.engine.in_flight()
                ));
            }
            self.submit()?;
            self.reap(1, TURN_MAX, verifier, &mut on_complete)?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl JobSetup {
    /// A plain job for the runner's own tests: `engine` and `workload` at `iodepth`, every
    /// batch at fio's defaults but submission (all at once), no pacing, flushes, verify,
    /// logs or hooks. Tests change what they exercise with struct update syntax.
    pub(crate) fn for_test(
        name: &str,
        engine: Box<dyn crate::engine::Engine>,
        workload: crate::workload::Workload,
        iodepth: usize,
    ) -> JobSetup {
        JobSetup {
            name: name.into(),
            job_number: 1,
            engine,
            workload,
            content: crate::workload::ContentGenerator::new(
                &crate::io::BufferOptions::default(),
                1,
            )
            .expect("content"),
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
            max_latency_ns: Default::default(),
            priority: Default::default(),
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
            stats_config: crate::stats::StatsConfig::default(),
            interval: None,
            percentiles: Vec::new(),
            logs: None,
            iolog: None,
            cpus: None,
            live: Arc::new(crate::stats::LiveCounters::new()),
            progress: Arc::new(JobProgress::default()),
            shared_verify: None,
            exec_prerun: None,
            exec_postrun: None,
            create_only: false,
            lockmem_bytes: 0,
            serialize_overlap: false,
            unlink_each_loop: false,
            thinkcycles: 0,
            syncfs_paths: Vec::new(),
            ramp_size: None,
        }
    }
}

/// Runs one job to its end. Never panics on I/O results; errors end up in the outcome.
pub fn run_job(setup: JobSetup) -> JobOutcome {
    let JobSetup {
        name,
        job_number,
        mut engine,
        mut workload,
        content,
        rate_floor,
        iodepth,
        latency_target,
        max_latency_ns,
        priority,
        verify_only,
        verify_state_save,
        fsync_every,
        fdatasync_every,
        sync_file_range,
        end_fsync,
        steadystate,
        flow,
        iodepth_low,
        batch_submit,
        batch_complete_min,
        batch_complete_max,
        runtime,
        ramp,
        startdelay,
        verify_fatal,
        verify_dump,
        error_policy,
        file_names,
        stats_config,
        interval,
        percentiles,
        logs,
        mut iolog,
        cpus,
        live,
        progress,
        shared_verify,
        exec_prerun,
        exec_postrun,
        create_only,
        lockmem_bytes,
        serialize_overlap,
        unlink_each_loop,
        thinkcycles,
        syncfs_paths,
        ramp_size,
    } = setup;
    if let Some(cpus) = cpus.as_ref().filter(|c| !c.is_empty()) {
        if let Err(e) = allow_cpus(cpus) {
            tracing::warn!(job = %name, ?cpus, error = %e, "cpus_allowed could not be applied");
        }
    }
    let latch = progress.start_latch.lock().ok().and_then(|mut l| l.take());
    if latch.is_none() && !startdelay.is_zero() {
        std::thread::sleep(startdelay);
    }
    // Before the clock: an engine whose I/O lives on this thread sets it up here.
    let engine_ready = engine
        .on_job_thread()
        .map_err(|e| format!("setting up the {} engine: {e}", engine.name()));
    // A gated run: set up, then start with the others (startdelay counts from there).
    // The start is taken at real-time priority where allowed, which lasts until the
    // job's clock has started (`_realtime` drops after it).
    let mut started = latch.map(|latch| latch.arrive_and_wait());
    if !startdelay.is_zero() && started.is_some() {
        started = None;
        std::thread::sleep(startdelay);
    }
    let (started_ns, _realtime) = match started {
        Some((started_ns, realtime)) => (started_ns, Some(realtime)),
        None => (crate::cluster::conn::now_ns(), None),
    };
    progress.started_ns.store(started_ns, Ordering::Relaxed);
    let usage_start = ResourceUsage::thread().ok();
    let clock = Instant::now();
    let mut logs = logs;
    if let Some(logs) = logs.as_mut() {
        logs.start_clock(std::time::SystemTime::now());
    }
    if let Some(iolog) = iolog.as_mut() {
        iolog.start(Duration::ZERO);
    }
    drop(_realtime);
    // After the real-time start (which sets the policy back, not the nice value), before
    // any I/O, as fio sets them before its first.
    let engine_ready = engine_ready.and_then(|()| priority.apply());
    let mut stats = JobStats::new(0, stats_config);
    stats.attach_live(live);
    let paced = workload.is_rate_limited();
    let mut driver = Driver {
        engine,
        clock,
        next_id: 0,
        in_flight: TagMap::with_capacity_and_hasher(iodepth, Default::default()),
        queued: Vec::with_capacity(iodepth),
        stats,
        logs,
        iolog,
        iolog_reopen_due: false,
        write_buffers: WriteBuffers::new(content, iodepth),
        rate_floor,
        done: Vec::with_capacity(iodepth),
        iodepth: iodepth.max(1),
        iodepth_low: iodepth_low.clamp(1, iodepth.max(1)),
        latency_target,
        latency_step: super::latency_target::Step::Continue,
        max_latency_ns,
        verify_only,
        fsync_every,
        fdatasync_every,
        sync_file_range,
        serialize_overlap,
        unlink_each_loop,
        writes_issued: 0,
        flush_due: false,
        datasync_due: false,
        range_due: false,
        written: None,
        flushes: TagMap::default(),
        sync_lat: crate::stats::LatencyStat::new(),
        steadystate,
        flow,
        batch_submit: batch_submit.clamp(1, iodepth.max(1)),
        batch_complete_min: batch_complete_min.clamp(1, iodepth.max(1)),
        batch_complete_max: batch_complete_max.max(batch_complete_min).max(1),
        backlog: std::collections::VecDeque::with_capacity(iodepth),
        progress,
        intervals: Vec::new(),
        path_ios: Vec::new(),
        interval,
        next_interval_ns: interval.map_or(u64::MAX, |i| i.as_nanos() as u64),
        percentiles,
        paced,
        reaped_at_ns: None,
        verify_fatal,
        verify_dump,
        error_policy,
        file_names,
        verify_failures: 0,
        verify_skipped: SkippedBlocks::default(),
        write_results: Vec::with_capacity(iodepth),
        engine_full: false,
        io_failures: 0,
        first_error: None,
        first_errno: None,
        stop: false,
        usage_start,
        shared_verify,
        shared_checked_blocks: 0,
        thinkcycles,
        ramp_size,
        runtime,
    };
    let _ = job_number;
    let ramp_end = (!ramp.is_zero()).then_some(ramp);
    // With ramp_size, the runtime starts where the ramp ends (main_loop sets it then).
    let deadline = runtime
        .map(|r| ramp + r)
        .filter(|_| driver.ramp_size.is_none());
    driver.progress.state.store(
        if ramp_end.is_some() || driver.ramp_size.is_some() {
            state::RAMP
        } else {
            state::RUNNING
        },
        Ordering::Relaxed,
    );
    // fio pins lockmem's memory first; a job that cannot does no I/O.
    let pinned = (lockmem_bytes > 0).then(|| {
        super::pinned::PinnedMemory::lock(lockmem_bytes)
            .map_err(|e| format!("lockmem: locking {lockmem_bytes} bytes: {e}"))
    });
    // Held (locked) until the job's end: `_pinned` lives to the end of this function.
    let (engine_ready, _pinned) = match pinned {
        Some(Err(e)) => (Err(e), None),
        Some(Ok(pinned)) => (engine_ready, Some(pinned)),
        None => (engine_ready, None),
    };
    // fio: a prerun that fails skips the job's I/O and its postrun, with no error.
    let prerun_ok = match &exec_prerun {
        Some(command) => super::hooks::run(&name, super::hooks::Hook::Prerun, command)
            .map_err(|why| eprintln!("iscsi-bench: {name}: {why}: the job does no I/O, as in fio"))
            .is_ok(),
        None => true,
    };
    let result = engine_ready.and_then(|()| {
        if create_only || !prerun_ok {
            return Ok(());
        }
        main_phase(&mut driver, &mut workload, ramp_end, deadline)?;
        match workload.replay_error() {
            Some(error) => Err(error.to_string()),
            None => Ok(()),
        }
    });
    if let Err(e) = result {
        driver.fail(e);
    }
    let issued_until = driver.now_ns();
    driver.stats.stop_gaps(issued_until);
    // A job stopped by its runtime still checks what it wrote (fio verifies after a
    // time-based write job too, unless do_verify=0), once its writes are in: a read racing a write to its
    // block would see either copy.
    if !driver.stop && workload.reads_back() && deadline.is_some_and(|d| driver.now() >= d) {
        let drained = driver.drain(workload.verifier().cloned().as_ref(), |_| {});
        driver.settle_writes(&mut workload);
        if let Err(e) = drained.and_then(|()| read_back(&mut driver, &workload)) {
            driver.fail(e);
        }
    }
    let _ = driver.drain(workload.verifier(), |_| {});
    if driver.shared_verify.is_some() {
        if let Err(e) = final_shared_check(&mut driver, &workload) {
            driver.fail(e);
        }
    }
    // fio's verify_state_save: where the writes stopped, once they are all in (fio saves
    // it as its thread ends). Not being able to save is worth a warning, not a failure.
    if let Some(path) = &verify_state_save {
        driver.settle_writes(&mut workload);
        if let Some(state) = workload.write_state() {
            if let Err(e) = super::verify_state::save(path, &name, state) {
                eprintln!("iscsi-bench: {name}: {e}");
            }
        }
    }
    // fio's end_fsync: one flush once the job's I/O is done (an interrupted or failed job
    // skips it, as fio's terminated job does).
    if end_fsync && !driver.stop && driver.first_error.is_none() {
        if driver.queue_flush(false) {
            if let Err(e) = driver.submit() {
                driver.fail(e);
            }
        }
        let _ = driver.drain(workload.verifier(), |_| {});
    }
    // fio's end_syncfs: one syncfs(2) per file system instead (the I/O is all in).
    if !driver.stop && driver.first_error.is_none() {
        let mut synced = Vec::new();
        for path in &syncfs_paths {
            use std::os::unix::fs::MetadataExt;
            let dev = std::fs::metadata(path).map(|m| m.dev()).ok();
            if dev.is_some_and(|dev| synced.contains(&dev)) {
                continue;
            }
            synced.extend(dev);
            if let Err(e) = syncfs(path) {
                eprintln!(
                    "iscsi-bench: {name}: end_syncfs: syncfs of {}: {e}",
                    path.display()
                );
            }
        }
    }
    let end_ns = driver.now_ns();
    driver.close_last_interval(end_ns);
    driver.stats.finish(end_ns);
    if let Some(start) = usage_start {
        if let Ok(end) = ResourceUsage::thread() {
            driver.stats.set_usage(end.since(&start));
        }
    }
    if let Some(iolog) = driver.iolog.as_mut() {
        if let Err(e) = iolog.finish(Duration::from_nanos(end_ns)) {
            driver
                .first_error
                .get_or_insert(format!("writing write_iolog: {e}"));
        }
    }
    if let Some(logs) = driver.logs.as_mut() {
        if let Err(e) = logs.finish(end_ns / 1_000_000) {
            driver
                .first_error
                .get_or_insert(format!("writing logs: {e}"));
        }
    }
    let (error, error_text) = match (
        &driver.first_error,
        driver.verify_failures,
        driver.io_failures,
    ) {
        (None, _, _) => (0, String::new()),
        (Some(text), _, _) if driver.first_errno.is_some() => {
            (driver.first_errno.unwrap_or(EIO), text.clone())
        }
        (Some(text), v, _) if v > 0 => (
            EILSEQ,
            format!("{v} block(s) failed verification; first: {text}"),
        ),
        (Some(text), _, n) if n > 0 => (EIO, format!("{n} I/O(s) failed; first: {text}")),
        (Some(text), _, _) => (EIO, text.clone()),
    };
    driver.progress.state.store(
        if error == 0 {
            state::DONE
        } else {
            state::FAILED
        },
        Ordering::Relaxed,
    );
    if driver.verify_skipped.total() > 0 {
        eprintln!(
            "iscsi-bench: {name}: verify skipped {} block(s) whose last write failed \
             ({}), timed out ({}) or was never sent ({}): their contents are unknown",
            driver.verify_skipped.total(),
            driver.verify_skipped.write_failed,
            driver.verify_skipped.write_timed_out,
            driver.verify_skipped.write_not_sent
        );
    }
    driver.write_buffers.release(&mut *driver.engine);
    let Driver {
        engine,
        stats,
        intervals,
        verify_failures,
        verify_skipped,
        steadystate,
        sync_lat,
        latency_target,
        ..
    } = driver;
    let paths = engine.paths();
    let rate_skipped = workload.rate_schedule_skipped();
    let engine = match engine.close() {
        Ok(counters) => counters,
        Err(e) => {
            tracing::warn!(job = %name, error = %e, "closing the engine");
            EngineCounters::default()
        }
    };
    if let (Some(command), true) = (&exec_postrun, prerun_ok) {
        // A failed postrun changes nothing in fio.
        if let Err(why) = super::hooks::run(&name, super::hooks::Hook::Postrun, command) {
            eprintln!("iscsi-bench: {name}: {why}");
        }
    }
    JobOutcome {
        stats,
        intervals,
        error,
        error_text,
        verify_failures,
        verify_skipped,
        engine,
        steadystate: steadystate.map(|ss| ss.report()),
        sync: sync_lat,
        latency_depth: latency_target.map(|lt| lt.depth()),
        paths,
        rate_skipped,
    }
}

/// fio's `cpus_allowed`: the job thread may run on these CPUs (all of them, not just the
/// first), through `sched_setaffinity`.
fn allow_cpus(cpus: &[u32]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it for indices
    // below CPU_SETSIZE, which the filter guarantees.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let mut any = false;
    for &cpu in cpus
        .iter()
        .filter(|&&c| (c as usize) < libc::CPU_SETSIZE as usize)
    {
        // SAFETY: see above.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
        any = true;
    }
    if !any {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: pid 0 is the calling thread; the set lives for the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The workload proper, with its verify phases, until done, stopped or out of time.
fn main_phase(
    driver: &mut Driver,
    workload: &mut Workload,
    ramp_end: Option<Duration>,
    deadline: Option<Duration>,
) -> Result<(), String> {
    let mut pending: Option<PlannedIo> = None;
    let result = main_loop(driver, workload, ramp_end, deadline, &mut pending);
    // A write the workload planned but the job never sent (its runtime ended while it
    // waited for its schedule or for room): the tracker counts it, the medium never saw
    // it, so its blocks are unknown (issue 11: "a write that never went on the wire").
    if let Some(planned) = pending {
        workload.on_write_result(&planned, Some(UnknownCause::WriteNotSent));
    }
    result
}

use super::latency_target::Step as LatencyStep;

/// How soon a job held back by its flow asks again without `flow_sleep` (fio spins; a
/// short sleep keeps the core for the job that is behind).
const FLOW_RETRY: Duration = Duration::from_micros(20);

fn main_loop(
    driver: &mut Driver,
    workload: &mut Workload,
    mut ramp_end: Option<Duration>,
    mut deadline: Option<Duration>,
    pending: &mut Option<PlannedIo>,
) -> Result<(), String> {
    // The verifier never changes; a copy leaves the workload free to borrow mutably.
    let verifier = workload.verifier().cloned();
    let verifier = verifier.as_ref();
    let mut loops_ended = workload.loops_ended();
    loop {
        let now = driver.turn_start();
        let ramped_by_size = driver.ramp_size.as_ref().is_some_and(RampSize::is_over);
        if ramped_by_size {
            // fio's ramp_size: the runtime starts now.
            driver.ramp_size = None;
            deadline = driver.runtime.map(|r| now + r);
        }
        if ramped_by_size || ramp_end.is_some_and(|end| now >= end) {
            // The ramp is over: what was measured so far does not count.
            driver.stats.reset(driver.now_ns());
            driver.intervals.clear();
            driver
                .progress
                .state
                .store(state::RUNNING, Ordering::Relaxed);
            ramp_end = None;
        }
        if driver.progress.stop_requested() {
            // Interrupted: what ran is reported, nothing more is checked.
            driver.stop = true;
        }
        match std::mem::replace(&mut driver.latency_step, LatencyStep::Continue) {
            LatencyStep::Quiesce => driver.drain(verifier, |t| workload.on_complete(t))?,
            LatencyStep::FinalWindow => {
                // The depth is found: what ran before does not count (fio resets its
                // statistics for the final window).
                driver.drain(verifier, |t| workload.on_complete(t))?;
                driver.stats.reset(driver.now_ns());
                driver.intervals.clear();
            }
            _ => {}
        }
        driver.settle_writes(workload);
        if driver.stop || deadline.is_some_and(|d| now >= d) {
            return Ok(());
        }
        // A queue that stays full is a stall of the target (rate_backlog).
        workload.note_queue_full(now, !driver.has_room());
        // Issue what is due, while there is room.
        let mut wait_until: Option<Duration> = None;
        let mut finished = false;
        let mut queued = 0;
        // The turn's reading, read again after a drain within the turn: units planned
        // after one start then, not at the top of the turn.
        let mut since_drain = now;
        while driver.has_room() {
            if queued == driver.batch_submit {
                // fio's iodepth_batch_submit: this many per submission, then more.
                driver.submit()?;
                queued = 0;
            }
            if pending.is_none() {
                if let Some(flow) = driver.flow.as_mut() {
                    if !flow.admit() {
                        // fio's flow_threshold_exceeded: ahead of its weight, the job
                        // holds back; with flow_sleep it first lets its queue drain.
                        let pause = flow.sleep;
                        if !pause.is_zero() {
                            driver.submit()?;
                            driver.drain(verifier, |t| workload.on_complete(t))?;
                        }
                        wait_until = Some(driver.now() + pause.max(FLOW_RETRY));
                        break;
                    }
                }
            }
            // A schedule by rate or think time needs the time now (a drain may have come
            // between); any other plan does not (the turn's reading will do).
            let asked_at = if pending.is_none() && workload.plans_by_time() {
                driver.now()
            } else {
                since_drain
            };
            let planned = match pending.take() {
                Some(planned) => planned,
                None => match workload.next(asked_at) {
                    Next::Io(planned) => {
                        for file in workload.take_restarted_files() {
                            driver.engine.file_restarted(file as usize);
                        }
                        if workload.loops_ended() > loops_ended {
                            loops_ended = workload.loops_ended();
                            driver.iolog_reopen_due = true;
                            if driver.unlink_each_loop {
                                // The loop's I/O lands before its files go.
                                driver.submit()?;
                                driver.drain(verifier, |t| workload.on_complete(t))?;
                                since_drain = driver.now();
                                driver.engine.recreate_files().map_err(|e| e.to_string())?;
                            }
                        }
                        planned
                    }
                    Next::WaitForCompletions => {
                        driver.submit()?;
                        driver.drain(verifier, |t| workload.on_complete(t))?;
                        since_drain = driver.now();
                        continue;
                    }
                    Next::VerifyPhase => {
                        driver.submit()?;
                        driver.drain(verifier, |t| workload.on_complete(t))?;
                        driver.settle_writes(workload);
                        driver.iolog_reopen_due = true;
                        read_back(driver, workload)?;
                        driver.iolog_reopen_due = true;
                        since_drain = driver.now();
                        continue;
                    }
                    Next::VerifyBacklog => {
                        driver.submit()?;
                        driver.drain(verifier, |t| workload.on_complete(t))?;
                        driver.settle_writes(workload);
                        let due = workload.take_backlog();
                        check_reads(driver, workload, due.iter().copied())?;
                        workload.mark_verified(&due);
                        since_drain = driver.now();
                        continue;
                    }
                    Next::Pause(until) => {
                        wait_until = Some(until);
                        break;
                    }
                    Next::Done => {
                        finished = true;
                        break;
                    }
                },
            };
            if driver.flush_due {
                // fio's fsync=N: after N writes the next I/O is a flush (none when the
                // job has no next I/O, as in fio), then the one planned.
                *pending = Some(planned);
                if !driver.queue_flush(true) {
                    break;
                }
                queued += 1;
                continue;
            }
            // Due by the turn's reading is due now (time only moves on).
            if planned.scheduled_at > now && planned.scheduled_at > driver.now() {
                wait_until = Some(planned.scheduled_at);
                *pending = Some(planned);
                break;
            }
            if planned.is_flush() {
                // A replayed log's sync (fio's DDIR_SYNC): a flush where the engine has
                // one (as fsync= sends none to the others).
                if driver.engine.supports_flush() {
                    if !driver.queue_flush(true) {
                        *pending = Some(planned);
                        break;
                    }
                    queued += 1;
                }
                continue;
            }
            if driver.verify_only && planned.direction == Direction::Write {
                // fio's verify_only: the write is planned and counted, not carried out;
                // the verify phase then checks what an earlier run wrote.
                driver.skip_write(planned);
                workload.on_complete(driver.now());
                continue;
            }
            if driver.serialize_overlap && driver.overlaps_in_flight(&planned) {
                // fio's serialize_overlap: it waits until what it overlaps completes.
                *pending = Some(planned);
                break;
            }
            let spin = driver.thinkcycles > 0 && planned.direction != Direction::Trim;
            if !driver.queue(planned, verifier, asked_at) {
                *pending = Some(planned);
                break;
            }
            queued += 1;
            if spin {
                // fio's thinkcycles: after each read or write is issued (so it goes out
                // now, not after the spin), whatever thinktime does.
                driver.submit()?;
                queued = 0;
                cycles_spin(driver.thinkcycles);
            }
        }
        driver.submit()?;
        if finished && pending.is_none() {
            driver.drain(verifier, |t| workload.on_complete(t))?;
            driver.settle_writes(workload);
            return Ok(());
        }
        // Wait: for completions when I/O is in flight, else for the next due time.
        // A schedule is waited for exactly; the runtime's end from the turn's reading (at
        // most the turn's length old: the last wait may end that much late).
        let until_due = wait_until
            .map(|due| due.saturating_sub(driver.now()))
            .unwrap_or(TURN_MAX)
            .min(TURN_MAX);
        let until_deadline = deadline.map(|d| d.saturating_sub(now)).unwrap_or(TURN_MAX);
        let wait = until_due.min(until_deadline);
        if driver.outstanding() > 0 || driver.engine_full {
            // A full queue waits for fio's iodepth_batch_complete_min; a job waiting for
            // its schedule takes one completion or the due time, whichever comes first.
            let full = !driver.has_room();
            let min = if full { driver.batch_complete_min } else { 1 };
            driver.reap(min, wait, verifier, |t| workload.on_complete(t))?;
            // fio's iodepth_low: a queue that was full drains to the low mark before it is
            // filled again (fio's wait_for_completions loop), within this turn's wait.
            if full && driver.iodepth_low < driver.iodepth {
                let turn_end = driver.now() + wait;
                while driver.engine.in_flight() > driver.iodepth_low
                    && driver.now() < turn_end
                    && !driver.stop
                {
                    let left = turn_end.saturating_sub(driver.now());
                    driver.reap(1, left, verifier, |t| workload.on_complete(t))?;
                }
            }
        } else if wait_until.is_some() {
            think_or_sleep(driver.now(), workload.think_spin_until(), wait);
            // A reap before the wait (a think pause's drain) read the clock before it:
            // the next turn starts now, or the I/O after a pause counts it as latency.
            driver.reaped_at_ns = None;
            driver.tick();
        }
    }
}

/// Waits `wait` from `now`: busy until `spin_until` (fio's `thinktime_spin`, which stands
/// for CPU work done on the data), asleep for the rest.
fn think_or_sleep(now: Duration, spin_until: Duration, wait: Duration) {
    let end = now + wait;
    let spin_end = spin_until.min(end);
    if spin_end > now {
        let started = Instant::now();
        let spin = spin_end - now;
        while started.elapsed() < spin {
            std::hint::spin_loop();
        }
    }
    let left = end.saturating_sub(spin_end.max(now));
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

/// fio's `verify_dump`: the failed block as read, and as it should be when its generation
/// is known, in `<base>.<offset>.received` and `<base>.<offset>.expected`.
fn dump_block(
    base: &str,
    verifier: &Verifier,
    buffer: &[u8],
    io_offset: u64,
    error: &VerifyError,
    expected_generation: Option<u64>,
) {
    let start = error.block_offset.saturating_sub(io_offset) as usize;
    let end = (start + error.block_len as usize).min(buffer.len());
    let write = |kind: &str, bytes: &[u8]| {
        let name = format!("{base}.{}.{kind}", error.block_offset);
        match std::fs::write(&name, bytes) {
            Ok(()) => eprintln!("iscsi-bench:        {kind} data dumped as {name}"),
            Err(e) => eprintln!("iscsi-bench: cannot write verify dump {name}: {e}"),
        }
    };
    write("received", buffer.get(start..end).unwrap_or_default());
    if let Some(generation) = expected_generation {
        let mut expected = vec![0; end.saturating_sub(start)];
        verifier.fill(&mut expected, error.block_offset, generation);
        write("expected", &expected);
    }
}

/// Reads back and checks every block the job wrote since the last verify phase.
fn read_back(driver: &mut Driver, workload: &Workload) -> Result<(), String> {
    let Some(plan) = workload.read_back_plan() else {
        return Ok(());
    };
    check_reads(driver, workload, plan)
}

/// Reads `plan` and checks each block against the generation it must hold (the
/// read-back of a verify phase, or of a `verify_backlog`), skipping and counting the
/// blocks a failed write left unknown.
fn check_reads(
    driver: &mut Driver,
    workload: &Workload,
    plan: impl Iterator<Item = ReadBackIo>,
) -> Result<(), String> {
    let Some(verifier) = workload.verifier() else {
        return Ok(());
    };
    driver
        .progress
        .state
        .store(state::VERIFYING, Ordering::Relaxed);
    // The plan's reads, each split around the blocks a failed write left unknown.
    let mut plan = plan.peekable();
    let mut runs: Vec<ReadBackIo> = Vec::new();
    let mut skipped = SkippedBlocks::default();
    loop {
        if driver.stop || driver.progress.stop_requested() {
            break;
        }
        let mut queued = 0;
        while driver.has_room() {
            if queued == driver.batch_submit {
                driver.submit()?;
                queued = 0;
            }
            if runs.is_empty() {
                // Bounded: each plan entry is taken once; one that is all unknown adds
                // no run and the loop takes the next.
                let Some(io) = plan.next() else { break };
                workload.checkable_runs(io, &mut runs, &mut skipped);
                runs.reverse();
                continue;
            }
            let Some(io) = runs.last() else { break };
            let now = driver.now();
            let planned = io.planned(now);
            if !driver.queue(planned, Some(verifier), now) {
                break;
            }
            runs.pop();
            queued += 1;
        }
        driver.submit()?;
        if runs.is_empty() && plan.peek().is_none() {
            break;
        }
        driver.reap(1, TURN_MAX, Some(verifier), |_| {})?;
    }
    driver.verify_skipped.add(&skipped);
    driver.drain(Some(verifier), |_| {})?;
    driver
        .progress
        .state
        .store(state::RUNNING, Ordering::Relaxed);
    Ok(())
}

/// How long a `verify_shared` job waits for the other writers of its target to finish
/// before its final check (each of them is bounded by its own runtime or size).
const SHARED_FINISH_WAIT: Duration = Duration::from_secs(300);
/// The final check reads up to this many bytes of adjacent written blocks at once.
const SHARED_FINAL_READ_MAX: u64 = 128 << 10;

/// `verify_shared`'s final check: once every writer of the target has finished, this
/// job's share of the blocks any of them wrote is read back; with no write in flight each
/// must hold its last acknowledged write (or one that was concurrent with it, or a write
/// that failed and may have landed). Always tells the ledger the job writes no more.
fn final_shared_check(driver: &mut Driver, workload: &Workload) -> Result<(), String> {
    let Some(shared) = driver.shared_verify.clone() else {
        return Ok(());
    };
    shared.ledger.finish_writing();
    let Some(verifier) = workload.verifier().cloned() else {
        return Ok(());
    };
    let waited = Instant::now();
    // Bounded by SHARED_FINISH_WAIT.
    while shared.ledger.still_writing() > 0 {
        if driver.stop || driver.progress.stop_requested() {
            return Ok(());
        }
        if waited.elapsed() > SHARED_FINISH_WAIT {
            return Err(format!(
                "verify_shared: {} other writer(s) of {} still writing after {:?}; the final \
                 check did not run",
                shared.ledger.still_writing(),
                shared.ledger.target(),
                SHARED_FINISH_WAIT
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if driver.stop {
        return Ok(());
    }
    let block = u64::from(shared.ledger.block_bytes());
    let offsets = shared
        .ledger
        .written_blocks(shared.job as usize, shared.ledger.sharers());
    // Adjacent blocks of the share (every `sharers`-th block) are far apart unless one job
    // shares: merge only truly adjacent ones.
    let mut reads: Vec<ReadBackIo> = Vec::new();
    for offset in offsets {
        match reads.last_mut() {
            Some(last)
                if last.offset + u64::from(last.len) == offset
                    && u64::from(last.len) + block <= SHARED_FINAL_READ_MAX =>
            {
                last.len += block as u32;
            }
            _ => reads.push(ReadBackIo {
                file: 0,
                offset,
                len: block as u32,
                generation: 0,
            }),
        }
    }
    let before = driver.shared_checked_blocks;
    driver
        .progress
        .state
        .store(state::VERIFYING, Ordering::Relaxed);
    let mut pending = reads.into_iter().rev().collect::<Vec<_>>();
    // Bounded: each read is queued once; each turn reaps or waits at most TURN_MAX.
    while !pending.is_empty() {
        if driver.stop || driver.progress.stop_requested() {
            break;
        }
        while driver.has_room() {
            let Some(io) = pending.last() else { break };
            let now = driver.now();
            let planned = io.planned(now);
            if !driver.queue(planned, Some(&verifier), now) {
                break;
            }
            pending.pop();
        }
        driver.submit()?;
        driver.reap(1, TURN_MAX, Some(&verifier), |_| {})?;
    }
    driver.drain(Some(&verifier), |_| {})?;
    eprintln!(
        "iscsi-bench: verify_shared: {} block(s) of {} checked after all writers ended ({} \
         while writing)",
        driver.shared_checked_blocks - before,
        shared.ledger.target(),
        before
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::allow_cpus;

    fn allowed_now() -> Vec<usize> {
        // SAFETY: zeroed is the empty set; the kernel fills it for the calling thread.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0);
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    }

    #[test]
    fn cpus_allowed_sets_the_whole_mask_of_the_thread() {
        std::thread::spawn(|| {
            allow_cpus(&[0]).unwrap();
            assert_eq!(allowed_now(), vec![0]);
            // A CPU this machine does not have is refused by the kernel or left out.
            assert!(allow_cpus(&[100_000]).is_err());
            assert_eq!(allowed_now(), vec![0], "a refused mask changes nothing");
        })
        .join()
        .unwrap();
    }
}
