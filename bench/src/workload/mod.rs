//! What a job does, I/O by I/O: which direction, where, how much, when, and the bytes that let
//! a read prove what was written. Pure logic: no I/O, no clock (time comes in as a
//! [`Duration`] since the job started), and every choice comes from the job's seed, so the
//! same seed gives the same I/Os.
//!
//! The options follow fio's documented meanings (fio(1), fio 3.33): `offset`, `size`, `rw`,
//! `rwmixread`, `bs`/`bsrange`/`bssplit`, `blockalign`, `norandommap`, `random_distribution`,
//! `loops`, `number_ios`, `io_size`, `time_based`, `randrepeat`/`randseed`, `rate`,
//! `rate_iops`, `rate_process`, `thinktime*`, `verify*`, `do_verify`, `verify_fatal`, and
//! fio's strided zones (`zonemode=strided`, `zonesize`, `zonerange`, `zoneskip`), which
//! follow fio's source (io_u.c, `setup_strided_zone_mode`) where the manual says little.
//!
//! The parts:
//! - [`Workload`] is what the runner drives: [`Workload::next`] hands out one [`PlannedIo`]
//!   at a time with its *scheduled* start, or says to wait, to verify, or that the job is done;
//! - `generator` picks directions, offsets and sizes (sequential with wrap-around, random over
//!   a keyed permutation so a pass touches every block once, uniform, or skewed);
//! - [`strided`] walks fio's strided zones (`zonemode=strided`), which hold the offsets to
//!   one zone at a time;
//! - [`pacer`] turns rate limits and think time into a schedule that a stall cannot erase;
//! - [`content`] fills write buffers that do not verify (random by default, fio's
//!   compress, dedupe, pattern and zero options);
//! - [`verify`] writes and checks the per-block headers, and `generation` knows which
//!   generation each block should hold, for the read-back plan.
//!
//! How the runner uses it:
//! ```text
//! let mut workload = Workload::new(config)?;
//! loop {
//!     match workload.next(now) {
//!         Next::Io(io) => {
//!             // wait until io.scheduled_at if it is in the future; fill the buffer for
//!             // VerifyAction::Fill; issue; measure latency from io.scheduled_at (not from the
//!             // moment it went out: a stall then shows in the latency instead of vanishing).
//!         }
//!         Next::WaitForCompletions => { /* reap, calling workload.on_complete(now) for each */ }
//!         Next::VerifyPhase => { /* drain, then read and check workload.read_back_plan() */ }
//!         Next::Done => break,
//!     }
//! }
//! ```

mod blocksize;
pub mod checksum;
pub mod content;
mod distribution;
mod generation;
mod generator;
pub mod pacer;
mod permutation;
pub mod rate_floor;
pub mod replay;
mod rng;
pub mod shared_ledger;
pub mod strided;
mod unknown;
mod verified;
pub mod verify;
mod write_state;

use std::time::Duration;

use crate::io::{Direction, Distribution, FileService, FileServiceKind, PerDir, RwKind};

pub use blocksize::BSSPLIT_ENTRIES_MAX;
pub use checksum::ChecksumKind;
pub use content::{ContentError, ContentGenerator};
pub use generation::{ReadBackIo, ReadBackPlan, GENERATION_TABLE_BLOCKS_DEFAULT};
pub use pacer::{Pacer, PacingConfig, ThinkTime, ThinkTimeTrigger};
pub use rate_floor::{RateFloor, RateFloorConfig, RateFloorMiss};
pub use shared_ledger::{ReadTicket, SharedLedger, SharedVerifyError, WriteRecord};
pub use strided::StridedZones;
pub use unknown::{SkippedBlocks, UnknownCause};
pub use verify::{
    BlockImage, ByteWindow, DigestMismatch, JudgedFailure, Mismatch, Verifier, VerifyConfig,
    VerifyError, VerifyHeader, VerifyKind,
};
pub use write_state::{PlanFingerprint, UnknownRun, WriteState};

use generation::GenerationTracker;
use generator::{GenStep, Generator};
use unknown::UnknownBlocks;
use verified::VerifiedBlocks;

/// fio's default random seed when `randrepeat` is on and `randseed` is not set
/// (`FIO_RANDSEED` in fio's source).
pub const FIO_DEFAULT_RANDSEED: u64 = 0xb189_9bed;

/// The seed of one job: `randseed` if given; otherwise fio's fixed default when `randrepeat`
/// is on (fio's default), or `entropy` (the caller's random number) when it is off. Jobs
/// differ by `job_number` (fio numbers them from 1 across `numjobs` clones), so clones do not
/// all hit the same blocks, but each one repeats itself from run to run.
pub fn job_seed(randseed: Option<u64>, randrepeat: bool, job_number: u32, entropy: u64) -> u64 {
    let base = match randseed {
        Some(seed) => seed,
        None if randrepeat => FIO_DEFAULT_RANDSEED,
        None => entropy,
    };
    rng::mix64(base ^ rng::mix64(u64::from(job_number)))
}

/// fio's `filesize=low-high` for a file whose size is outside the range: a size drawn in
/// `[low_bytes, high_bytes)` from the job's seed, one draw per file of the job, aligned down
/// to `align_bytes` (fio's `get_rand_file_size`, which aligns to the smallest block size).
pub fn drawn_file_size(
    seed: u64,
    file: usize,
    low_bytes: u64,
    high_bytes: u64,
    align_bytes: u64,
) -> u64 {
    let mut rng =
        rng::SplitMix64::new(rng::stream_seed(seed, rng::streams::FILE_SIZE, file as u64));
    let drawn = low_bytes + rng.below(high_bytes.saturating_sub(low_bytes));
    drawn - drawn % align_bytes.max(1)
}

/// fio's `bs`, `bsrange` or `bssplit` for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockSizeSpec {
    Fixed(u32),
    /// Multiples of `min_bytes` up to `max_bytes`.
    Range {
        min_bytes: u32,
        max_bytes: u32,
    },
    /// fio's `bsrange` with `bs_unaligned`: any length from `min_bytes` to `max_bytes`.
    RangeUnaligned {
        min_bytes: u32,
        max_bytes: u32,
    },
    /// At most [`BSSPLIT_ENTRIES_MAX`] entries.
    Split(Vec<BsSplitEntry>),
}

impl Default for BlockSizeSpec {
    /// fio's default block size: 4096 bytes.
    fn default() -> Self {
        BlockSizeSpec::Fixed(4096)
    }
}

/// One `size/percent` of a bssplit; `percent` `None` for a blank weight (`4k/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BsSplitEntry {
    pub len_bytes: u32,
    pub percent: Option<u32>,
}

/// Everything the workload needs, typed; the job parser fills it. [`Default`] gives fio's
/// defaults except `size_bytes`, which must be set.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// `offset`: where the region starts in the target.
    pub offset_bytes: u64,
    /// `size`: the region's length; I/O stays within `[offset, offset + size)`.
    pub size_bytes: u64,
    pub rw: RwKind,
    /// `rwmixread` (0..=100; fio's default 50). The parser folds `rwmixwrite` into it.
    pub rwmixread_percent: u32,
    pub block_sizes: PerDir<BlockSizeSpec>,
    /// `blockalign`; `None` aligns random offsets to the direction's minimum block size.
    pub block_align_bytes: PerDir<Option<u32>>,
    pub norandommap: bool,
    pub random_distribution: Distribution,
    /// `loops` (at least 1).
    pub loops: u32,
    /// `number_ios`: stop after this many I/Os (all directions), whatever else is left.
    pub number_ios: Option<u64>,
    /// `io_size`: bytes per loop (default `size`); may exceed `size`, and I/O then wraps.
    pub io_size_bytes: Option<u64>,
    /// `time_based`: never done by bytes; the runner stops the job at `runtime`.
    pub time_based: bool,
    /// From [`job_seed`].
    pub seed: u64,
    pub pacing: PacingConfig,
    /// `verify=` and its companions; `None` for `verify=0`.
    pub verify: Option<VerifyConfig>,
    /// Files 1, 2, ... of the job (fio's `filename` list), each with its own region; file
    /// 0 is `offset_bytes`/`size_bytes`.
    pub more_files: Vec<FileRegion>,
    /// `file_service_type`.
    pub file_service: FileService,
    /// fio's `openfiles`: how many files the service chooses among at once (0: all). A file
    /// counts from its first I/O until it is done, when the next one may start.
    pub open_files: usize,
    /// `rw=...:N`, `rw_sequencer`, `percentage_random`.
    pub offsets: OffsetModifiers,
    /// fio's `zonemode=strided`: I/O held to one zone at a time (one-file jobs only).
    pub strided_zones: Option<StridedZones>,
}

/// fio's `rw_sequencer`: what the I/Os between two random offsets of `rw=randread:N` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RwSequencer {
    /// Each continues where the one before ended (fio's default).
    #[default]
    Sequential,
    /// Each repeats the offset of the one before.
    Identical,
}

/// fio's modifiers of how one offset follows another (fio(1): `rw`'s `:<nr>` suffix,
/// `rw_sequencer`, `percentage_random`). The default changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetModifiers {
    /// Sequential patterns: bytes added to each offset after the first (`rw=read:8k` leaves
    /// 8 KiB holes; a negative value walks backwards, `rw=read:-8k`).
    pub seq_add_bytes: i64,
    /// Random patterns: a new random offset every this many I/Os (`rw=randread:8`), the
    /// ones between placed by `sequencer`. At least 1.
    pub random_every: u32,
    pub sequencer: RwSequencer,
    /// Random patterns, per direction: the percentage of new offsets drawn at random; the
    /// others continue where the direction's last I/O ended.
    pub percentage_random: PerDir<u32>,
}

impl Default for OffsetModifiers {
    fn default() -> Self {
        OffsetModifiers {
            seq_add_bytes: 0,
            random_every: 1,
            sequencer: RwSequencer::Sequential,
            percentage_random: PerDir::splat(100),
        }
    }
}

/// The region of one more file of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRegion {
    pub offset_bytes: u64,
    pub size_bytes: u64,
    /// This file's bytes per loop when they are not the job's `io_size_bytes` (fio's
    /// `size` shared out over files of a `filesize`, `run::setup::filesize_io_shares`);
    /// `Some(0)`: the file gets no I/O.
    pub io_size_bytes: Option<u64>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            offset_bytes: 0,
            size_bytes: 0,
            rw: RwKind::Read,
            rwmixread_percent: 50,
            block_sizes: PerDir::splat(BlockSizeSpec::default()),
            block_align_bytes: PerDir::splat(None),
            norandommap: false,
            random_distribution: Distribution::Random,
            loops: 1,
            number_ios: None,
            io_size_bytes: None,
            time_based: false,
            seed: job_seed(None, true, 1, 0),
            pacing: PacingConfig::default(),
            verify: None,
            more_files: Vec::new(),
            file_service: FileService::default(),
            open_files: 0,
            offsets: OffsetModifiers::default(),
            strided_zones: None,
        }
    }
}

/// A configuration the workload cannot run, naming the option and the value.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("size is 0: the job has no region to work on")]
    ZeroSize,
    #[error("offset {offset_bytes} + size {size_bytes} is past the end of a 64-bit target")]
    RegionOverflow { offset_bytes: u64, size_bytes: u64 },
    #[error("{} block size is 0", direction.fio_name())]
    ZeroBlockSize { direction: Direction },
    #[error("{} bsrange {min_bytes}-{max_bytes}: the minimum is above the maximum", direction.fio_name())]
    BlockSizeRangeInverted {
        direction: Direction,
        min_bytes: u32,
        max_bytes: u32,
    },
    #[error("{} bssplit has no entries", direction.fio_name())]
    BsSplitEmpty { direction: Direction },
    #[error("{} bssplit has {entries} entries; at most 64", direction.fio_name())]
    BsSplitTooManyEntries {
        direction: Direction,
        entries: usize,
    },
    #[error("{} bssplit percentages add to {total_percent}, more than 100", direction.fio_name())]
    BsSplitOver100 {
        direction: Direction,
        total_percent: u64,
    },
    #[error("{} block size {len_bytes} is larger than size {size_bytes}", direction.fio_name())]
    BlockLargerThanRegion {
        direction: Direction,
        len_bytes: u32,
        size_bytes: u64,
    },
    #[error("{} blockalign is 0", direction.fio_name())]
    ZeroBlockAlign { direction: Direction },
    #[error("rwmixread={0}: must be 0 to 100")]
    RwMixOutOfRange(u32),
    #[error("io_size={io_size_bytes} is smaller than the smallest block size {block_bytes}")]
    IoSizeBelowBlockSize {
        io_size_bytes: u64,
        block_bytes: u32,
    },
    #[error("loops=0: must be at least 1")]
    ZeroLoops,
    #[error(
        "verify_offset={offset_bytes}: the {header_len}-byte header must lie past its own \
         place at the start and inside the {interval_bytes}-byte verify interval"
    )]
    VerifyOffsetTooLarge {
        offset_bytes: u32,
        header_len: u32,
        interval_bytes: u32,
    },
    #[error(
        "random_distribution=zoned_abs: the zones end at byte {zones_end_bytes}, beyond the \
         region's {size_bytes} bytes (fio: \"zoned_abs sizes exceed file size\")"
    )]
    ZonesBeyondRegion {
        zones_end_bytes: u64,
        size_bytes: u64,
    },
    #[error("random_distribution {name}:{value}: {why}")]
    DistributionParameter {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error("{} rate of 0", direction.fio_name())]
    ZeroRate { direction: Direction },
    #[error("thinktime_blocks=0: must be at least 1")]
    ZeroThinkTimeBlocks,
    #[error("verify with rw={0:?}: trims destroy the data a verify would check")]
    VerifyWithTrim(RwKind),
    #[error("verify=pattern needs a non-empty verify_pattern")]
    VerifyPatternEmpty,
    #[error(
        "verify_interval={interval_bytes} is shorter than the {header_len} byte verify header"
    )]
    VerifyIntervalTooShort {
        interval_bytes: u32,
        header_len: u32,
    },
    #[error("{} size {len_bytes} (block size or alignment) is not a multiple of verify_interval={interval_bytes}", direction.fio_name())]
    VerifyIntervalMismatch {
        direction: Direction,
        len_bytes: u32,
        interval_bytes: u32,
    },
    #[error("verify on this workload needs a generation table of {blocks} blocks; the limit is {limit_blocks} (use fixed bs with a sequential or random-map workload, or a smaller size)")]
    VerifyTooManyBlocks { blocks: u64, limit_blocks: u64 },
    #[error("verify with lba_size 0")]
    ZeroLbaSize,
    #[error("zonerange={range_bytes} is smaller than the block size {block_bytes}: a zone holds no block")]
    ZoneRangeBelowBlockSize { range_bytes: u64, block_bytes: u32 },
    #[error("zonemode=strided with {0} is not supported")]
    StridedZonesWith(&'static str),
}

/// What the runner does with one I/O's buffer for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyAction {
    /// Plain data (no verify, trims, reads in a mixed write job).
    None,
    /// A write: [`Verifier::fill`] the buffer with this generation before sending it.
    Fill { generation: u64 },
    /// A read: [`Verifier::check`] the buffer on completion. `None` when checking data an
    /// earlier run wrote (`rw=read` with `verify`): any generation is accepted.
    Check { expected_generation: Option<u64> },
}

/// One I/O to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedIo {
    pub direction: Direction,
    /// Which of the job's files (LUNs) it goes to; 0 for a job with one.
    pub file: u32,
    /// Byte offset in the target (the region's offset included).
    pub offset: u64,
    pub len: u32,
    /// When the I/O is due, as time since the job started. Wait until then if it is ahead;
    /// if it is behind (a stall), issue at once and still measure latency from here.
    pub scheduled_at: Duration,
    pub verify: VerifyAction,
}

impl PlannedIo {
    /// Whether this is a replayed log's sync (a flush, as [`crate::io::IoUnit::flush`]
    /// marks one): only a replay plans these.
    pub fn is_flush(&self) -> bool {
        self.direction == Direction::Write
            && self.len == 0
            && self.offset == crate::io::IoUnit::FLUSH_OFFSET
    }
}

/// What the runner does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Io(PlannedIo),
    /// Think time after `thinktime_blocks` (trigger `complete`): reap every I/O in flight,
    /// calling [`Workload::on_complete`] for each, then ask again.
    WaitForCompletions,
    /// A loop of a write job with verify is over: drain, read and check
    /// [`Workload::read_back_plan`], then ask again. Comes once after each loop, the last too.
    VerifyPhase,
    /// `verify_backlog` writes were planned since the last check: drain, read and check
    /// [`Workload::take_backlog`], then ask again.
    VerifyBacklog,
    /// Nothing is left to issue, but the think pause after the last I/O runs until then
    /// (fio's thread sleeps it out before it ends): wait, then ask again.
    Pause(Duration),
    Done,
}

/// Counts of what was handed out so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub ios: PerDir<u64>,
    pub bytes: PerDir<u64>,
}

/// The workload of one job; see the module docs for the calling pattern.
#[derive(Debug)]
pub struct Workload {
    rw: RwKind,
    rwmixread_percent: u32,
    /// One stream per file of the job (at least one).
    files: Vec<FileStream>,
    selector: FileSelector,
    pacer: Pacer,
    verifier: Option<Verifier>,
    read_back_due: bool,
    /// `verify_backlog`: the verified writes planned since the last backlog check, and how
    /// many make one.
    backlog: Vec<ReadBackIo>,
    backlog_every: Option<u64>,
    /// `verify_backlog_batch`: blocks each triggered check reads, and how many the check
    /// under way may still read. As in fio, a check that finds the backlog empty before
    /// its batch is done stays open: each write after it is read back at once until the
    /// batch is used up.
    backlog_batch: u64,
    batch_left: u64,
    /// `number_ios`, over all files.
    number_ios: Option<u64>,
    finished: bool,
    progress: Progress,
    plan: PlanFingerprint,
    /// `read_iolog`: the I/Os come from this log, not from the generators, with the bytes
    /// it moves in all.
    replay: Option<(replay::Replay, u64)>,
    /// Loops of the job's first file that ended with another to come (fio closes and
    /// reopens its files there, which its `write_iolog` shows).
    loops_ended: u64,
    /// Files whose I/O started over since [`Workload::take_restarted_files`] last looked.
    restarted_files: Vec<u32>,
}

/// The offsets, sizes and verify generations of one file of the job.
#[derive(Debug)]
struct FileStream {
    generator: Generator,
    tracker: Option<GenerationTracker>,
    /// This file's blocks a failed, timed-out or unsent write left unknown (with a tracker
    /// only).
    unknown: Option<UnknownBlocks>,
    /// With `verify_backlog`: the blocks a backlog check read back, unwritten since.
    verified: Option<VerifiedBlocks>,
    done: bool,
    /// No I/O planned for this file (its `FileRegion::io_size_bytes` is 0): done from the
    /// start, never opened, nothing in the job's total.
    idle: bool,
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Result<Self, WorkloadError> {
        let pacer = Pacer::new(
            &config.pacing,
            rng::stream_seed(config.seed, rng::streams::PACING, 0),
        )?;
        if config.verify.is_some() && config.rw.does(Direction::Trim) {
            return Err(WorkloadError::VerifyWithTrim(config.rw));
        }
        // File 0 is the job's own region and seed, so a one-file job is what it always was;
        // the others draw their own offsets.
        let mut file_configs = vec![WorkloadConfig {
            number_ios: None,
            ..config.clone()
        }];
        for (index, region) in config.more_files.iter().enumerate() {
            file_configs.push(WorkloadConfig {
                offset_bytes: region.offset_bytes,
                size_bytes: region.size_bytes,
                // A file with no share plans as if whole and starts done.
                io_size_bytes: region
                    .io_size_bytes
                    .filter(|&bytes| bytes > 0)
                    .or(config.io_size_bytes),
                number_ios: None,
                seed: rng::stream_seed(config.seed, rng::streams::FILE, index as u64 + 1),
                ..config.clone()
            });
        }
        let generators = file_configs
            .iter()
            .map(Generator::new)
            .collect::<Result<Vec<_>, _>>()?;
        let verifier = match &config.verify {
            None => None,
            Some(verify_config) => Some(Verifier::new(
                verify_config,
                config.seed,
                generators[0].default_verify_interval(),
            )?),
        };
        let mut files = Vec::with_capacity(generators.len());
        let idle =
            |index: usize| index > 0 && config.more_files[index - 1].io_size_bytes == Some(0);
        for (index, generator) in generators.into_iter().enumerate() {
            let tracker = match (&verifier, &config.verify) {
                (Some(verifier), Some(verify_config)) => {
                    generator.check_verify_grid(verifier.interval_bytes())?;
                    if config.rw.does(Direction::Write) {
                        Some(GenerationTracker::new(
                            &generator,
                            verify_config,
                            verifier.interval_bytes(),
                        )?)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let unknown = match (&tracker, &verifier, &config.verify) {
                (Some(_), Some(verifier), Some(verify_config)) => Some(UnknownBlocks::new(
                    verifier.interval_bytes(),
                    verify_config.max_tracked_blocks,
                )),
                _ => None,
            };
            let verified = match (&unknown, &verifier, &config.verify) {
                (Some(_), Some(verifier), Some(v)) if v.backlog.is_some() => {
                    Some(VerifiedBlocks::new(
                        generator.region_offset(),
                        generator.reach_bytes(),
                        verifier.interval_bytes(),
                    ))
                }
                _ => None,
            };
            files.push(FileStream {
                generator,
                tracker,
                unknown,
                verified,
                done: idle(index),
                idle: idle(index),
            });
        }
        let read_back_due =
            config.rw.does(Direction::Write) && config.verify.as_ref().is_some_and(|v| v.do_verify);
        let selector = FileSelector::new(
            config.file_service,
            files.len(),
            config.open_files,
            rng::stream_seed(config.seed, rng::streams::FILE, 0),
        );
        Ok(Workload {
            rw: config.rw,
            rwmixread_percent: config.rwmixread_percent,
            files,
            selector,
            pacer,
            verifier,
            read_back_due,
            backlog: Vec::new(),
            backlog_every: config
                .verify
                .as_ref()
                .filter(|v| v.do_verify)
                .and_then(|v| v.backlog),
            backlog_batch: config
                .verify
                .as_ref()
                .and_then(|v| v.backlog_batch.or(v.backlog))
                .unwrap_or(0),
            batch_left: 0,
            number_ios: config.number_ios,
            finished: false,
            progress: Progress::default(),
            plan: PlanFingerprint::of(&config),
            replay: None,
            loops_ended: 0,
            restarted_files: Vec::new(),
        })
    }

    /// How many loops ended with another to follow (the job's first file's).
    pub fn loops_ended(&self) -> u64 {
        self.loops_ended
    }

    /// The files whose I/O started over on their region (a new loop, or a time-based
    /// job's new pass) since the last call, in order: where fio drops a file's page cache
    /// again before its next I/O.
    pub fn take_restarted_files(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.restarted_files)
    }

    /// fio's `read_iolog`: the job replays `replay` (moving `total_bytes`) instead of its
    /// pattern; the job's pacing, loops and verify no longer plan anything.
    pub fn replaying(mut self, replay: replay::Replay, total_bytes: u64) -> Self {
        self.replay = Some((replay, total_bytes));
        self
    }

    /// Why a replay ended before the end of its log (the log changed since it was read
    /// before the start).
    pub fn replay_error(&self) -> Option<&replay::IologError> {
        self.replay.as_ref().and_then(|(replay, _)| replay.error())
    }

    /// The next step of a replay: the log's I/O, due at its time (or now, when late: a
    /// replay that falls behind issues at once and measures from then, as fio does).
    fn next_replayed(&mut self, now: Duration) -> Next {
        let Some((replay, _)) = self.replay.as_mut() else {
            return Next::Done;
        };
        match replay.next_step() {
            replay::ReplayStep::Io {
                direction,
                file,
                offset,
                len,
                due,
            } => {
                *self.progress.ios.get_mut(direction) += 1;
                *self.progress.bytes.get_mut(direction) += u64::from(len);
                Next::Io(PlannedIo {
                    direction,
                    file,
                    offset,
                    len,
                    scheduled_at: due.max(now),
                    verify: VerifyAction::None,
                })
            }
            replay::ReplayStep::Sync { file, due } => Next::Io(PlannedIo {
                direction: Direction::Write,
                file,
                offset: crate::io::IoUnit::FLUSH_OFFSET,
                len: 0,
                scheduled_at: due.max(now),
                verify: VerifyAction::None,
            }),
            replay::ReplayStep::Done => self.finish(),
        }
    }

    /// Whether the job reads back what it wrote after writing (`do_verify`, with verify,
    /// in a job that writes).
    pub fn reads_back(&self) -> bool {
        self.read_back_due
    }

    /// Where this job's writing stands (fio's `verify_state_save`): `None` for a job that
    /// does not write with verify.
    pub fn write_state(&self) -> Option<WriteState> {
        let mut unknown = Vec::new();
        let mut tracked = false;
        for (index, file) in self.files.iter().enumerate() {
            let Some(blocks) = &file.unknown else {
                continue;
            };
            tracked = true;
            let file_index = index as u32;
            match blocks.runs() {
                Ok(runs) => {
                    unknown.extend(runs.into_iter().map(|(offset, len, cause)| UnknownRun {
                        file: file_index,
                        offset,
                        len,
                        cause,
                    }))
                }
                Err(cause) => unknown.push(UnknownRun {
                    file: file_index,
                    offset: file.generator.region_offset(),
                    len: file.generator.reach_bytes(),
                    cause,
                }),
            }
        }
        tracked.then(|| WriteState {
            ios: self.progress.ios.each().iter().map(|(_, n)| **n).sum(),
            plan: self.plan.clone(),
            unknown,
        })
    }

    /// Replays only as far as the run that saved `state` got (fio's `verify_state_load`):
    /// no more I/Os than it handed out, and the blocks it left unknown stay unknown (the
    /// read-back skips and counts them). Err names why the state does not fit this job.
    pub fn resume_write_state(&mut self, state: &WriteState) -> Result<(), String> {
        if let Some(why) = state.plan.mismatch(&self.plan) {
            return Err(why);
        }
        if self.files.iter().all(|f| f.unknown.is_none()) {
            return Err("this job does not write with verify".into());
        }
        self.number_ios = Some(self.number_ios.map_or(state.ios, |n| n.min(state.ios)));
        for run in &state.unknown {
            let Some(blocks) = self
                .files
                .get_mut(run.file as usize)
                .and_then(|f| f.unknown.as_mut())
            else {
                return Err(format!("it names file {} the job does not have", run.file));
            };
            // Never cleared by the replay's writes (fence above every generation): the run
            // ended with these unknown. In pieces of whole intervals below 4 GiB (runs
            // start at an interval); a run over the tracking limit makes the whole file unknown, as it
            // did in the run.
            let interval = self
                .verifier
                .as_ref()
                .map_or(1, |v| u64::from(v.interval_bytes().max(1)));
            let piece = ((1u64 << 30) / interval).max(1) * interval;
            let end = run.offset.saturating_add(run.len);
            let mut at = run.offset;
            while at < end {
                let len = (end - at).min(piece);
                blocks.mark(at, len as u32, run.cause, u64::MAX);
                at += len;
            }
        }
        Ok(())
    }

    /// The next thing to do at job time `now`.
    pub fn next(&mut self, now: Duration) -> Next {
        self.pacer.check_think(now);
        match self.next_planned(now) {
            // A think pause owed or running after the last I/O is waited out first.
            Next::Done if self.pacer.must_wait_for_completions() => Next::WaitForCompletions,
            Next::Done => match self.pacer.pause_end().filter(|end| *end > now) {
                Some(end) => Next::Pause(end),
                None => Next::Done,
            },
            next => next,
        }
    }

    fn next_planned(&mut self, now: Duration) -> Next {
        if self.finished {
            return Next::Done;
        }
        if self.replay.is_some() {
            return self.next_replayed(now);
        }
        if self.pacer.must_wait_for_completions() {
            return Next::WaitForCompletions;
        }
        if self.backlog_due() {
            return Next::VerifyBacklog;
        }
        let issued: u64 = self.progress.ios.each().iter().map(|(_, n)| **n).sum();
        if self.number_ios.is_some_and(|limit| issued >= limit) {
            return self.finish();
        }
        // Each round hands out an I/O, ends the job, or marks a file's loop end or end (a
        // loop holds at least one I/O: the generator refuses an io_size below the block
        // size), so two rounds per file and one more are enough.
        for _ in 0..2 * self.files.len() + 1 {
            let Some(index) = self.selector.current(&self.files) else {
                return self.finish();
            };
            let pacer = &self.pacer;
            let (rw, rwmixread_percent) = (self.rw, self.rwmixread_percent);
            let steer =
                |drawn: Direction| steer_direction(pacer, rw, rwmixread_percent, now, drawn);
            let file = &mut self.files[index];
            let restarts = file.generator.restarts();
            let step = file.generator.next_io(steer);
            if file.generator.restarts() != restarts {
                self.restarted_files.push(index as u32);
            }
            match step {
                GenStep::Io {
                    direction,
                    offset,
                    len,
                } => {
                    let scheduled_at = self.pacer.schedule(now, direction, len);
                    let verify = self.verify_action(index, direction, offset, len);
                    if let (Some(_), VerifyAction::Fill { generation }) =
                        (self.backlog_every, verify)
                    {
                        if let Some(verified) = self.files[index].verified.as_mut() {
                            verified.clear(offset, len);
                        }
                        self.backlog.push(ReadBackIo {
                            file: index as u32,
                            offset,
                            len,
                            generation,
                        });
                    }
                    self.selector.on_io(index, len, &self.files);
                    *self.progress.ios.get_mut(direction) += 1;
                    *self.progress.bytes.get_mut(direction) += u64::from(len);
                    return Next::Io(PlannedIo {
                        direction,
                        file: index as u32,
                        offset,
                        len,
                        scheduled_at,
                        verify,
                    });
                }
                GenStep::LoopEnd => {
                    self.selector.on_loop_end(index);
                    if index == 0 {
                        self.loops_ended += 1;
                    }
                    if self.read_back_due {
                        return self.verify_phase();
                    }
                }
                GenStep::Done => {
                    file.done = true;
                    self.selector.on_file_done(index);
                }
            }
        }
        // Not reached: see the bound above. Asking again is safe.
        Next::WaitForCompletions
    }

    /// Every file is done (or `number_ios` reached): a last read-back when verifying.
    fn finish(&mut self) -> Next {
        self.finished = true;
        if self.read_back_due {
            self.verify_phase()
        } else {
            Next::Done
        }
    }

    /// The verify phase reads every block not checked since written, the backlog's too
    /// (fio's phase empties its history), so a later loop's backlog starts empty.
    fn verify_phase(&mut self) -> Next {
        self.backlog.clear();
        self.batch_left = 0;
        Next::VerifyPhase
    }

    fn verify_action(
        &mut self,
        file: usize,
        direction: Direction,
        offset: u64,
        len: u32,
    ) -> VerifyAction {
        if self.verifier.is_none() {
            return VerifyAction::None;
        }
        match direction {
            Direction::Write => match self.files.get_mut(file) {
                Some(FileStream {
                    generator,
                    tracker: Some(tracker),
                    ..
                }) => VerifyAction::Fill {
                    generation: tracker.on_write(generator, offset, len),
                },
                _ => VerifyAction::None,
            },
            // A read-only job with verify checks what an earlier run wrote (fio(1), verify:
            // "If the data direction given is a read or random read, fio will assume that it
            // should verify a previously written file"). In a mixed job the reads may hit
            // blocks not written yet; those are checked in the read-back phase instead.
            Direction::Read if !self.rw.is_mixed() => VerifyAction::Check {
                expected_generation: None,
            },
            _ => VerifyAction::None,
        }
    }

    /// Report one completion (needed for `thinktime` with the `complete` trigger; harmless
    /// otherwise).
    pub fn on_complete(&mut self, now: Duration) {
        self.pacer.on_complete(now);
    }

    /// A write the workload planned ended: `Ok` makes its blocks known (see `unknown`), a
    /// failure makes them unknown, so the read-back skips them instead of reporting a
    /// loss it cannot prove. Only writes with [`VerifyAction::Fill`] matter; others are
    /// ignored.
    pub fn on_write_result(&mut self, io: &PlannedIo, failure: Option<UnknownCause>) {
        let VerifyAction::Fill { generation } = io.verify else {
            return;
        };
        let Some(FileStream {
            generator,
            tracker: Some(tracker),
            unknown: Some(unknown),
            ..
        }) = self.files.get_mut(io.file as usize)
        else {
            return;
        };
        match failure {
            None => unknown.on_write_done(io.offset, io.len, generation),
            Some(cause) => {
                let fence = tracker.fence(generator, io.offset, io.len).max(generation);
                unknown.mark(io.offset, io.len, cause, fence);
            }
        }
    }

    /// Splits one read of [`Workload::read_back_plan`] into the runs that can be checked
    /// (appended to `runs`); the verify intervals of its file (`io.file`) left unknown by
    /// failed, timed-out or unsent writes are counted in `skipped` instead.
    pub fn checkable_runs(
        &self,
        io: ReadBackIo,
        runs: &mut Vec<ReadBackIo>,
        skipped: &mut SkippedBlocks,
    ) {
        let Some(file) = self.files.get(io.file as usize) else {
            return;
        };
        let mut unverified = Vec::new();
        match &file.verified {
            Some(verified) => verified.unverified(io, &mut unverified),
            None => unverified.push(io),
        }
        for io in unverified {
            match &file.unknown {
                Some(unknown) => unknown.split(io, runs, skipped),
                None => runs.push(io),
            }
        }
    }

    /// The blocks written since the last verify phase, file by file and in offset order in
    /// each, with the generation each must hold. `None` unless the job writes with verify
    /// on. May be called at any point, for example when `runtime` ends a time-based job.
    pub fn read_back_plan(&self) -> Option<impl Iterator<Item = ReadBackIo> + '_> {
        self.files.first()?.tracker.as_ref()?;
        Some(self.files.iter().enumerate().flat_map(|(index, file)| {
            file.tracker
                .as_ref()
                .map(|tracker| tracker.plan(&file.generator))
                .into_iter()
                .flatten()
                .map(move |io| ReadBackIo {
                    file: index as u32,
                    ..io
                })
        }))
    }

    /// Whether a backlog check reads now (fio's `check_get_verify`): a batch is open and
    /// the backlog holds a block, or the backlog reached `verify_backlog` blocks, which
    /// opens a batch of `verify_backlog_batch`.
    fn backlog_due(&mut self) -> bool {
        let Some(every) = self.backlog_every else {
            return false;
        };
        if self.backlog.is_empty() {
            return false;
        }
        if self.batch_left == 0 && self.backlog.len() as u64 >= every {
            self.batch_left = self.backlog_batch.max(1);
        }
        self.batch_left > 0
    }

    /// The oldest backlog writes the open batch still reads (`verify_backlog_batch`), in
    /// offset order: those a later write has not overwritten since (that one is checked
    /// in its own backlog, or at the end). The others stay in the backlog.
    pub fn take_backlog(&mut self) -> Vec<ReadBackIo> {
        let count = usize::try_from(self.batch_left.max(1))
            .unwrap_or(usize::MAX)
            .min(self.backlog.len());
        let mut due: Vec<ReadBackIo> = self.backlog.drain(..count).collect();
        self.batch_left = self.batch_left.saturating_sub(count as u64);
        due.retain(|io| {
            self.files.get(io.file as usize).is_some_and(|file| {
                file.tracker.as_ref().is_some_and(|tracker| {
                    tracker.fence(&file.generator, io.offset, io.len) == io.generation
                })
            })
        });
        due.sort_by_key(|io| (io.file, io.offset));
        due
    }

    /// The backlog reads `due` were checked: the verify phase skips them unless written
    /// again.
    pub fn mark_verified(&mut self, due: &[ReadBackIo]) {
        for io in due {
            if let Some(verified) = self
                .files
                .get_mut(io.file as usize)
                .and_then(|f| f.verified.as_mut())
            {
                verified.mark(io.offset, io.len);
            }
        }
    }

    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Bytes the job will move in all, for "percent done" and ETA; `None` when time-based.
    pub fn total_bytes(&self) -> Option<u64> {
        if let Some((_, bytes)) = &self.replay {
            return Some(*bytes);
        }
        self.files
            .iter()
            .filter(|file| !file.idle)
            .map(|file| file.generator.total_bytes())
            .sum()
    }

    /// Whether any direction has a `rate` or `rate_iops` limit (the runner then waits for
    /// each I/O's `scheduled_at`).
    pub fn is_rate_limited(&self) -> bool {
        self.pacer.is_limited()
    }

    /// Whether the I/O handed out depends on the time asked with (rate limits, think time):
    /// the runner must then ask with the time now, not its turn's.
    pub fn plans_by_time(&self) -> bool {
        self.replay.is_some() || self.pacer.uses_time()
    }

    /// The runner's queue is full (`true`) or has room (`false`) at job time `now`: how
    /// the pacer tells a stall of the target from a late runner (`pacer` module docs).
    pub fn note_queue_full(&mut self, now: Duration, full: bool) {
        self.pacer.note_queue_full(now, full);
    }

    /// How much of the rate schedule stalls beyond `rate_backlog` gave up.
    pub fn rate_schedule_skipped(&self) -> Duration {
        self.pacer.shifted()
    }

    /// `thinktime_spin`: until when the current think pause is spent busy rather than
    /// asleep (zero, or a time past, when it is not).
    pub fn think_spin_until(&self) -> Duration {
        self.pacer.spin_until()
    }
}

/// fio's `rate_ddir`: with a rate on a mixed job, serve the direction that is due, so each
/// direction keeps its own rate instead of waiting behind the other's.
fn steer_direction(
    pacer: &Pacer,
    rw: RwKind,
    rwmixread_percent: u32,
    now: Duration,
    drawn: Direction,
) -> Direction {
    if !(rw.is_mixed() && pacer.is_limited()) {
        return drawn;
    }
    let other = match drawn {
        Direction::Read => Direction::Write,
        _ => Direction::Read,
    };
    let other_used = match other {
        Direction::Read => rwmixread_percent > 0,
        _ => rwmixread_percent < 100,
    };
    if other_used {
        pacer.steer(now, drawn, other)
    } else {
        drawn
    }
}

/// fio's `file_service_type`: which file the next I/O goes to.
#[derive(Debug)]
struct FileSelector {
    service: FileService,
    files: usize,
    current: usize,
    /// I/Os and bytes issued to `current` since it was chosen.
    ios_here: u32,
    bytes_here: u64,
    rng: rng::SplitMix64,
    /// `openfiles` (at least 1, at most `files`), and which files were started (fio opens
    /// a file when the service first picks it and closes it when it is done).
    open_max: usize,
    started: Vec<bool>,
    /// Files started and not done: kept as they change, so choosing a file costs O(1) and
    /// not a walk of every file per I/O (a job over 1,000 volumes spent 14% of its CPU
    /// counting them).
    open: usize,
}

impl FileSelector {
    fn new(service: FileService, files: usize, open_files: usize, seed: u64) -> Self {
        let mut rng = rng::SplitMix64::new(seed);
        let current = match service.kind {
            FileServiceKind::Random => rng.below(files as u64) as usize,
            _ => 0,
        };
        FileSelector {
            service,
            files,
            current,
            ios_here: 0,
            bytes_here: 0,
            rng,
            open_max: if open_files == 0 {
                files
            } else {
                open_files.min(files)
            },
            started: vec![false; files],
            open: 0,
        }
    }

    /// The file to ask next: the current one, or the next one not done that is open or may
    /// be opened (fewer than `openfiles` open: started and not done); `None` when all are
    /// done.
    fn current(&mut self, files: &[FileStream]) -> Option<usize> {
        let index = (0..self.files)
            .map(|step| (self.current + step) % self.files)
            .find(|&index| {
                !files[index].done && (self.started[index] || self.open < self.open_max)
            })?;
        if !self.started[index] {
            self.started[index] = true;
            self.open += 1;
        }
        if index != self.current {
            self.choose(index);
        }
        Some(index)
    }

    fn choose(&mut self, index: usize) {
        self.current = index;
        self.ios_here = 0;
        self.bytes_here = 0;
    }

    /// One I/O went to `index`; moves on when the service says so.
    fn on_io(&mut self, index: usize, len: u32, files: &[FileStream]) {
        self.ios_here = self.ios_here.saturating_add(1);
        self.bytes_here += u64::from(len);
        let switch = match self.service.kind {
            FileServiceKind::RoundRobin | FileServiceKind::Random => {
                self.ios_here >= self.service.switch_after_ios
            }
            // A file is finished when a loop's bytes went to it (the loops of a time-based
            // job never end on their own).
            FileServiceKind::Sequential => files[index].generator.loop_bytes() <= self.bytes_here,
        };
        if switch {
            self.advance(index);
        }
    }

    /// A file's loop ended: go on to another.
    fn on_loop_end(&mut self, index: usize) {
        self.advance(index);
    }

    /// A file is done: it closes (a file is done only after it was started) and the
    /// service goes on to another.
    fn on_file_done(&mut self, index: usize) {
        if self.started[index] {
            self.open -= 1;
        }
        self.advance(index);
    }

    fn advance(&mut self, index: usize) {
        if self.files < 2 {
            return;
        }
        let next = match self.service.kind {
            FileServiceKind::Random => self.rng.below(self.files as u64) as usize,
            _ => (index + 1) % self.files,
        };
        self.choose(next);
    }
}

#[cfg(test)]
mod tests;
