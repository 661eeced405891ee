//! Reservations judged by libiscsi (issue 17): `iscsi-test-cu --dataloss` with two initiator
//! names against our gateway, for the reservation families (`SCSI.Reserve6*`,
//! `SCSI.Prin*`, `SCSI.Prout*`) and the reset tests (`iSCSI.iSCSITMF*`, which sends LOGICAL
//! UNIT RESET, and `SCSI.MultipathIO.Reset` over two sessions, which checks that the reset's
//! unit attention reaches both). Zero failures and zero `[SKIPPED]` notices: CUnit counts a
//! skip as a pass, and every one of these skipped before the gateway had reservations.

use std::net::SocketAddr;
use std::time::Duration;

use gateway::server::{self, RunningTarget, TargetConfig, TargetNodeConfig};
use system_tests::cunit::run_family;
use system_tests::libiscsi::iscsi_url;
use system_tests::require_tools;

const IQN: &str = "iqn.2026-12.invalid.system-tests:reservations";
const FIRST: &str = "iqn.2026-12.invalid.system-tests:node-a";
const SECOND: &str = "iqn.2026-12.invalid.system-tests:node-b";
/// The Reserve6 reset tests sleep 3 s each; the whole run takes about 20 s.
const FAMILY_TIMEOUT: Duration = Duration::from_secs(120);

/// Each family and the tests libiscsi 1.19 has in it: all must run.
const FAMILIES: &[(&str, usize, bool)] = &[
    // (family, tests, needs two URLs of the same unit)
    ("SCSI.Reserve6*", 7, false),
    ("SCSI.Prin*", 4, false),
    ("SCSI.Prout*", 16, false),
    ("iSCSI.iSCSITMF*", 2, false),
    ("SCSI.MultipathIO.Reset", 1, true),
];

fn start_target() -> RunningTarget {
    let node = TargetNodeConfig::new(IQN, vec![(0, "ram:64M".to_string())]);
    let mut config = TargetConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), node);
    config.threads = Some(2);
    server::start(config).expect("our target starts on a free loopback port")
}

#[test]
fn libiscsi_reservation_and_reset_tests_pass_with_none_skipped() {
    require_tools!("iscsi-test-cu");
    let target = start_target();
    let url = iscsi_url(target.addrs()[0], None, Some((IQN, 0)));
    let mut problems = Vec::new();
    let mut totals = (0, 0, 0);
    for &(family, expected, two_paths) in FAMILIES {
        let urls: Vec<&str> = if two_paths {
            vec![&url, &url]
        } else {
            vec![&url]
        };
        let run = run_family(&urls, family, Some((FIRST, SECOND)), FAMILY_TIMEOUT);
        let failed = run.failed();
        eprintln!(
            "{family}: {} run, {} failed, {} skipped ({:?})",
            run.verdicts.len(),
            failed.len(),
            run.skipped.len(),
            run.elapsed
        );
        totals.0 += run.verdicts.len();
        totals.1 += failed.len();
        totals.2 += run.skipped.len();
        if run.verdicts.len() < expected {
            problems.push(format!(
                "{family}: {} tests ran, {expected} expected",
                run.verdicts.len()
            ));
        }
        for verdict in failed {
            problems.push(format!("{family} {}: {:?}", verdict.name, verdict.failures));
        }
        for line in &run.skipped {
            problems.push(format!("{family} skipped: {line}"));
        }
    }
    eprintln!(
        "totals: {} run, {} failed, {} [SKIPPED]",
        totals.0, totals.1, totals.2
    );
    target.shutdown();
    assert!(problems.is_empty(), "{problems:#?}");
}
