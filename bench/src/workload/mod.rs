//! What a job does, I/O by I/O: which direction, where, how much, when, and the bytes that let
//! a read prove what was written. Pure logic: no I/O, no clock (time comes in as a
//! [`Duration`] since the job started), and every choice comes from the job's seed, so the
//! same seed gives the same I/Os.
//!
//! The options follow fio's documented meanings (fio(1), fio 3.33): `offset`, `size`, `rw`,
//! `rwmixread`, `bs`/`bsrange`/`bssplit`, `blockalign`, `norandommap`, `random_distribution`,
//! `loops`, `number_ios`, `io_size`, `time_based`, `randrepeat`/`randseed`, `rate`,
//! `rate_iops`, `rate_process`, `thinktime*`, `verify*`, `do_verify`, `verify_fatal`.
//!
//! The parts:
//! - [`Workload`] is what the runner drives: [`Workload::next`] hands out one [`PlannedIo`]
//!   at a time with its *scheduled* start, or says to wait, to verify, or that the job is done;
//! - `generator` picks directions, offsets and sizes (sequential with wrap-around, random over
//!   a keyed permutation so a pass touches every block once, uniform, or skewed);
//! - [`pacer`] turns rate limits and think time into a schedule that a stall cannot erase;
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
mod distribution;
mod generation;
mod generator;
pub mod pacer;
mod permutation;
mod rng;
mod unknown;
pub mod verify;

use std::time::Duration;

use crate::io::{Direction, Distribution, PerDir, RwKind};

pub use blocksize::BSSPLIT_ENTRIES_MAX;
pub use generation::{ReadBackIo, ReadBackPlan, GENERATION_TABLE_BLOCKS_DEFAULT};
pub use pacer::{Pacer, PacingConfig, ThinkTime, ThinkTimeTrigger};
pub use unknown::{SkippedBlocks, UnknownCause};
pub use verify::{
    BlockImage, ByteWindow, Mismatch, Verifier, VerifyConfig, VerifyError, VerifyHeader, VerifyKind,
};

use generation::GenerationTracker;
use generator::{GenStep, Generator};
use unknown::UnknownBlocks;

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

/// fio's `bs`, `bsrange` or `bssplit` for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockSizeSpec {
    Fixed(u32),
    /// Multiples of `min_bytes` up to `max_bytes`.
    Range {
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
    /// Byte offset in the target (the region's offset included).
    pub offset: u64,
    pub len: u32,
    /// When the I/O is due, as time since the job started. Wait until then if it is ahead;
    /// if it is behind (a stall), issue at once and still measure latency from here.
    pub scheduled_at: Duration,
    pub verify: VerifyAction,
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
    generator: Generator,
    pacer: Pacer,
    verifier: Option<Verifier>,
    tracker: Option<GenerationTracker>,
    /// Blocks a failed or timed-out write left unknown (with a tracker only).
    unknown: Option<UnknownBlocks>,
    read_back_due: bool,
    finished: bool,
    progress: Progress,
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Result<Self, WorkloadError> {
        let generator = Generator::new(&config)?;
        let pacer = Pacer::new(
            &config.pacing,
            rng::stream_seed(config.seed, rng::streams::PACING, 0),
        )?;
        let (verifier, tracker) = match &config.verify {
            None => (None, None),
            Some(verify_config) => {
                if config.rw.does(Direction::Trim) {
                    return Err(WorkloadError::VerifyWithTrim(config.rw));
                }
                let verifier = Verifier::new(
                    verify_config,
                    config.seed,
                    generator.default_verify_interval(),
                )?;
                generator.check_verify_grid(verifier.interval_bytes())?;
                let tracker = if config.rw.does(Direction::Write) {
                    Some(GenerationTracker::new(
                        &generator,
                        verify_config,
                        verifier.interval_bytes(),
                    )?)
                } else {
                    None
                };
                (Some(verifier), tracker)
            }
        };
        let read_back_due =
            tracker.is_some() && config.verify.as_ref().is_some_and(|v| v.do_verify);
        let unknown = match (&tracker, &verifier, &config.verify) {
            (Some(_), Some(verifier), Some(verify_config)) => Some(UnknownBlocks::new(
                verifier.interval_bytes(),
                verify_config.max_tracked_blocks,
            )),
            _ => None,
        };
        Ok(Workload {
            rw: config.rw,
            generator,
            pacer,
            verifier,
            tracker,
            unknown,
            read_back_due,
            finished: false,
            progress: Progress::default(),
        })
    }

    /// The next thing to do at job time `now`.
    pub fn next(&mut self, now: Duration) -> Next {
        if self.finished {
            return Next::Done;
        }
        if self.pacer.must_wait_for_completions() {
            return Next::WaitForCompletions;
        }
        // A loop end without read-back is skipped; every loop holds at least one I/O (the
        // generator refuses an io_size below the block size), so two rounds are enough.
        for _ in 0..2 {
            match self.generator.next_io() {
                GenStep::Io {
                    direction,
                    offset,
                    len,
                } => {
                    let scheduled_at = self.pacer.schedule(now, direction, len);
                    let verify = self.verify_action(direction, offset, len);
                    *self.progress.ios.get_mut(direction) += 1;
                    *self.progress.bytes.get_mut(direction) += u64::from(len);
                    return Next::Io(PlannedIo {
                        direction,
                        offset,
                        len,
                        scheduled_at,
                        verify,
                    });
                }
                GenStep::LoopEnd if self.read_back_due => return Next::VerifyPhase,
                GenStep::LoopEnd => continue,
                GenStep::Done => {
                    self.finished = true;
                    return if self.read_back_due {
                        Next::VerifyPhase
                    } else {
                        Next::Done
                    };
                }
            }
        }
        self.finished = true;
        Next::Done
    }

    fn verify_action(&mut self, direction: Direction, offset: u64, len: u32) -> VerifyAction {
        if self.verifier.is_none() {
            return VerifyAction::None;
        }
        match direction {
            Direction::Write => match &mut self.tracker {
                Some(tracker) => VerifyAction::Fill {
                    generation: tracker.on_write(&self.generator, offset, len),
                },
                None => VerifyAction::None,
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
        let (Some(unknown), Some(tracker)) = (self.unknown.as_mut(), self.tracker.as_ref()) else {
            return;
        };
        match failure {
            None => unknown.on_write_done(io.offset, io.len, generation),
            Some(cause) => {
                let fence = tracker
                    .fence(&self.generator, io.offset, io.len)
                    .max(generation);
                unknown.mark(io.offset, io.len, cause, fence);
            }
        }
    }

    /// Splits one read of [`Workload::read_back_plan`] into the runs that can be checked
    /// (appended to `runs`); the verify intervals left unknown by failed or timed-out
    /// writes are counted in `skipped` instead.
    pub fn checkable_runs(
        &self,
        io: ReadBackIo,
        runs: &mut Vec<ReadBackIo>,
        skipped: &mut SkippedBlocks,
    ) {
        match &self.unknown {
            Some(unknown) => unknown.split(io, runs, skipped),
            None => runs.push(io),
        }
    }

    /// The blocks written since the last verify phase, in offset order, each with the
    /// generation it must hold. `None` unless the job writes with verify on. May be called at
    /// any point, for example when `runtime` ends a time-based job.
    pub fn read_back_plan(&self) -> Option<ReadBackPlan<'_>> {
        self.tracker
            .as_ref()
            .map(|tracker| tracker.plan(&self.generator))
    }

    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Bytes the job will move in all, for "percent done" and ETA; `None` when time-based.
    pub fn total_bytes(&self) -> Option<u64> {
        self.generator.total_bytes()
    }

    /// Whether any direction has a `rate` or `rate_iops` limit (the runner then waits for
    /// each I/O's `scheduled_at`).
    pub fn is_rate_limited(&self) -> bool {
        self.pacer.is_limited()
    }

    /// `thinktime_spin`: how much of each think pause to spend busy rather than asleep.
    pub fn think_spin(&self) -> Duration {
        self.pacer.think_spin()
    }
}

#[cfg(test)]
mod tests;
