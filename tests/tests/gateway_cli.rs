//! `iscsi-gateway` as an operator runs it: restarts, signals, its command line and its
//! log, through the binary itself.

use std::net::SocketAddr;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use system_tests::{free_port, GatewayProcess, TempDir};

/// The target name `iscsi-gateway` uses without `--iqn`.
const DEFAULT_IQN: &str = "iqn.2026-11.io.iscsi-uring:target";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn restart_right_after_kill_9_binds_the_same_port() {
    let dir = TempDir::new("gateway-restart").unwrap();
    let portal = loopback(free_port());
    let args = ["--lun", "ram:16M", "--threads", "1"];
    let mut gateway = GatewayProcess::start(portal, &args, &dir.join("log-0")).unwrap();
    let mut waited_for_old_listener = 0;
    for round in 1..=10 {
        // A logged-in session: killed, the gateway's end of it lingers in FIN_WAIT.
        let mut config = ClientConfig::new(portal, Some(DEFAULT_IQN.into()));
        config.login_timeout = Duration::from_secs(10);
        let client = Client::connect(&config)
            .unwrap_or_else(|e| panic!("login in round {round}: {e}\n{}", gateway.log()));
        gateway.kill_hard();
        gateway = GatewayProcess::start(portal, &args, &dir.join(format!("log-{round}")))
            .unwrap_or_else(|e| panic!("restart {round} of 10 after kill -9: {e}"));
        drop(client);
        waited_for_old_listener += usize::from(gateway.log().contains("portal free again"));
    }
    eprintln!(
        "restarts that waited for the killed gateway's listener: {waited_for_old_listener} of 10"
    );
}
