//! Work on the shard's own thread (`ShardPool::run_on_shard`) against tgt: each shard's
//! work writes and then verifies its own region while a queue caller shares shard 0 (small
//! PDUs received into the shard's registered buffer, large payloads placed); the data is
//! checked in tgt's backing file; a lost connection fails the work's commands
//! (and only that shard's); a pool stopped under a running work drops it and returns.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use datapath::adapter::{PathError, PathFailure};
use datapath::client::ClientConfig;
use datapath::scsi::sense::{asc, key, status};
use datapath::scsi::{Cdb, Sense};
use datapath::session::{CommandError, CommandOutcome, Request};
use datapath::shard::{
    ShardCompletion, ShardConfig, ShardError, ShardPool, ShardWork, WorkStatus, WorkSubmitter,
};
use system_tests::scsi_io::{assert_backing_file_holds, until_ready, CommandPath, OnShard};
use system_tests::{pattern, TargetSpec, Tgt};

const BLOCK: u32 = 512;
const LUN_BYTES: u64 = 8 << 20;
const WAIT: Duration = Duration::from_secs(20);

type Results = BTreeMap<u64, Result<CommandOutcome, PathFailure>>;

/// Endless reads for a work: the next request each time.
type Generator = Box<dyn FnMut() -> Request + Send>;

/// A work that runs a list of commands (or endless generated ones), at most `depth` in
/// flight, and sends every result when the last has completed. It submits nothing more
/// once a command failed outright (what an application does on a lost connection).
struct Script {
    todo: VecDeque<Request>,
    endless: Option<Generator>,
    depth: usize,
    in_flight: usize,
    results: Results,
    polls: u64,
    report: Option<Sender<(Results, u64)>>,
}

impl Script {
    fn start(commands: Vec<Request>, depth: usize) -> (Box<Script>, Receiver<(Results, u64)>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let work = Script {
            todo: commands.into_iter().collect(),
            endless: None,
            depth,
            in_flight: 0,
            results: BTreeMap::new(),
            polls: 0,
            report: Some(tx),
        };
        (Box::new(work), rx)
    }

    /// Reads of 4 KiB over the first 4 MiB of `lun`, until a command fails or the shard
    /// drops the work.
    fn endless_reads(lun: u64, depth: usize) -> (Box<Script>, Receiver<(Results, u64)>) {
        let (mut work, rx) = Script::start(Vec::new(), depth);
        let mut next = 0u64;
        work.endless = Some(Box::new(move || {
            let cdb = Cdb::read(next % 1024 * 8, 8, BLOCK, false).unwrap();
            next += 1;
            Request::new(lun, cdb.clone(), vec![0; 4096], next)
        }));
        (work, rx)
    }
}

impl ShardWork for Script {
    fn poll(
        &mut self,
        _now: Instant,
        done: &mut Vec<ShardCompletion>,
        submit: &mut WorkSubmitter<'_>,
    ) -> WorkStatus {
        self.polls += 1;
        for c in done.drain(..) {
            self.in_flight -= 1;
            if c.result.is_err() {
                self.todo.clear();
                self.endless = None;
            }
            self.results.insert(c.user_data, c.result);
        }
        while self.in_flight < self.depth {
            let Some(request) = self
                .todo
                .pop_front()
                .or_else(|| self.endless.as_mut().map(|next| next()))
            else {
                break;
            };
            match submit.submit(request) {
                Ok(()) => self.in_flight += 1,
                Err(back) => {
                    self.todo.push_front(back);
                    break;
                }
            }
        }
        if self.in_flight > 0 || !self.todo.is_empty() || self.endless.is_some() {
            return WorkStatus::Running;
        }
        if let Some(report) = self.report.take() {
            let _ = report.send((std::mem::take(&mut self.results), self.polls));
        }
        WorkStatus::Finished
    }
}

fn client_config(tgt: &Tgt) -> ClientConfig {
    let mut config = ClientConfig::new(tgt.portal(), Some(tgt.iqn(0).to_string()));
    config.offer.max_recv_data_segment_length = 256 * 1024;
    config.command_timeout = WAIT;
    config
}

/// A tgt with one 8 MiB LUN named `iqn`, and a pool of `shards` logged in to it at
/// `queue_depth`, each session's unit attention taken: (tgt, pool, the LUN).
fn start(iqn: &str, shards: usize, queue_depth: usize) -> (Tgt, ShardPool, u64) {
    let tgt = Tgt::start(&[TargetSpec::new(iqn, &[LUN_BYTES])]).expect("tgtd starts");
    let lun = tgt.first_data_lun();
    let config = ShardConfig {
        queue_depth,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client_config(&tgt), shards, &config).expect("pool starts");
    for shard in 0..shards {
        clear_unit_attention(&pool, shard, lun);
    }
    (tgt, pool, lun)
}

/// Takes each fresh session's unit attention (the LUN probe's TEST UNIT READY).
fn clear_unit_attention(pool: &ShardPool, shard: usize, lun: u64) {
    until_ready(&mut OnShard::new(pool, shard), lun);
}

/// The extents shard `shard` writes: alternately 64 KiB (placed) and 4 KiB (staged) I/Os,
/// and every eighth 1 MiB (placed in 256 KiB Data-In PDUs, each received with the socket's
/// low-water mark at what is left of it).
fn extents(shard: usize, lun_blocks: u64) -> Vec<(u64, Vec<u8>)> {
    let region = lun_blocks / 2 * shard as u64;
    let mut lba = region;
    (0..24u64)
        .map(|i| {
            let len = match i % 8 {
                7 => 1 << 20,
                n if n % 2 == 0 => 64 * 1024,
                _ => 4096,
            };
            let extent = (lba, pattern(len, 0x5a4d_0000 + shard as u64 * 1000 + i));
            lba += len as u64 / u64::from(BLOCK);
            extent
        })
        .collect()
}

fn writes(lun: u64, data: &[(u64, Vec<u8>)]) -> Vec<Request> {
    data.iter()
        .enumerate()
        .map(|(i, (lba, bytes))| {
            let cdb = Cdb::write(*lba, bytes.len() as u32 / BLOCK, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), bytes.clone(), i as u64)
        })
        .collect()
}

fn reads(lun: u64, data: &[(u64, Vec<u8>)]) -> Vec<Request> {
    data.iter()
        .enumerate()
        .map(|(i, (lba, bytes))| {
            let cdb = Cdb::read(*lba, bytes.len() as u32 / BLOCK, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), vec![0; bytes.len()], i as u64)
        })
        .collect()
}

fn run_work(pool: &ShardPool, shard: usize, commands: Vec<Request>, depth: usize) -> Results {
    let (work, report) = Script::start(commands, depth);
    pool.run_on_shard(shard, work)
        .expect("the shard takes the work");
    let (results, polls) = report.recv_timeout(WAIT).expect("the work reports");
    assert!(polls >= 1);
    results
}

#[test]
fn works_on_each_shard_write_and_verify_their_regions_beside_a_queue_caller() {
    let (tgt, pool, lun) = start("iqn.2026-11.test:shard-work", 2, 8);
    for shard in 0..2 {
        // Each shard's receive buffer is registered with its ring, sized to hold a whole
        // PDU of the 256 KiB data segment the shard declared (and its header).
        let info = pool.info(shard).unwrap();
        assert!(info.registered_files, "{info:?}");
        assert!(
            (256 * 1024 + 48..=512 * 1024).contains(&info.registered_buffer_bytes),
            "{info:?}"
        );
    }
    let lun_blocks = LUN_BYTES / u64::from(BLOCK);
    let data: Vec<_> = (0..2).map(|s| extents(s, lun_blocks)).collect();

    // Writes: both works at once, and a queue caller on shard 0 reading meanwhile (it
    // shares shard 0's depth with the work).
    let queue_reads: Vec<Request> = (0..16u64)
        .map(|i| {
            let cdb = Cdb::read(lun_blocks - 64 + i * 4, 4, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), vec![0; 2048], 1000 + i)
        })
        .collect();
    let results = std::thread::scope(|scope| {
        let works: Vec<_> = (0..2)
            .map(|shard| {
                let pool = &pool;
                let commands = writes(lun, &data[shard]);
                scope.spawn(move || run_work(pool, shard, commands, 6))
            })
            .collect();
        let caller = OnShard::new(&pool, 0).run_all(queue_reads);
        for (tag, result) in caller {
            let outcome = result.unwrap_or_else(|e| panic!("queue read {tag}: {e}"));
            assert_eq!(outcome.status, 0, "queue read {tag}");
        }
        works
            .into_iter()
            .map(|h| h.join().expect("work thread"))
            .collect::<Vec<_>>()
    });
    for (shard, results) in results.into_iter().enumerate() {
        assert_eq!(
            results.len(),
            data[shard].len(),
            "shard {shard}: every write completes"
        );
        for (i, r) in results {
            let outcome = r.unwrap_or_else(|e| panic!("shard {shard} write {i}: {e}"));
            assert_eq!(outcome.status, 0, "shard {shard} write {i}");
        }
    }

    // Read back on the other shard than wrote it, through a work again.
    for shard in 0..2 {
        let mine = &data[1 - shard];
        let results = run_work(&pool, shard, reads(lun, mine), 8);
        for (i, (_, expected)) in mine.iter().enumerate() {
            let outcome = results[&(i as u64)]
                .as_ref()
                .unwrap_or_else(|e| panic!("shard {shard} read {i}: {e}"));
            assert_eq!(outcome.status, 0);
            assert!(
                outcome.buffer == *expected,
                "shard {shard} read {i} differs"
            );
        }
    }
    let all: Vec<_> = data.concat();
    let stats = pool.shutdown();
    assert!(stats.iter().all(|s| s.ios_failed == 0), "{stats:?}");
    assert_backing_file_holds(&tgt, &all);
}

#[test]
fn a_lost_connection_fails_the_works_commands_and_leaves_the_other_shard_running() {
    let (tgt, pool, lun) = start("iqn.2026-11.test:shard-work-loss", 2, 8);
    // Reads until the loss: the work stops submitting at its first failure and reports.
    let (work, report) = Script::endless_reads(lun, 8);
    pool.run_on_shard(0, work)
        .expect("the shard takes the work");
    std::thread::sleep(Duration::from_millis(300));
    let victim = pool.info(0).unwrap().tsih;
    tgt.close_session(victim)
        .unwrap_or_else(|e| panic!("{e}\n{}", tgt.log()));
    let (results, _) = report
        .recv_timeout(WAIT)
        .expect("the work reports after the loss");
    let good = results.values().filter(|r| r.is_ok()).count();
    let lost: Vec<_> = results.values().filter_map(|r| r.as_ref().err()).collect();
    assert!(good > 0, "reads completed before the loss");
    assert!(!lost.is_empty(), "the loss failed the work's commands");
    for failure in &lost {
        assert!(
            matches!(
                failure.error,
                PathError::Command(CommandError::ConnectionLost(_))
            ),
            "{:?}",
            failure.error
        );
        assert_eq!(failure.buffer.len(), 4096, "the buffer comes back");
    }
    // A new work on the dead shard: its commands fail at once, named.
    let cdb = Cdb::read(0, 8, BLOCK, false).unwrap();
    let after = run_work(
        &pool,
        0,
        vec![Request::new(lun, cdb.clone(), vec![0; 4096], 7)],
        1,
    );
    assert!(matches!(
        after[&7].as_ref().map_err(|f| &f.error),
        Err(PathError::Command(CommandError::ConnectionLost(_)))
    ));
    // Shard 1 goes on.
    let ok = run_work(
        &pool,
        1,
        vec![Request::new(lun, cdb.clone(), vec![0; 4096], 9)],
        1,
    );
    assert_eq!(ok[&9].as_ref().expect("shard 1 unaffected").status, 0);
}

#[test]
fn a_pool_stopped_under_a_running_work_drops_it_and_returns() {
    let (_tgt, pool, lun) = start(
        "iqn.2026-11.test:shard-work-stop",
        1,
        ShardConfig::default().queue_depth,
    );
    assert!(matches!(
        pool.run_on_shard(3, Script::start(Vec::new(), 1).0),
        Err(ShardError::NoSuchShard {
            index: 3,
            shards: 1
        })
    ));
    let (work, report) = Script::endless_reads(lun, 8);
    pool.run_on_shard(0, work)
        .expect("the shard takes the work");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let stats = pool.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(stats[0].ios > 100, "the work ran: {stats:?}");
    assert_eq!(stats[0].ios_failed, 0, "{stats:?}");
    // Dropped unfinished: its sender is gone without a report.
    assert!(matches!(
        report.recv_timeout(Duration::from_secs(1)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    ));
}

/// A work that panics when its first completion comes back.
struct Panicking {
    lun: u64,
    sent: bool,
}

impl ShardWork for Panicking {
    fn poll(
        &mut self,
        _now: Instant,
        done: &mut Vec<ShardCompletion>,
        submit: &mut WorkSubmitter<'_>,
    ) -> WorkStatus {
        if !done.is_empty() {
            panic!("a buggy work (this panic is part of the test)");
        }
        if !self.sent {
            let cdb = Cdb::read(0, 8, BLOCK, false).unwrap();
            let read = Request::new(self.lun, cdb.clone(), vec![0; 4096], 1);
            self.sent = submit.submit(read).is_ok();
        }
        WorkStatus::Running
    }
}

#[test]
fn a_work_that_panics_is_dropped_and_the_shard_goes_on() {
    let (_tgt, pool, lun) = start(
        "iqn.2026-11.test:shard-work-panic",
        1,
        ShardConfig::default().queue_depth,
    );
    pool.run_on_shard(0, Box::new(Panicking { lun, sent: false }))
        .expect("the shard takes the work");
    // The next work runs once the panicked one is gone; so does the queue.
    let cdb = Cdb::read(0, 8, BLOCK, false).unwrap();
    let results = run_work(
        &pool,
        0,
        vec![Request::new(lun, cdb.clone(), vec![0; 4096], 5)],
        1,
    );
    assert_eq!(
        results[&5].as_ref().expect("read after the panic").status,
        0
    );
    let queued = pool
        .execute(0, Request::new(lun, cdb.clone(), vec![0; 4096], 6), WAIT)
        .expect("the shard still answers its queue");
    assert_eq!(queued.result.expect("queue read").status, 0);
    let stats = pool.shutdown();
    assert_eq!(stats[0].ios_failed, 0, "{stats:?}");
}

/// Reads past the end of the LUN at depth 16: every answer is a short CHECK CONDITION, far
/// fewer bytes than the 4 KiB reads announced. Receive coalescing waits for the bytes the
/// answers should bring; its bound must lower the mark and its backoff must stop trying, so
/// the answers still come back promptly and each names the fault.
#[test]
fn short_error_answers_at_depth_come_back_despite_receive_coalescing() {
    let (_tgt, pool, lun) = start("iqn.2026-11.test:shard-work-short", 1, 16);
    let past_end = LUN_BYTES / u64::from(BLOCK) + 64;
    let reads: Vec<Request> = (0..2000u64)
        .map(|i| {
            let cdb = Cdb::read(past_end + i * 8, 8, BLOCK, false).unwrap();
            Request::new(lun, cdb.clone(), vec![0; 4096], i)
        })
        .collect();
    let started = Instant::now();
    let results = run_work(&pool, 0, reads, 16);
    let took = started.elapsed();
    assert_eq!(results.len(), 2000);
    for (i, r) in &results {
        let outcome = r.as_ref().unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(outcome.status, status::CHECK_CONDITION, "read {i}");
        let sense = outcome.sense.as_deref().expect("sense data");
        let sense = Sense::decode(sense).unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(
            (sense.key, (sense.asc, sense.ascq)),
            (key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE),
            "read {i}: {sense}"
        );
    }
    // 125 rounds of 16: even a coalescing wait that always ran out (150 us each) would take
    // under 20 ms; a mark never lowered would wait for the 10 s NOP ping instead.
    assert!(
        took < Duration::from_secs(3),
        "2000 error answers took {took:?}"
    );
}
