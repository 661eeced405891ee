//! Async Messages (RFC 7143 section 11.9; issue 14 item 2) from a scripted target, against
//! one shard carrying a stream of reads (tgt never sends them):
//! - event 0 with 3Fh/0Eh (REPORTED LUNS DATA HAS CHANGED) is counted for the caller;
//! - event 4 is answered with a Text Request, the target's MaxRecvDataSegmentLength taken;
//! - event 1 is a move made before the break: a second session logs in while the first
//!   still holds a command, the first answers it and only then logs out, no read fails;
//! - event 2 drops the connection: the shard waits the target's Time2Wait before it logs
//!   in again, and the reads it held are sent again, none failed.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::client::ClientConfig;
use datapath::pdu::{Header, TextResponse, RESERVED_TAG};
use datapath::scsi::Cdb;
use datapath::session::Request;
use datapath::shard::{ReconnectPolicy, ShardConfig, ShardPool};
use system_tests::fake_target::{send_pdu, serve_login, text_segment, PduReader, Wire};
use system_tests::scsi_io::{CommandPath, OnShard};

const READS: u64 = 240;
const FILL: u8 = 0x5a;
const WINDOW: u32 = 64;
/// The Time2Wait the target gives with event 2.
const TIME2WAIT_SECS: u16 = 1;

/// What the scripted target saw.
#[derive(Debug, Default)]
struct Seen {
    /// When each connection's login completed, by connection index.
    logins: Vec<Instant>,
    /// Connection 0: the second login completed while it still held an unanswered read.
    made_before_break: bool,
    /// Connection 0: a Logout Request arrived, with nothing left unanswered.
    drained_then_logged_out: bool,
    /// Text Requests' data, as text.
    text_requests: Vec<String>,
    /// When connection 1 was dropped (event 2).
    dropped_at: Option<Instant>,
    errors: Vec<String>,
}

/// Fixed-format sense: UNIT ATTENTION, REPORTED LUNS DATA HAS CHANGED.
fn luns_changed_sense() -> Vec<u8> {
    let mut sense = vec![0u8; 18];
    sense[0] = 0x70;
    sense[2] = 0x06;
    sense[7] = 10;
    sense[12] = 0x3f;
    sense[13] = 0x0e;
    let mut segment = (sense.len() as u16).to_be_bytes().to_vec();
    segment.extend_from_slice(&sense);
    segment
}

/// One connection of the scripted target; `index` picks its script.
fn serve(mut stream: TcpStream, index: usize, seen: &Mutex<Seen>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut reader = PduReader::new();
    let numbers = serve_login(&mut stream, &mut reader, 10 + index as u16, WINDOW)?;
    seen.lock().unwrap().logins.push(Instant::now());
    if std::env::var_os("ASYNC_TEST_TRACE").is_some() {
        eprintln!("connection {index}: logged in");
    }
    let mut wire = Wire::new(stream, numbers, WINDOW);
    let mut answered = 0u32;
    loop {
        let (header, data) = match reader.next(&mut wire.stream) {
            Ok(pdu) => pdu,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if std::env::var_os("ASYNC_TEST_TRACE").is_some()
            && !matches!(header, Header::ScsiCommand(_))
        {
            eprintln!("connection {index}: {header:?}");
        }
        match header {
            Header::ScsiCommand(command) => {
                wire.take_command(&command);
                let (itt, len) = (
                    command.initiator_task_tag,
                    command.expected_data_transfer_length,
                );
                answered += 1;
                if std::env::var_os("ASYNC_TEST_TRACE").is_some() {
                    eprintln!(
                        "connection {index}: read {answered} cmd_sn {}",
                        command.cmd_sn
                    );
                }
                match (index, answered) {
                    (0, 10) => {
                        wire.answer_read(itt, len, FILL)?;
                        wire.async_message(0, 0, 0, &luns_changed_sense())?;
                    }
                    (0, 20) => {
                        wire.answer_read(itt, len, FILL)?;
                        wire.async_message(4, 0, 0, &[])?;
                    }
                    (0, 30) => {
                        // Ask for the move while this read is unanswered: the new session
                        // must log in before we answer it.
                        wire.async_message(1, 0, 5, &[])?;
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while seen.lock().unwrap().logins.len() < 2 && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        let mut seen_now = seen.lock().unwrap();
                        seen_now.made_before_break = seen_now.logins.len() >= 2;
                        drop(seen_now);
                        std::thread::sleep(Duration::from_millis(20));
                        wire.answer_read(itt, len, FILL)?;
                    }
                    (1, 10) => {
                        wire.answer_read(itt, len, FILL)?;
                        wire.async_message(2, TIME2WAIT_SECS, 20, &[])?;
                        seen.lock().unwrap().dropped_at = Some(Instant::now());
                        // Give the message time to arrive before the close.
                        std::thread::sleep(Duration::from_millis(50));
                        let _ = wire.stream.shutdown(std::net::Shutdown::Both);
                        return Ok(());
                    }
                    _ => wire.answer_read(itt, len, FILL)?,
                }
            }
            Header::TextRequest(request) => {
                seen.lock()
                    .unwrap()
                    .text_requests
                    .push(String::from_utf8_lossy(&data).into_owned());
                let response = TextResponse {
                    final_pdu: true,
                    continue_: false,
                    lun: [0; 8],
                    initiator_task_tag: request.initiator_task_tag,
                    target_transfer_tag: RESERVED_TAG,
                    stat_sn: wire.stat_sn,
                    exp_cmd_sn: wire.exp_cmd_sn,
                    max_cmd_sn: wire.max_cmd_sn(),
                };
                wire.stat_sn += 1;
                let body = text_segment(&[("MaxRecvDataSegmentLength", "4096")]);
                send_pdu(&mut wire.stream, Header::TextResponse(response), &body)?;
            }
            Header::LogoutRequest(request) => {
                if index == 0 {
                    seen.lock().unwrap().drained_then_logged_out = true;
                }
                wire.answer_logout(&request)?;
                return Ok(());
            }
            Header::NopOut(nop) => wire.answer_nop(&nop, &data)?,
            _ => {}
        }
    }
}

#[test]
fn async_messages_move_drop_and_renegotiate_without_failing_a_read() {
    system_tests::require_tools!("dumpcap", "tshark");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let portal = listener.local_addr().unwrap();
    let capture = system_tests::Capture::start(portal.port());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acceptor = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut servers = Vec::new();
            for index in 0..3 {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                let seen = Arc::clone(&seen);
                servers.push(std::thread::spawn(move || {
                    let result = serve(stream, index, &seen);
                    if std::env::var_os("ASYNC_TEST_TRACE").is_some() {
                        eprintln!("connection {index} ends: {result:?}");
                    }
                    if let Err(e) = result {
                        seen.lock()
                            .unwrap()
                            .errors
                            .push(format!("connection {index}: {e}"));
                    }
                }));
            }
            for server in servers {
                let _ = server.join();
            }
        })
    };

    let mut cc = ClientConfig::new(portal, Some("iqn.2026-12.test:async".into()));
    cc.command_timeout = Duration::from_secs(20);
    cc.nop_interval = Duration::from_secs(60);
    let config = ShardConfig {
        queue_depth: 8,
        reconnect: ReconnectPolicy::new(5, Duration::from_secs(20)),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&cc, 1, &config).expect("pool starts");
    let reads = (0..READS)
        .map(|i| {
            let cdb = Cdb::read(i * 8, 8, 512, false).unwrap();
            Request::new(0, cdb, vec![0; 4096], i)
        })
        .collect();
    let done = OnShard::new(&pool, 0).run_all(reads);
    assert_eq!(done.len(), READS as usize);
    for (i, result) in done {
        let outcome = result.unwrap_or_else(|e| panic!("read {i} failed: {e}"));
        assert_eq!(outcome.status, 0, "read {i}");
        assert!(outcome.buffer.iter().all(|&b| b == FILL), "read {i} data");
    }
    let stats = pool.stats(0).unwrap();
    pool.shutdown();
    acceptor.join().unwrap();
    let pcap = capture.stop();
    assert_eq!(
        system_tests::tshark_iscsi_problems(&pcap, portal.port()),
        Vec::<String>::new(),
        "the events, the move and the drop dissect cleanly"
    );
    let opcodes = system_tests::tshark_iscsi_opcodes(&pcap, portal.port()).expect("tshark");
    assert_eq!(
        opcodes.iter().filter(|&&op| op == 0x32).count(),
        4,
        "four Async Messages on the wire (events 0, 4, 1, 2)"
    );

    let seen = seen.lock().unwrap();
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    assert_eq!(stats.ios_failed, 0, "{stats:?}");
    assert_eq!(stats.luns_changed, 1, "event 0 counted: {stats:?}");
    assert_eq!(stats.async_events, 3, "events 0, 4 and 1: {stats:?}");
    assert_eq!(
        seen.text_requests,
        vec![format!(
            "MaxRecvDataSegmentLength={}\0",
            cc.offer.max_recv_data_segment_length
        )],
        "event 4 answered with a Text Request"
    );
    assert_eq!(stats.moves, 1, "event 1 moved the shard: {stats:?}");
    assert!(
        seen.made_before_break,
        "the new session logged in before the old one let go"
    );
    assert!(
        seen.drained_then_logged_out,
        "the old connection logged out"
    );
    assert_eq!(stats.reconnects, 1, "event 2 recovered: {stats:?}");
    assert_eq!(seen.logins.len(), 3);
    let dropped_at = seen.dropped_at.expect("event 2 sent");
    let waited = seen.logins[2].duration_since(dropped_at);
    assert!(
        waited >= Duration::from_secs(u64::from(TIME2WAIT_SECS)),
        "logged in again {waited:?} after event 2 with Time2Wait {TIME2WAIT_SECS} s"
    );
}
