//! A micro benchmark of the session alone: 4 KiB reads, 32 in flight, each answered by one
//! Data-In carrying status, driven the way a shard turn drives the session (two
//! `poll_timeout` calls a turn, transmit drained, completions resubmitted). Ignored by
//! default; run in release:
//! `cargo test -p datapath --release session_micro_bench -- --ignored --nocapture`.

use std::collections::VecDeque;
use std::time::Instant;

use super::*;
use crate::scsi::{Cdb, DataDirection as CdbDirection};

const QUEUE_DEPTH: usize = 32;
const READ_LEN_BYTES: u32 = 4096;
/// Completions answered per simulated shard turn.
const ANSWERS_PER_TURN: usize = 8;

/// Runs `commands` reads through a logged-in session; returns ns per command.
fn run(commands: u64, placed: bool) -> f64 {
    let mut cfg = config();
    cfg.max_outstanding_commands = QUEUE_DEPTH;
    cfg.max_queued_commands = QUEUE_DEPTH;
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    let now = h.now;
    let mut exp_cmd_sn = h.exp_cmd_sn;
    let mut stat_sn = h.stat_sn;
    let payload = vec![0x5au8; READ_LEN_BYTES as usize];
    let mut pending: VecDeque<Tag> = VecDeque::with_capacity(QUEUE_DEPTH * 2);
    let cdb = Cdb::from_bytes(
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0],
        CdbDirection::Read(READ_LEN_BYTES),
    )
    .expect("10 bytes");
    let request = |buffer: Vec<u8>| Request::new(0, cdb.clone(), buffer, 0);
    for _ in 0..QUEUE_DEPTH {
        h.s.submit(now, request(vec![0; READ_LEN_BYTES as usize]))
            .unwrap();
    }
    let started = Instant::now();
    let mut completed = 0u64;
    let mut timeouts_seen = 0usize;
    while completed < commands {
        timeouts_seen += usize::from(h.s.poll_timeout().is_some_and(|d| d <= now));
        while let Some(t) = h.s.poll_transmit() {
            if let Header::ScsiCommand(c) = &t.header {
                pending.push_back(c.initiator_task_tag);
            }
        }
        for _ in 0..ANSWERS_PER_TURN {
            let Some(tag) = pending.pop_front() else {
                break;
            };
            exp_cmd_sn = exp_cmd_sn.wrapping_add(1);
            let header = Header::DataIn(pdu::DataIn {
                final_pdu: true,
                acknowledge: false,
                overflow: false,
                underflow: false,
                status: Some(0),
                lun: [0; 8],
                initiator_task_tag: tag,
                target_transfer_tag: pdu::RESERVED_TAG,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn: exp_cmd_sn.wrapping_add(63),
                data_sn: 0,
                buffer_offset: 0,
                residual_count: 0,
            });
            stat_sn = stat_sn.wrapping_add(1);
            let result = if placed {
                let dest = h.s.data_in_destination(&header, READ_LEN_BYTES).unwrap();
                dest[0] = 1;
                h.s.handle_pdu_placed(now, header, READ_LEN_BYTES)
            } else {
                h.s.handle_pdu(now, header, &payload)
            };
            result.unwrap();
        }
        while let Some(event) = h.s.poll_event() {
            let Event::CommandComplete(_, Ok(outcome)) = event else {
                panic!("unexpected event {event:?}");
            };
            completed += 1;
            h.s.submit(now, request(outcome.buffer)).unwrap();
        }
        timeouts_seen += usize::from(h.s.poll_timeout().is_some_and(|d| d <= now));
    }
    let elapsed = started.elapsed();
    assert_eq!(timeouts_seen, 0);
    elapsed.as_nanos() as f64 / completed as f64
}

#[test]
#[ignore = "micro benchmark: run in release with --ignored --nocapture"]
fn session_micro_bench() {
    let commands = std::env::var("SESSION_BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000u64);
    // Warm up, then three runs of each; the best is the least disturbed by the other load
    // on the machine.
    run(commands / 10, false);
    for placed in [false, true] {
        let best = (0..3)
            .map(|_| run(commands, placed))
            .fold(f64::INFINITY, f64::min);
        let mode = if placed { "placed" } else { "copied" };
        println!("session micro bench: 4 KiB reads, depth {QUEUE_DEPTH}, Data-In {mode}: {best:.1} ns/command");
    }
}
