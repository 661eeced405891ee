//! Blocks whose contents the job cannot know, so the read-back leaves them unchecked.
//!
//! A write that failed or timed out may have reached the medium whole, in part or not at
//! all (a timed-out command may even be carried out after the job gave up on it). Checking
//! such a block against the write's generation would report data loss that did not happen
//! (issue 11), and checking it against the generation before would miss loss that did. So
//! the block is *unknown*: the read-back skips it and the report counts it, by cause.
//!
//! A later write makes the block known again, but only one the job planned after the
//! failure was recorded: a write planned earlier (a deeper queue, an older pass) may be
//! overtaken by the failed one. The tracker hands out growing generations, so each unknown
//! block keeps a *fence*, the newest generation handed out for it when the failure was
//! recorded, and only a successful write with a generation above the fence clears it.
//!
//! Memory: one map entry per unknown verify interval, at most `limit` of them (the job's
//! generation table bound, per file). Past that the job stops tracking single blocks and
//! every block of that file becomes unknown (counted as skipped, never as a failure).

use std::collections::BTreeMap;

use super::generation::ReadBackIo;

/// Why a block is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCause {
    /// The write came back with an error (SCSI status, transport).
    WriteFailed,
    /// The write did not complete within `io_timeout`.
    WriteTimedOut,
    /// The workload planned the write but the job ended (runtime, a fatal error) before
    /// it was sent: the generation tracker counts it, the medium never saw it.
    WriteNotSent,
}

/// Verify intervals the read-back skipped, by the cause that made them unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkippedBlocks {
    pub write_failed: u64,
    pub write_timed_out: u64,
    pub write_not_sent: u64,
}

impl SkippedBlocks {
    pub fn total(&self) -> u64 {
        self.write_failed + self.write_timed_out + self.write_not_sent
    }

    pub fn add(&mut self, other: &SkippedBlocks) {
        self.write_failed += other.write_failed;
        self.write_timed_out += other.write_timed_out;
        self.write_not_sent += other.write_not_sent;
    }

    fn count(&mut self, cause: UnknownCause, intervals: u64) {
        match cause {
            UnknownCause::WriteFailed => self.write_failed += intervals,
            UnknownCause::WriteTimedOut => self.write_timed_out += intervals,
            UnknownCause::WriteNotSent => self.write_not_sent += intervals,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unknown {
    fence: u64,
    cause: UnknownCause,
}

/// The unknown verify intervals of one file of a job, keyed by `offset / interval_bytes`.
#[derive(Debug, Clone)]
pub(crate) struct UnknownBlocks {
    interval_bytes: u64,
    limit: usize,
    entries: BTreeMap<u64, Unknown>,
    /// Set when more than `limit` intervals were unknown: every block is unknown for good.
    overflow: Option<UnknownCause>,
}

impl UnknownBlocks {
    pub(crate) fn new(interval_bytes: u32, limit: u64) -> UnknownBlocks {
        UnknownBlocks {
            interval_bytes: u64::from(interval_bytes.max(1)),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            entries: BTreeMap::new(),
            overflow: None,
        }
    }

    fn intervals(&self, offset: u64, len: u32) -> std::ops::Range<u64> {
        let first = offset / self.interval_bytes;
        first..first + u64::from(len).div_ceil(self.interval_bytes)
    }

    /// A write of `[offset, offset + len)` failed; `fence` is the newest generation handed
    /// out for those blocks so far.
    pub(crate) fn mark(&mut self, offset: u64, len: u32, cause: UnknownCause, fence: u64) {
        if self.overflow.is_some() {
            return;
        }
        for interval in self.intervals(offset, len) {
            let entry = self
                .entries
                .entry(interval)
                .or_insert(Unknown { fence, cause });
            entry.fence = entry.fence.max(fence);
            entry.cause = cause;
        }
        if self.entries.len() > self.limit {
            tracing::warn!(
                limit = self.limit,
                "too many blocks of unknown contents to track: the read-back skips them all"
            );
            self.overflow = Some(cause);
            self.entries.clear();
        }
    }

    /// A write of `generation` to `[offset, offset + len)` succeeded.
    pub(crate) fn on_write_done(&mut self, offset: u64, len: u32, generation: u64) {
        if self.entries.is_empty() {
            return;
        }
        for interval in self.intervals(offset, len) {
            if self
                .entries
                .get(&interval)
                .is_some_and(|u| generation > u.fence)
            {
                self.entries.remove(&interval);
            }
        }
    }

    /// The unknown intervals as runs `(first byte, bytes, cause)` of consecutive intervals
    /// with one cause, in offset order; with every block unknown (past the limit), `None`
    /// and the cause.
    pub(crate) fn runs(&self) -> Result<Vec<(u64, u64, UnknownCause)>, UnknownCause> {
        if let Some(cause) = self.overflow {
            return Err(cause);
        }
        let mut runs: Vec<(u64, u64, UnknownCause)> = Vec::new();
        for (&interval, unknown) in &self.entries {
            let start = interval * self.interval_bytes;
            match runs.last_mut() {
                Some((at, len, cause)) if *at + *len == start && *cause == unknown.cause => {
                    *len += self.interval_bytes
                }
                _ => runs.push((start, self.interval_bytes, unknown.cause)),
            }
        }
        Ok(runs)
    }

    /// Intervals unknown now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Splits one read of the read-back plan into the runs of known intervals (appended to
    /// `runs`), counting the unknown ones in `skipped`.
    pub(crate) fn split(
        &self,
        io: ReadBackIo,
        runs: &mut Vec<ReadBackIo>,
        skipped: &mut SkippedBlocks,
    ) {
        let all = self.intervals(io.offset, io.len);
        if let Some(cause) = self.overflow {
            skipped.count(cause, all.end - all.start);
            return;
        }
        if self.entries.range(all.clone()).next().is_none() {
            runs.push(io);
            return;
        }
        let mut run_start: Option<u64> = None;
        let close = |start: u64, end: u64, runs: &mut Vec<ReadBackIo>| {
            runs.push(ReadBackIo {
                file: io.file,
                offset: start * self.interval_bytes,
                len: ((end - start) * self.interval_bytes) as u32,
                generation: io.generation,
            });
        };
        // Bounded by the intervals of one read (at most its length over the interval).
        for interval in all.clone() {
            match self.entries.get(&interval) {
                Some(unknown) => {
                    skipped.count(unknown.cause, 1);
                    if let Some(start) = run_start.take() {
                        close(start, interval, runs);
                    }
                }
                None => {
                    run_start.get_or_insert(interval);
                }
            }
        }
        if let Some(start) = run_start {
            close(start, all.end, runs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u32 = 4096;

    fn read(offset: u64, blocks: u32, generation: u64) -> ReadBackIo {
        ReadBackIo {
            file: 0,
            offset,
            len: blocks * BLOCK,
            generation,
        }
    }

    fn split(unknown: &UnknownBlocks, io: ReadBackIo) -> (Vec<ReadBackIo>, SkippedBlocks) {
        let mut runs = Vec::new();
        let mut skipped = SkippedBlocks::default();
        unknown.split(io, &mut runs, &mut skipped);
        (runs, skipped)
    }

    #[test]
    fn a_failed_write_makes_its_blocks_unknown() {
        let mut unknown = UnknownBlocks::new(BLOCK, 1000);
        unknown.mark(2 * 4096, 2 * BLOCK, UnknownCause::WriteTimedOut, 3);
        let (runs, skipped) = split(&unknown, read(0, 6, 3));
        assert_eq!(runs, vec![read(0, 2, 3), read(4 * 4096, 2, 3)]);
        assert_eq!(
            skipped,
            SkippedBlocks {
                write_timed_out: 2,
                ..SkippedBlocks::default()
            }
        );
        // A read that misses them is left whole.
        assert_eq!(
            split(&unknown, read(8 * 4096, 4, 1)).0,
            vec![read(8 * 4096, 4, 1)]
        );
    }

    #[test]
    fn a_later_successful_write_makes_them_known_again() {
        let mut unknown = UnknownBlocks::new(BLOCK, 1000);
        unknown.mark(0, 2 * BLOCK, UnknownCause::WriteFailed, 5);
        // A write planned before the failure was recorded (generation up to the fence)
        // may be overtaken by the failed one: still unknown.
        unknown.on_write_done(0, 2 * BLOCK, 5);
        assert_eq!(unknown.len(), 2);
        // One planned after it covers the first block only.
        unknown.on_write_done(0, BLOCK, 6);
        assert_eq!(unknown.len(), 1);
        let (runs, skipped) = split(&unknown, read(0, 2, 6));
        assert_eq!(runs, vec![read(0, 1, 6)]);
        assert_eq!(skipped.write_failed, 1);
        unknown.on_write_done(4096, BLOCK, 6);
        assert_eq!(unknown.len(), 0);
        assert_eq!(split(&unknown, read(0, 2, 6)).1.total(), 0);
    }

    #[test]
    fn a_second_failure_raises_the_fence_and_takes_the_newest_cause() {
        let mut unknown = UnknownBlocks::new(BLOCK, 1000);
        unknown.mark(0, BLOCK, UnknownCause::WriteFailed, 2);
        unknown.mark(0, BLOCK, UnknownCause::WriteTimedOut, 7);
        unknown.on_write_done(0, BLOCK, 6);
        let (runs, skipped) = split(&unknown, read(0, 1, 6));
        assert!(runs.is_empty());
        assert_eq!(skipped.write_timed_out, 1);
    }

    #[test]
    fn past_the_limit_every_block_is_skipped_not_failed() {
        let mut unknown = UnknownBlocks::new(BLOCK, 2);
        unknown.mark(0, 3 * BLOCK, UnknownCause::WriteTimedOut, 0);
        let (runs, skipped) = split(&unknown, read(100 * 4096, 4, 9));
        assert!(runs.is_empty());
        assert_eq!(skipped.write_timed_out, 4);
        unknown.on_write_done(100 * 4096, 4 * BLOCK, 10);
        assert!(split(&unknown, read(100 * 4096, 4, 10)).0.is_empty());
    }
}
