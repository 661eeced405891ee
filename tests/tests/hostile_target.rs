//! A scripted fake target that logs in properly and then misbehaves in one chosen way.
//! Each case checks that our client ends the command within its timeout with an error
//! that names the fault, and never hands back wrong data as good.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig, ClientError};
use datapath::pdu::{self, DataIn, Digests, Header, Limits, LoginStage, ScsiResponse};
use datapath::scsi::Cdb;
use datapath::session::Request;
use datapath::text::{self, Negotiation, OperationalOffer, Role, TextLimits};
use system_tests::fake_target::accept_login;

const IQN: &str = "iqn.2026-11.test:hostile";

/// What the fake target does with the first SCSI command after login.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Never answers.
    Silent,
    /// Answers with Data-In for a task tag it never received.
    UnknownTaskTag,
    /// Data-In whose offset lies past the end of the command's buffer.
    OffsetOutsideBuffer,
    /// A header announcing a data segment far over the negotiated limit.
    OversizedSegment,
    /// Half a header, then the connection closes.
    Truncated,
    /// A header with an opcode RFC 7143 does not define.
    UnknownOpcode,
    /// GOOD status for a read, with no data and no residual.
    GoodWithoutData,
    /// Plays fair: one Data-In with the status, so the harness itself is checked.
    Honest,
    /// Never answers the first command, but answers ABORT TASK with "function complete"
    /// and later commands fairly (a target that lost one command, not the connection).
    SilentUntilAborted,
}

struct FakeTarget {
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl FakeTarget {
    fn start(misbehaviour: Misbehaviour, login_garbage: bool) -> FakeTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let thread = std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let _ = serve(&mut stream, misbehaviour, login_garbage);
            // Keep the socket open briefly so "silent" really is silent, not a close.
            if matches!(misbehaviour, Misbehaviour::Silent) {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        FakeTarget {
            addr,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_pdu(stream: &mut TcpStream, digests: Digests) -> std::io::Result<(Header, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(decoded)) = pdu::decode_pdu(&buf, digests, &Limits::default()) {
            let data = buf[decoded.data.clone()].to_vec();
            // A test target reads one PDU at a time; initiators here send one at a time.
            return Ok((decoded.header, data));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn write_pdu(stream: &mut TcpStream, header: &Header, data: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::new();
    pdu::encode_pdu(header, data, Digests::default(), &mut out).expect("encode");
    stream.write_all(&out)
}

fn serve(
    stream: &mut TcpStream,
    misbehaviour: Misbehaviour,
    login_garbage: bool,
) -> std::io::Result<()> {
    let mut negotiation = Negotiation::new(Role::Target, OperationalOffer::default());
    let mut stat_sn = 1u32;
    loop {
        let (header, data) = read_pdu(stream, Digests::default())?;
        let Header::LoginRequest(request) = header else {
            return Ok(());
        };
        let pairs = text::parse_pairs(&data, &TextLimits::default()).unwrap_or_default();
        let mut replies = Vec::new();
        let operational: Vec<_> = pairs
            .iter()
            .filter(|(k, _)| text::is_operational_key(k))
            .cloned()
            .collect();
        if request.current_stage == LoginStage::SecurityNegotiation
            && pairs.iter().any(|(k, _)| k == "AuthMethod")
        {
            replies.push(("AuthMethod".to_string(), "None".to_string()));
        }
        replies.extend(
            negotiation
                .handle_peer_pairs(&operational)
                .unwrap_or_default(),
        );
        let mut body = Vec::new();
        if login_garbage {
            body.extend_from_slice(b"\xff\xfe=garbage-without-utf8\0=\0");
        } else {
            text::encode_pairs(&replies, &mut body);
        }
        let last = request.transit && request.next_stage == LoginStage::FullFeaturePhase;
        let response = accept_login(&request, 7, stat_sn, request.cmd_sn.wrapping_add(31));
        stat_sn += 1;
        write_pdu(stream, &Header::LoginResponse(response), &body)?;
        if last || login_garbage {
            break;
        }
    }
    if login_garbage {
        std::thread::sleep(Duration::from_millis(500));
        return Ok(());
    }
    let (header, _) = read_pdu(stream, Digests::default())?;
    let Header::ScsiCommand(command) = header else {
        return Ok(());
    };
    let itt = command.initiator_task_tag;
    let len = command.expected_data_transfer_length;
    let data_in = |tag: u32, offset: u32, status: Option<u8>| DataIn {
        final_pdu: true,
        acknowledge: false,
        overflow: false,
        underflow: false,
        status,
        lun: [0; 8],
        initiator_task_tag: tag,
        target_transfer_tag: pdu::RESERVED_TAG,
        stat_sn,
        exp_cmd_sn: command.cmd_sn.wrapping_add(1),
        max_cmd_sn: command.cmd_sn.wrapping_add(32),
        data_sn: 0,
        buffer_offset: offset,
        residual_count: 0,
    };
    match misbehaviour {
        Misbehaviour::Silent => {}
        Misbehaviour::UnknownTaskTag => write_pdu(
            stream,
            &Header::DataIn(data_in(itt.wrapping_add(1000), 0, Some(0))),
            &vec![0xaa; len as usize],
        )?,
        Misbehaviour::OffsetOutsideBuffer => write_pdu(
            stream,
            &Header::DataIn(data_in(itt, len, Some(0))),
            &[0xbb; 512],
        )?,
        Misbehaviour::OversizedSegment => {
            let mut bhs = [0u8; 48];
            bhs[0] = 0x25;
            bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xf0]);
            bhs[16..20].copy_from_slice(&itt.to_be_bytes());
            stream.write_all(&bhs)?;
        }
        Misbehaviour::Truncated => {
            let mut out = Vec::new();
            pdu::encode_pdu(
                &Header::DataIn(data_in(itt, 0, Some(0))),
                &[],
                Digests::default(),
                &mut out,
            )
            .expect("encode");
            stream.write_all(&out[..20])?;
            stream.shutdown(std::net::Shutdown::Both)?;
        }
        Misbehaviour::UnknownOpcode => {
            let mut bhs = [0u8; 48];
            bhs[0] = 0x3a;
            bhs[16..20].copy_from_slice(&itt.to_be_bytes());
            stream.write_all(&bhs)?;
        }
        Misbehaviour::GoodWithoutData => {
            let response = ScsiResponse {
                bidi_read_overflow: false,
                bidi_read_underflow: false,
                overflow: false,
                underflow: false,
                response: 0,
                status: 0,
                initiator_task_tag: itt,
                snack_tag: 0,
                stat_sn,
                exp_cmd_sn: command.cmd_sn.wrapping_add(1),
                max_cmd_sn: command.cmd_sn.wrapping_add(32),
                exp_data_sn: 0,
                bidi_read_residual_count: 0,
                residual_count: 0,
            };
            write_pdu(stream, &Header::ScsiResponse(response), &[])?;
        }
        Misbehaviour::Honest => write_pdu(
            stream,
            &Header::DataIn(data_in(itt, 0, Some(0))),
            &vec![0x5a; len as usize],
        )?,
        Misbehaviour::SilentUntilAborted => {
            return answer_all_but_the_first(stream, stat_sn, command.cmd_sn);
        }
    }
    // Hold the connection open until the client gives up on it.
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// After a first command left unanswered: answers ABORT TASK with "function complete" and
/// every later read fairly, until the initiator leaves (bounded by the read timeout).
fn answer_all_but_the_first(
    stream: &mut TcpStream,
    mut stat_sn: u32,
    mut exp_cmd_sn: u32,
) -> std::io::Result<()> {
    exp_cmd_sn = exp_cmd_sn.wrapping_add(1);
    for _ in 0..64 {
        let (header, _) = read_pdu(stream, Digests::default())?;
        match header {
            Header::TaskMgmtRequest(request) => {
                let response = pdu::TaskMgmtResponse {
                    response: 0,
                    initiator_task_tag: request.initiator_task_tag,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn: exp_cmd_sn.wrapping_add(31),
                };
                stat_sn = stat_sn.wrapping_add(1);
                write_pdu(stream, &Header::TaskMgmtResponse(response), &[])?;
            }
            Header::ScsiCommand(command) => {
                exp_cmd_sn = command.cmd_sn.wrapping_add(1);
                let data_in = DataIn {
                    final_pdu: true,
                    acknowledge: false,
                    overflow: false,
                    underflow: false,
                    status: Some(0),
                    lun: [0; 8],
                    initiator_task_tag: command.initiator_task_tag,
                    target_transfer_tag: pdu::RESERVED_TAG,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn: exp_cmd_sn.wrapping_add(31),
                    data_sn: 0,
                    buffer_offset: 0,
                    residual_count: 0,
                };
                stat_sn = stat_sn.wrapping_add(1);
                let len = command.expected_data_transfer_length as usize;
                write_pdu(stream, &Header::DataIn(data_in), &vec![0x5a; len])?;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn config(addr: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(addr, Some(IQN.to_string()));
    config.login_timeout = Duration::from_secs(2);
    config.command_timeout = Duration::from_secs(1);
    config.nop_interval = Duration::from_secs(30);
    config
}

/// Logs in, reads 4 KiB from LUN 0, returns the outcome and how long the read took.
fn read_4k(misbehaviour: Misbehaviour) -> (Result<Vec<u8>, String>, Duration) {
    let target = FakeTarget::start(misbehaviour, false);
    let mut client = Client::connect(&config(target.addr)).expect("the fake target logs in fairly");
    let started = Instant::now();
    let cdb = Cdb::read_10(0, 8, 512, false).expect("READ(10)");
    let result = client.execute(Request::new(0, cdb, vec![0; 4096], 0));
    let elapsed = started.elapsed();
    let result = match result {
        Ok(outcome) if outcome.status == 0 => Ok(outcome.buffer),
        Ok(outcome) => Err(format!("status 0x{:02x}", outcome.status)),
        Err(error) => Err(error.to_string()),
    };
    drop(client);
    (result, elapsed)
}

fn assert_fails_naming(misbehaviour: Misbehaviour, words: &[&str]) {
    let (result, elapsed) = read_4k(misbehaviour);
    let message = match result {
        Ok(_) => panic!("{misbehaviour:?}: a hostile target's data was returned as good"),
        Err(message) => message.to_lowercase(),
    };
    assert!(
        words.iter().any(|w| message.contains(w)),
        "{misbehaviour:?}: error '{message}' names none of {words:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "{misbehaviour:?} took {elapsed:?}"
    );
}

#[test]
fn honest_fake_target_returns_its_data() {
    let (result, _) = read_4k(Misbehaviour::Honest);
    assert_eq!(result.expect("honest read"), vec![0x5a; 4096]);
}

#[test]
fn silent_target_times_out() {
    assert_fails_naming(Misbehaviour::Silent, &["timed out", "timeout"]);
}

#[test]
fn unknown_task_tag_is_refused() {
    assert_fails_naming(Misbehaviour::UnknownTaskTag, &["task tag", "unknown"]);
}

#[test]
fn data_offset_outside_the_buffer_is_refused() {
    assert_fails_naming(
        Misbehaviour::OffsetOutsideBuffer,
        &["offset", "range", "outside"],
    );
}

#[test]
fn oversized_data_segment_is_refused() {
    assert_fails_naming(
        Misbehaviour::OversizedSegment,
        &["too long", "data segment", "limit"],
    );
}

#[test]
fn truncated_pdu_then_close_fails_the_command() {
    assert_fails_naming(Misbehaviour::Truncated, &["closed", "connection", "reset"]);
}

#[test]
fn unknown_opcode_is_refused() {
    assert_fails_naming(Misbehaviour::UnknownOpcode, &["opcode"]);
}

#[test]
fn good_status_without_data_is_not_good() {
    assert_fails_naming(
        Misbehaviour::GoodWithoutData,
        &["missing", "bytes received", "short"],
    );
}

#[test]
fn garbage_login_text_fails_the_login() {
    let target = FakeTarget::start(Misbehaviour::Honest, true);
    let started = Instant::now();
    let error = match Client::connect(&config(target.addr)) {
        Ok(_) => panic!("login with garbage text keys succeeded"),
        Err(error) => error,
    };
    assert!(started.elapsed() < Duration::from_secs(4));
    let message = error.to_string().to_lowercase();
    assert!(
        message.contains("text") || message.contains("utf") || message.contains("key"),
        "garbage login text error does not name it: {message}"
    );
    assert!(!matches!(error, ClientError::Connect { .. }));
}

/// ABORT TASK through a shard: a command the target never answers is aborted on request,
/// its slot is free again, and the same connection carries the next command (no
/// reconnect, no connection failure).
#[test]
fn a_command_the_target_lost_is_aborted_and_the_connection_goes_on() {
    use datapath::session::CommandError;
    use datapath::shard::{ShardConfig, ShardPool};

    let target = FakeTarget::start(Misbehaviour::SilentUntilAborted, false);
    let mut client = config(target.addr);
    client.command_timeout = Duration::from_secs(30);
    let shard_config = ShardConfig {
        queue_depth: 4,
        steer: false,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client, 1, &shard_config).expect("the fake target logs in");
    let cdb = Cdb::read_10(0, 8, 512, false).expect("READ(10)");
    let read = |user_data: u64| Request::new(0, cdb.clone(), vec![0; 4096], user_data);
    pool.submit(0, read(1)).expect("queued");
    let nothing = pool.wait_completion(0, Duration::ZERO, Duration::from_millis(300));
    assert!(nothing.is_err(), "the target answered: {nothing:?}");
    let started = Instant::now();
    pool.abort(0, 1).expect("abort queued");
    let aborted = pool
        .wait_completion(0, Duration::ZERO, Duration::from_secs(5))
        .expect("a completion within 5 s");
    assert_eq!(aborted.user_data, 1);
    let failure = aborted.result.expect_err("aborted, not answered");
    assert_eq!(
        failure.error,
        datapath::adapter::PathError::Command(CommandError::Aborted)
    );
    assert_eq!(failure.buffer.len(), 4096, "the buffer comes back");
    eprintln!("ABORT TASK answered in {:?}", started.elapsed());
    pool.submit(0, read(2)).expect("queued");
    let done = pool
        .wait_completion(0, Duration::ZERO, Duration::from_secs(5))
        .expect("a completion within 5 s");
    assert_eq!(done.user_data, 2);
    let outcome = done.result.expect("the connection still works");
    assert_eq!(outcome.buffer, vec![0x5a; 4096]);
    let stats = pool.shutdown();
    assert_eq!(stats[0].reconnects, 0);
}
