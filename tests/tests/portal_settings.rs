//! Issue 15: the array settings (weights, drained portals, ALUA states, redirect kind,
//! virtual portals added live) are kept in `--state-dir` and come back after a restart,
//! even after `kill -9` (each is a journal record, synced before the answer). Judged from
//! the control plane's lists and by libiscsi logging in through the virtual portals.

use std::net::SocketAddr;
use std::path::Path;

use system_tests::gateway_ctl::{ctl_json, ctl_ok};
use system_tests::gateway_process::GatewayProcess;
use system_tests::libiscsi::{inquiry, iscsi_url};
use system_tests::{free_port, loopback, require_tools, TempDir};

const IQN: &str = "iqn.2026-12.test:kept-settings";

fn start(dir: &TempDir, real: [SocketAddr; 2], virtual_portal: SocketAddr) -> GatewayProcess {
    let (second, virtual_text, socket, state) = (
        real[1].to_string(),
        virtual_portal.to_string(),
        dir.join("control.sock").display().to_string(),
        dir.join("state").display().to_string(),
    );
    let args = [
        "--portal",
        &second,
        "--virtual-portal",
        &virtual_text,
        "--control-socket",
        &socket,
        "--state-dir",
        &state,
        "--iqn",
        IQN,
        "--lun",
        "ram:16M",
    ];
    GatewayProcess::start_with_args(real[0], &args, &dir.join("gateway.log"))
        .unwrap_or_else(|e| panic!("gateway starts: {e}"))
}

/// A portal's row in `portal list`.
fn portal_row(socket: &Path, addr: SocketAddr) -> serde_json::Value {
    let list = ctl_json(socket, &["portal", "list"]);
    list["portals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{addr} not in {list}"))
}

fn alua_state(socket: &Path, group: u64) -> Option<String> {
    let list = ctl_json(socket, &["alua", "list"]);
    list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"].as_u64() == Some(group))
        .and_then(|g| g["state"].as_str().map(String::from))
}

#[test]
fn array_settings_come_back_after_a_kill_and_a_restart() {
    require_tools!("iscsi-inq");
    let dir = TempDir::new("portal-settings").unwrap();
    let socket = dir.join("control.sock");
    let real = [loopback(free_port()), loopback(free_port())];
    let virtual_portal = loopback(free_port());
    let second_virtual = loopback(free_port());
    let gateway = start(&dir, real, virtual_portal);

    let (first, second) = (real[0].to_string(), real[1].to_string());
    ctl_ok(&socket, &["portal", "set", &first, "--weight", "0"]);
    ctl_ok(&socket, &["portal", "set", &second, "--weight", "7"]);
    ctl_ok(&socket, &["portal", "drain", &first, "--deadline", "1"]);
    ctl_ok(&socket, &["portal", "redirect", "permanent"]);
    ctl_ok(&socket, &["alua", "set", "9", "unavailable"]);
    ctl_ok(&socket, &["portal", "virtual", &second_virtual.to_string()]);
    // A refused setting is not kept: no such portal.
    let refused =
        system_tests::gateway_ctl::ctl(&socket, &["portal", "set", "127.0.0.1:1", "--weight", "2"]);
    assert!(!refused.status.success());

    // The process dies without a chance to write anything more.
    gateway.kill_hard();
    let gateway = start(&dir, real, virtual_portal);

    assert_eq!(portal_row(&socket, real[0])["weight"], 0);
    assert_eq!(portal_row(&socket, real[0])["draining"], true);
    assert_eq!(portal_row(&socket, real[1])["weight"], 7);
    assert_eq!(portal_row(&socket, real[1])["draining"], false);
    assert_eq!(portal_row(&socket, second_virtual)["role"], "virtual");
    assert_eq!(
        ctl_json(&socket, &["portal", "list"])["redirect"],
        "permanent"
    );
    assert_eq!(alua_state(&socket, 9).as_deref(), Some("unavailable"));
    assert_eq!(
        alua_state(&socket, 1).as_deref(),
        Some("active/optimized"),
        "one real portal still takes logins: the own group serves"
    );

    // Both virtual portals send a login, permanently (0x0102, which libiscsi reports
    // rather than follows), to the one open portal.
    for at in [virtual_portal, second_virtual] {
        let refused = inquiry(&iscsi_url(at, None, Some((IQN, 0))))
            .expect_err("libiscsi does not follow a permanent redirect");
        assert!(refused.contains("moved permanently"), "{refused}");
    }
    let log = gateway.full_log();
    let redirected = format!("status 0x0102: redirected to {second},1");
    assert_eq!(log.matches(&redirected).count(), 2, "{}", gateway.log());
    assert!(!log.contains(&format!("redirected to {first}")));
    // Temporary again: libiscsi follows it to that portal and reaches the LU.
    ctl_ok(&socket, &["portal", "redirect", "temporary"]);
    inquiry(&iscsi_url(second_virtual, None, Some((IQN, 0))))
        .unwrap_or_else(|e| panic!("iscsi-inq: {e}\n{}", gateway.log()));
    assert!(gateway
        .full_log()
        .contains(&format!("status 0x0101: redirected to {second},1")));

    // Resumed and restarted again: the drain is gone from the kept settings too.
    ctl_ok(&socket, &["portal", "resume", &first]);
    drop(gateway);
    let _gateway = start(&dir, real, virtual_portal);
    assert_eq!(portal_row(&socket, real[0])["draining"], false);
    assert_eq!(portal_row(&socket, real[1])["weight"], 7);
    assert_eq!(
        ctl_json(&socket, &["portal", "list"])["redirect"],
        "temporary"
    );
}

/// SendTargets per portal group: gateway A (group 1) is told to list gateway B's portal
/// as group 2; libiscsi's discovery through A then finds both ports, each with its tag,
/// live and after A restarts.
#[test]
fn send_targets_lists_each_portal_group_as_configured() {
    require_tools!("iscsi-ls");
    let dir = TempDir::new("portal-send-targets").unwrap();
    let socket = dir.join("control.sock");
    let real = [loopback(free_port()), loopback(free_port())];
    let virtual_portal = loopback(free_port());
    let gateway_a = start(&dir, real, virtual_portal);
    let b_portal = loopback(free_port());
    let _gateway_b = GatewayProcess::start_with_args(
        b_portal,
        &["--portal-group-tag", "2", "--iqn", IQN, "--lun", "ram:16M"],
        &dir.join("gateway-b.log"),
    )
    .expect("gateway B starts");
    let discovered = |at: SocketAddr| -> Vec<String> {
        let mut portals: Vec<String> = system_tests::libiscsi::iscsi_ls(&iscsi_url(at, None, None))
            .unwrap_or_else(|e| panic!("iscsi-ls at {at}: {e}"))
            .into_iter()
            .map(|t| t.portal)
            .collect();
        portals.sort();
        portals
    };
    // By default: the virtual portal alone, group 1.
    assert_eq!(discovered(real[0]), vec![format!("{virtual_portal},1")]);
    // Group 1 lists its two real portals, group 2 gateway B's.
    ctl_ok(
        &socket,
        &[
            "portal",
            "send-targets",
            "1",
            &real[0].to_string(),
            &real[1].to_string(),
        ],
    );
    ctl_ok(
        &socket,
        &["portal", "send-targets", "2", &b_portal.to_string()],
    );
    let mut wanted = vec![
        format!("{},1", real[0]),
        format!("{},1", real[1]),
        format!("{b_portal},2"),
    ];
    wanted.sort();
    assert_eq!(discovered(real[0]), wanted);
    // Refused: a portal given twice; nothing changes.
    let refused = system_tests::gateway_ctl::ctl(
        &socket,
        &[
            "portal",
            "send-targets",
            "2",
            &b_portal.to_string(),
            &b_portal.to_string(),
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("twice"));
    // Kept through a restart.
    drop(gateway_a);
    let _gateway_a = start(&dir, real, virtual_portal);
    assert_eq!(discovered(real[1]), wanted);
    // Group 1 back to its default; group 2 still listed.
    ctl_ok(&socket, &["portal", "send-targets", "1"]);
    let mut wanted = vec![format!("{virtual_portal},1"), format!("{b_portal},2")];
    wanted.sort();
    assert_eq!(discovered(real[0]), wanted);
}
