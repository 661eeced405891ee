//! The array side of failover (issue 15), judged by libiscsi: one LU exported by two
//! `iscsi-gateway` processes over one shared backing file is one LU reached through two
//! ports (`iscsi-test-cu`'s MultipathIO family with two URLs).

use std::time::Duration;

use system_tests::cunit::run_family;
use system_tests::gateway_process::{GatewayProcess, GatewaySpec, GATEWAY_IQN};
use system_tests::libiscsi::iscsi_url;
use system_tests::{require_tools, TempDir};

/// MultipathIO takes well under a second here; a loaded machine gets room.
const FAMILY_TIMEOUT: Duration = Duration::from_secs(120);

/// The MultipathIO tests libiscsi 1.19 has: Simple, Reset, CompareAndWrite,
/// CompareAndWriteAsync.
const MULTIPATH_TESTS: usize = 4;

/// Two gateways on one file with `shared`, each its own portal group (target port).
fn two_port_array(scratch: &TempDir) -> (GatewayProcess, GatewayProcess) {
    let image = scratch.join("lu.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("backing file");
    let lun = format!("file:{}:64M,shared", image.display());
    let start = |tag: &str| {
        GatewayProcess::start(&GatewaySpec::new(&[&lun]).arg("--portal-group-tag").arg(tag))
            .expect("iscsi-gateway starts")
    };
    // Both at once: the first start makes the LU's identity, and the second must find it
    // whichever wins.
    std::thread::scope(|s| {
        let a = s.spawn(|| start("1"));
        let b = s.spawn(|| start("2"));
        (a.join().unwrap(), b.join().unwrap())
    })
}

#[test]
fn libiscsi_multipath_tests_pass_over_two_gateway_processes_sharing_one_lu() {
    require_tools!("iscsi-test-cu");
    let scratch = TempDir::new("portal-array").unwrap();
    let (a, b) = two_port_array(&scratch);
    let urls = [
        iscsi_url(a.portal(), None, Some((GATEWAY_IQN, 0))),
        iscsi_url(b.portal(), None, Some((GATEWAY_IQN, 0))),
    ];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = run_family(&urls, "SCSI.MultipathIO*", None, FAMILY_TIMEOUT);
    eprintln!(
        "SCSI.MultipathIO*: {} run, {} failed, {} [SKIPPED]",
        run.verdicts.len(),
        run.failed().len(),
        run.skipped.len()
    );
    assert_eq!(
        run.verdicts.len(),
        MULTIPATH_TESTS,
        "{:?}; logs:\n{}\n{}",
        run.verdicts,
        a.log(),
        b.log()
    );
    assert!(run.failed().is_empty(), "{:#?}", run.failed());
    assert!(run.skipped.is_empty(), "{:#?}", run.skipped);
}
