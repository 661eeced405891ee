//! Control verbs that replace or remove a LUN's backend refuse while a SANITIZE with IMMED
//! runs on it (`gateway::control::sanitize_fence`): the real `iscsi-gateway` driven by
//! `iscsi-ctl gateway`, the SANITIZE sent by our initiator.
//!
//! - `verbs_that_replace_a_backend_refuse_while_a_sanitize_runs_and_work_after_it`:
//!   `lun detach`, `target delete`, `volume grow`, `migrate`, `track` are refused with an
//!   error naming the sanitize while it runs on a pool volume's LUN, the sanitize goes on
//!   (the host still sees it in progress, then every block holds the pattern), and the
//!   same verbs work once it ended; a SANITIZE on a LUN that is migrating holds off
//!   `migration cancel` the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::scsi::{Cdb, DataDirection};
use datapath::session::Request;
use system_tests::gateway_ctl::{ctl, ctl_json, ctl_ok};
use system_tests::{free_port, loopback, GatewayProcess, TempDir};

const T: &str = "iqn.2026-12.test:sanitize-fence";
const SANITIZE: u8 = 0x48;
const OVERWRITE_IMMED: u8 = 0x80 | 0x01;
const PATTERN: u8 = 0x3c;

struct Gateway {
    _process: GatewayProcess,
    socket: PathBuf,
}

fn start(dir: &TempDir, portal: SocketAddr) -> Gateway {
    let socket = dir.join("control.sock");
    let state = dir.join("state");
    let args = [
        "--control-socket",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--threads",
        "2",
    ];
    let process = GatewayProcess::start_with_args(portal, &args, &dir.join("gateway.log"))
        .unwrap_or_else(|e| panic!("gateway starts: {e}"));
    Gateway {
        _process: process,
        socket,
    }
}

fn host(portal: SocketAddr) -> Client {
    let mut config = ClientConfig::new(portal, Some(T.into()));
    config.login_timeout = Duration::from_secs(10);
    Client::connect(&config).expect("login")
}

/// Status and (key, ASC, ASCQ) of a command on LUN 0.
fn run(client: &mut Client, cdb: Cdb, buffer: Vec<u8>) -> (u8, Option<(u8, u8, u8)>, Vec<u8>) {
    let outcome = client
        .execute(Request::new(0, cdb, buffer, 0))
        .expect("the command gets an answer");
    let sense = outcome
        .sense
        .as_ref()
        .filter(|s| s.len() >= 14)
        .map(|s| (s[2] & 0x0f, s[12], s[13]));
    (outcome.status, sense, outcome.buffer)
}

/// SANITIZE OVERWRITE with IMMED, one pass of a 512-byte pattern: answered GOOD at once.
fn sanitize(client: &mut Client) {
    let mut parameters = vec![0x01, 0, 0x02, 0x00];
    parameters.extend(std::iter::repeat_n(PATTERN, 512));
    let cdb = Cdb::from_bytes(
        &[SANITIZE, OVERWRITE_IMMED, 0, 0, 0, 0, 0, 0x02, 0x04, 0],
        DataDirection::Write(516),
    )
    .unwrap();
    let (status, sense, _) = run(client, cdb, parameters);
    assert_eq!(status, 0, "SANITIZE IMMED answers GOOD: {sense:?}");
}

/// Whether TEST UNIT READY reports SANITIZE IN PROGRESS (else it must be GOOD).
fn sanitizing(client: &mut Client) -> bool {
    match run(client, Cdb::test_unit_ready(), Vec::new()) {
        (0, _, _) => false,
        (_, Some((0x2, 0x04, 0x1b)), _) => true,
        other => panic!("TEST UNIT READY: {other:?}"),
    }
}

fn wait_sanitized(client: &mut Client) {
    let started = Instant::now();
    while sanitizing(client) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the sanitize never ends"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `args` must be refused with an error that names the sanitize.
fn refused_for_sanitize(socket: &Path, args: &[&str]) {
    let output = ctl(socket, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} must be refused");
    assert!(
        stderr.contains("a SANITIZE is in progress") && stderr.contains("-32006"),
        "{args:?}: the error names the sanitize: {stderr}"
    );
}

#[test]
fn verbs_that_replace_a_backend_refuse_while_a_sanitize_runs_and_work_after_it() {
    let dir = TempDir::new("sanitize-vs-control").unwrap();
    let pool = dir.join("pool.img");
    let p = pool.display().to_string();
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", &p, "128M"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let portal = loopback(free_port());
    let gateway = start(&dir, portal);
    let socket = &gateway.socket;
    ctl_ok(socket, &["volume", "create", "--pool", &p, "vm1", "4M"]);
    ctl_ok(socket, &["target", "create", T]);
    // 4 MiB at 1 MiB/s: about four seconds, longer than the refused calls take.
    let spec = format!("pool:{p},volume=vm1,sanitize_rate=1M");
    ctl_ok(socket, &["lun", "attach", T, "0", &spec]);
    let mut client = host(portal);

    sanitize(&mut client);
    let sanitize_started = Instant::now();
    let destination = format!("file:{}:4M", dir.join("dest.img").display());
    let refused: [&[&str]; 5] = [
        &["lun", "detach", T, "0"],
        &["target", "delete", T],
        &["volume", "grow", "--pool", &p, "vm1", "5M"],
        &["migrate", T, "0", "--to", &destination],
        &["track", T, "0"],
    ];
    for args in refused {
        refused_for_sanitize(socket, args);
    }
    assert!(
        sanitizing(&mut client),
        "the refusals did not stop the sanitize (checked {:?} after it started; the rate \
         makes it last about 4 s)",
        sanitize_started.elapsed()
    );
    let list = ctl_json(socket, &["target", "list"]);
    assert_eq!(
        list["targets"][0]["luns"][0]["lun"], 0,
        "nothing was detached: {list}"
    );
    wait_sanitized(&mut client);
    for lba in [0u32, 8191] {
        let (status, sense, data) = run(
            &mut client,
            Cdb::read_10(lba, 1, 512, false).unwrap(),
            vec![0; 512],
        );
        assert_eq!(status, 0, "{sense:?}");
        assert!(data.iter().all(|&b| b == PATTERN), "block {lba} sanitized");
    }

    // Once it ended, the same verbs work: a grow, and a migration (slow, so that a second
    // SANITIZE finds it copying) which that SANITIZE then holds off cancelling.
    ctl_ok(socket, &["volume", "grow", "--pool", &p, "vm1", "5M"]);
    // The grow's CAPACITY DATA HAS CHANGED, then a ready unit.
    let (status, sense, _) = run(&mut client, Cdb::test_unit_ready(), Vec::new());
    assert!(
        status == 0 || sense == Some((0x6, 0x2a, 0x09)),
        "{status} {sense:?}"
    );
    let destination = format!("file:{}:5M", dir.join("dest.img").display());
    ctl_json(
        socket,
        &["migrate", T, "0", "--to", &destination, "--rate", "1M"],
    );
    sanitize(&mut client);
    refused_for_sanitize(socket, &["migration", "cancel", T, "0"]);
    wait_sanitized(&mut client);
    let cancelled = ctl_json(socket, &["migration", "cancel", T, "0"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    ctl_ok(socket, &["lun", "detach", T, "0"]);
    ctl_ok(socket, &["target", "delete", T]);
}
