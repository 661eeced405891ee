//! `verify_shared`: verification for jobs of one run that write overlapping blocks of one
//! target (fio has no such thing). Each job's verify checks a read against what every
//! sharing job wrote, through a per-block ledger the jobs share.
//!
//! Every write gets a generation from one counter the sharing jobs draw from, so a
//! generation names one write of the run; the verify header carries it (with the offset,
//! the writing job's seed and a digest), so a read proves which write it holds. The
//! counter also serves as the ledger's logical clock: issuing a write, acknowledging or
//! failing one, and issuing a read each take the next value.
//!
//! The rule, per verify block (one `verify_interval`): a read may return a write W iff W
//! was issued before the read completed and no write W' issued after W's acknowledgement
//! was acknowledged before the read was issued (W' supersedes W). So the candidates are
//! the writes acknowledged and not superseded as of the read's issue (more than one when
//! their lifetimes overlapped: the medium may order concurrent writes either way), the
//! writes in flight at the read's issue, and any write issued while the read was in
//! flight. A write that failed or timed out may or may not have landed: it stays a
//! candidate until superseded, like an acknowledged one.
//!
//! The counter starts at the wall clock in nanoseconds, so a block left by an earlier run
//! carries a generation below this run's and is never taken for a write issued during a
//! read.
//!
//! The ledger is sharded by block (a mutex per shard; jobs run on their own threads) and
//! holds memory only for blocks written: a few words plus the live candidates.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Shards of the block map; a power of two above the usual number of jobs.
const SHARDS: usize = 64;

/// One write as the ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRecord {
    pub generation: u64,
    /// Index of the writing job among the sharers (see [`SharedLedger::job_name`]).
    pub job: u32,
    /// When it was acknowledged or failed (the ledger's clock); `None` while in flight.
    pub ended_at: Option<u64>,
    /// A failure or timeout ended it: it may or may not be on the medium.
    pub failed: bool,
}

#[derive(Debug, Default, Clone)]
struct BlockState {
    /// Acknowledged (or failed) writes not superseded: the last one and those whose
    /// lifetime overlapped it.
    settled: Vec<WriteRecord>,
    in_flight: Vec<WriteRecord>,
}

impl BlockState {
    fn candidates(&self) -> Vec<WriteRecord> {
        self.settled
            .iter()
            .chain(self.in_flight.iter())
            .copied()
            .collect()
    }
}

/// The ledger of one target shared by the jobs that verify it together.
#[derive(Debug)]
pub struct SharedLedger {
    /// The target as the user named it (for errors).
    target: String,
    block_bytes: u64,
    shards: Vec<Mutex<HashMap<u64, BlockState>>>,
    clock: AtomicU64,
    /// Generations below this were not written by this run.
    first_generation: u64,
    jobs: Mutex<Vec<String>>,
    /// Sharers that have not finished writing (see [`SharedLedger::finish_writing`]).
    writing: AtomicUsize,
}

/// What a read may return, per block, taken when it was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadTicket {
    pub offset: u64,
    /// The clock when the read was issued: writes issued after it are candidates too.
    pub issued_at: u64,
    /// Per block of the read, in order.
    pub candidates: Vec<Vec<WriteRecord>>,
}

/// A block that holds a write the read may not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SharedVerifyError {
    pub target: String,
    pub block_offset: u64,
    pub lba: u64,
    /// The generation and seed the block's header carries.
    pub found_generation: u64,
    pub found_seed: u64,
    /// The writes the read could have returned (with the writer's name).
    pub candidates: Vec<(WriteRecord, String)>,
    /// Writes issued at or after this clock value (during the read) were accepted too.
    pub issued_during_read_from: u64,
    pub completed_at: u64,
}

impl SharedVerifyError {
    pub fn summary(&self) -> String {
        format!(
            "verify_shared: block at offset {:#x}, LBA {} of {} holds generation {}, not a \
             write the read could return",
            self.block_offset, self.lba, self.target, self.found_generation
        )
    }

    /// Why the found write is not acceptable, in words.
    fn verdict(&self) -> &'static str {
        let newest = self.candidates.iter().map(|(w, _)| w.generation).max();
        match newest {
            None => "no write of this run covers the block",
            Some(_) if self.found_generation >= self.completed_at => {
                "a write issued after the read completed (impossible: a bug or a foreign block)"
            }
            Some(newest) if self.found_generation < newest => {
                "a superseded (stale) write: a lost write or an old copy"
            }
            Some(_) => "a write not known to this run",
        }
    }
}

impl fmt::Display for SharedVerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verify_shared: {} in the block at offset {:#x}, LBA {} of {}: found generation {} \
             (seed {:#018x}); expected one of [",
            self.verdict(),
            self.block_offset,
            self.lba,
            self.target,
            self.found_generation,
            self.found_seed
        )?;
        for (index, (write, job)) in self.candidates.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            let state = match (write.ended_at, write.failed) {
                (None, _) => "in flight",
                (Some(_), false) => "acknowledged",
                (Some(_), true) => "failed, maybe written",
            };
            write!(f, "generation {} by {job:?} ({state})", write.generation)?;
        }
        write!(
            f,
            "] or a write issued during the read (generations {}..{})",
            self.issued_during_read_from, self.completed_at
        )
    }
}

impl SharedLedger {
    /// A ledger for `target` with verify blocks of `block_bytes`; the clock starts at
    /// `first_generation` (the wall clock in ns in a run: see the module doc).
    pub fn new(target: impl Into<String>, block_bytes: u32, first_generation: u64) -> Self {
        SharedLedger {
            target: target.into(),
            block_bytes: u64::from(block_bytes.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            clock: AtomicU64::new(first_generation),
            first_generation,
            jobs: Mutex::new(Vec::new()),
            writing: AtomicUsize::new(0),
        }
    }

    /// A ledger whose clock starts at the wall clock (see the module doc).
    pub fn starting_now(target: impl Into<String>, block_bytes: u32) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self::new(target, block_bytes, now)
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn block_bytes(&self) -> u32 {
        self.block_bytes as u32
    }

    /// Adds a sharing job (it counts as writing until it calls `finish_writing`); returns
    /// its index.
    pub fn join(&self, job: impl Into<String>) -> u32 {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.push(job.into());
        self.writing.fetch_add(1, Ordering::SeqCst);
        (jobs.len() - 1) as u32
    }

    pub fn job_name(&self, job: u32) -> String {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(job as usize)
            .cloned()
            .unwrap_or_else(|| format!("job #{job}"))
    }

    pub fn sharers(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A sharer will write no more (call once per job).
    pub fn finish_writing(&self) {
        let _ = self
            .writing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Sharers still writing.
    pub fn still_writing(&self) -> usize {
        self.writing.load(Ordering::SeqCst)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// The clock now (the next value it hands out).
    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// The blocks `[offset, offset + len)` covers.
    fn blocks(&self, offset: u64, len: u32) -> std::ops::Range<u64> {
        let first = offset / self.block_bytes;
        let end = (offset + u64::from(len)).div_ceil(self.block_bytes);
        first..end.max(first)
    }

    fn with_block<R>(&self, block: u64, f: impl FnOnce(&mut HashMap<u64, BlockState>) -> R) -> R {
        let shard = &self.shards[(block as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    /// A write is about to be sent: its generation (to put in its headers).
    pub fn begin_write(&self, job: u32, offset: u64, len: u32) -> u64 {
        let generation = self.tick();
        let record = WriteRecord {
            generation,
            job,
            ended_at: None,
            failed: false,
        };
        for block in self.blocks(offset, len) {
            self.with_block(block, |map| {
                map.entry(block).or_default().in_flight.push(record);
            });
        }
        generation
    }

    /// The write `generation` ended: acknowledged (`ok`) or failed/timed out.
    pub fn end_write(&self, offset: u64, len: u32, generation: u64, ok: bool) {
        let ended_at = self.tick();
        for block in self.blocks(offset, len) {
            self.with_block(block, |map| {
                let state = map.entry(block).or_default();
                let Some(index) = state
                    .in_flight
                    .iter()
                    .position(|w| w.generation == generation)
                else {
                    return;
                };
                let mut record = state.in_flight.swap_remove(index);
                record.ended_at = Some(ended_at);
                record.failed = !ok;
                if ok {
                    // Superseded: what ended before this write was issued.
                    state
                        .settled
                        .retain(|w| w.ended_at.is_some_and(|end| end > generation));
                }
                state.settled.push(record);
            });
        }
    }

    /// A write `begin_write` registered was never sent (the engine refused it).
    pub fn abandon_write(&self, offset: u64, len: u32, generation: u64) {
        for block in self.blocks(offset, len) {
            self.with_block(block, |map| {
                if let Some(state) = map.get_mut(&block) {
                    state.in_flight.retain(|w| w.generation != generation);
                }
            });
        }
    }

    /// A read is about to be sent: what it may return.
    pub fn begin_read(&self, offset: u64, len: u32) -> ReadTicket {
        // The clock first, then the snapshot: a write issued between the two is after
        // `issued_at` (and maybe in the snapshot too, which is harmless); one acknowledged
        // between them was acknowledged before the read went out, so what it supersedes
        // is rightly gone from the snapshot.
        let issued_at = self.tick();
        let blocks = self.blocks(offset, len);
        let candidates = blocks
            .clone()
            .map(|block| {
                self.with_block(block, |map| {
                    map.get(&block)
                        .map(BlockState::candidates)
                        .unwrap_or_default()
                })
            })
            .collect();
        ReadTicket {
            offset: blocks.start * self.block_bytes,
            issued_at,
            candidates,
        }
    }

    /// Whether block `block_offset` of a read with `ticket` may hold write `generation`
    /// (its header names it, and the header's offset and digest were checked).
    pub fn judge(
        &self,
        ticket: &ReadTicket,
        block_offset: u64,
        found_generation: u64,
        found_seed: u64,
        lba_size_bytes: u32,
    ) -> Result<(), Box<SharedVerifyError>> {
        let completed_at = self.now();
        let index = (block_offset.saturating_sub(ticket.offset) / self.block_bytes) as usize;
        let candidates = ticket
            .candidates
            .get(index)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let known = candidates.iter().any(|w| w.generation == found_generation);
        // Issued while the read was in flight: a header with this offset and digest was
        // made only by a write of this run covering this block.
        let during = (ticket.issued_at..completed_at).contains(&found_generation)
            && found_generation >= self.first_generation;
        if known || during {
            return Ok(());
        }
        Err(Box::new(SharedVerifyError {
            target: self.target.clone(),
            block_offset,
            lba: block_offset / u64::from(lba_size_bytes.max(1)),
            found_generation,
            found_seed,
            candidates: candidates
                .iter()
                .map(|w| (*w, self.job_name(w.job)))
                .collect(),
            issued_during_read_from: ticket.issued_at,
            completed_at,
        }))
    }

    /// The writes block `block_offset` of a read with `ticket` could have returned, in
    /// words (for a bad block's error, whose own "expected" cannot know them).
    pub fn describe_candidates(&self, ticket: &ReadTicket, block_offset: u64) -> String {
        let index = (block_offset.saturating_sub(ticket.offset) / self.block_bytes) as usize;
        let candidates = ticket.candidates.get(index).cloned().unwrap_or_default();
        let mut text = String::from("verify_shared expected one of [");
        for (n, write) in candidates.iter().enumerate() {
            if n > 0 {
                text.push_str(", ");
            }
            text.push_str(&format!(
                "generation {} by {:?}",
                write.generation,
                self.job_name(write.job)
            ));
        }
        text.push_str(&format!(
            "] or a write issued during the read (generation >= {})",
            ticket.issued_at
        ));
        text
    }

    /// The offsets of written blocks whose index is `share` modulo `shares`, sorted: one
    /// sharer's part of the final check.
    pub fn written_blocks(&self, share: usize, shares: usize) -> Vec<u64> {
        let shares = shares.max(1) as u64;
        let mut offsets: Vec<u64> = Vec::new();
        for shard in &self.shards {
            let map = shard.lock().unwrap_or_else(|e| e.into_inner());
            offsets.extend(
                map.iter()
                    .filter(|(block, state)| {
                        *block % shares == share as u64
                            && !(state.settled.is_empty() && state.in_flight.is_empty())
                    })
                    .map(|(block, _)| block * self.block_bytes),
            );
        }
        offsets.sort_unstable();
        offsets
    }
}

#[cfg(test)]
#[path = "shared_ledger_tests.rs"]
mod tests;
