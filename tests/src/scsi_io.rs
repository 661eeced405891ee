//! SCSI I/O through the data path, for tests that move data through it and check what
//! landed: one set of helpers for each way the data path carries a command, an adapter
//! path ([`AdapterPath`]) or one shard of a [`ShardPool`] ([`OnShard`]).
//!
//! - [`CommandPath::run_all`]: as many commands in flight as the carrier takes, answers by
//!   tag, bounded by [`IO_WAIT`].
//! - [`probe`], [`until_ready`]: the LUN probe of `datapath::scsi::probe` on any of them
//!   (TEST UNIT READY past a new session's unit attention, the capacity, Block Limits),
//!   waiting out a path logging in again.
//! - [`write_then_verify`], [`read_all`], [`assert_backing_file_holds`]: write
//!   [`pattern`] data, read it back, and find it in the LUN's backing file.
//! - [`fault_round`] with [`FAULTS`]: an offload model's fault hook fails the I/O it hits
//!   with an error naming the fault; the path recovers and acknowledged data is intact.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use datapath::adapter::{AdapterPath, PathError, PathFailure};
use datapath::client::{Client, ClientError};
use datapath::scsi::probe::{
    probe_lun, LunFacts, ProbeConfig, ProbeFailure, ScsiAnswer, ScsiExecute,
};
use datapath::scsi::{Cdb, DataDirection as CdbDirection};
use datapath::session::{CommandError, CommandOutcome, Request};
use datapath::shard::ShardPool;
use offload::faults::Faults;

use crate::{pattern, Peer, LUN_BLOCK_BYTES};

/// How long one [`CommandPath::run_all`] may take before the test fails.
pub const IO_WAIT: Duration = Duration::from_secs(30);

const BLOCK: u32 = LUN_BLOCK_BYTES as u32;

/// What carries commands to the target.
pub trait CommandPath {
    /// How the carrier reports a command it could not run.
    type Failure: fmt::Display + fmt::Debug;
    /// Runs `commands` keeping as many in flight as the carrier takes; the answers by
    /// tag. Panics when they take longer than [`IO_WAIT`].
    fn run_all(
        &mut self,
        commands: Vec<Request>,
    ) -> HashMap<u64, Result<CommandOutcome, Self::Failure>>;
    /// Whether `failure` says the path is logging in again (worth a retry).
    fn is_reconnecting(failure: &Self::Failure) -> bool;
    /// Whether `failure` is an adapter fault.
    fn is_adapter_fault(failure: &Self::Failure) -> bool;
}

impl<P: AdapterPath + ?Sized> CommandPath for P {
    type Failure = PathFailure;

    fn run_all(
        &mut self,
        commands: Vec<Request>,
    ) -> HashMap<u64, Result<CommandOutcome, PathFailure>> {
        let total = commands.len();
        let mut pending = commands.into_iter();
        let mut next = pending.next();
        let mut done = HashMap::with_capacity(total);
        let deadline = Instant::now() + IO_WAIT;
        while done.len() < total {
            assert!(
                Instant::now() < deadline,
                "I/O did not finish in {IO_WAIT:?}"
            );
            while let Some(r) = next.take() {
                match self.submit(Instant::now(), r) {
                    Ok(()) => next = pending.next(),
                    Err(refused) => {
                        next = Some(refused.request);
                        break;
                    }
                }
            }
            self.poll(Instant::now());
            while let Some(c) = self.poll_completion() {
                done.insert(c.user_data, c.result);
            }
            if done.len() < total {
                self.wait(Duration::from_millis(50));
            }
        }
        done
    }

    fn is_reconnecting(failure: &PathFailure) -> bool {
        matches!(failure.error, PathError::Unavailable(_))
    }

    fn is_adapter_fault(failure: &PathFailure) -> bool {
        matches!(failure.error, PathError::Adapter(_))
    }
}

/// One shard of a pool, as a [`CommandPath`].
#[derive(Clone, Copy)]
pub struct OnShard<'a> {
    pub pool: &'a ShardPool,
    pub shard: usize,
}

impl<'a> OnShard<'a> {
    pub fn new(pool: &'a ShardPool, shard: usize) -> OnShard<'a> {
        OnShard { pool, shard }
    }
}

impl CommandPath for OnShard<'_> {
    type Failure = PathFailure;

    fn run_all(
        &mut self,
        commands: Vec<Request>,
    ) -> HashMap<u64, Result<CommandOutcome, PathFailure>> {
        let shard = self.shard;
        let total = commands.len();
        let mut pending = commands.into_iter();
        let mut next = pending.next();
        let mut done = HashMap::with_capacity(total);
        let deadline = Instant::now() + IO_WAIT;
        while done.len() < total {
            assert!(
                Instant::now() < deadline,
                "shard {shard}: I/O did not finish"
            );
            while let Some(r) = next.take() {
                match self.pool.submit(shard, r) {
                    Ok(()) => next = pending.next(),
                    Err(back) => {
                        next = Some(back);
                        break;
                    }
                }
            }
            // The futex wait the benchmark uses (the shard wakes it, moderated).
            if let Ok(c) =
                self.pool
                    .wait_completion(shard, Duration::ZERO, Duration::from_millis(100))
            {
                done.insert(c.user_data, c.result);
            }
        }
        done
    }

    fn is_reconnecting(failure: &PathFailure) -> bool {
        matches!(
            failure.error,
            PathError::Command(CommandError::ConnectionLost(_))
        )
    }

    fn is_adapter_fault(failure: &PathFailure) -> bool {
        matches!(failure.error, PathError::Adapter(_))
    }
}

/// The blocking client, over whichever path it was opened on, as a [`CommandPath`]: its own
/// pipelined batch ([`Client::execute_batch`]) runs the commands.
pub struct OnClient<'a>(pub &'a mut Client);

impl CommandPath for OnClient<'_> {
    type Failure = ClientError;

    fn run_all(
        &mut self,
        commands: Vec<Request>,
    ) -> HashMap<u64, Result<CommandOutcome, ClientError>> {
        let tags: Vec<u64> = commands.iter().map(|c| c.user_data).collect();
        let started = Instant::now();
        let path = self.0.path_name();
        let results = self
            .0
            .execute_batch(commands)
            .unwrap_or_else(|e| panic!("the {path} path failed: {e}"));
        assert!(
            started.elapsed() < IO_WAIT,
            "I/O did not finish in {IO_WAIT:?}"
        );
        tags.into_iter().zip(results).collect()
    }

    fn is_reconnecting(failure: &ClientError) -> bool {
        matches!(
            failure,
            ClientError::Command(CommandError::ConnectionLost(_))
        )
    }

    fn is_adapter_fault(failure: &ClientError) -> bool {
        matches!(failure, ClientError::Path(PathError::Adapter(_)))
    }
}

/// Runs one command and returns its answer.
pub fn run_one<P: CommandPath + ?Sized>(
    path: &mut P,
    command: Request,
) -> Result<CommandOutcome, P::Failure> {
    let tag = command.user_data;
    path.run_all(vec![command])
        .remove(&tag)
        .expect("the completion of the command")
}

/// CHECK CONDITION with sense key UNIT ATTENTION ([`datapath::scsi::is_unit_attention`]).
pub fn is_unit_attention(outcome: &CommandOutcome) -> bool {
    datapath::scsi::is_unit_attention(outcome.status, outcome.sense.as_deref())
}

/// The LUN probe's commands ([`datapath::scsi::probe`]) on a [`CommandPath`], one at a time.
pub struct Probing<'a, P: ?Sized>(pub &'a mut P);

impl<P: CommandPath + ?Sized> ScsiExecute for Probing<'_, P> {
    type Error = P::Failure;

    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, P::Failure> {
        let buffer = match cdb.direction() {
            CdbDirection::Read(len) => vec![0; len as usize],
            _ => Vec::new(),
        };
        let outcome = run_one(self.0, Request::new(lun, cdb.clone(), buffer, PROBE_TAG))?;
        Ok(ScsiAnswer::new(
            outcome.status,
            outcome.sense,
            outcome.buffer,
            outcome.transferred,
        ))
    }
}

/// The tag of the probe's commands.
const PROBE_TAG: u64 = 1000;

/// The LUN probe on `path` ([`probe_lun`]), started again while the path is logging in
/// again (at most 30 times, 100 ms apart); panics on any other failure.
pub fn probe<P: CommandPath + ?Sized>(path: &mut P, lun: u64, config: ProbeConfig) -> LunFacts {
    for _ in 0..30 {
        match probe_lun(&mut Probing(&mut *path), lun, config) {
            Ok(facts) => return facts,
            Err(ProbeFailure::Execute { command, error }) => {
                assert!(P::is_reconnecting(&error), "{command} failed: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(ProbeFailure::Scsi(e)) => panic!("LUN {lun}: {e}"),
        }
    }
    panic!("the path did not become ready");
}

/// TEST UNIT READY until GOOD ([`probe`] with [`ProbeConfig::READY`]): takes the unit
/// attention a new session sees, and waits out a path that is logging in again.
pub fn until_ready<P: CommandPath + ?Sized>(path: &mut P, lun: u64) {
    probe(path, lun, ProbeConfig::READY);
}

/// The I/Os of one workload: (first block within a region, blocks), one I/O of each of
/// `sizes` blocks, `gap_blocks` apart, so no two overlap.
pub fn layout(sizes: &[u32], gap_blocks: u64) -> Vec<(u64, u32)> {
    let mut at = 0u64;
    sizes
        .iter()
        .map(|&blocks| {
            let io = (at, blocks);
            at += u64::from(blocks) + gap_blocks;
            io
        })
        .collect()
}

/// Writes [`pattern`] data with the I/Os of `ios` over the region at `region_lba`, reads
/// it back and compares; returns what each I/O wrote, by LBA.
pub fn write_then_verify<P: CommandPath + ?Sized>(
    path: &mut P,
    lun: u64,
    ios: &[(u64, u32)],
    region_lba: u64,
    seed: u64,
) -> Vec<(u64, Vec<u8>)> {
    let data: Vec<(u64, Vec<u8>)> = ios
        .iter()
        .enumerate()
        .map(|(i, &(offset, blocks))| {
            let bytes = (blocks * BLOCK) as usize;
            (region_lba + offset, pattern(bytes, seed << 16 | i as u64))
        })
        .collect();
    let writes = data
        .iter()
        .enumerate()
        .map(|(i, (lba, bytes))| {
            let cdb = Cdb::write(*lba, bytes.len() as u32 / BLOCK, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), bytes.clone(), i as u64)
        })
        .collect();
    for (i, result) in path.run_all(writes) {
        let outcome = result.unwrap_or_else(|e| panic!("write {i}: {e}"));
        assert_eq!(outcome.status, 0, "write {i}: {outcome:?}");
    }
    let read_back = read_all(path, lun, &data);
    for (i, ((lba, expected), got)) in data.iter().zip(read_back).enumerate() {
        assert!(
            got == *expected,
            "read {i} at LBA {lba} differs from what was written"
        );
    }
    data
}

/// Reads the extents of `data` (LBA, bytes) back.
pub fn read_all<P: CommandPath + ?Sized>(
    path: &mut P,
    lun: u64,
    data: &[(u64, Vec<u8>)],
) -> Vec<Vec<u8>> {
    let reads = data
        .iter()
        .enumerate()
        .map(|(i, (lba, bytes))| {
            let cdb = Cdb::read(*lba, bytes.len() as u32 / BLOCK, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), vec![0; bytes.len()], i as u64)
        })
        .collect();
    let mut done = path.run_all(reads);
    (0..data.len() as u64)
        .map(|i| {
            let result = done.remove(&i).expect("every read completes");
            let outcome = result.unwrap_or_else(|e| panic!("read {i}: {e}"));
            assert_eq!(outcome.status, 0, "read {i}: {outcome:?}");
            assert_eq!(outcome.transferred as usize, outcome.buffer.len());
            outcome.buffer
        })
        .collect()
}

/// The backing file of the peer's first LUN holds each extent of `data` (LBA, bytes).
pub fn assert_backing_file_holds(peer: &dyn Peer, data: &[(u64, Vec<u8>)]) {
    let backing = std::fs::read(peer.lun_path(0, 0)).expect("backing file");
    for (lba, bytes) in data {
        let at = (*lba * u64::from(BLOCK)) as usize;
        assert!(
            backing.get(at..at + bytes.len()) == Some(&bytes[..]),
            "backing file differs at LBA {lba}"
        );
    }
}

/// Which I/O a fault is armed for.
#[derive(Debug, Clone, Copy)]
pub enum Victim {
    Write,
    Read,
}

/// A fault hook, the I/O it hits, and the words its error must contain.
pub type FaultCase = (fn(&Faults), Victim, &'static [&'static str]);

/// Every fault hook of the offload models.
pub const FAULTS: [FaultCase; 4] = [
    (
        Faults::drop_next_submission,
        Victim::Write,
        &[
            "adapter dropped submission entry",
            "injected by adapter fault hook",
        ],
    ),
    (
        Faults::corrupt_next_digest,
        Victim::Read,
        &["data digest mismatch", "injected by adapter fault hook"],
    ),
    (
        Faults::reset_on_next_submission,
        Victim::Write,
        &["adapter reset", "injected by adapter fault hook"],
    ),
    (
        Faults::stall_completion_doorbell,
        Victim::Write,
        &["completion doorbell stalled"],
    ),
];

/// One fault: acknowledged data A is on the LUN; the fault fails the next I/O with an
/// adapter error naming it; the path recovers; A is intact and a new write B lands.
pub fn fault_round<P: CommandPath + ?Sized>(
    path: &mut P,
    peer: &dyn Peer,
    faults: &Faults,
    lba: u64,
    case: FaultCase,
) {
    let (arm, victim, expected) = case;
    let lun = peer.first_data_lun();
    let blocks = 64;
    let bytes = (blocks * BLOCK) as usize;
    let write = |lba: u64, data: Vec<u8>, tag| {
        let cdb = Cdb::write(lba, blocks, BLOCK, false).unwrap();
        Request::new(lun, cdb.clone(), data, tag)
    };
    let data_a = pattern(bytes, lba);
    let done = run_one(path, write(lba, data_a.clone(), 1));
    assert_eq!(done.expect("write A").status, 0);
    let lba_b = lba + u64::from(blocks);

    let fired_before = faults.fired();
    arm(faults);
    let victim_command = match victim {
        Victim::Write => write(lba_b, pattern(bytes, lba_b ^ 0xdead), 2),
        Victim::Read => {
            let cdb = Cdb::read(lba, blocks, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), vec![0; bytes], 2)
        }
    };
    let failure = match run_one(path, victim_command) {
        Ok(outcome) => panic!("{victim:?} under fault {expected:?} reported good: {outcome:?}"),
        Err(failure) => failure,
    };
    let text = failure.to_string();
    for needle in expected {
        assert!(
            text.contains(needle),
            "error {text:?} does not name {needle:?}"
        );
    }
    assert!(P::is_adapter_fault(&failure), "{failure:?}");
    assert!(faults.fired() > fired_before, "the fault hook did not fire");

    // Recovered: acknowledged data A is intact, a new write B lands.
    until_ready(path, lun);
    let read_a = read_all(path, lun, &[(lba, data_a.clone())]);
    assert!(
        read_a[0] == data_a,
        "acknowledged data lost after {expected:?}"
    );
    let data_b = pattern(bytes, lba_b);
    let done = run_one(path, write(lba_b, data_b.clone(), 3));
    assert_eq!(done.expect("write B after recovery").status, 0);
    assert!(read_all(path, lun, &[(lba_b, data_b.clone())])[0] == data_b);
    assert_backing_file_holds(peer, &[(lba, data_a), (lba_b, data_b)]);
}
