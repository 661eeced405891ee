//! Issue 15's session-spreading goals, measured (a benchmark, ignored in CI; run by
//! `scripts/bench-portal.sh`): SESSIONS hosts (default 1,000) log in through the virtual
//! portal of one `iscsi-gateway` with 4 real portals; how evenly they land, the gateway's
//! memory per idle session, then one portal is lost (it stops listening and its sessions
//! are dropped: the hosts log in again through the virtual portal) and comes back (a
//! rebalance moves hosts to it with Async Message event 1). Each host is our blocking
//! client, polled with TEST UNIT READY by one thread; a host whose connection is gone
//! logs in again and repeats the command, a host asked to log out logs in again first
//! (make before break), then logs out. An I/O error is a command that fails after that.
//! No timed assertion: the figures are printed as a table.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::{AsyncEvent, Request};
use system_tests::gateway_ctl::ctl_json;
use system_tests::gateway_process::read_memory;
use system_tests::loopback;
use system_tests::{free_port, GatewayProcess, TargetSpec, TempDir, Tgt};

const IQN: &str = "iqn.2026-12.test:portal-bench";
const REAL_PORTALS: usize = 4;

/// Sessions on each real portal, in `real` order.
fn spread(socket: &Path, real: &[SocketAddr]) -> Vec<u64> {
    let list = ctl_json(socket, &["portal", "list"]);
    real.iter()
        .map(|addr| {
            list["portals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["address"] == addr.to_string())
                .and_then(|p| p["sessions"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// The largest distance from an even share, as a fraction of it.
fn imbalance(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let even = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - even).abs() / even)
        .fold(0.0, f64::max)
}

fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

struct Host {
    client: Client,
}

struct Hosts {
    config: ClientConfig,
    hosts: Vec<Host>,
    io_errors: u64,
    relogins: u64,
    moves: u64,
}

impl Hosts {
    fn login(&self) -> Client {
        Client::connect(&self.config).expect("login through the virtual portal")
    }

    /// One TEST UNIT READY per host; reconnects and moves as the module docs say.
    fn sweep(&mut self) {
        for index in 0..self.hosts.len() {
            let asked_to_move = self.hosts[index]
                .client
                .take_async_events()
                .iter()
                .any(|e| matches!(e, AsyncEvent::LogoutRequested { .. }));
            if asked_to_move {
                let fresh = self.login();
                let old = std::mem::replace(&mut self.hosts[index].client, fresh);
                let _ = old.logout();
                self.moves += 1;
            }
            let tur = || Request::new(0, Cdb::test_unit_ready(), Vec::new(), 0);
            let ok = |r: &Result<datapath::session::CommandOutcome, _>| matches!(r, Ok(o) if o.status == 0 || o.status == 2);
            let first = self.hosts[index].client.execute(tur());
            if ok(&first) {
                continue;
            }
            // The connection is gone (its portal was lost): log in again, repeat.
            self.hosts[index].client = self.login();
            self.relogins += 1;
            if !ok(&self.hosts[index].client.execute(tur())) {
                self.io_errors += 1;
            }
        }
    }
}

#[test]
#[ignore = "benchmark: scripts/bench-portal.sh"]
fn session_spreading_benchmark() {
    let sessions: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    raise_descriptor_limit();
    let dir = TempDir::new("portal-bench").unwrap();
    let real: Vec<SocketAddr> = (0..REAL_PORTALS).map(|_| loopback(free_port())).collect();
    let virtual_portal = loopback(free_port());
    let socket = dir.join("control.sock");
    let mut args: Vec<String> = Vec::new();
    for portal in &real[1..] {
        args.extend(["--portal".into(), portal.to_string()]);
    }
    args.extend(
        [
            "--virtual-portal",
            &virtual_portal.to_string(),
            "--control-socket",
            &socket.display().to_string(),
            "--iqn",
            IQN,
            "--lun",
            "null:1G",
            "--threads",
            "2",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = GatewayProcess::start_with_args(real[0], &args, &dir.join("gateway.log"))
        .expect("gateway starts");
    let rss_before = gateway.memory().expect("memory").rss_kib;

    let mut config = ClientConfig::new(virtual_portal, Some(IQN.into()));
    config.initiator_name = "iqn.2026-12.test:bench-host".into();
    config.login_timeout = Duration::from_secs(20);
    let mut hosts = Hosts {
        config,
        hosts: Vec::with_capacity(sessions),
        io_errors: 0,
        relogins: 0,
        moves: 0,
    };
    let began = Instant::now();
    for _ in 0..sessions {
        let client = hosts.login();
        hosts.hosts.push(Host { client });
    }
    let login_time = began.elapsed();
    let counts = spread(&socket, &real);
    let rss_after = gateway.memory().expect("memory").rss_kib;
    let per_session_kib = (rss_after.saturating_sub(rss_before)) as f64 / sessions as f64;

    // A portal is lost: it stops listening and its connections are cut.
    let lost = real[REAL_PORTALS - 1].to_string();
    ctl_json(&socket, &["portal", "remove", &lost]);
    let cut = Instant::now();
    ctl_json(&socket, &["session", "drop", "--portal", &lost]);
    let mut sweeps = 0;
    while spread(&socket, &real[..REAL_PORTALS - 1])
        .iter()
        .sum::<u64>()
        < sessions as u64
    {
        hosts.sweep();
        sweeps += 1;
        assert!(sweeps < 100, "hosts did not come back");
    }
    let back_after_loss = cut.elapsed();
    let counts_after_loss = spread(&socket, &real);

    // It comes back; a rebalance moves a quarter of the hosts to it.
    ctl_json(&socket, &["portal", "add", &lost]);
    let returned = Instant::now();
    let asked = ctl_json(&socket, &["portal", "rebalance", "--deadline", "10"]);
    let mut counts_rebalanced = spread(&socket, &real);
    while imbalance(&counts_rebalanced) > 0.10 && returned.elapsed() < Duration::from_secs(60) {
        hosts.sweep();
        counts_rebalanced = spread(&socket, &real);
    }
    let rebalance_time = returned.elapsed();

    for host in std::mem::take(&mut hosts.hosts) {
        let _ = host.client.logout();
    }
    drop(gateway);

    // The anchor: tgt's memory per idle session and its login time, the same hosts
    // logging in straight to its portal (tgt has no balancing virtual portal).
    let tgt = Tgt::start(&[TargetSpec::new(IQN, &[64 << 20])]).expect("tgtd starts");
    let tgt_before = read_memory(tgt.pid()).expect("tgtd memory").rss_kib;
    let mut tgt_config = ClientConfig::new(tgt.portal(), Some(IQN.into()));
    tgt_config.initiator_name = "iqn.2026-12.test:bench-host".into();
    tgt_config.login_timeout = Duration::from_secs(20);
    let began = Instant::now();
    let tgt_hosts: Vec<Client> = (0..sessions)
        .map(|_| Client::connect(&tgt_config).expect("login to tgt"))
        .collect();
    let tgt_login_time = began.elapsed();
    let tgt_after = read_memory(tgt.pid()).expect("tgtd memory").rss_kib;
    let tgt_per_session_kib = (tgt_after.saturating_sub(tgt_before)) as f64 / sessions as f64;
    for client in tgt_hosts {
        let _ = client.logout();
    }

    println!("| sessions | login time | tgt login time (direct) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| {sessions} | {:.2} s | {:.2} s | {:.2} |",
        login_time.as_secs_f64(),
        tgt_login_time.as_secs_f64(),
        login_time.as_secs_f64() / tgt_login_time.as_secs_f64()
    );
    println!("| RSS per idle session | tgtd RSS per idle session | ratio |");
    println!("|---|---|---|");
    println!(
        "| {per_session_kib:.1} KiB | {tgt_per_session_kib:.1} KiB | {:.2} |",
        per_session_kib / tgt_per_session_kib.max(0.1)
    );
    println!("| sessions | login time | spread over 4 portals | imbalance | RSS per idle session | back after a portal loss | spread then | rebalance asked | rebalanced in | spread after | imbalance after | I/O errors | re-logins | moves |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {sessions} | {:.2} s | {counts:?} | {:.1}% | {per_session_kib:.1} KiB | {:.2} s | {counts_after_loss:?} | {} | {:.2} s | {counts_rebalanced:?} | {:.1}% | {} | {} | {} |",
        login_time.as_secs_f64(),
        imbalance(&counts) * 100.0,
        back_after_loss.as_secs_f64(),
        asked["asked"],
        rebalance_time.as_secs_f64(),
        imbalance(&counts_rebalanced) * 100.0,
        hosts.io_errors,
        hosts.relogins,
        hosts.moves,
    );
}
