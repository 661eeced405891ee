//! Which generation each written block holds, and the read-back plan of a verify job
//! (fio(1), `do_verify`: "Run the verify phase after a write phase").
//!
//! Two ways, chosen when the job is built:
//! - **From the pass** (no memory): when the job writes one fixed block size and its write
//!   stream visits each block at most once per pass (sequential writes, or random writes with
//!   the random map and `blockalign` equal to the block size), a write's generation is the
//!   pass number of its stream. At read-back time, block `b` was last written in the current
//!   pass if its place in that pass's order (its index for sequential, the inverse of the
//!   pass's permutation for random) is below the number of blocks written so far in the pass,
//!   and otherwise in the pass before, which, inside one loop, was complete. Blocks not
//!   written since the loop began are not in the plan (an earlier verify phase checked them).
//! - **From a table** (mixed jobs, `norandommap`, skewed distributions, several block
//!   sizes): four bytes per verify interval of the region, at most
//!   `VerifyConfig::max_tracked_blocks` of them (a configuration over the limit is refused
//!   when the job is built). A write's generation is one more than the newest generation
//!   among the intervals it covers, and all of them get it, so generations only grow. The
//!   plan covers every interval written since the job began, in runs of equal generation.
//!
//! The plan is in offset order (fio sorts its log by offset too when blocks are not
//! overwritten), generated as it is read, so it costs no memory beyond the table.
//!
//! Limits, as in fio(1) (`norandommap`, `verify`): with more than one write in flight, two
//! in-flight writes to the same block may land in either order, so a table-based job with
//! `iodepth` > 1 can report a false stale block. The pass-based ways never have two writes to
//! one block in flight unless the queue is deeper than the region has blocks.

use super::generator::{Generator, WriteOrder};
use super::permutation::Permutation;
use super::verify::VerifyConfig;
use super::{PlannedIo, VerifyAction, WorkloadError};
use crate::io::Direction;
use std::time::Duration;

/// Default bound of a generation table: 16 Mi intervals (64 MiB of memory; a 64 GiB region
/// at 4 KiB intervals).
pub const GENERATION_TABLE_BLOCKS_DEFAULT: u64 = 1 << 24;

#[derive(Debug, Clone)]
pub(crate) enum GenerationTracker {
    FromPass { order: WriteOrder, block_bytes: u32 },
    Table(GenerationTable),
}

#[derive(Debug, Clone)]
pub(crate) struct GenerationTable {
    interval_bytes: u32,
    /// Per interval: 0 never written, else generation + 1.
    entries: Vec<u32>,
    merge_limit_bytes: u64,
}

impl GenerationTracker {
    pub(crate) fn new(
        generator: &Generator,
        config: &VerifyConfig,
        interval_bytes: u32,
    ) -> Result<Self, WorkloadError> {
        if let Some((order, block_bytes)) = generator.write_order() {
            return Ok(GenerationTracker::FromPass { order, block_bytes });
        }
        let blocks = generator.reach_bytes() / u64::from(interval_bytes);
        if blocks > config.max_tracked_blocks {
            return Err(WorkloadError::VerifyTooManyBlocks {
                blocks,
                limit_blocks: config.max_tracked_blocks,
            });
        }
        let len = usize::try_from(blocks).map_err(|_| WorkloadError::VerifyTooManyBlocks {
            blocks,
            limit_blocks: config.max_tracked_blocks,
        })?;
        Ok(GenerationTracker::Table(GenerationTable {
            interval_bytes,
            entries: vec![0; len],
            merge_limit_bytes: u64::from(generator.max_write_len().max(interval_bytes)),
        }))
    }

    /// The generation of a write the generator just handed out.
    pub(crate) fn on_write(&mut self, generator: &Generator, offset: u64, len: u32) -> u64 {
        match self {
            GenerationTracker::FromPass { order, .. } => match order {
                WriteOrder::Sequential => generator.write_cursor().pass,
                WriteOrder::RandomMap => generator.random_map().map_or(0, |map| map.pass),
            },
            GenerationTracker::Table(table) => {
                table.on_write(offset - generator.region_offset(), len)
            }
        }
    }

    /// The newest generation handed out so far for `[offset, offset + len)`: a write planned
    /// from now on gets a higher one (pass-based: a later pass; see `unknown`).
    pub(crate) fn fence(&self, generator: &Generator, offset: u64, len: u32) -> u64 {
        match self {
            GenerationTracker::FromPass { order, .. } => match order {
                WriteOrder::Sequential => generator.write_cursor().pass,
                WriteOrder::RandomMap => generator.random_map().map_or(0, |map| map.pass),
            },
            GenerationTracker::Table(table) => {
                table.newest(offset.saturating_sub(generator.region_offset()), len)
            }
        }
    }

    pub(crate) fn plan<'a>(&'a self, generator: &Generator) -> ReadBackPlan<'a> {
        let region_offset = generator.region_offset();
        let inner = match self {
            GenerationTracker::FromPass { order, block_bytes } => {
                let block = u64::from(*block_bytes);
                let blocks = generator.reach_bytes() / block;
                let (current_pass, loop_first_pass, written_in_pass, permutation) = match order {
                    WriteOrder::Sequential => {
                        let cursor = generator.write_cursor();
                        (
                            cursor.pass,
                            cursor.loop_first_pass,
                            cursor.position / block,
                            None,
                        )
                    }
                    WriteOrder::RandomMap => match generator.random_map() {
                        Some(map) => (
                            map.pass,
                            map.loop_first_pass,
                            map.visited,
                            Some(map.permutation.clone()),
                        ),
                        None => (0, 0, 0, None),
                    },
                };
                PlanInner::FromPass {
                    block_bytes: *block_bytes,
                    blocks,
                    next_block: 0,
                    current_pass,
                    previous_pass_complete: current_pass > loop_first_pass,
                    written_in_pass,
                    permutation,
                }
            }
            GenerationTracker::Table(table) => PlanInner::Table {
                table,
                next_entry: 0,
            },
        };
        ReadBackPlan {
            region_offset,
            inner,
        }
    }
}

impl GenerationTable {
    /// The newest generation among the intervals of `[offset, offset + len)` (0 if none
    /// was written).
    fn newest(&self, region_relative_offset: u64, len: u32) -> u64 {
        let interval = u64::from(self.interval_bytes);
        let first = region_relative_offset / interval;
        let count = u64::from(len).div_ceil(interval);
        let start = usize::try_from(first)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let end = usize::try_from(first + count)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let newest = self.entries[start..end].iter().copied().max().unwrap_or(0);
        u64::from(newest.saturating_sub(1))
    }

    fn on_write(&mut self, region_relative_offset: u64, len: u32) -> u64 {
        let interval = u64::from(self.interval_bytes);
        let first = region_relative_offset / interval;
        let count = u64::from(len).div_ceil(interval);
        let start = usize::try_from(first)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let end = usize::try_from(first + count)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let covered = &mut self.entries[start..end];
        let newest = covered.iter().copied().max().unwrap_or(0);
        // Entry = generation + 1, so the new entry is newest + 1 and the generation newest.
        let entry = newest.saturating_add(1);
        covered.fill(entry);
        u64::from(newest)
    }
}

/// One read of the read-back phase: read `len` bytes at `offset` and check them against
/// `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBackIo {
    /// The job's file (LUN) it reads, as in [`PlannedIo::file`].
    pub file: u32,
    pub offset: u64,
    pub len: u32,
    pub generation: u64,
}

impl ReadBackIo {
    /// As an I/O for the runner, due at `now` (the read-back is not rate limited).
    pub fn planned(&self, now: Duration) -> PlannedIo {
        PlannedIo {
            direction: Direction::Read,
            file: self.file,
            offset: self.offset,
            len: self.len,
            scheduled_at: now,
            verify: VerifyAction::Check {
                expected_generation: Some(self.generation),
            },
        }
    }
}

/// The blocks to read back, in offset order; see the module docs.
#[derive(Debug, Clone)]
pub struct ReadBackPlan<'a> {
    region_offset: u64,
    inner: PlanInner<'a>,
}

#[derive(Debug, Clone)]
enum PlanInner<'a> {
    FromPass {
        block_bytes: u32,
        blocks: u64,
        next_block: u64,
        current_pass: u64,
        previous_pass_complete: bool,
        written_in_pass: u64,
        /// The current pass's order (random map); `None` for sequential.
        permutation: Option<Permutation>,
    },
    Table {
        table: &'a GenerationTable,
        next_entry: usize,
    },
}

impl Iterator for ReadBackPlan<'_> {
    type Item = ReadBackIo;

    fn next(&mut self) -> Option<ReadBackIo> {
        match &mut self.inner {
            PlanInner::FromPass {
                block_bytes,
                blocks,
                next_block,
                current_pass,
                previous_pass_complete,
                written_in_pass,
                permutation,
            } => {
                // Bounded by the block count.
                while *next_block < *blocks {
                    let block = *next_block;
                    *next_block += 1;
                    let place = permutation.as_ref().map_or(block, |p| p.invert(block));
                    let generation = if place < *written_in_pass {
                        *current_pass
                    } else if *previous_pass_complete {
                        *current_pass - 1
                    } else {
                        continue;
                    };
                    return Some(ReadBackIo {
                        file: 0,
                        offset: self.region_offset + block * u64::from(*block_bytes),
                        len: *block_bytes,
                        generation,
                    });
                }
                None
            }
            PlanInner::Table { table, next_entry } => {
                let entries = &table.entries;
                let interval = u64::from(table.interval_bytes);
                let mut start = *next_entry;
                // Skip intervals never written; bounded by the table length.
                while entries.get(start).is_some_and(|&entry| entry == 0) {
                    start += 1;
                }
                let entry = *entries.get(start)?;
                let mut end = start + 1;
                while entries.get(end) == Some(&entry)
                    && (end - start + 1) as u64 * interval <= table.merge_limit_bytes
                {
                    end += 1;
                }
                *next_entry = end;
                Some(ReadBackIo {
                    file: 0,
                    offset: self.region_offset + start as u64 * interval,
                    len: ((end - start) as u64 * interval) as u32,
                    generation: u64::from(entry - 1),
                })
            }
        }
    }
}
