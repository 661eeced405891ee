//! The offload adapter models against tgt: the same write-then-verify workload through a
//! dependent model (the host session's PDUs carried, digested and placed by the adapter)
//! and through an independent model (SCSI commands to an adapter that runs its own
//! initiator) gives identical data, on the LUN as read back and in its backing file; and a
//! fault injected in either model fails the affected I/O with an error naming the fault,
//! after which the path recovers as its policy says and the LUN holds what was acknowledged.

use std::sync::Arc;
use std::time::Duration;

use datapath::adapter::{
    DependentAdapter, DependentConfig, DependentPath, IndependentAdapter, IndependentConfig,
    IndependentPath, IndependentPathConfig, NetworkConfig,
};
use datapath::client::default_initiator_name;
use datapath::session::SessionConfig;
use datapath::text::{DigestChoice, OperationalOffer};
use offload::dependent::{DependentModel, DependentModelConfig};
use offload::independent::{IndependentModel, IndependentModelConfig};
use system_tests::scsi_io::{
    self, assert_backing_file_holds, fault_round, read_all, until_ready, write_then_verify, FAULTS,
};
use system_tests::{require_tools, TargetSpec, Tgt};

const BLOCK: u32 = 512;
const LUN_BYTES: u64 = 8 << 20;

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
        tcp_user_timeout: None,
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
        liveness: datapath::session::Liveness::SINGLE_PATH,
    };
    let adapter: Arc<dyn IndependentAdapter> = model.clone();
    IndependentPath::connect(adapter, 0, IndependentPathConfig::new(config))
        .expect("independent adapter logs in")
}

/// The I/Os of one workload: sizes from one block to 512 (256 KiB: several Data-In PDUs
/// and R2Ts).
fn layout() -> Vec<(u64, u32)> {
    scsi_io::layout(&[8, 1, 128, 512, 33, 64, 7, 256, 16, 100, 3, 200], 5)
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
    let by_dependent = write_then_verify(&mut dependent, lun, &layout(), dependent_region, 1);
    let by_independent = write_then_verify(&mut independent, lun, &layout(), independent_region, 2);
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
    let written = write_then_verify(&mut path, lun, &layout(), 4096, 3);
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

#[test]
fn dependent_model_faults_fail_the_io_by_name_and_the_path_recovers() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:offload-dependent-faults");
    let model = DependentModel::new(DependentModelConfig::default());
    let mut path = dependent_path(&tgt, &model, true);
    until_ready(&mut path, tgt.first_data_lun());
    for (round, case) in FAULTS.into_iter().enumerate() {
        let lba = 1024 * round as u64;
        fault_round(&mut path, &tgt, model.faults(), lba, case);
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
    for (round, case) in FAULTS.into_iter().enumerate() {
        let lba = 1024 * round as u64;
        fault_round(&mut path, &tgt, model.faults(), lba, case);
    }
    let stats = path.stats();
    assert_eq!(
        stats.queue_resets, 1,
        "only the stall resets the queue: {stats:?}"
    );
}
