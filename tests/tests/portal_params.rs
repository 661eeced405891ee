//! Issue 15: operational limits changed live (`iscsi-ctl gateway params set`). New logins
//! get the new offer; every session gets Async Message event 4 and our initiator declares
//! again with a Text Request, learning the target's new MaxRecvDataSegmentLength from the
//! answer; libiscsi's `iscsi-perf` runs through it without an error; tshark dissects the
//! exchange with no malformed PDU. The setting is kept in the state directory.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::{AsyncEvent, Request};
use system_tests::capture::tshark_fields;
use system_tests::gateway_ctl::{ctl, ctl_json};
use system_tests::gateway_process::GatewayProcess;
use system_tests::libiscsi::iscsi_url;
use system_tests::{
    free_port, loopback, require_tools, tshark_iscsi_key_values, tshark_iscsi_problems, Capture,
    TempDir,
};

const IQN: &str = "iqn.2026-12.test:params";

fn start(dir: &TempDir, portal: SocketAddr) -> GatewayProcess {
    let (socket, state) = (
        dir.join("control.sock").display().to_string(),
        dir.join("state").display().to_string(),
    );
    let args = [
        "--control-socket",
        &socket,
        "--state-dir",
        &state,
        "--iqn",
        IQN,
        "--lun",
        "ram:64M",
    ];
    GatewayProcess::start_with_args(portal, &args, &dir.join("gateway.log"))
        .unwrap_or_else(|e| panic!("gateway starts: {e}"))
}

fn target_max_recv(client: &Client) -> u32 {
    client
        .params()
        .expect("software path")
        .target_max_recv_data_segment_length
}

#[test]
fn a_live_limit_change_sends_event_4_and_sessions_renegotiate() {
    require_tools!("iscsi-perf", "dumpcap", "tshark");
    let dir = TempDir::new("portal-params").unwrap();
    let socket = dir.join("control.sock");
    let portal = loopback(free_port());
    let gateway = start(&dir, portal);

    let config = ClientConfig::new(portal, Some(IQN.into()));
    let mut client = Client::connect(&config).expect("login");
    assert_eq!(target_max_recv(&client), 262_144);
    let perf = Command::new("iscsi-perf")
        // One request in flight: enough to run through the change, and a capture
        // tshark reads in a second or two.
        .args([
            "-m",
            "1",
            "-t",
            "3",
            &iscsi_url(portal, None, Some((IQN, 0))),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iscsi-perf starts");
    // iscsi-perf logged in: two sessions.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctl_json(&socket, &["session", "list"])["sessions"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "iscsi-perf did not log in");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Refused values name what was wrong and change nothing.
    let refused = ctl(
        &socket,
        &["params", "set", "--max-recv-data-segment-length", "100"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("max_recv_data_segment_length 100"));
    let refused = ctl(
        &socket,
        &[
            "params",
            "set",
            "--first-burst-length",
            "65536",
            "--max-burst-length",
            "8192",
        ],
    );
    assert!(!refused.status.success());

    // Captured from just before the change to the end of the renegotiation: a short
    // capture, which tshark reads in a moment.
    let capture = Capture::start(portal.port());
    let answer = ctl_json(
        &socket,
        &[
            "params",
            "set",
            "--max-recv-data-segment-length",
            "65536",
            "--max-burst-length",
            "131072",
            "--first-burst-length",
            "65536",
        ],
    );
    assert_eq!(answer["max_recv_data_segment_length"], 65536, "{answer}");
    assert_eq!(answer["asked"], 2, "{answer}");

    // Our initiator reads event 4 with its next command, declares again, and takes the
    // target's new limit from the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while target_max_recv(&client) != 65536 {
        assert!(Instant::now() < deadline, "no renegotiation: {events:?}");
        let outcome = client
            .execute(Request::new(0, Cdb::test_unit_ready(), Vec::new(), 0))
            .expect("TEST UNIT READY");
        assert_eq!(outcome.status, 0);
        events.extend(client.take_async_events());
        std::thread::sleep(Duration::from_millis(50));
    }
    events.extend(client.take_async_events());
    // iscsi-perf's session gets its event 4 too, and answers.
    std::thread::sleep(Duration::from_millis(300));
    let pcap = capture.stop();
    assert!(
        events.iter().any(|e| matches!(e, AsyncEvent::Renegotiate)),
        "{events:?}"
    );
    // A write of 256 KiB now goes out in PDUs of at most 64 KiB, and reads back intact.
    let data: Vec<u8> = (0..256 << 10).map(|i: u32| (i % 253) as u8).collect();
    let blocks = (data.len() / 512) as u16;
    let write = Cdb::write_10(64, blocks, 512, false).unwrap();
    let outcome = client
        .execute(Request::new(0, write, data.clone(), 0))
        .expect("WRITE");
    assert_eq!(outcome.status, 0);
    let read = Cdb::read_10(64, blocks, 512, false).unwrap();
    let outcome = client
        .execute(Request::new(0, read, vec![0; data.len()], 0))
        .expect("READ");
    assert_eq!(outcome.status, 0);
    assert!(outcome.buffer == data, "data read back differs");
    // A new login is offered the new limits.
    let fresh = Client::connect(&config).expect("second login");
    assert_eq!(target_max_recv(&fresh), 65536);
    assert_eq!(fresh.params().unwrap().max_burst_length, 131_072);
    drop(fresh);

    let output = perf.wait_with_output().expect("iscsi-perf ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("finished"),
        "{text}"
    );
    for word in ["failed", "error", "Error"] {
        assert!(!text.contains(word), "iscsi-perf reported {word:?}: {text}");
    }
    drop(client);
    assert_eq!(
        tshark_iscsi_problems(&pcap, portal.port()),
        Vec::<String>::new()
    );
    let async_events = tshark_fields(
        &pcap,
        portal.port(),
        &format!("tcp.port == {} && iscsi.opcode == 0x32", portal.port()),
        &["iscsi.asyncevent"],
    )
    .expect("tshark");
    let fours = async_events
        .iter()
        .flatten()
        .flatten()
        .filter(|v| v.trim_start_matches("0x").trim_start_matches('0') == "4")
        .count();
    assert!(fours >= 2, "event 4 to both sessions: {async_events:?}");
    let answers = tshark_iscsi_key_values(&pcap, portal.port(), 0x24).expect("tshark");
    assert!(
        answers.contains(&"MaxRecvDataSegmentLength=65536".to_string()),
        "{answers:?}"
    );

    // Kept: after a restart new logins still get 64 KiB.
    drop(gateway);
    let _gateway = start(&dir, portal);
    let again = Client::connect(&config).expect("login after the restart");
    assert_eq!(target_max_recv(&again), 65536);
}
