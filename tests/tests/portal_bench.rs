//! Issue 15's session-spreading goals, measured (a benchmark, ignored in CI; run by
//! `scripts/bench-portal.sh`): SESSIONS hosts (default 1,000) log in through the virtual
//! portal of one `iscsi-gateway` with 4 real portals; how evenly they land, the gateway's
//! memory per idle session, then one portal is lost (it stops listening and its sessions
//! are dropped: the hosts log in again through the virtual portal) and comes back (a
//! rebalance moves hosts to it with Async Message event 1). Each host is our blocking
//! client, polled with TEST UNIT READY by one thread; a host whose connection is gone
//! logs in again and repeats the command, a host asked to log out logs in again first
//! (make before break), then logs out. An I/O error is a command that fails after that.
//! While the SESSIONS hosts sit idle, IO_SESSIONS more (default 64) run 4 KiB random
//! reads through `iscsi-bench` (one session per job, 4 in flight each, IO_SECONDS s),
//! through the virtual portal: their IOPS and the gateway's RSS under that load, beside
//! tgt holding as many idle sessions and running the same job.
//! No timed assertion: the figures are printed as a table.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// 4 KiB random reads on `jobs` sessions of `url` for `seconds` (iscsi-bench, release,
/// one session per job): the IOPS summed over the jobs, the errors, and `pid`'s RSS in
/// KiB sampled halfway through.
fn reads_on_sessions(url: &str, jobs: usize, seconds: u64, pid: u32) -> (f64, u64, u64) {
    let bench = system_tests::workspace_binary_release("bench", "iscsi-bench");
    let dir = TempDir::new("portal-bench-io").unwrap();
    let child = Command::new(bench)
        .current_dir(dir.path())
        .args([
            "--name=reads",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=4",
            &format!("--numjobs={jobs}"),
            "--time_based",
            &format!("--runtime={seconds}"),
            "--size=32M",
            "--output-format=json",
            &format!("--filename={url}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iscsi-bench starts");
    std::thread::sleep(Duration::from_secs(seconds / 2 + 2));
    let rss_kib = read_memory(pid).map_or(0, |m| m.rss_kib);
    let output = child.wait_with_output().expect("iscsi-bench ends");
    let doc: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(doc) => doc,
        Err(_) => {
            eprintln!(
                "iscsi-bench: {}",
                String::from_utf8_lossy(&output.stderr)
                    .chars()
                    .take(2000)
                    .collect::<String>()
            );
            return (0.0, u64::MAX, rss_kib);
        }
    };
    let jobs_doc = doc["jobs"].as_array().cloned().unwrap_or_default();
    let iops = jobs_doc
        .iter()
        .map(|j| j["read"]["iops"].as_f64().unwrap_or(0.0))
        .sum();
    let errors = jobs_doc
        .iter()
        .map(|j| j["error"].as_u64().unwrap_or(0))
        .sum();
    (iops, errors, rss_kib)
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
    // A file LU the size of tgt's (the anchor's LU is a 64 MiB file from the shared
    // helper): the reads compare like with like.
    let image = dir.join("lu.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("backing file");
    let lun = format!("file:{}:64M", image.display());
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
            &lun,
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

    // Reads flowing on IO_SESSIONS more sessions while these sit idle.
    let io_sessions: usize = std::env::var("IO_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let io_seconds: u64 = std::env::var("IO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let url = format!("iscsi://{virtual_portal}/{IQN}/0");
    let (iops, io_errors, rss_under_io) =
        reads_on_sessions(&url, io_sessions, io_seconds, gateway.pid());

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
    let tgt_url = format!("iscsi://{}/{IQN}/{}", tgt.portal(), tgt.first_data_lun());
    let (tgt_iops, tgt_io_errors, tgt_rss_under_io) =
        reads_on_sessions(&tgt_url, io_sessions, io_seconds, tgt.pid());
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
    println!("| idle sessions | reading sessions | IOPS (4 KiB random, 4 in flight each) | tgt IOPS | ratio | errors (ours, tgt) | RSS under I/O | tgtd RSS under I/O |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {sessions} | {io_sessions} | {iops:.0} | {tgt_iops:.0} | {:.2} | {io_errors}, {tgt_io_errors} | {:.1} MiB | {:.1} MiB |",
        iops / tgt_iops.max(1.0),
        rss_under_io as f64 / 1024.0,
        tgt_rss_under_io as f64 / 1024.0,
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
