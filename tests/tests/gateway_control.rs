//! The gateway's live control plane as an operator drives it: the real `iscsi-gateway`
//! with `--control-socket` (and `--state-dir`), changed by `iscsi-ctl gateway`, judged by
//! libiscsi's `iscsi-ls`/`iscsi-inq` (a LUN attached live is there for a new login) and by
//! our initiator holding a session across the change (it gets the unit attention, and a
//! session of another target gets none).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::Request;
use gateway::control::rpc::{self, Call};
use serde_json::Value;
use system_tests::gateway_ctl::{ctl, ctl_json, ctl_ok};
use system_tests::libiscsi::{inquiry, iscsi_ls, iscsi_url};
use system_tests::loopback;
use system_tests::{free_port, run_command, GatewayProcess, TempDir};

const T1: &str = "iqn.2026-12.test:ctl-one";
const T2: &str = "iqn.2026-12.test:ctl-two";
const HOST: &str = "iqn.2026-12.test:host";

struct Gateway {
    process: GatewayProcess,
    socket: PathBuf,
}

fn start(dir: &TempDir, portal: SocketAddr, extra: &[&str], log: &str) -> Gateway {
    let socket = dir.join("control.sock");
    let socket_text = socket.display().to_string();
    let mut args = vec!["--control-socket", &socket_text, "--threads", "2"];
    args.extend_from_slice(extra);
    let process = GatewayProcess::start_with_args(portal, &args, &dir.join(log))
        .unwrap_or_else(|e| panic!("gateway starts: {e}"));
    Gateway { process, socket }
}

fn session(portal: SocketAddr, target: &str) -> Client {
    let mut config = ClientConfig::new(portal, Some(target.into()));
    config.initiator_name = HOST.into();
    config.login_timeout = Duration::from_secs(10);
    Client::connect(&config).unwrap_or_else(|e| panic!("login to {target}: {e}"))
}

/// TEST UNIT READY on `lun`: the status and, for CHECK CONDITION, (key, ASC, ASCQ).
fn test_unit_ready(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>) {
    let cdb = Cdb::test_unit_ready();
    let outcome = client
        .execute(Request::new(lun, cdb.clone(), Vec::new(), 0))
        .expect("TEST UNIT READY gets an answer");
    let sense = outcome
        .sense
        .as_ref()
        .filter(|s| s.len() >= 14)
        .map(|s| (s[2] & 0x0f, s[12], s[13]));
    (outcome.status, sense)
}

fn report_luns(client: &mut Client) -> Vec<u64> {
    let cdb = Cdb::report_luns(0, 4096);
    let outcome = client
        .execute(Request::new(0, cdb.clone(), vec![0; 4096], 0))
        .expect("REPORT LUNS gets an answer");
    assert_eq!(outcome.status, 0, "REPORT LUNS: {:?}", outcome.sense);
    let data = &outcome.buffer;
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    data[8..8 + len]
        .chunks(8)
        .map(|entry| u64::from(u16::from_be_bytes([entry[0], entry[1]]) & 0x3fff))
        .collect()
}

const UNIT_ATTENTION: u8 = 0x6;

#[test]
fn luns_attached_and_detached_live_are_seen_by_peers_with_unit_attentions_only_where_due() {
    let dir = TempDir::new("gateway-control").unwrap();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, &[], "gateway.log");
    let socket = &gateway.socket;
    // Owner only.
    let meta = std::fs::metadata(socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    ctl_ok(socket, &["target", "create", T1]);
    ctl_ok(socket, &["lun", "attach", T1, "0", "ram:8M"]);
    // A target with its LUN in one commit.
    let created = ctl_json(
        socket,
        &[
            "target", "create", T2, "--alias", "other", "--lun", "0=ram:4M",
        ],
    );
    assert_eq!(created["luns"][0]["size_bytes"], 4 << 20, "{created}");

    let mut one = session(portal, T1);
    let mut two = session(portal, T2);
    assert_eq!(test_unit_ready(&mut one, 0).0, 0);
    assert_eq!(test_unit_ready(&mut two, 0).0, 0);
    assert_eq!(report_luns(&mut one), vec![0]);

    // A LUN appears on T1 while both sessions run.
    let attached = ctl_json(socket, &["lun", "attach", T1, "5", "ram:16M,serial=LIVE5"]);
    assert_eq!(attached["serial"], "LIVE5");
    assert_eq!(attached["size_bytes"], 16 << 20);

    // A new login (libiscsi) sees it, with the identity the attach reported.
    let listing = iscsi_ls(&iscsi_url(portal, None, None)).expect("iscsi-ls");
    let t1 = listing.iter().find(|t| t.iqn == T1).expect("T1 listed");
    assert_eq!(
        t1.luns.iter().map(|l| l.lun).collect::<Vec<_>>(),
        vec![0, 5],
        "iscsi-ls: {listing:?}"
    );
    let serial_page = run_command(
        {
            let mut c = Command::new("iscsi-inq");
            c.args([
                "-e",
                "1",
                "-c",
                "128",
                &iscsi_url(portal, None, Some((T1, 5))),
            ]);
            c
        },
        Duration::from_secs(20),
    );
    assert!(
        String::from_utf8_lossy(&serial_page.stdout).contains("LIVE5"),
        "iscsi-inq unit serial page: {}",
        String::from_utf8_lossy(&serial_page.stdout)
    );
    assert!(inquiry(&iscsi_url(portal, None, Some((T1, 5)))).is_ok());

    // The session that held on gets REPORTED LUNS DATA HAS CHANGED once, then goes on.
    assert_eq!(
        test_unit_ready(&mut one, 0),
        (2, Some((UNIT_ATTENTION, 0x3f, 0x0e)))
    );
    // It was also told at once, with Async Message event 0 carrying the same sense.
    let events = one.take_async_events();
    assert!(
        events.iter().any(|event| matches!(
            event,
            datapath::session::AsyncEvent::Scsi { sense, .. }
                if sense.get(12..14) == Some(&[0x3f, 0x0e][..])
        )),
        "async event 0 with 3F/0E: {events:?}"
    );
    assert_eq!(test_unit_ready(&mut one, 0).0, 0);
    assert_eq!(report_luns(&mut one), vec![0, 5]);
    // REPORT LUNS cleared the condition LUN 5 had too.
    assert_eq!(test_unit_ready(&mut one, 5).0, 0);
    // The session of the other target was not disturbed.
    assert_eq!(test_unit_ready(&mut two, 0), (0, None));

    // Detach: announced again; the LUN is gone for the session.
    ctl_ok(socket, &["lun", "detach", T1, "5"]);
    assert_eq!(
        test_unit_ready(&mut one, 0),
        (2, Some((UNIT_ATTENTION, 0x3f, 0x0e)))
    );
    assert_eq!(report_luns(&mut one), vec![0]);
    assert_eq!(test_unit_ready(&mut two, 0), (0, None));

    // Statistics per LUN count what the session did.
    for lba in 0..20u32 {
        let cdb = Cdb::read_10(lba, 1, 512, false).unwrap();
        let outcome = one
            .execute(Request::new(0, cdb.clone(), vec![0; 512], 0))
            .unwrap();
        assert_eq!(outcome.status, 0);
    }
    let stats = ctl_json(socket, &["lun", "stats", "--target", T1]);
    let lun0 = &stats["luns"][0];
    assert_eq!(
        (lun0["lun"].as_u64(), lun0["reads"].as_u64()),
        (Some(0), Some(20)),
        "{stats}"
    );
    assert_eq!(lun0["read_bytes"], 20 * 512);
    assert!(lun0["latency_us"]["p99"].as_u64().unwrap() >= 1, "{stats}");

    // Sessions are listed, and dropped by the administrator.
    let sessions = ctl_json(socket, &["session", "list"]);
    let sessions = sessions["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions.iter().all(|s| s["initiator"] == HOST));
    let dropped = ctl_json(socket, &["session", "drop", "--target", T2]);
    assert_eq!(dropped["dropped"], 1);
    let cdb = Cdb::test_unit_ready();
    assert!(
        two.execute(Request::new(0, cdb.clone(), Vec::new(), 0))
            .is_err(),
        "a dropped session's connection is closed"
    );
    // An ACL that leaves the host out closes its session on T1.
    ctl_ok(
        socket,
        &[
            "target",
            "acl",
            T1,
            "--allow",
            "iqn.2026-12.test:someone-else",
        ],
    );
    assert!(
        one.execute(Request::new(0, cdb.clone(), Vec::new(), 0))
            .is_err(),
        "a session the ACL no longer allows is closed"
    );
    let listing = iscsi_ls(&iscsi_url(portal, None, None)).expect("iscsi-ls");
    assert!(
        listing.iter().all(|t| t.iqn != T1),
        "T1 is hidden from a host the ACL leaves out: {listing:?}"
    );
    // A portal added live serves logins and SendTargets lists it; removed, it refuses.
    let added = ctl_json(socket, &["portal", "add", "127.0.0.1:0"]);
    let added: SocketAddr = added["address"].as_str().unwrap().parse().unwrap();
    let listing = iscsi_ls(&iscsi_url(added, None, None)).expect("iscsi-ls on the new portal");
    assert!(listing.iter().any(|t| t.iqn == T2), "{listing:?}");
    let portals = ctl_json(socket, &["portal", "list"]);
    assert_eq!(portals["portals"].as_array().unwrap().len(), 2, "{portals}");
    ctl_ok(socket, &["portal", "remove", &added.to_string()]);
    assert!(
        std::net::TcpStream::connect(added).is_err(),
        "a removed portal refuses"
    );
    let mut still = session(portal, T2);
    assert_eq!(
        test_unit_ready(&mut still, 0).0,
        0,
        "the first portal serves on"
    );
    ctl_ok(socket, &["target", "delete", T2]);
    let human = ctl_ok(socket, &["target", "list"]);
    assert!(human.contains(T1) && !human.contains(T2), "{human}");
}

#[test]
fn refusals_name_the_problem_and_a_live_socket_is_not_taken_over() {
    let dir = TempDir::new("gateway-control-errors").unwrap();
    let gateway = start(&dir, loopback(free_port()), &[], "gateway.log");
    let socket = &gateway.socket;
    ctl_ok(socket, &["target", "create", T1]);
    let cases: &[(&[&str], &str)] = &[
        (&["target", "create", T1], "-32002"),
        (&["target", "create", "not-a-name"], "-32602"),
        (&["lun", "attach", T2, "0", "ram:1M"], "-32001"),
        (&["lun", "attach", T1, "0", "tape:1M"], "-32602"),
        (
            &["lun", "attach", T1, "0", "file:/nonexistent/dir/x.img"],
            "-32003",
        ),
        (&["lun", "attach", T1, "99999", "ram:1M"], "-32602"),
        (&["lun", "detach", T1, "3"], "-32001"),
        (
            &["target", "chap", T1, "--user", "u", "--secret", "short"],
            "-32602",
        ),
        (&["call", "volume_create", "{\"name\":\"v\"}"], "-32602"),
    ];
    for (args, code) in cases {
        let output = ctl(socket, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(stderr.contains(code), "{args:?}: {stderr}");
    }
    // Raw protocol errors: not JSON, unknown method, a request over the limit.
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(b"{nope\n").unwrap();
    stream
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"lun_grow\"}\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("-32700"), "{line}");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.contains("-32601") && line.contains("lun_grow"),
        "{line}"
    );
    stream
        .write_all(&vec![b' '; rpc::MAX_REQUEST_BYTES + 10])
        .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("-32600"), "{line}");

    // A second gateway on the same socket path is refused while the first lives.
    let second = run_command(
        {
            let mut c = Command::new(system_tests::gateway_binary());
            c.args([
                "--portal",
                &loopback(free_port()).to_string(),
                "--control-socket",
                &socket.display().to_string(),
            ]);
            c
        },
        Duration::from_secs(20),
    );
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another gateway is listening"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // The first still answers.
    ctl_ok(socket, &["target", "list"]);
}

/// One change of the stream the crash test makes: change `n` (0-based) creates target
/// `n / 2` when even, attaches LUN 0 to it when odd. So the state after `g` changes is
/// known from `g` alone.
fn change(n: u64) -> Call {
    let name = format!("iqn.2026-12.test:crash-{}", n / 2);
    if n.is_multiple_of(2) {
        Call::TargetCreate(rpc::TargetCreate {
            name,
            alias: None,
            allowed_initiators: None,
            chap: None,
            mutual_chap: None,
            luns: Vec::new(),
        })
    } else {
        Call::LunAttach(rpc::LunAttach {
            target: name,
            lun: 0,
            backend: "ram:1M".into(),
        })
    }
}

/// The targets (name, LUN numbers) after `generation` changes of [`change`].
fn expected(generation: u64) -> Vec<(String, Vec<u64>)> {
    let mut targets: Vec<(String, Vec<u64>)> = (0..generation.div_ceil(2))
        .map(|t| {
            let attached = 2 * t + 1 < generation;
            (
                format!("iqn.2026-12.test:crash-{t}"),
                if attached { vec![0] } else { Vec::new() },
            )
        })
        .collect();
    targets.sort();
    targets
}

fn listed(list: &Value) -> Vec<(String, Vec<u64>)> {
    list["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["luns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["lun"].as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn kill_9_during_a_stream_of_changes_leaves_the_last_acknowledged_state_or_the_one_in_flight() {
    let dir = TempDir::new("gateway-control-crash").unwrap();
    let state = dir.join("state");
    let state_text = state.display().to_string();
    let portal = loopback(free_port());
    let mut acknowledged = 0u64;
    // NAA of each LUN as its attach was acknowledged: a restart must bring back the same.
    let mut identities: Vec<(String, Value)> = Vec::new();
    for round in 0..6u64 {
        let gateway = start(
            &dir,
            portal,
            &["--state-dir", &state_text],
            &format!("gateway-{round}.log"),
        );
        let list = ctl_json(&gateway.socket, &["target", "list"]);
        let generation = list["generation"].as_u64().unwrap();
        assert!(
            generation == acknowledged || generation == acknowledged + 1,
            "round {round}: restarted at change {generation}, {acknowledged} were acknowledged"
        );
        assert_eq!(listed(&list), expected(generation), "round {round}: a mix");
        for (target, naa) in &identities {
            let lun = list["targets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == target.as_str())
                .map(|t| t["luns"][0]["naa"].clone());
            assert_eq!(
                lun.as_ref(),
                Some(naa),
                "round {round}: identity of {target}"
            );
        }
        eprintln!(
            "round {round}: restarted at change {generation} ({acknowledged} acknowledged before the kill)"
        );
        acknowledged = generation;
        // Stream changes on one connection; kill -9 lands at a different point each round.
        let socket = gateway.socket.clone();
        let pid = gateway.process.pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20 + 17 * round));
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let stream = UnixStream::connect(&socket).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for n in generation..generation + 10_000 {
            let call = change(n);
            if writer
                .write_all(&rpc::encode_request(n as i64, &call))
                .is_err()
            {
                break;
            }
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                break;
            }
            let result =
                rpc::decode_response(&line).unwrap_or_else(|e| panic!("change {n} refused: {e:?}"));
            acknowledged = n + 1;
            if let Call::LunAttach(p) = &call {
                identities.push((p.target.clone(), result["naa"].clone()));
            }
        }
        killer.join().unwrap();
        drop(gateway);
    }
    assert!(
        acknowledged > 6,
        "changes were acknowledged: {acknowledged}"
    );
}

#[test]
fn changes_to_one_target_do_not_disturb_io_on_another() {
    let dir = TempDir::new("gateway-control-undisturbed").unwrap();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, &[], "gateway.log");
    let socket = gateway.socket.clone();
    ctl_ok(&socket, &["target", "create", T1]);
    ctl_ok(&socket, &["target", "create", T2]);
    ctl_ok(&socket, &["lun", "attach", T2, "0", "ram:8M"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut client = session(portal, T2);
            let (mut good, mut other) = (0u64, Vec::new());
            let mut lba = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cdb = Cdb::read_10(lba % 16_000, 8, 512, false).unwrap();
                match client.execute(Request::new(0, cdb.clone(), vec![0; 4096], 0)) {
                    Ok(outcome) if outcome.status == 0 => good += 1,
                    Ok(outcome) => {
                        other.push(format!("status {:#x} {:?}", outcome.status, outcome.sense))
                    }
                    Err(e) => other.push(e.to_string()),
                }
                lba += 8;
            }
            (good, other)
        })
    };
    // Target T1 changes under the reader's feet, and so do the portals and T1's ACL.
    for round in 0..20 {
        let lun = (round % 4).to_string();
        ctl_ok(&socket, &["lun", "attach", T1, &lun, "ram:1M"]);
        ctl_ok(&socket, &["lun", "detach", T1, &lun]);
    }
    ctl_ok(&socket, &["target", "acl", T1, "--allow", HOST]);
    ctl_ok(&socket, &["target", "delete", T1]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (good, other) = reader.join().unwrap();
    assert!(good > 0, "the reader read");
    assert!(
        other.is_empty(),
        "{} reads went wrong: {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
}

/// READ CAPACITY(16) on `lun`: the number of blocks.
fn capacity_blocks(client: &mut Client, lun: u64) -> u64 {
    let outcome = client
        .execute(Request::new(lun, Cdb::read_capacity_16(32), vec![0; 32], 0))
        .expect("READ CAPACITY(16) gets an answer");
    assert_eq!(outcome.status, 0, "READ CAPACITY(16): {:?}", outcome.sense);
    u64::from_be_bytes(outcome.buffer[..8].try_into().unwrap()) + 1
}

/// `ctl` that must fail; its stderr.
fn ctl_refused(socket: &Path, args: &[&str]) -> String {
    let output = ctl(socket, args);
    assert!(!output.status.success(), "{args:?} must fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn volumes_are_managed_live_exported_grown_with_a_capacity_attention_and_survive_a_restart() {
    let dir = TempDir::new("gateway-control-volumes").unwrap();
    let pool = dir.join("pool.img");
    let p = pool.display().to_string();
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", &p, "256M"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let state = dir.join("state").display().to_string();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-0.log");
    let socket = &gateway.socket;

    let out = ctl_ok(socket, &["volume", "create", "--pool", &p, "vm1", "16M"]);
    assert!(out.contains("volume vm1 created: 16 MiB"), "{out}");
    ctl_ok(socket, &["target", "create", T1]);
    let spec = format!("pool:{p},volume=vm1");
    let attached = ctl_json(socket, &["lun", "attach", T1, "0", &spec]);
    assert_eq!(attached["size_bytes"], 16 << 20);

    // Written through a session: the allocation shows in the list.
    let mut client = session(portal, T1);
    let cdb = Cdb::write_10(0, 16, 512, true).unwrap();
    let outcome = client
        .execute(Request::new(0, cdb, vec![0xa5; 16 * 512], 0))
        .unwrap();
    assert_eq!(outcome.status, 0, "WRITE(10): {:?}", outcome.sense);
    let list = ctl_json(socket, &["volume", "list", "--pool", &p]);
    let vm1 = &list["volumes"][0];
    assert_eq!(
        (vm1["name"].as_str(), vm1["size_bytes"].as_u64()),
        (Some("vm1"), Some(16 << 20))
    );
    assert_eq!(vm1["allocated_bytes"], 8192, "{list}");
    assert_eq!(vm1["chunks"], 1);
    let human = ctl_ok(socket, &["volume", "list"]);
    assert!(human.contains("vm1") && human.contains("8 KiB"), "{human}");

    // Deleting an exported volume is refused by name.
    let refused = ctl_refused(socket, &["volume", "delete", "--pool", &p, "vm1"]);
    assert!(
        refused.contains(&format!("LUN 0 of {T1}")) && refused.contains("-32006"),
        "{refused}"
    );
    for (args, code) in [
        (
            vec!["volume", "create", "--pool", &p, "vm1", "1M"],
            "-32002",
        ),
        (vec!["volume", "grow", "--pool", &p, "vm1", "1M"], "-32602"),
        (vec!["volume", "grow", "--pool", &p, "none", "1G"], "-32001"),
        (
            vec![
                "volume",
                "create",
                "--pool",
                "/nonexistent/p.img",
                "v",
                "1G",
            ],
            "-32003",
        ),
    ] {
        let stderr = ctl_refused(socket, &args);
        assert!(stderr.contains(code), "{args:?}: {stderr}");
    }

    // Grown while exported: the logged-in session gets CAPACITY DATA HAS CHANGED once,
    // and READ CAPACITY shows the new size.
    assert_eq!(capacity_blocks(&mut client, 0), (16 << 20) / 512);
    let out = ctl_ok(socket, &["volume", "grow", "--pool", &p, "vm1", "48M"]);
    assert!(out.contains("grown: 48 MiB"), "{out}");
    assert_eq!(
        test_unit_ready(&mut client, 0),
        (0x02, Some((UNIT_ATTENTION, 0x2a, 0x09)))
    );
    assert_eq!(test_unit_ready(&mut client, 0), (0, None));
    assert_eq!(capacity_blocks(&mut client, 0), (48 << 20) / 512);
    // The grown part takes writes.
    let cdb = Cdb::write_10(((40 << 20) / 512) as u32, 8, 512, true).unwrap();
    let outcome = client
        .execute(Request::new(0, cdb, vec![0x5a; 8 * 512], 0))
        .unwrap();
    assert_eq!(
        outcome.status, 0,
        "WRITE(10) past the old end: {:?}",
        outcome.sense
    );

    let clone = ctl_json(socket, &["volume", "clone", "--pool", &p, "vm1", "vm2"]);
    assert_eq!(clone["size_bytes"], 48 << 20);
    let check = ctl_json(socket, &["volume", "check"]);
    assert_eq!(check["pools"][0]["ok"], true, "{check}");
    assert_eq!(check["pools"][0]["volumes"], 2);
    drop(client);
    let before = ctl_json(socket, &["volume", "list"]);
    drop(gateway);

    // A restart opens the pool again from the state directory and exports the volume at
    // its grown size.
    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-1.log");
    let socket = &gateway.socket;
    assert_eq!(ctl_json(socket, &["volume", "list"]), before);
    let targets = ctl_json(socket, &["target", "list"]);
    assert_eq!(targets["targets"][0]["luns"][0]["size_bytes"], 48 << 20);
    assert_eq!(targets["targets"][0]["luns"][0]["naa"], attached["naa"]);
    ctl_ok(socket, &["lun", "detach", T1, "0"]);
    let out = ctl_ok(socket, &["volume", "delete", "--pool", &p, "vm1"]);
    assert!(out.contains("volume vm1 deleted"), "{out}");
    let list = ctl_json(socket, &["volume", "list", "--pool", &p]);
    assert_eq!(list["volumes"].as_array().map(Vec::len), Some(1));
    assert!(ctl_ok(socket, &["volume", "check"]).contains(": ok, 1 volumes"));
}

/// Issue 16: pools are created, opened, closed and listed over the control plane (no
/// `iscsi-gateway pool create` beside the gateway), durably: a `kill -9` keeps them, a
/// close is refused while a LUN exports one of its volumes, and a closed pool is
/// unlocked (the offline check can open it) and stays closed after a restart.
#[test]
fn pools_are_created_opened_and_closed_over_the_control_plane_durably() {
    let dir = TempDir::new("gateway-control-pools").unwrap();
    let p = dir.join("pool.img").display().to_string();
    let state = dir.join("state").display().to_string();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-0.log");
    let socket = &gateway.socket;

    let out = ctl_ok(socket, &["pool", "create", &p, "128M"]);
    assert!(out.contains("created: 128 MiB"), "{out}");
    for (args, code) in [
        (vec!["pool", "create", &p, "128M"], "-32002"),
        (
            vec!["pool", "create", "/nonexistent/dir/p.img", "128M"],
            "-32003",
        ),
        (vec!["pool", "create", "/tmp/never.img", "12Q"], "-32602"),
        (vec!["pool", "close", "/tmp/never-opened.img"], "-32001"),
    ] {
        let stderr = ctl_refused(socket, &args);
        assert!(stderr.contains(code), "{args:?}: {stderr}");
    }
    ctl_ok(socket, &["volume", "create", "--pool", &p, "vm1", "16M"]);
    ctl_ok(socket, &["target", "create", T1]);
    let spec = format!("pool:{p},volume=vm1");
    ctl_ok(socket, &["lun", "attach", T1, "2", &spec]);
    let mut client = session(portal, T1);
    let cdb = Cdb::write_10(0, 8, 512, true).unwrap();
    let outcome = client
        .execute(Request::new(2, cdb, vec![0x3c; 8 * 512], 0))
        .unwrap();
    assert_eq!(outcome.status, 0, "WRITE(10): {:?}", outcome.sense);
    let refused = ctl_refused(socket, &["pool", "close", &p]);
    assert!(
        refused.contains(&format!("volume vm1 is attached as LUN 2 of {T1}"))
            && refused.contains("-32006"),
        "{refused}"
    );
    drop(client);
    gateway.process.kill_hard();

    // After kill -9 the pool is open again, with its volume exported.
    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-1.log");
    let socket = &gateway.socket;
    let pools = ctl_json(socket, &["pool", "list"]);
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(1), "{pools}");
    assert_eq!(pools["pools"][0]["volumes"], 1, "{pools}");
    assert_eq!(pools["pools"][0]["allocated_bytes"], 4096, "{pools}");
    assert!(ctl_ok(socket, &["pool", "list"]).contains("pool.img"));
    ctl_ok(socket, &["lun", "detach", T1, "2"]);
    let out = ctl_ok(socket, &["pool", "close", &p]);
    assert!(out.contains("closed"), "{out}");
    assert_eq!(
        ctl_json(socket, &["pool", "list"])["pools"],
        Value::Array(vec![])
    );
    // Closed means unlocked: the offline check opens it while the gateway runs.
    let check = Command::new(system_tests::gateway_binary())
        .args(["pool", "check", &p])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "offline check of a closed pool: {check:?}"
    );
    drop(gateway);

    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-2.log");
    let socket = &gateway.socket;
    assert_eq!(
        ctl_json(socket, &["pool", "list"])["pools"],
        Value::Array(vec![])
    );
    let out = ctl_ok(socket, &["pool", "open", &p]);
    assert!(out.contains("opened"), "{out}");
    assert!(ctl_ok(socket, &["pool", "open", &p]).contains("open already"));
    let list = ctl_json(socket, &["volume", "list", "--pool", &p]);
    assert_eq!(list["volumes"][0]["name"], "vm1", "{list}");
}

/// The LUN numbers of `target`, and the volumes of the pools, as a restarted gateway lists
/// them.
fn luns_and_volumes(socket: &Path, target: &str) -> (Vec<u64>, Vec<String>) {
    let list = ctl_json(socket, &["target", "list"]);
    let luns = listed(&list)
        .into_iter()
        .find(|(name, _)| name == target)
        .map(|(_, luns)| luns)
        .unwrap_or_default();
    let volumes = ctl_json(socket, &["volume", "list"]);
    let mut names: Vec<String> = volumes["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    names.sort_by_key(|n| {
        n.trim_start_matches("vm")
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    (luns, names)
}

/// Issue 16: `volume create --attach` is one call and one commit. `kill -9` right after
/// its answer: the restart has the LUN and its volume, once, with the same identity. Then
/// `kill -9` lands at a different point of a stream of such calls each round: after each
/// restart every acknowledged volume is attached (and at most the one in flight more),
/// the pool holds exactly the volumes the LUNs export (never one without the other), and
/// its check passes.
#[test]
fn volume_create_with_attach_survives_kill_9_exactly_once() {
    let dir = TempDir::new("gateway-control-attach").unwrap();
    let p = dir.join("pool.img").display().to_string();
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", &p, "256M"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let state = dir.join("state").display().to_string();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-0.log");
    ctl_ok(&gateway.socket, &["target", "create", T1]);
    let made = ctl_json(
        &gateway.socket,
        &[
            "volume", "create", "--pool", &p, "vm0", "16M", "--attach", T1,
        ],
    );
    assert_eq!(made["lun"], 0, "{made}");
    let human = ctl_ok(
        &gateway.socket,
        &[
            "volume", "create", "--pool", &p, "vm1", "16M", "--attach", T1, "--lun", "1",
        ],
    );
    assert!(
        human.contains("volume vm1 created") && human.contains(&format!("LUN 1 of {T1}")),
        "{human}"
    );
    let stderr = ctl_refused(
        &gateway.socket,
        &[
            "volume", "create", "--pool", &p, "vm2", "16M", "--attach", T1, "--lun", "1",
        ],
    );
    assert!(stderr.contains("-32002"), "{stderr}");
    gateway.process.kill_hard();

    let gateway = start(&dir, portal, &["--state-dir", &state], "gateway-1.log");
    let list = ctl_json(&gateway.socket, &["target", "list"]);
    assert_eq!(list["targets"][0]["luns"][0]["naa"], made["naa"], "{list}");
    assert_eq!(
        luns_and_volumes(&gateway.socket, T1),
        (vec![0, 1], vec!["vm0".to_string(), "vm1".to_string()])
    );
    let mut client = session(portal, T1);
    assert_eq!(capacity_blocks(&mut client, 1), (16 << 20) / 512);
    drop(client);

    let mut acknowledged = 2u64;
    let mut gateway = gateway;
    for round in 0..4u64 {
        let socket = gateway.socket.clone();
        let pid = gateway.process.pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20 + 17 * round));
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let stream = UnixStream::connect(&socket).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let first = acknowledged;
        for n in first..first + 10_000 {
            let call = Call::Volume {
                method: "volume_create".into(),
                params: serde_json::json!({
                    "pool": p, "name": format!("vm{n}"), "size": "1M",
                    "attach": {"target": T1, "lun": n},
                }),
            };
            if writer
                .write_all(&rpc::encode_request(n as i64, &call))
                .is_err()
            {
                break;
            }
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                break;
            }
            rpc::decode_response(&line).unwrap_or_else(|e| panic!("vm{n} refused: {e:?}"));
            acknowledged = n + 1;
        }
        killer.join().unwrap();
        drop(gateway);

        gateway = start(
            &dir,
            portal,
            &["--state-dir", &state],
            &format!("gateway-{}.log", round + 2),
        );
        let (luns, volumes) = luns_and_volumes(&gateway.socket, T1);
        let count = luns.len() as u64;
        assert!(
            count == acknowledged || count == acknowledged + 1,
            "round {round}: {count} LUNs after {acknowledged} acknowledged"
        );
        assert_eq!(luns, (0..count).collect::<Vec<_>>(), "round {round}");
        let expected: Vec<String> = (0..count).map(|n| format!("vm{n}")).collect();
        assert_eq!(volumes, expected, "round {round}: a volume without its LUN");
        let check = ctl_json(&gateway.socket, &["volume", "check"]);
        assert_eq!(check["pools"][0]["ok"], true, "round {round}: {check}");
        eprintln!("round {round}: {count} volumes attached ({acknowledged} acknowledged)");
        acknowledged = count;
    }
    assert!(acknowledged > 4, "calls were acknowledged: {acknowledged}");
}

/// A RAM LUN's memory goes back to the system when it is detached. Its chunks once lived in
/// the allocator's heap, which kept what was freed into it: a detached 2 GiB RAM LUN left
/// the gateway resident at 2.2 GB for good.
#[test]
fn a_detached_ram_lun_gives_its_memory_back_to_the_system() {
    const MIB: u64 = 1 << 20;
    let dir = TempDir::new("gateway-control-ram-back").unwrap();
    let portal = loopback(free_port());
    let gateway = start(&dir, portal, &[], "gateway.log");
    let socket = gateway.socket.clone();
    ctl_ok(&socket, &["target", "create", T1]);
    ctl_ok(&socket, &["lun", "attach", T1, "0", "ram:1M"]);
    ctl_ok(&socket, &["lun", "attach", T1, "1", "ram:256M"]);
    let resident = || gateway.process.memory().expect("gateway memory").rss_kib * 1024;
    let before = resident();
    {
        let mut client = session(portal, T1);
        let chunk = vec![0x5au8; MIB as usize];
        for n in 0..256u32 {
            let cdb = Cdb::write_10(n * 2048, 2048, 512, false).unwrap();
            let outcome = client
                .execute(Request::new(1, cdb, chunk.clone(), 0))
                .expect("WRITE gets an answer");
            assert_eq!(outcome.status, 0, "write {n}: {:?}", outcome.sense);
        }
    }
    let written = resident();
    assert!(
        written >= before + 200 * MIB,
        "256 MiB written, resident {} MiB before and {} MiB after",
        before / MIB,
        written / MIB
    );
    ctl_ok(&socket, &["lun", "detach", T1, "1"]);
    // Bounded: the memory goes back within seconds of the detach or the test fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut now_resident = resident();
    while now_resident > before + 64 * MIB && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now_resident = resident();
    }
    assert!(
        now_resident <= before + 64 * MIB,
        "resident {} MiB after the detach (before the writes {} MiB, after them {} MiB)",
        now_resident / MIB,
        before / MIB,
        written / MIB
    );
}
