//! One write-and-verify run over a shard whose path (a `MultiPath`) loses a member in the
//! middle: batches of 4 KiB writes back to back, the loss caused once the third batch is
//! in flight, then every acknowledged write read back. Used against tgt daemons
//! (`tests/multipath.rs`) and against `iscsi-gateway` processes sharing one file
//! (`tests/portal_array.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datapath::scsi::Cdb;
use datapath::session::Request;
use datapath::shard::ShardPool;

use crate::pattern;
use crate::scsi_io::{CommandPath, OnShard};

const BLOCK: u32 = 512;
const IO_BYTES: usize = 4096;
const BATCHES: u64 = 12;
const PER_BATCH: u64 = 256;

fn write_request(lun: u64, slot: u64, data: Vec<u8>, user_data: u64) -> Request {
    let lba = slot * (IO_BYTES as u64 / u64::from(BLOCK));
    let cdb = Cdb::write(lba, IO_BYTES as u32 / BLOCK, BLOCK, false).unwrap();
    Request::new(lun, cdb, data, user_data)
}

fn read_request(lun: u64, slot: u64, user_data: u64) -> Request {
    let lba = slot * (IO_BYTES as u64 / u64::from(BLOCK));
    let cdb = Cdb::read(lba, IO_BYTES as u32 / BLOCK, BLOCK, false).unwrap();
    Request::new(lun, cdb, vec![0; IO_BYTES], user_data)
}

/// Runs the workload on shard 0 of `pool` against `lun` (of `lun_bytes`), calling `lose`
/// while writes are in flight. Panics when a command failed or an acknowledged write
/// does not read back.
pub fn verify_across_a_path_loss(pool: &ShardPool, lun: u64, lun_bytes: u64, lose: impl FnOnce()) {
    let slots_total = lun_bytes / IO_BYTES as u64;
    let started = AtomicU64::new(0);
    let (acknowledged, errors) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let mut acknowledged: HashMap<u64, u64> = HashMap::new();
            let mut errors = Vec::new();
            for batch in 0..BATCHES {
                // Slots spread over the LU, a different set each batch (some repeat).
                let writes: Vec<(u64, u64)> = (0..PER_BATCH)
                    .map(|i| {
                        let slot = (batch * 37 + i * 53) % slots_total;
                        (slot, batch * 1_000_000 + slot)
                    })
                    .collect();
                let requests = writes
                    .iter()
                    .enumerate()
                    .map(|(i, &(slot, seed))| {
                        write_request(lun, slot, pattern(IO_BYTES, seed), i as u64)
                    })
                    .collect();
                // Said once the batch is built: it is about to be in flight.
                started.store(batch + 1, Ordering::SeqCst);
                for (i, result) in OnShard::new(pool, 0).run_all(requests) {
                    let (slot, seed) = writes[i as usize];
                    match result {
                        Ok(outcome) if outcome.status == 0 => {
                            acknowledged.insert(slot, seed);
                        }
                        Ok(outcome) => {
                            errors.push(format!("write {slot}: status {}", outcome.status))
                        }
                        Err(e) => errors.push(format!("write {slot}: {e}")),
                    }
                }
            }
            (acknowledged, errors)
        });
        while started.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_micros(200));
        }
        lose();
        eprintln!("path lost at batch {}", started.load(Ordering::SeqCst));
        worker.join().expect("worker")
    });
    assert!(errors.is_empty(), "commands failed: {errors:?}");
    // Every acknowledged write reads back (through the surviving path).
    let slots: Vec<u64> = acknowledged.keys().copied().collect();
    let reads = slots
        .iter()
        .enumerate()
        .map(|(i, &slot)| read_request(lun, slot, i as u64))
        .collect();
    for (i, result) in OnShard::new(pool, 0).run_all(reads) {
        let slot = slots[i as usize];
        let outcome = result.unwrap_or_else(|e| panic!("read {slot}: {e}"));
        assert_eq!(outcome.status, 0, "read {slot}");
        assert!(
            outcome.buffer == pattern(IO_BYTES, acknowledged[&slot]),
            "slot {slot} does not hold its last acknowledged write"
        );
    }
}
