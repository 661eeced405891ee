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
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use datapath::client::Client;
use datapath::scsi::{Cdb, LunAddress};
use datapath::session::Request;
use serde_json::{json, Value};
use system_tests::endpoint_fixture::{
    past_attentions, EndpointGateway, EndpointSpec, ILLEGAL_REQUEST,
};

const TARGET: &str = "iqn.2026-12.test:publication";
const HOST: &str = "iqn.2026-12.test:publication-host";
/// Attach/detach rounds: each is a chance for a command to overtake the publication.
const ROUNDS: u64 = 20;

const CHECK_CONDITION: u8 = 2;

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

/// A gateway with two event loops, a control socket and a state directory, a pool, an
/// endpoint at LUN 0 and `volumes` of 1 MiB; and a control-plane client.
fn start_gateway(volumes: &[&str]) -> (EndpointGateway, Rpc) {
    let gateway = EndpointSpec::new(TARGET)
        .pool_size("1G")
        .volumes(volumes, "1M")
        .state_dir()
        .start();
    let rpc = Rpc::connect(&gateway.socket);
    (gateway, rpc)
}

#[test]
fn a_lun_attached_is_seen_by_the_next_command_and_a_detached_one_gets_none_after_the_answer() {
    let (gateway, mut rpc) = start_gateway(&[]);
    let mut sessions = [gateway.session(HOST, None), gateway.session(HOST, None)];

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
                past_attentions(client, lun),
                (0, None),
                "round {round}, session {n}: the new LUN serves"
            );
        }
        rpc.call("lun_detach", json!({ "target": TARGET, "lun": lun }));
        for (n, client) in sessions.iter_mut().enumerate() {
            assert_eq!(
                past_attentions(client, lun),
                (CHECK_CONDITION, Some((ILLEGAL_REQUEST, 0x25, 0x00))),
                "round {round}, session {n}: LUN {lun} detached gets no command after the answer"
            );
            assert!(!report_luns(client).contains(&lun));
        }
    }
}

#[test]
fn a_volume_bound_is_reachable_by_the_next_command_and_unbound_is_not() {
    let names: Vec<String> = (0..ROUNDS).map(|round| format!("v{round}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (gateway, mut rpc) = start_gateway(&names);
    let pool_text = gateway.pool.clone();
    let mut sessions = [gateway.session(HOST, None), gateway.session(HOST, None)];
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
                past_attentions(client, lun),
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
                past_attentions(client, lun),
                (CHECK_CONDITION, Some((ILLEGAL_REQUEST, 0x25, 0x00))),
                "round {round}, session {n}: unbound, the volume gets no command"
            );
        }
    }
}

/// The longest an idle event loop sleeps before it looks again by itself
/// (`event_loop::MAX_WAIT`).
const LOOP_MAX_SLEEP: Duration = Duration::from_millis(500);

/// A change that must reach every loop wakes the loops that sleep: with no session, both
/// loops of the gateway are parked, and an unbind (which waits for every loop) is
/// answered without waiting for them to wake by themselves. Were the publication's
/// wake-up lost (a loop that never says it is parked), each unbind would wait for the
/// rest of a loop's sleep, on average a third of `LOOP_MAX_SLEEP` or more with two
/// loops: 20 unbinds would take several seconds, not the milliseconds they take.
#[test]
fn a_change_that_waits_for_every_loop_wakes_the_loops_that_sleep() {
    let names: Vec<String> = (0..ROUNDS).map(|round| format!("p{round}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (gateway, mut rpc) = start_gateway(&names);
    let pool_text = gateway.pool.clone();
    let mut unbinding = Duration::ZERO;
    for name in &names {
        rpc.call(
            "bind",
            json!({
                "target": TARGET, "endpoint": 0, "host": HOST, "pool": pool_text,
                "volumes": [name],
            }),
        );
        // Long enough for both loops to be asleep again.
        std::thread::sleep(Duration::from_millis(20));
        let started = std::time::Instant::now();
        rpc.call(
            "unbind",
            json!({ "target": TARGET, "host": HOST, "pool": pool_text, "volumes": [name] }),
        );
        unbinding += started.elapsed();
    }
    let budget = LOOP_MAX_SLEEP * ROUNDS as u32 / 4;
    assert!(
        unbinding < budget,
        "{ROUNDS} unbinds took {unbinding:?} (budget {budget:?}): the sleeping loops were not woken"
    );
}
