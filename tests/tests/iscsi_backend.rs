//! The gateway's `iscsi:` backend: a gateway LUN that lives on tgt, reached through our
//! initiator. libiscsi's tools see the LUN through the gateway with tgt's capacity;
//! `iscsi-bench` writes and verifies through the gateway; the bytes land in tgt's backing
//! file; a session tgt drops is logged in again without an error at the host.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::Request;
use system_tests::gateway_process::GatewaySpec;
use system_tests::libiscsi::{inquiry, iscsi_ls, iscsi_url};
use system_tests::{
    describe_output, require_tools, run_command, workspace_binary, GatewayProcess, TargetSpec, Tgt,
};

const FAR_IQN: &str = "iqn.2026-12.test:far-array";
const LUN_BYTES: u64 = 32 << 20;

fn far_spec(tgt: &Tgt) -> String {
    format!(
        "iscsi://{}/{FAR_IQN}/{}",
        tgt.portal(),
        tgt.first_data_lun()
    )
}

fn client(portal: SocketAddr) -> Client {
    let config = ClientConfig::new(
        portal,
        Some(system_tests::gateway_process::GATEWAY_IQN.into()),
    );
    Client::connect(&config).expect("log in to the gateway")
}

/// Runs a command, taking the unit attentions of a new nexus.
fn run(client: &mut Client, cdb: Cdb, buffer: Vec<u8>) -> datapath::session::CommandOutcome {
    for _ in 0..4 {
        let outcome = client
            .execute(Request::new(0, cdb.clone(), buffer.clone(), 0))
            .expect("command runs");
        if !datapath::scsi::is_unit_attention(outcome.status, outcome.sense.as_deref()) {
            return outcome;
        }
    }
    panic!("unit attentions without end");
}

#[test]
fn a_lun_on_tgt_is_served_through_the_gateway() {
    if !require_tools(&["tgtd", "tgtadm", "iscsi-ls", "iscsi-inq"]) {
        return;
    }
    let tgt = Tgt::start(&[TargetSpec::new(FAR_IQN, &[LUN_BYTES])]).expect("tgtd starts");
    let gateway = GatewayProcess::start(&GatewaySpec::new(&[&far_spec(&tgt)]).threads(2))
        .expect("gateway starts over tgt");
    let url = iscsi_url(
        gateway.portal(),
        None,
        Some((system_tests::gateway_process::GATEWAY_IQN, 0)),
    );

    // libiscsi sees a disk of tgt's size through the gateway.
    let report = inquiry(&url).expect("iscsi-inq through the gateway");
    assert!(
        report.contains("DIRECT_ACCESS") || report.contains("Direct"),
        "{report}"
    );
    let listed = iscsi_ls(&iscsi_url(gateway.portal(), None, None)).expect("iscsi-ls");
    let lun = listed
        .iter()
        .flat_map(|t| &t.luns)
        .find(|l| l.lun == 0)
        .unwrap_or_else(|| panic!("LUN 0 listed: {listed:?}"));
    let far = iscsi_ls(&iscsi_url(tgt.portal(), None, None)).expect("iscsi-ls of tgt");
    let far_lun = far
        .iter()
        .flat_map(|t| &t.luns)
        .find(|l| l.lun == tgt.first_data_lun())
        .unwrap_or_else(|| panic!("tgt's LUN listed: {far:?}"));
    assert!(lun.size.is_some(), "{listed:?}");
    assert_eq!(lun.size, far_lun.size, "the gateway's LUN is tgt's size");

    // A write through the gateway lands in tgt's backing file.
    let mut host = client(gateway.portal());
    let pattern = system_tests::pattern(64 * 1024, 7);
    let outcome = run(
        &mut host,
        Cdb::write(2048, 128, 512, false).unwrap(),
        pattern.clone(),
    );
    assert_eq!(outcome.status, 0, "{outcome:?}");
    let outcome = run(
        &mut host,
        Cdb::synchronize_cache_10(0, 0, false),
        Vec::new(),
    );
    assert_eq!(outcome.status, 0, "{outcome:?}");
    let backing = std::fs::read(tgt.lun_path(0, 0)).expect("tgt's backing file");
    assert_eq!(
        &backing[2048 * 512..2048 * 512 + pattern.len()],
        &pattern[..]
    );

    // Reads come back from tgt.
    let outcome = run(
        &mut host,
        Cdb::read(2048, 128, 512, false).unwrap(),
        vec![0; pattern.len()],
    );
    assert_eq!(outcome.status, 0);
    assert_eq!(outcome.buffer, pattern);

    assert_eq!(outcome.buffer, pattern);
}

/// The sessions target 1 of `tgt` holds, by session id (`tgtadm --mode conn --op show`).
fn far_sessions(tgt: &Tgt) -> Vec<String> {
    let shown = tgt
        .tgtadm_iscsi("conn", "show", &["--tid", "1"])
        .unwrap_or_default();
    shown
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Session:"))
        .map(|sid| sid.trim().to_string())
        .collect()
}

#[test]
fn a_verifying_writer_sees_no_error_while_the_far_array_drops_the_sessions() {
    if !require_tools(&["tgtd", "tgtadm"]) {
        return;
    }
    let tgt = Tgt::start(&[TargetSpec::new(FAR_IQN, &[LUN_BYTES])]).expect("tgtd starts");
    let gateway = GatewayProcess::start(&GatewaySpec::new(&[&far_spec(&tgt)]).threads(2))
        .expect("gateway starts over tgt");
    let url = iscsi_url(
        gateway.portal(),
        None,
        Some((system_tests::gateway_process::GATEWAY_IQN, 0)),
    );
    let mut bench = Command::new(workspace_binary("bench", "iscsi-bench"));
    bench.args([
        "--name=far",
        "--rw=randrw",
        "--bs=4k",
        "--iodepth=8",
        "--size=8M",
        "--time_based",
        "--runtime=4",
        "--verify=crc32c",
        "--output-format=json",
        &format!("--filename={url}"),
    ]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let dropped = std::thread::scope(|scope| {
        let dropper = scope.spawn(|| {
            let mut dropped = 0;
            // Twice, a second apart, while the job runs (bounded: 2 rounds).
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(1200));
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                for sid in far_sessions(&tgt) {
                    let deleted = tgt.tgtadm_iscsi(
                        "connection",
                        "delete",
                        &["--tid", "1", "--sid", &sid, "--cid", "0"],
                    );
                    dropped += usize::from(deleted.is_ok());
                }
            }
            dropped
        });
        let output = run_command(bench, Duration::from_secs(120));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(output.status.success(), "{}", describe_output(&output));
        let doc: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("iscsi-bench prints JSON");
        assert_eq!(doc["jobs"][0]["error"].as_u64(), Some(0), "{doc}");
        let ios = doc["jobs"][0]["write"]["total_ios"].as_u64().unwrap_or(0);
        assert!(ios > 0, "{doc}");
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("verify:"),
            "{}",
            describe_output(&output)
        );
        dropper.join().expect("dropper")
    });
    assert!(dropped >= 1, "tgt dropped no session of the gateway");
    assert!(
        gateway.log().contains("logging in again"),
        "the gateway says it logged in again: {}",
        gateway.log()
    );
}
