//! The offload adapter models against tgt: the same write-then-verify workload through a
//! dependent model (the host session's PDUs carried, digested and placed by the adapter)
//! and through an independent model (SCSI commands to an adapter that runs its own
//! initiator) gives identical data, on the LUN as read back and in its backing file; and a
//! fault injected in either model fails the affected I/O with an error naming the fault,
//! after which the path recovers as its policy says and the LUN holds what was acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::adapter::{
    AdapterPath, DependentAdapter, DependentConfig, DependentPath, IndependentAdapter,
    IndependentConfig, IndependentPath, IndependentPathConfig, NetworkConfig, PathCompletion,
    PathError, PathRequest,
};
use datapath::client::default_initiator_name;
use datapath::scsi::Cdb;
use datapath::session::{CommandOutcome, DataDirection, SessionConfig};
use datapath::text::{DigestChoice, OperationalOffer};
use offload::dependent::{DependentModel, DependentModelConfig};
use offload::faults::Faults;
use offload::independent::{IndependentModel, IndependentModelConfig};
use system_tests::{pattern, require_tools, TargetSpec, Tgt};

const BLOCK: u32 = 512;
const LUN_BYTES: u64 = 8 << 20;
const WAIT: Duration = Duration::from_secs(30);

fn start_tgt(iqn: &str) -> Tgt {
    let tgt = Tgt::start(&[TargetSpec::new(iqn, &[LUN_BYTES])]).expect("tgtd starts");
    tgt.allow_digests_and_unsolicited_data(1)
        .expect("tgt allows digests");
    tgt
}

fn offer(digests: bool) -> OperationalOffer {
    let choice = if digests {
        DigestChoice::Crc32c
    } else {
        DigestChoice::None
    };
    OperationalOffer {
        header_digests: vec![choice],
        data_digests: vec![choice],
        max_recv_data_segment_length: 64 * 1024,
        max_burst_length: 256 * 1024,
        first_burst_length: 64 * 1024,
        ..OperationalOffer::default()
    }
}

fn dependent_path(tgt: &Tgt, model: &Arc<DependentModel>, digests: bool) -> DependentPath {
    let mut session = SessionConfig::new(default_initiator_name(), Some(tgt.iqn(0).to_string()));
    session.isid = [0x80, 0x00, 0x00, 0x00, 0x0d, 0x01];
    session.offer = offer(digests);
    session.login_timeout = Duration::from_secs(10);
    session.command_timeout = Duration::from_secs(20);
    let network = NetworkConfig {
        portal: tgt.portal(),
        local_addr: Some("127.0.0.1:0".parse().unwrap()),
        connect_timeout: Duration::from_secs(5),
    };
    let mut config = DependentConfig::new(session, network);
    config.queue_depth = 8;
    let adapter: Arc<dyn DependentAdapter> = model.clone();
    DependentPath::connect(adapter, 0, config).expect("dependent path logs in")
}

fn independent_path(tgt: &Tgt, model: &Arc<IndependentModel>) -> IndependentPath {
    let config = IndependentConfig {
        portal: tgt.portal(),
        target_name: tgt.iqn(0).to_string(),
        initiator_name: default_initiator_name(),
        chap: None,
        offer: offer(true),
        connect_timeout: Duration::from_secs(5),
        login_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(20),
        queue_depth: 8,
    };
    let adapter: Arc<dyn IndependentAdapter> = model.clone();
    IndependentPath::connect(adapter, 0, IndependentPathConfig::new(config))
        .expect("independent adapter logs in")
}

fn request(lun: u64, cdb: &Cdb, buffer: Vec<u8>, user_data: u64) -> PathRequest {
    let direction = match cdb.direction() {
        datapath::scsi::DataDirection::Read(len) => DataDirection::Read { len },
        datapath::scsi::DataDirection::Write(len) => DataDirection::Write { len },
        datapath::scsi::DataDirection::None => DataDirection::None,
    };
    PathRequest {
        lun,
        cdb: cdb.as_bytes().to_vec(),
        direction,
        buffer,
        user_data,
    }
}

/// Runs `requests` keeping as many in flight as the path takes; completions by user_data.
fn run(path: &mut dyn AdapterPath, requests: Vec<PathRequest>) -> HashMap<u64, PathCompletion> {
    let total = requests.len();
    let mut pending = requests.into_iter();
    let mut next = pending.next();
    let mut done = HashMap::with_capacity(total);
    let deadline = Instant::now() + WAIT;
    while done.len() < total {
        assert!(Instant::now() < deadline, "I/O did not finish in {WAIT:?}");
        while let Some(r) = next.take() {
            match path.submit(Instant::now(), r) {
                Ok(()) => next = pending.next(),
                Err(refused) => {
                    next = Some(refused.request);
                    break;
                }
            }
        }
        path.poll(Instant::now());
        while let Some(c) = path.poll_completion() {
            done.insert(c.user_data, c);
        }
        if done.len() < total {
            path.wait(Duration::from_millis(50));
        }
    }
    done
}

fn run_one(path: &mut dyn AdapterPath, request: PathRequest) -> PathCompletion {
    let user_data = request.user_data;
    run(path, vec![request])
        .remove(&user_data)
        .expect("the completion of the request")
}

fn is_unit_attention(outcome: &CommandOutcome) -> bool {
    outcome.status == 2
        && outcome
            .sense
            .as_ref()
            .and_then(|s| s.get(2))
            .is_some_and(|k| k & 0xf == 6)
}

/// TEST UNIT READY until GOOD: takes the unit attention a new session sees, and waits
/// out a path that is logging in again.
fn until_ready(path: &mut dyn AdapterPath, lun: u64) {
    for attempt in 0..20 {
        let done = run_one(
            path,
            request(lun, &Cdb::test_unit_ready(), Vec::new(), attempt),
        );
        match done.result {
            Ok(outcome) if outcome.status == 0 => return,
            Ok(outcome) => assert!(is_unit_attention(&outcome), "TUR: {outcome:?}"),
            Err(failure) => {
                assert!(
                    matches!(failure.error, PathError::Unavailable(_)),
                    "TUR failed: {failure}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    panic!("the path did not become ready");
}

/// The I/Os of one workload: (first block within the region, blocks), sizes from one
/// block to 512 (256 KiB: several Data-In PDUs and R2Ts), no two overlapping.
fn layout() -> Vec<(u64, u32)> {
    let sizes = [8u32, 1, 128, 512, 33, 64, 7, 256, 16, 100, 3, 200];
    let mut at = 0u64;
    sizes
        .iter()
        .map(|&blocks| {
            let io = (at, blocks);
            at += u64::from(blocks) + 5;
            io
        })
        .collect()
}

/// Writes random data over the region at `region_lba`, reads it back and compares; returns
/// what each I/O wrote.
fn write_then_verify(
    path: &mut dyn AdapterPath,
    lun: u64,
    region_lba: u64,
    seed: u64,
) -> Vec<(u64, Vec<u8>)> {
    let ios = layout();
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
            request(lun, &cdb, bytes.clone(), i as u64)
        })
        .collect();
    for (i, c) in run(path, writes) {
        let outcome = c.result.unwrap_or_else(|e| panic!("write {i}: {e}"));
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

/// Reads the extents of `data` back.
fn read_all(path: &mut dyn AdapterPath, lun: u64, data: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    let reads = data
        .iter()
        .enumerate()
        .map(|(i, (lba, bytes))| {
            let cdb = Cdb::read(*lba, bytes.len() as u32 / BLOCK, BLOCK, false).unwrap();
            request(lun, &cdb, vec![0; bytes.len()], i as u64)
        })
        .collect();
    let mut done = run(path, reads);
    (0..data.len() as u64)
        .map(|i| {
            let c = done.remove(&i).expect("every read completes");
            let outcome = c.result.unwrap_or_else(|e| panic!("read {i}: {e}"));
            assert_eq!(outcome.status, 0, "read {i}: {outcome:?}");
            assert_eq!(outcome.transferred as usize, outcome.buffer.len());
            outcome.buffer
        })
        .collect()
}

fn assert_backing_file_holds(tgt: &Tgt, data: &[(u64, Vec<u8>)]) {
    let backing = std::fs::read(tgt.lun_path(0, 0)).expect("backing file");
    for (lba, bytes) in data {
        let at = (*lba * u64::from(BLOCK)) as usize;
        assert!(
            backing.get(at..at + bytes.len()) == Some(&bytes[..]),
            "backing file differs at LBA {lba}"
        );
    }
}

#[test]
fn dependent_and_independent_models_move_identical_data() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:offload-identical");
    let lun = tgt.first_data_lun();
    let dependent_model = DependentModel::new(DependentModelConfig::default());
    let independent_model = IndependentModel::new(IndependentModelConfig::default());
    let mut dependent = dependent_path(&tgt, &dependent_model, true);
    let mut independent = independent_path(&tgt, &independent_model);
    assert!(independent.login().digests.data, "digests negotiated");
    until_ready(&mut dependent, lun);
    until_ready(&mut independent, lun);

    // Each path writes its own region and verifies it...
    let dependent_region = 0;
    let independent_region = (LUN_BYTES / 2) / u64::from(BLOCK);
    let by_dependent = write_then_verify(&mut dependent, lun, dependent_region, 1);
    let by_independent = write_then_verify(&mut independent, lun, independent_region, 2);
    // ...and reads the other's: identical data whichever adapter carried it.
    let seen_by_independent = read_all(&mut independent, lun, &by_dependent);
    let seen_by_dependent = read_all(&mut dependent, lun, &by_independent);
    for ((_, written), seen) in by_dependent.iter().zip(&seen_by_independent) {
        assert!(
            written == seen,
            "independent path reads other data than the dependent wrote"
        );
    }
    for ((_, written), seen) in by_independent.iter().zip(&seen_by_dependent) {
        assert!(
            written == seen,
            "dependent path reads other data than the independent wrote"
        );
    }
    assert_backing_file_holds(&tgt, &by_dependent);
    assert_backing_file_holds(&tgt, &by_independent);

    // The dependent adapter offloads digests and places Data-In: the host did neither.
    let stats = dependent.stats();
    assert_eq!(stats.host_header_digests, 0, "{stats:?}");
    assert_eq!(stats.host_data_digests, 0, "{stats:?}");
    assert!(
        stats.bytes_placed >= 2 * 1328 * u64::from(BLOCK),
        "{stats:?}"
    );
    assert_eq!(
        dependent.session().stats().bytes_copied,
        0,
        "payload was copied on the host"
    );
    assert_eq!(stats.faults, 0, "{stats:?}");
    assert!(dependent.session().digests().data);
    // Both models account the CPU of their own threads.
    assert!(dependent_model.cpu_time() > Duration::ZERO);
    assert!(independent_model.cpu_time() > Duration::ZERO);
    dependent.logout(Duration::from_secs(5)).expect("logout");
}

#[test]
fn dependent_path_computes_the_digests_the_adapter_does_not() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:offload-host-digests");
    let lun = tgt.first_data_lun();
    let model = DependentModel::new(DependentModelConfig {
        header_digest_offload: false,
        data_digest_offload: false,
        direct_data_placement: false,
        ..DependentModelConfig::default()
    });
    let mut path = dependent_path(&tgt, &model, true);
    until_ready(&mut path, lun);
    let written = write_then_verify(&mut path, lun, 4096, 3);
    assert_backing_file_holds(&tgt, &written);
    let stats = path.stats();
    assert!(stats.host_header_digests > 0, "{stats:?}");
    assert!(stats.host_data_digests > 0, "{stats:?}");
    assert_eq!(
        stats.bytes_placed, 0,
        "no placement without the capability: {stats:?}"
    );
    assert!(path.session().stats().bytes_copied > 0, "{stats:?}");
}

/// Which I/O a fault is armed for.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Write,
    Read,
}

/// One fault: acknowledged data A is on the LUN; the fault fails the next I/O with an error
/// naming it; the path recovers; A is still there and a new write B lands.
fn fault_round(
    path: &mut dyn AdapterPath,
    tgt: &Tgt,
    faults: &Faults,
    lba: u64,
    arm: fn(&Faults),
    victim: Victim,
    expected: &[&str],
) {
    let lun = tgt.first_data_lun();
    let blocks = 64;
    let bytes = (blocks * BLOCK) as usize;
    let data_a = pattern(bytes, lba);
    let write = |lba: u64, data: Vec<u8>, tag| {
        request(
            lun,
            &Cdb::write(lba, blocks, BLOCK, false).unwrap(),
            data,
            tag,
        )
    };
    let done = run_one(path, write(lba, data_a.clone(), 1));
    assert_eq!(done.result.expect("write A").status, 0);
    let lba_b = lba + u64::from(blocks);

    let fired_before = faults.fired();
    arm(faults);
    let victim_request = match victim {
        Victim::Write => write(lba_b, pattern(bytes, lba_b ^ 0xdead), 2),
        Victim::Read => request(
            lun,
            &Cdb::read(lba, blocks, BLOCK, false).unwrap(),
            vec![0; bytes],
            2,
        ),
    };
    let done = run_one(path, victim_request);
    let failure = match done.result {
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
    assert!(
        matches!(failure.error, PathError::Adapter(_)),
        "{failure:?}"
    );
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
    assert_eq!(done.result.expect("write B after recovery").status, 0);
    let read_b = read_all(path, lun, &[(lba_b, data_b.clone())]);
    assert!(read_b[0] == data_b);
    assert_backing_file_holds(tgt, &[(lba, data_a), (lba_b, data_b)]);
}

/// A fault hook, the I/O it hits, and the words its error must contain.
type FaultCase = (fn(&Faults), Victim, &'static [&'static str]);

const FAULTS: [FaultCase; 4] = [
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

#[test]
fn dependent_model_faults_fail_the_io_by_name_and_the_path_recovers() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:offload-dependent-faults");
    let model = DependentModel::new(DependentModelConfig::default());
    let mut path = dependent_path(&tgt, &model, true);
    until_ready(&mut path, tgt.first_data_lun());
    for (round, (arm, victim, expected)) in FAULTS.into_iter().enumerate() {
        let lba = 1024 * round as u64;
        fault_round(&mut path, &tgt, model.faults(), lba, arm, victim, expected);
    }
    let stats = path.stats();
    assert_eq!(stats.queue_resets, FAULTS.len() as u64, "{stats:?}");
    assert_eq!(stats.logins, 1 + FAULTS.len() as u64, "{stats:?}");
}

#[test]
fn independent_model_faults_fail_the_io_by_name_and_the_path_recovers() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:offload-independent-faults");
    let model = IndependentModel::new(IndependentModelConfig::default());
    let mut path = independent_path(&tgt, &model);
    until_ready(&mut path, tgt.first_data_lun());
    for (round, (arm, victim, expected)) in FAULTS.into_iter().enumerate() {
        let lba = 1024 * round as u64;
        fault_round(&mut path, &tgt, model.faults(), lba, arm, victim, expected);
    }
    let stats = path.stats();
    assert_eq!(
        stats.queue_resets, 1,
        "only the stall resets the queue: {stats:?}"
    );
}
