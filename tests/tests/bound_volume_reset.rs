//! LOGICAL UNIT RESET addressed to a bound volume (a subsidiary LU, two-level LUN) on
//! the real `iscsi-gateway` (issue 18): it resets that volume, and every nexus that uses
//! it gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/03h) there and only there;
//! an ID not bound for the host answers "LUN does not exist".

use std::process::Command;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::{Cdb, LunAddress};
use datapath::session::{Request, TaskManagementFunction, TaskManagementResponse};
use system_tests::gateway_ctl::ctl_ok;
use system_tests::loopback;
use system_tests::{free_port, GatewayProcess, TempDir};

const TARGET: &str = "iqn.2026-12.test:bound-reset";
const HOST: &str = "iqn.2026-12.test:esx-reset";
const UNIT_ATTENTION: u8 = 0x6;

fn sub(secondary: u32) -> u64 {
    LunAddress::Subsidiary {
        endpoint: 0,
        secondary,
    }
    .key()
}

fn tur(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>) {
    let outcome = client
        .execute(Request::new(lun, Cdb::test_unit_ready(), Vec::new(), 0))
        .expect("an answer");
    let sense = outcome
        .sense
        .as_ref()
        .filter(|s| s.len() >= 14)
        .map(|s| (s[2] & 0x0f, s[12], s[13]));
    (outcome.status, sense)
}

/// TEST UNIT READY until it passes: the attentions of the bind are reported and gone.
fn settle(client: &mut Client, lun: u64) {
    for _ in 0..4 {
        if tur(client, lun).0 == 0 {
            return;
        }
    }
    panic!("unit attentions on {lun:#x} do not clear");
}

fn session(portal: std::net::SocketAddr, isid_tail: u8) -> Client {
    let mut config = ClientConfig::new(portal, Some(TARGET.into()));
    config.initiator_name = HOST.into();
    config.isid = Some([0x80, 0, 0, 0x18, 0, isid_tail]);
    config.login_timeout = Duration::from_secs(10);
    Client::connect(&config).unwrap_or_else(|e| panic!("login: {e}"))
}

#[test]
fn a_logical_unit_reset_of_a_bound_volume_resets_that_volume_only() {
    let dir = TempDir::new("gateway-bound-reset").unwrap();
    let pool = dir.join("pool.img").display().to_string();
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", &pool, "64M"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let socket = dir.join("control.sock");
    let socket_text = socket.display().to_string();
    let portal = loopback(free_port());
    let _gateway = GatewayProcess::start_with_args(
        portal,
        &["--control-socket", &socket_text, "--threads", "2"],
        &dir.join("gateway.log"),
    )
    .unwrap_or_else(|e| panic!("gateway starts: {e}"));
    for v in ["v1", "v2"] {
        ctl_ok(&socket, &["volume", "create", "--pool", &pool, v, "4M"]);
    }
    ctl_ok(&socket, &["target", "create", TARGET]);
    ctl_ok(&socket, &["lun", "attach", TARGET, "0", "endpoint"]);
    ctl_ok(&socket, &["lun", "attach", TARGET, "1", "ram:1M"]);
    // Two nexuses of the host log in before the volumes are bound.
    let mut a = session(portal, 1);
    let mut b = session(portal, 2);
    ctl_ok(
        &socket,
        &[
            "bind",
            "v1",
            "v2",
            "--target",
            TARGET,
            "--endpoint",
            "0",
            "--host",
            HOST,
            "--pool",
            &pool,
        ],
    );
    for client in [&mut a, &mut b] {
        for lun in [1, sub(1), sub(2)] {
            settle(client, lun);
        }
    }

    let reset = a
        .task_management(TaskManagementFunction::LogicalUnitReset, sub(1))
        .expect("the reset is answered");
    assert_eq!(reset.response, TaskManagementResponse::FunctionComplete);
    // The reset volume reports it to both nexuses, once; the other volume and the plain
    // LUN do not.
    for client in [&mut a, &mut b] {
        assert_eq!(tur(client, sub(2)), (0, None), "the other volume");
        assert_eq!(tur(client, 1), (0, None), "the plain LUN");
        assert_eq!(
            tur(client, sub(1)),
            (2, Some((UNIT_ATTENTION, 0x29, 0x03))),
            "the reset volume"
        );
        assert_eq!(tur(client, sub(1)), (0, None), "reported once");
    }

    // An ID bound for nobody: LUN does not exist, and nothing is reset.
    let missing = a
        .task_management(TaskManagementFunction::LogicalUnitReset, sub(3))
        .expect("the reset is answered");
    assert_eq!(missing.response, TaskManagementResponse::LunDoesNotExist);
    assert_eq!(tur(&mut b, sub(1)), (0, None));
    // ABORT TASK SET on a bound volume is accepted too (it names an LU that exists).
    let abort = a
        .task_management(TaskManagementFunction::AbortTaskSet, sub(2))
        .expect("the abort is answered");
    assert_eq!(abort.response, TaskManagementResponse::FunctionComplete);
}
