//! What hosts observe of a control-plane change now that publication does not wait for the
//! event loops (issues 16 and 18): a change that only adds is published and answered, and
//! each loop takes it before it handles the next PDU it receives; a change that removes
//! something still waits for every loop. Judged by our initiator holding sessions (two, so
//! both event loops of the gateway are likely to serve one) through many rounds of attach
//! and detach on the real `iscsi-gateway`, each command sent right after the answer:
//! - a LUN attached is in the REPORT LUNS answered after the RPC's answer, and a command
//!   to it succeeds (after the unit attention the change established);
//! - a LUN detached gets no command after the answer: LOGICAL UNIT NOT SUPPORTED;
//! - a volume bound for the host is reachable by its next command, unbound it is not.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::{Cdb, LunAddress};
use datapath::session::Request;
use serde_json::{json, Value};
use system_tests::loopback;
use system_tests::{free_port, GatewayProcess, TempDir};

const TARGET: &str = "iqn.2026-12.test:publication";
const HOST: &str = "iqn.2026-12.test:publication-host";
/// Attach/detach rounds: each is a chance for a command to overtake the publication.
const ROUNDS: u64 = 20;

const CHECK_CONDITION: u8 = 2;
const UNIT_ATTENTION: u8 = 0x6;
const ILLEGAL_REQUEST: u8 = 0x5;

/// One JSON-RPC connection to the control socket.
struct Rpc {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Rpc {
    fn connect(socket: &Path) -> Rpc {
        let stream = UnixStream::connect(socket).expect("control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Rpc {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            next_id: 1,
        }
    }

    /// The call's result; a refusal fails the test with its message.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let mut line = serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params,
        }))
        .unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).unwrap();
        let mut answer = Vec::new();
        self.reader.read_until(b'\n', &mut answer).unwrap();
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }
}

/// A session with a random ISID: two of them are two nexuses.
fn session(portal: std::net::SocketAddr) -> Client {
    let mut config = ClientConfig::new(portal, Some(TARGET.into()));
    config.initiator_name = HOST.into();
    config.login_timeout = Duration::from_secs(10);
    Client::connect(&config).unwrap_or_else(|e| panic!("login: {e}"))
}

/// TEST UNIT READY on `lun`: the status and, for CHECK CONDITION, (key, ASC, ASCQ).
fn test_unit_ready(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>) {
    let outcome = client
        .execute(Request::new(lun, Cdb::test_unit_ready(), Vec::new(), 0))
        .expect("TEST UNIT READY gets an answer");
    let sense = outcome
        .sense
        .as_ref()
        .filter(|s| s.len() >= 14)
        .map(|s| (s[2] & 0x0f, s[12], s[13]));
    (outcome.status, sense)
}

/// TEST UNIT READY until it reports something other than a unit attention (a change
/// establishes one per nexus; at most a few are pending).
fn test_unit_ready_past_attentions(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>) {
    for _ in 0..4 {
        let answer = test_unit_ready(client, lun);
        if !matches!(answer.1, Some((UNIT_ATTENTION, _, _))) {
            return answer;
        }
    }
    panic!("LUN {lun}: unit attentions do not end");
}

fn report_luns(client: &mut Client) -> Vec<u64> {
    let outcome = client
        .execute(Request::new(0, Cdb::report_luns(0, 4096), vec![0; 4096], 0))
        .expect("REPORT LUNS gets an answer");
    assert_eq!(outcome.status, 0, "REPORT LUNS: {:?}", outcome.sense);
    let data = &outcome.buffer;
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    data[8..8 + len]
        .chunks(8)
        .map(|entry| u64::from(u16::from_be_bytes([entry[0], entry[1]]) & 0x3fff))
        .collect()
}

/// A gateway with two event loops, a control socket and a state directory in `dir`, its
/// portal, and a control-plane client.
fn start_gateway(dir: &TempDir) -> (GatewayProcess, SocketAddr, Rpc) {
    let socket = dir.join("control.sock");
    let socket_text = socket.display().to_string();
    let state = dir.join("state").display().to_string();
    let portal = loopback(free_port());
    let gateway = GatewayProcess::start_with_args(
        portal,
        &[
            "--control-socket",
            &socket_text,
            "--threads",
            "2",
            "--state-dir",
            &state,
        ],
        &dir.join("gateway.log"),
    )
    .unwrap_or_else(|e| panic!("gateway starts: {e}"));
    (gateway, portal, Rpc::connect(&socket))
}

#[test]
fn a_lun_attached_is_seen_by_the_next_command_and_a_detached_one_gets_none_after_the_answer() {
    let dir = TempDir::new("control-publication").unwrap();
    let (_gateway, portal, mut rpc) = start_gateway(&dir);
    rpc.call(
        "target_create",
        json!({ "name": TARGET, "luns": [{ "lun": 0, "backend": "ram:1M" }] }),
    );
    let mut sessions = [session(portal), session(portal)];

    for round in 1..=ROUNDS {
        let lun = round;
        rpc.call(
            "lun_attach",
            json!({ "target": TARGET, "lun": lun, "backend": "ram:1M" }),
        );
        for (n, client) in sessions.iter_mut().enumerate() {
            let listed = report_luns(client);
            assert!(
                listed.contains(&lun),
                "round {round}, session {n}: LUN {lun} attached, REPORT LUNS after the answer lists {listed:?}"
            );
            assert_eq!(
                test_unit_ready_past_attentions(client, lun),
                (0, None),
                "round {round}, session {n}: the new LUN serves"
            );
        }
        rpc.call("lun_detach", json!({ "target": TARGET, "lun": lun }));
        for (n, client) in sessions.iter_mut().enumerate() {
            assert_eq!(
                test_unit_ready_past_attentions(client, lun),
                (CHECK_CONDITION, Some((ILLEGAL_REQUEST, 0x25, 0x00))),
                "round {round}, session {n}: LUN {lun} detached gets no command after the answer"
            );
            assert!(!report_luns(client).contains(&lun));
        }
    }
}

#[test]
fn a_volume_bound_is_reachable_by_the_next_command_and_unbound_is_not() {
    let dir = TempDir::new("control-publication-bind").unwrap();
    let pool = dir.join("pool.img");
    let pool_text = pool.display().to_string();
    let created = std::process::Command::new(system_tests::gateway_binary())
        .args(["pool", "create", &pool_text, "1G"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let (_gateway, portal, mut rpc) = start_gateway(&dir);
    rpc.call(
        "target_create",
        json!({ "name": TARGET, "luns": [{ "lun": 0, "backend": "endpoint" }] }),
    );
    for round in 0..ROUNDS {
        rpc.call(
            "volume_create",
            json!({ "pool": pool_text, "name": format!("v{round}"), "size": "1M" }),
        );
    }
    let mut sessions = [session(portal), session(portal)];
    for round in 0..ROUNDS {
        let answer = rpc.call(
            "bind",
            json!({
                "target": TARGET, "endpoint": 0, "host": HOST, "pool": pool_text,
                "volumes": [format!("v{round}")],
            }),
        );
        let secondary = answer["bindings"][0]["secondary"].as_u64().unwrap();
        let lun = LunAddress::Subsidiary {
            endpoint: 0,
            secondary: u32::try_from(secondary).unwrap(),
        }
        .key();
        for (n, client) in sessions.iter_mut().enumerate() {
            assert_eq!(
                test_unit_ready_past_attentions(client, lun),
                (0, None),
                "round {round}, session {n}: the bound volume serves the next command"
            );
        }
        rpc.call(
            "unbind",
            json!({
                "target": TARGET, "host": HOST, "pool": pool_text,
                "volumes": [format!("v{round}")],
            }),
        );
        for (n, client) in sessions.iter_mut().enumerate() {
            assert_eq!(
                test_unit_ready_past_attentions(client, lun),
                (CHECK_CONDITION, Some((ILLEGAL_REQUEST, 0x25, 0x00))),
                "round {round}, session {n}: unbound, the volume gets no command"
            );
        }
    }
}
