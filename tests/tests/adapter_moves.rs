//! An adapter move whose old session still holds commands at the target's Parameter3
//! (issue 14, what was left): a scripted target asks the session to move (Async Message
//! event 1, Parameter3 = 1 s) and from then on answers nothing on the old connection. The
//! commands it holds there must not fail: at the deadline the old session is cut and they
//! go again on the new one (the dependent path from the shard, the independent adapter
//! inside itself). Reads only: a read sent twice cannot hurt, and every one must come back
//! with the target's data.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::client::ClientConfig;
use datapath::pdu::Header;
use datapath::scsi::Cdb;
use datapath::session::Request;
use datapath::shard::{queue_pairs_needed, ShardConfig, ShardPool};
use datapath::transport::TransportKind;
use system_tests::fake_target::{serve_login, PduReader, Wire};
use system_tests::scsi_io::{CommandPath, OnShard};

const READS: u64 = 160;
const FILL: u8 = 0xa5;
const WINDOW: u32 = 64;
/// The read on the first connection after which the target asks for the move.
const MOVE_AT: u32 = 20;
/// Parameter3: the seconds the old session has to log out.
const WITHIN_SECS: u16 = 1;

/// What the scripted target saw.
#[derive(Debug, Default)]
struct Seen {
    /// Reads received on each connection, by connection index.
    received: Vec<u32>,
    /// Reads the first connection received after it asked for the move, never answered.
    held: u32,
    /// When the move was asked for, and when the first connection ended.
    asked_at: Option<Instant>,
    cut_at: Option<Instant>,
    errors: Vec<String>,
}

/// One connection: the first answers `MOVE_AT` reads, asks for the move and then holds
/// every read it gets; the others answer everything.
fn serve(mut stream: TcpStream, index: usize, seen: &Mutex<Seen>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = PduReader::new();
    let numbers = serve_login(&mut stream, &mut reader, 30 + index as u16, WINDOW)?;
    let mut wire = Wire::new(stream, numbers, WINDOW);
    let mut received = 0u32;
    let mut holding = false;
    loop {
        let (header, data) = match reader.next(&mut wire.stream) {
            Ok(pdu) => pdu,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                if index == 0 {
                    seen.lock().unwrap().cut_at = Some(Instant::now());
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match header {
            Header::ScsiCommand(command) => {
                wire.take_command(&command);
                received += 1;
                let mut seen_now = seen.lock().unwrap();
                seen_now.received[index] = received;
                if holding {
                    seen_now.held += 1;
                    continue;
                }
                drop(seen_now);
                let (itt, len) = (
                    command.initiator_task_tag,
                    command.expected_data_transfer_length,
                );
                if index == 0 && received == MOVE_AT {
                    // Ask for the move with this read unanswered, and never answer it.
                    wire.async_message(1, 0, WITHIN_SECS, &[])?;
                    let mut seen_now = seen.lock().unwrap();
                    seen_now.asked_at = Some(Instant::now());
                    seen_now.held += 1;
                    holding = true;
                    continue;
                }
                wire.answer_read(itt, len, FILL)?;
            }
            Header::LogoutRequest(request) => {
                wire.answer_logout(&request)?;
                return Ok(());
            }
            Header::NopOut(nop) => wire.answer_nop(&nop, &data)?,
            _ => {}
        }
    }
}

fn held_past_parameter3_go_again(transport: TransportKind) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let portal = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen {
        received: vec![0; 4],
        ..Seen::default()
    }));
    let acceptor = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut servers = Vec::new();
            // The first session, the move's; a third only if something went wrong.
            listener.set_nonblocking(true).unwrap();
            let until = Instant::now() + Duration::from_secs(30);
            let mut index = 0;
            while index < 3 && Instant::now() < until {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if index >= 2
                            && servers
                                .iter()
                                .all(|s: &std::thread::JoinHandle<()>| s.is_finished())
                        {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                stream.set_nonblocking(false).unwrap();
                let seen = Arc::clone(&seen);
                let i = index;
                servers.push(std::thread::spawn(move || {
                    if let Err(e) = serve(stream, i, &seen) {
                        seen.lock()
                            .unwrap()
                            .errors
                            .push(format!("connection {i}: {e}"));
                    }
                }));
                index += 1;
            }
            for server in servers {
                let _ = server.join();
            }
        })
    };

    let mut cc = ClientConfig::new(portal, Some("iqn.2026-12.test:adapter-moves".into()));
    cc.command_timeout = Duration::from_secs(20);
    let config = ShardConfig {
        queue_depth: 8,
        // Two queue pairs: the shard's and one to spare for the move.
        path: offload::model_path(transport, queue_pairs_needed(1, 1)),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&cc, 1, &config).expect("the adapter shard logs in");
    let reads = (0..READS)
        .map(|i| {
            let cdb = Cdb::read(i * 8, 8, 512, false).unwrap();
            Request::new(0, cdb, vec![0; 4096], i)
        })
        .collect();
    let done = OnShard::new(&pool, 0).run_all(reads);
    let stats = pool.stats(0).unwrap();
    pool.shutdown();
    acceptor.join().unwrap();

    let seen = seen.lock().unwrap();
    eprintln!("{transport}: {seen:?}; {stats:?}");
    assert!(seen.errors.is_empty(), "{transport}: {:?}", seen.errors);
    assert_eq!(done.len(), READS as usize);
    for (i, result) in done {
        let outcome = result.unwrap_or_else(|e| panic!("{transport}: read {i} failed: {e}"));
        assert_eq!(outcome.status, 0, "{transport}: read {i}");
        assert!(
            outcome.buffer.iter().all(|&b| b == FILL),
            "{transport}: read {i} data"
        );
    }
    assert_eq!(stats.ios_failed, 0, "{transport}: {stats:?}");
    assert!(
        seen.held >= 1,
        "{transport}: the old connection held reads: {seen:?}"
    );
    // Every held read went again on the new session: each read was received once, and
    // the held ones twice.
    let received: u32 = seen.received.iter().sum();
    assert_eq!(
        u64::from(received),
        READS + u64::from(seen.held),
        "{transport}: {seen:?}"
    );
    assert!(
        seen.received[1] > 0,
        "{transport}: a second session: {seen:?}"
    );
    // They were cut at the target's deadline, not before.
    let (asked, cut) = (
        seen.asked_at.unwrap(),
        seen.cut_at.expect("the old connection was cut"),
    );
    assert!(
        cut.duration_since(asked)
            >= Duration::from_secs(u64::from(WITHIN_SECS)) - Duration::from_millis(50),
        "{transport}: cut {:?} after the request",
        cut.duration_since(asked)
    );
    if transport == TransportKind::Dependent {
        assert_eq!(stats.moves, 1, "{stats:?}");
        assert_eq!(
            stats.commands_resent,
            u64::from(seen.held),
            "the host sent the held reads again: {stats:?}"
        );
    }
}

#[test]
fn a_dependent_adapter_move_sends_again_what_the_old_session_held_at_parameter3() {
    held_past_parameter3_go_again(TransportKind::Dependent);
}

#[test]
fn an_independent_adapter_move_sends_again_what_the_old_session_held_at_parameter3() {
    held_past_parameter3_go_again(TransportKind::Independent);
}
