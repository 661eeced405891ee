//! The ledger's rule on a simulated disk (which can return stale, torn, misplaced or
//! never-written blocks: each must fail) and against a model (proptest).

use super::*;
use crate::workload::checksum::ChecksumKind;
use crate::workload::verify::{Mismatch, Verifier, VerifyConfig, VerifyKind};
use crate::workload::JudgedFailure;
use proptest::prelude::*;

const BLOCK: u32 = 4096;

/// Jobs writing one target through a ledger onto a disk that keeps whatever lands last.
struct Sim {
    ledger: SharedLedger,
    verifiers: Vec<Verifier>,
    disk: HashMap<u64, Vec<u8>>,
}

/// A write in flight: its buffer is what the disk gets when it lands.
struct Pending {
    offset: u64,
    generation: u64,
    buffer: Vec<u8>,
}

impl Sim {
    fn new(jobs: usize) -> Sim {
        let ledger = SharedLedger::new("LUN sim", BLOCK, 1_000);
        let config = VerifyConfig {
            kind: VerifyKind::Checksum(ChecksumKind::Crc32c),
            ..VerifyConfig::default()
        };
        let verifiers = (0..jobs)
            .map(|job| {
                ledger.join(format!("w{job}"));
                Verifier::new(&config, 0xabc0 + job as u64, BLOCK).expect("config")
            })
            .collect();
        Sim {
            ledger,
            verifiers,
            disk: HashMap::new(),
        }
    }

    fn issue(&self, job: u32, offset: u64) -> Pending {
        let generation = self.ledger.begin_write(job, offset, BLOCK);
        let mut buffer = vec![0u8; BLOCK as usize];
        self.verifiers[job as usize].fill(&mut buffer, offset, generation);
        Pending {
            offset,
            generation,
            buffer,
        }
    }

    fn land(&mut self, write: &Pending) {
        self.disk.insert(write.offset, write.buffer.clone());
    }

    fn ack(&self, write: &Pending) {
        self.ledger
            .end_write(write.offset, BLOCK, write.generation, true);
    }

    /// Issue, land and acknowledge.
    fn write(&mut self, job: u32, offset: u64) -> Pending {
        let write = self.issue(job, offset);
        self.land(&write);
        self.ack(&write);
        write
    }

    fn on_disk(&self, offset: u64) -> Vec<u8> {
        self.disk
            .get(&offset)
            .cloned()
            .unwrap_or_else(|| vec![0; BLOCK as usize])
    }

    /// Checks `data` as a read of `offset` issued with `ticket` and completing now.
    fn check(
        &self,
        ticket: &ReadTicket,
        offset: u64,
        data: &[u8],
    ) -> Result<(), JudgedFailure<Box<SharedVerifyError>>> {
        self.verifiers[0].check_with(data, offset, |block, generation, seed| {
            self.ledger.judge(ticket, block, generation, seed, 512)
        })
    }

    /// A read with nothing else going on.
    fn read_now(&self, offset: u64) -> Result<(), JudgedFailure<Box<SharedVerifyError>>> {
        let ticket = self.ledger.begin_read(offset, BLOCK);
        self.check(&ticket, offset, &self.on_disk(offset))
    }
}

fn judged(result: Result<(), JudgedFailure<Box<SharedVerifyError>>>) -> Box<SharedVerifyError> {
    match result {
        Err(JudgedFailure::Judged(e)) => e,
        other => panic!("expected a ledger refusal, got {other:?}"),
    }
}

fn block_error(result: Result<(), JudgedFailure<Box<SharedVerifyError>>>) -> Mismatch {
    match result {
        Err(JudgedFailure::Block(e)) => e.mismatch,
        other => panic!("expected a bad block, got {other:?}"),
    }
}

#[test]
fn another_jobs_last_write_is_the_right_answer() {
    let mut sim = Sim::new(2);
    sim.write(0, 0);
    sim.write(1, 0);
    assert_eq!(sim.read_now(0), Ok(()));
}

#[test]
fn stale_block_is_caught_naming_block_candidates_and_found() {
    let mut sim = Sim::new(2);
    let old = sim.write(0, 8192);
    let new = sim.issue(1, 8192);
    sim.ack(&new); // acknowledged, but the disk lost it
    let error = judged(sim.read_now(8192));
    assert_eq!(error.block_offset, 8192);
    assert_eq!(error.lba, 16);
    assert_eq!(error.found_generation, old.generation);
    let candidates: Vec<u64> = error.candidates.iter().map(|(w, _)| w.generation).collect();
    assert_eq!(candidates, vec![new.generation]);
    let text = error.to_string();
    assert!(text.contains("stale"), "{text}");
    assert!(text.contains("offset 0x2000, LBA 16"), "{text}");
    assert!(
        text.contains(&format!("found generation {}", old.generation)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "generation {} by \"w1\" (acknowledged)",
            new.generation
        )),
        "{text}"
    );
}

#[test]
fn torn_block_is_caught() {
    let mut sim = Sim::new(2);
    let first = sim.write(0, 0);
    let second = sim.issue(1, 0);
    // Half of each: both were candidates while the second was in flight.
    let mut torn = first.buffer.clone();
    torn[2048..].copy_from_slice(&second.buffer[2048..]);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert_eq!(
        block_error(sim.check(&ticket, 0, &torn)),
        Mismatch::Checksum
    );
    // And the header of one with the other's data.
    let mut torn = second.buffer.clone();
    torn[..64].copy_from_slice(&first.buffer[..64]);
    assert_eq!(
        block_error(sim.check(&ticket, 0, &torn)),
        Mismatch::Checksum
    );
}

#[test]
fn misplaced_block_is_caught() {
    let mut sim = Sim::new(1);
    let elsewhere = sim.write(0, 4096);
    sim.write(0, 0);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert_eq!(
        block_error(sim.check(&ticket, 0, &elsewhere.buffer)),
        Mismatch::Offset
    );
}

#[test]
fn never_written_block_is_caught() {
    let mut sim = Sim::new(1);
    sim.write(0, 0);
    // The write was acknowledged, the disk still has zeros elsewhere.
    let lost = sim.issue(0, 4096);
    sim.ack(&lost);
    assert_eq!(block_error(sim.read_now(4096)), Mismatch::Magic);
}

#[test]
fn a_block_from_an_earlier_run_is_not_taken_for_a_write_during_the_read() {
    let mut sim = Sim::new(1);
    // An earlier run's block: a sound header, a generation below this run's clock.
    let mut earlier = vec![0u8; BLOCK as usize];
    sim.verifiers[0].fill(&mut earlier, 0, 5);
    sim.write(0, 0);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    let error = judged(sim.check(&ticket, 0, &earlier));
    assert_eq!(error.found_generation, 5);
}

#[test]
fn concurrent_writes_may_land_in_either_order() {
    let mut sim = Sim::new(2);
    let a = sim.issue(0, 0);
    let b = sim.issue(1, 0);
    // A read while both are in flight sees either (or the block before: nothing here).
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert_eq!(sim.check(&ticket, 0, &a.buffer), Ok(()));
    assert_eq!(sim.check(&ticket, 0, &b.buffer), Ok(()));
    // b acknowledged first, a later: their lifetimes overlapped, so after both either
    // may be on the medium.
    sim.land(&a);
    sim.land(&b);
    sim.ack(&b);
    sim.ack(&a);
    assert_eq!(sim.read_now(0), Ok(())); // b's, landed last
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert_eq!(sim.check(&ticket, 0, &a.buffer), Ok(()));
    // A write issued after both were acknowledged supersedes both.
    let c = sim.write(0, 0);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert!(sim.check(&ticket, 0, &a.buffer).is_err());
    assert!(sim.check(&ticket, 0, &b.buffer).is_err());
    assert_eq!(sim.check(&ticket, 0, &c.buffer), Ok(()));
}

#[test]
fn a_write_issued_during_the_read_may_be_returned() {
    let mut sim = Sim::new(2);
    let old = sim.write(0, 0);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    let during = sim.write(1, 0);
    sim.write(1, 0); // even superseded by the end of the read: it was there for a moment
    assert_eq!(sim.check(&ticket, 0, &during.buffer), Ok(()));
    assert_eq!(sim.check(&ticket, 0, &old.buffer), Ok(()));
    // A read issued after those: only the last.
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert!(sim.check(&ticket, 0, &during.buffer).is_err());
}

#[test]
fn a_failed_write_stays_possible_until_superseded() {
    let mut sim = Sim::new(2);
    let before = sim.write(0, 0);
    let failed = sim.issue(1, 0);
    sim.ledger.end_write(0, BLOCK, failed.generation, false);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert_eq!(sim.check(&ticket, 0, &failed.buffer), Ok(()));
    assert_eq!(sim.check(&ticket, 0, &before.buffer), Ok(()));
    let error = judged(sim.check(&sim.ledger.begin_read(4096, BLOCK), 4096, &{
        let mut b = vec![0u8; BLOCK as usize];
        sim.verifiers[0].fill(&mut b, 4096, failed.generation);
        b
    }));
    assert!(
        error.to_string().contains("no write of this run"),
        "{error}"
    );
    let after = sim.write(0, 0);
    let ticket = sim.ledger.begin_read(0, BLOCK);
    assert!(sim.check(&ticket, 0, &failed.buffer).is_err());
    assert_eq!(sim.check(&ticket, 0, &after.buffer), Ok(()));
}

#[test]
fn multi_block_writes_and_reads_are_judged_per_block() {
    let mut sim = Sim::new(2);
    // One write of two blocks, then one job rewrites the second block.
    let generation = sim.ledger.begin_write(0, 0, 2 * BLOCK);
    let mut two = vec![0u8; 2 * BLOCK as usize];
    sim.verifiers[0].fill(&mut two, 0, generation);
    sim.ledger.end_write(0, 2 * BLOCK, generation, true);
    sim.disk.insert(0, two[..4096].to_vec());
    sim.disk.insert(4096, two[4096..].to_vec());
    let ticket = sim.ledger.begin_read(0, 2 * BLOCK);
    assert_eq!(sim.check(&ticket, 0, &two), Ok(()));
    sim.write(1, 4096);
    let ticket = sim.ledger.begin_read(0, 2 * BLOCK);
    let error = judged(sim.check(&ticket, 0, &two));
    assert_eq!(error.block_offset, 4096);
    let mut now = sim.on_disk(0);
    now.extend(sim.on_disk(4096));
    assert_eq!(sim.check(&ticket, 0, &now), Ok(()));
}

#[test]
fn written_blocks_are_split_among_sharers() {
    let mut sim = Sim::new(2);
    for block in [0u64, 1, 2, 5] {
        sim.write(0, block * u64::from(BLOCK));
    }
    assert_eq!(sim.ledger.written_blocks(0, 2), vec![0, 2 * 4096]);
    assert_eq!(sim.ledger.written_blocks(1, 2), vec![4096, 5 * 4096]);
    assert_eq!(sim.ledger.still_writing(), 2);
    sim.ledger.finish_writing();
    sim.ledger.finish_writing();
    sim.ledger.finish_writing(); // once too often: stays at zero
    assert_eq!(sim.ledger.still_writing(), 0);
}

/// The model: every write's history, and the rule stated directly.
#[derive(Debug, Clone)]
struct ModelWrite {
    block: u64,
    generation: u64,
    /// (when, acknowledged) once ended.
    end: Option<(u64, bool)>,
}

fn allowed(history: &[ModelWrite], block: u64, read_issue: u64, read_done: u64, g: u64) -> bool {
    let Some(w) = history
        .iter()
        .find(|w| w.block == block && w.generation == g)
    else {
        return false;
    };
    if w.generation >= read_done {
        return false;
    }
    let superseded = history.iter().any(|later| {
        later.block == block
            && matches!(w.end, Some((end, _)) if later.generation > end)
            && matches!(later.end, Some((end, true)) if end < read_issue)
    });
    !superseded
}

#[derive(Debug, Clone)]
enum Op {
    Write { job: u32, block: u64 },
    End { pick: usize, ok: bool },
    Read { block: u64 },
    Complete { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..3, 0u64..3).prop_map(|(job, block)| Op::Write { job, block }),
        (any::<usize>(), prop::bool::weighted(0.9)).prop_map(|(pick, ok)| Op::End { pick, ok }),
        (0u64..3).prop_map(|block| Op::Read { block }),
        any::<usize>().prop_map(|pick| Op::Complete { pick }),
    ]
}

proptest! {
    #[test]
    fn ledger_agrees_with_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let ledger = SharedLedger::new("LUN model", BLOCK, 100);
        for job in 0..3 {
            ledger.join(format!("w{job}"));
        }
        let mut history: Vec<ModelWrite> = Vec::new();
        let mut in_flight: Vec<usize> = Vec::new();
        let mut reads: Vec<(u64, ReadTicket)> = Vec::new();
        for op in ops {
            match op {
                Op::Write { job, block } => {
                    let generation = ledger.begin_write(job, block * u64::from(BLOCK), BLOCK);
                    in_flight.push(history.len());
                    history.push(ModelWrite { block, generation, end: None });
                }
                Op::End { pick, ok } if !in_flight.is_empty() => {
                    let index = in_flight.swap_remove(pick % in_flight.len());
                    let w = &mut history[index];
                    ledger.end_write(w.block * u64::from(BLOCK), BLOCK, w.generation, ok);
                    w.end = Some((ledger.now() - 1, ok));
                }
                Op::Read { block } => {
                    reads.push((block, ledger.begin_read(block * u64::from(BLOCK), BLOCK)));
                }
                Op::Complete { pick } if !reads.is_empty() => {
                    let (block, ticket) = reads.swap_remove(pick % reads.len());
                    let done = ledger.now();
                    // Every write ever issued, and a generation never issued.
                    let mut generations: Vec<u64> = history.iter().map(|w| w.generation).collect();
                    generations.push(99);
                    generations.push(done + 5);
                    for g in generations {
                        let judged = ledger
                            .judge(&ticket, block * u64::from(BLOCK), g, 0, 512)
                            .is_ok();
                        let expected = allowed(&history, block, ticket.issued_at, done, g);
                        // A generation of another block's write has no header here for
                        // this block; only same-block writes and unknown ones compare.
                        let same_block_or_unknown = history
                            .iter()
                            .find(|w| w.generation == g)
                            .is_none_or(|w| w.block == block);
                        if same_block_or_unknown {
                            prop_assert_eq!(judged, expected, "generation {} block {}", g, block);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
