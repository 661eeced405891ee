//! `iscsi-bench`'s iSCSI engine against tgt (DESIGN.md rule 6: a target this project did
//! not write): write, read back and compare through two shards; a read past the end counted
//! as the CHECK CONDITION it is; a connection closed by the target recovered (session
//! reinstatement) and the units go on, or, with recovery off, reported as an unreachable
//! target.

use std::time::Duration;

use bench::engine::testing::{run_units, unit};
use bench::engine::{Engine, IscsiEngine, IscsiOptions, IscsiTarget};
use bench::io::{Direction, IoDone, IoError, IoUnit};
use datapath::url::IscsiUrl;
use system_tests::{pattern, require_tools, TargetSpec, Tgt};

const LUN_BYTES: u64 = 8 << 20;
const WAIT: Duration = Duration::from_secs(20);

fn start_tgt(iqn: &str) -> Tgt {
    Tgt::start(&[TargetSpec::new(iqn, &[LUN_BYTES])]).expect("tgtd starts")
}

fn open(tgt: &Tgt, shards: usize) -> IscsiEngine {
    open_with(tgt, shards, |_| {})
}

fn open_with(tgt: &Tgt, shards: usize, adjust: impl FnOnce(&mut IscsiOptions)) -> IscsiEngine {
    let url = IscsiUrl::parse(&format!(
        "iscsi://{}/{}/{}",
        tgt.portal(),
        tgt.iqn(0),
        tgt.first_data_lun()
    ))
    .expect("URL");
    let mut options = IscsiOptions::new(IscsiTarget::Url(url), 8);
    options.shards = shards;
    adjust(&mut options);
    IscsiEngine::open(&options).unwrap_or_else(|e| panic!("engine opens: {e}\n{}", tgt.log()))
}

fn run(engine: &mut IscsiEngine, units: Vec<IoUnit>) -> Vec<IoDone> {
    run_units(engine, units, WAIT)
}

#[test]
fn writes_read_back_and_a_read_past_the_end_is_a_check_condition() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:bench-engine");
    let mut engine = open(&tgt, 2);
    assert_eq!(engine.size_bytes(), LUN_BYTES, "READ CAPACITY");
    assert_eq!(engine.block_size_bytes(), 512);

    let len = 32 * 1024u32;
    let offsets: Vec<u64> = (0..32).map(|i| i * 200 * 1024 + 512 * (i % 7)).collect();
    let writes = offsets
        .iter()
        .enumerate()
        .map(|(i, &o)| unit(i as u64, Direction::Write, o, pattern(len as usize, o), len))
        .collect();
    for done in run(&mut engine, writes) {
        assert_eq!(done.result, Ok(()), "write at {}", done.unit.offset);
    }
    let reads = offsets
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let buffer = engine.buffer(len);
            unit(i as u64, Direction::Read, o, buffer, len)
        })
        .collect();
    for done in run(&mut engine, reads) {
        assert_eq!(done.result, Ok(()), "read at {}", done.unit.offset);
        assert!(
            done.unit.buffer == pattern(len as usize, done.unit.offset),
            "data at {} differs",
            done.unit.offset
        );
    }
    // The bytes really are in tgt's backing file.
    let file = std::fs::read(tgt.lun_path(0, 0)).expect("LUN file");
    let o = offsets[5] as usize;
    assert!(file[o..o + len as usize] == pattern(len as usize, offsets[5])[..]);

    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, LUN_BYTES, vec![0; 4096], 4096)],
    );
    match &done[0].result {
        // ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
        Err(IoError::CheckCondition { key: 0x5, asc, .. }) => assert_eq!(*asc, 0x21),
        other => panic!("expected CHECK CONDITION, got {other:?}"),
    }
    let counters = Box::new(engine).close().expect("close");
    assert_eq!(counters.ios_completed, 65);
    assert!(counters.kernel_entries > 0);
}

#[test]
fn a_connection_closed_by_the_target_is_recovered_and_the_units_go_on() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:bench-engine-recover");
    let mut engine = open(&tgt, 1);
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Write, 0, pattern(4096, 0), 4096)],
    );
    assert_eq!(done[0].result, Ok(()));
    let tsih = engine.shard_info()[0].tsih;
    tgt.close_session(tsih)
        .unwrap_or_else(|e| panic!("{e}\n{}", tgt.log()));

    // The shard logs in again (same ISID: session reinstatement) and the units complete,
    // the one written before the loss reading back intact.
    let reads = (0..8)
        .map(|i| unit(i, Direction::Read, i * 4096, vec![0; 4096], 4096))
        .collect();
    for done in run(&mut engine, reads) {
        assert_eq!(done.result, Ok(()), "read at {}", done.unit.offset);
        if done.unit.offset == 0 {
            assert!(
                done.unit.buffer == pattern(4096, 0),
                "data written before the loss"
            );
        }
    }
    let counters = Box::new(engine).close().expect("close after a recovery");
    assert_eq!(counters.reconnects, 1, "{counters:?}\n{}", tgt.log());
    let gap = Duration::from_nanos(counters.reconnect_gap_ns_max);
    eprintln!("reconnect gap after a target-closed connection: {gap:?}");
    assert!(gap < Duration::from_secs(5), "gap {gap:?}");
}

#[test]
fn a_connection_closed_by_the_target_without_recovery_is_an_unreachable_target() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:bench-engine-loss");
    let mut engine = open_with(&tgt, 1, |o| {
        o.reconnect = datapath::shard::ReconnectPolicy::OFF;
    });
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Write, 0, vec![1; 4096], 4096)],
    );
    assert_eq!(done[0].result, Ok(()));

    let tsih = engine.shard_info()[0].tsih;
    tgt.close_session(tsih)
        .unwrap_or_else(|e| panic!("{e}\n{}", tgt.log()));

    // Every unit from now on fails: the target cannot be reached, buffer handed back.
    let reads = (0..8)
        .map(|i| unit(i, Direction::Read, i * 4096, vec![0; 4096], 4096))
        .collect();
    for done in run(&mut engine, reads) {
        match &done.result {
            Err(IoError::Disconnected(message)) => {
                assert!(message.contains("connection"), "{message}")
            }
            other => panic!("expected an unreachable target, got {other:?}"),
        }
        assert_eq!(done.unit.buffer.len(), 4096);
    }
    Box::new(engine).close().expect("close after a loss");
}
