//! The pool survives `kill -9` of the gateway: rounds of a writer that writes stamped
//! blocks to two volumes of one pool through our initiator and flushes with SYNCHRONIZE
//! CACHE, a `kill -9` at a random moment, then an offline `check` of the pool and a read of
//! both volumes through a restarted gateway. Every block holds the last write a completed
//! SYNCHRONIZE CACHE covered or a later write to the same block of the same volume (never
//! zeros once synced, never another block's or volume's data).
//!
//! `POOL_CRASH_ROUNDS` sets the number of rounds and `POOL_CRASH_SECONDS` a time budget after
//! which no round starts (20 rounds here; `scripts/bench-pool.sh` runs
//! 1,000). Power cuts (unsynced writes dropped) are simulated in the pool's own property
//! tests (`gateway::backend::pool`), where the disk can be made to lose them.

use std::collections::HashMap;
use std::path::Path;
use std::thread;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::Request;
use gateway::backend::Pool;
use system_tests::gateway_process::{GatewaySpec, GATEWAY_IQN};
use system_tests::{GatewayProcess, TempDir};

const BLOCK: u64 = 512;
const VOLUME_BYTES: u64 = 8 << 20;
const BLOCKS: u64 = VOLUME_BYTES / BLOCK;
const LUNS: u64 = 2;
/// Writes between SYNCHRONIZE CACHE commands.
const WRITES_PER_SYNC: u64 = 8;

/// A stamp names the LUN, the block and the write: any misplaced block shows.
fn stamp(lun: u64, lba: u64, seq: u64) -> [u8; 8] {
    ((lun << 56) | (lba << 32) | seq).to_le_bytes()
}

fn block_of(lun: u64, lba: u64, seq: u64) -> Vec<u8> {
    stamp(lun, lba, seq).repeat((BLOCK / 8) as usize)
}

/// What the writer did: every write issued per (LUN, block), and which of them a completed
/// SYNCHRONIZE CACHE covered.
#[derive(Debug, Default)]
struct History {
    /// (LUN, LBA) -> sequence numbers issued, in order.
    issued: HashMap<(u64, u64), Vec<u64>>,
    /// Ranges of durable sequence numbers: a sync covers the writes issued before it by
    /// the same gateway process (an earlier process's unsynced writes may be gone).
    durable: Vec<std::ops::Range<u64>>,
}

impl History {
    fn is_durable(&self, seq: u64) -> bool {
        self.durable.iter().any(|range| range.contains(&seq))
    }

    fn last_durable(&self, issued: &[u64]) -> Option<u64> {
        issued
            .iter()
            .rev()
            .copied()
            .find(|&seq| self.is_durable(seq))
    }
}

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn connect(gateway: &GatewayProcess) -> Client {
    let mut config = ClientConfig::new(gateway.portal(), Some(GATEWAY_IQN.into()));
    config.command_timeout = Duration::from_secs(10);
    Client::connect(&config).expect("our initiator logs in")
}

/// Writes and syncs until the connection breaks (the gateway was killed).
fn write_until_killed(
    mut client: Client,
    history: &mut History,
    next_seq: &mut u64,
    random: &mut Random,
) {
    let mut since_sync = 0;
    let process_start = *next_seq;
    history.durable.push(process_start..process_start);
    loop {
        if since_sync == WRITES_PER_SYNC {
            // Every write issued so far completed (one at a time): the sync covers them.
            let covered = *next_seq;
            let cdb = Cdb::synchronize_cache_16(0, 0, false);
            for lun in 0..LUNS {
                match client.execute(Request::new(lun, cdb.clone(), Vec::new(), 0)) {
                    Ok(outcome) if outcome.status == 0 => {}
                    Ok(outcome) => panic!("SYNCHRONIZE CACHE failed: {outcome:?}"),
                    Err(_) => return,
                }
            }
            *history.durable.last_mut().expect("pushed above") = process_start..covered;
            since_sync = 0;
        }
        let lun = random.next() % LUNS;
        let blocks = 1 + random.next() % 16;
        let lba = random.next() % (BLOCKS - blocks);
        let seq = *next_seq;
        *next_seq += 1;
        let mut data = Vec::with_capacity((blocks * BLOCK) as usize);
        for b in lba..lba + blocks {
            data.extend_from_slice(&block_of(lun, b, seq));
            // Issued before it is sent: a write in flight at the kill may land too.
            history.issued.entry((lun, b)).or_default().push(seq);
        }
        let cdb = Cdb::write_16(lba, blocks as u32, BLOCK as u32, false).unwrap();
        match client.execute(Request::new(lun, cdb.clone(), data, 0)) {
            Ok(outcome) if outcome.status == 0 => since_sync += 1,
            Ok(outcome) => panic!("WRITE failed: {outcome:?}"),
            Err(_) => return,
        }
    }
}

/// Reads both volumes and checks every block against the history.
fn verify(gateway: &GatewayProcess, history: &History, round: usize) {
    let mut client = connect(gateway);
    let piece_blocks = 2048u64;
    for lun in 0..LUNS {
        for start in (0..BLOCKS).step_by(piece_blocks as usize) {
            let cdb = Cdb::read_16(start, piece_blocks as u32, BLOCK as u32, false).unwrap();
            let bytes = (piece_blocks * BLOCK) as usize;
            let outcome = client
                .execute(Request::new(lun, cdb.clone(), vec![0; bytes], 0))
                .expect("the read completes");
            assert_eq!(outcome.status, 0, "round {round}: READ failed: {outcome:?}");
            for (i, block) in outcome.buffer.chunks(BLOCK as usize).enumerate() {
                let lba = start + i as u64;
                let issued = history.issued.get(&(lun, lba)).map_or(&[][..], |v| &v[..]);
                let durable = history.last_durable(issued);
                let zeros = block.iter().all(|&b| b == 0);
                let allowed = |seq: u64| durable.is_none_or(|d| seq >= d);
                let ok = if zeros {
                    durable.is_none()
                } else {
                    issued
                        .iter()
                        .any(|&seq| allowed(seq) && block == &block_of(lun, lba, seq)[..])
                };
                assert!(
                    ok,
                    "round {round}: LUN {lun} block {lba} holds {:02x?}; last synced write \
                     {durable:?}, writes issued {issued:?}",
                    &block[..8]
                );
            }
        }
    }
}

fn check_offline(path: &Path, round: usize, history: &History) {
    let pool = Pool::open(path).expect("the pool opens after the kill");
    for lun in 0..LUNS {
        let id = pool.engine().volume(&format!("v{lun}")).unwrap().id;
        let mut bytes = vec![0u8; VOLUME_BYTES as usize];
        pool.engine().read(id, 0, &mut bytes).unwrap();
        for (lba, block) in bytes.chunks(BLOCK as usize).enumerate() {
            let lba = lba as u64;
            let issued = history.issued.get(&(lun, lba)).map_or(&[][..], |v| &v[..]);
            let durable = history.last_durable(issued);
            if durable.is_some() && block.iter().all(|&b| b == 0) {
                panic!("offline round {round}: LUN {lun} block {lba} zero; durable {durable:?} issued {issued:?}; mapped {:?}; volumes {:?}", pool.engine().mapped_extent(id, lba * 512, 512), pool.list_volumes());
            }
        }
    }
    let report = pool.check();
    assert!(
        report.problems.is_empty(),
        "round {round}: pool check: {:?}",
        report.problems
    );
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_gateway() {
    let rounds: usize = std::env::var("POOL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // A time budget for the benchmark (`POOL_CRASH_SECONDS`): no round starts after it,
    // and the count that ran is printed.
    let budget = std::env::var("POOL_CRASH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    let started = std::time::Instant::now();
    let scratch = TempDir::new("pool-crash").expect("scratch directory");
    let path = scratch.join("pool.img");
    drop(Pool::create(&path, 128 << 20).expect("the pool is created"));
    let luns: Vec<String> = (0..LUNS)
        .map(|lun| format!("pool:{},volume=v{lun},size={VOLUME_BYTES}", path.display()))
        .collect();
    let lun_refs: Vec<&str> = luns.iter().map(String::as_str).collect();
    let spec = GatewaySpec::new(&lun_refs);
    let mut history = History::default();
    let mut next_seq = 1u64;
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut ran = 0;
    for round in 0..rounds {
        if budget.is_some_and(|budget| started.elapsed() > budget) {
            break;
        }
        ran = round + 1;
        let gateway = GatewayProcess::start(&spec).expect("the gateway starts on the pool");
        if round > 0 {
            verify(&gateway, &history, round);
        }
        let client = connect(&gateway);
        let run_ms = 30 + random.next() % 150;
        let killer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(run_ms));
            gateway.kill_hard();
        });
        write_until_killed(client, &mut history, &mut next_seq, &mut random);
        killer.join().expect("the killer thread");
        check_offline(&path, round, &history);
    }
    // The last round's writes, checked through a gateway once more.
    let gateway = GatewayProcess::start(&spec).expect("the gateway starts on the pool");
    verify(&gateway, &history, ran);
    let durable: u64 = history.durable.iter().map(|r| r.end - r.start).sum();
    eprintln!(
        "{ran} rounds (of {rounds} asked), {} writes, {durable} of them covered by a completed sync",
        next_seq - 1
    );
    gateway.kill_hard();
}
