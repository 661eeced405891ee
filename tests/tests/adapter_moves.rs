//! An adapter move whose old session still holds commands at the target's Parameter3
//! (issue 14, what was left): a scripted target asks the session to move (Async Message
//! event 1, Parameter3 = 1 s) and from then on answers nothing on the old connection. The
//! commands it holds there must not fail: at the deadline the old session is cut and they
//! go again on the new one (the dependent path from the shard, the independent adapter
//! inside itself). Reads only: a read sent twice cannot hurt, and every one must come back
//! with the target's data.
//!
//! A second script answers everything but takes its time over the new session's login:
//! the old session must go on carrying reads meanwhile (the independent adapter used to
//! log the new session in on its processor thread, which then served nothing).

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::client::ClientConfig;
use datapath::pdu::Header;
use datapath::scsi::Cdb;
use datapath::session::Request;
use datapath::shard::{queue_pairs_needed, ShardConfig, ShardPool, ShardStats};
use datapath::transport::TransportKind;
use system_tests::fake_target::{serve_login, PduReader, Wire};
use system_tests::scsi_io::{CommandPath, OnShard};

const READS: u64 = 160;
const FILL: u8 = 0xa5;
const WINDOW: u32 = 64;
const QUEUE_DEPTH: usize = 8;
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
    /// When the second connection's login completed.
    second_login_at: Option<Instant>,
    /// When the first connection received each read after it asked for the move.
    received_after_asking: Vec<Instant>,
    errors: Vec<String>,
}

/// How the scripted target treats the move.
#[derive(Debug, Clone, Copy)]
struct Script {
    /// The first connection holds every read after it asked for the move.
    hold: bool,
    /// How long the second connection waits before it answers its login.
    slow_login: Duration,
}

/// One connection: the first answers `MOVE_AT` reads and asks for the move (then holds
/// every read it gets, if the script says so); the others answer everything.
fn serve(
    mut stream: TcpStream,
    index: usize,
    script: Script,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = PduReader::new();
    if index == 1 {
        std::thread::sleep(script.slow_login);
    }
    let numbers = serve_login(&mut stream, &mut reader, 30 + index as u16, WINDOW)?;
    if index == 1 {
        seen.lock().unwrap().second_login_at = Some(Instant::now());
    }
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
                    wire.async_message(1, 0, WITHIN_SECS, &[])?;
                    let mut seen_now = seen.lock().unwrap();
                    seen_now.asked_at = Some(Instant::now());
                    if script.hold {
                        // This read stays unanswered, and every later one.
                        seen_now.held += 1;
                        holding = true;
                        continue;
                    }
                }
                if index == 0 {
                    let mut seen_now = seen.lock().unwrap();
                    if seen_now.asked_at.is_some() {
                        seen_now.received_after_asking.push(Instant::now());
                    }
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

/// Runs `READS` reads on one adapter shard (its queue pair and one to spare) against the
/// scripted target; returns what the target saw, the reads' results and the stats.
fn run_script(transport: TransportKind, script: Script) -> (Seen, ShardStats, u64) {
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
                    if let Err(e) = serve(stream, i, script, &seen) {
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
        queue_depth: QUEUE_DEPTH,
        // Two queue pairs: the shard's and one to spare for the move.
        path: offload::model_path(transport, queue_pairs_needed(1, 1)),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&cc, 1, &config).expect("the adapter shard logs in");
    // Rounds of `READS` reads until the new session is in (a slow login outlasts one
    // round), bounded in count and time.
    let mut done = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    for round in 0..100u64 {
        let reads = (0..READS)
            .map(|i| {
                let cdb = Cdb::read(i * 8, 8, 512, false).unwrap();
                Request::new(0, cdb, vec![0; 4096], round * READS + i)
            })
            .collect();
        done.extend(OnShard::new(&pool, 0).run_all(reads));
        if seen.lock().unwrap().second_login_at.is_some() || Instant::now() >= until {
            break;
        }
    }
    let stats = pool.stats(0).unwrap();
    pool.shutdown();
    acceptor.join().unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "{transport} {script:?}: {} reads; received {:?}, held {}, after asking {}; {stats:?}",
        done.len(),
        seen.received,
        seen.held,
        seen.received_after_asking.len()
    );
    assert!(seen.errors.is_empty(), "{transport}: {:?}", seen.errors);
    assert_eq!(done.len() % READS as usize, 0);
    let done_len = done.len();
    for (i, result) in done {
        let outcome = result.unwrap_or_else(|e| panic!("{transport}: read {i} failed: {e}"));
        assert_eq!(outcome.status, 0, "{transport}: read {i}");
        assert!(
            outcome.buffer.iter().all(|&b| b == FILL),
            "{transport}: read {i} data"
        );
    }
    assert_eq!(stats.ios_failed, 0, "{transport}: {stats:?}");
    let total = done_len as u64;
    (seen, stats, total)
}

fn held_past_parameter3_go_again(transport: TransportKind) {
    let script = Script {
        hold: true,
        slow_login: Duration::ZERO,
    };
    let (seen, stats, total) = run_script(transport, script);
    assert!(
        seen.held >= 1,
        "{transport}: the old connection held reads: {seen:?}"
    );
    // Every held read went again on the new session: each read was received once, and
    // the held ones twice.
    let received: u32 = seen.received.iter().sum();
    assert_eq!(
        u64::from(received),
        total + u64::from(seen.held),
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

/// The new session's login takes `SLOW_LOGIN`; the old one goes on carrying reads
/// meanwhile (make before break, with no pause), and none fails.
fn io_goes_on_while_the_new_session_logs_in(transport: TransportKind) {
    const SLOW_LOGIN: Duration = Duration::from_millis(400);
    let script = Script {
        hold: false,
        slow_login: SLOW_LOGIN,
    };
    let (seen, _, _) = run_script(transport, script);
    let asked = seen.asked_at.expect("the move was asked for");
    let in_at = seen.second_login_at.expect("the new session logged in");
    // Reads the old session was sent while the new one logged in: more than the queue
    // depth (what was in flight when the move was asked for) means new commands kept
    // going to it. A processor blocked in the login sends none.
    let during = seen
        .received_after_asking
        .iter()
        .filter(|&&at| at > asked && at < in_at)
        .count();
    eprintln!(
        "{transport}: {during} reads went to the old session during the new one's {:?} login",
        in_at.duration_since(asked)
    );
    assert!(
        during > QUEUE_DEPTH,
        "{transport}: only {during} reads went to the old session during the new one's {:?} login",
        in_at.duration_since(asked)
    );
}

#[test]
fn a_dependent_adapter_carries_io_while_a_moves_new_session_logs_in() {
    io_goes_on_while_the_new_session_logs_in(TransportKind::Dependent);
}

#[test]
fn an_independent_adapter_carries_io_while_a_moves_new_session_logs_in() {
    io_goes_on_while_the_new_session_logs_in(TransportKind::Independent);
}
