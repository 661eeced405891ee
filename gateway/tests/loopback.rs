//! The real server on loopback: our initiator (`datapath::client::Client`) against a RAM LUN,
//! and hostile initiators on raw sockets, each of which must lose only its own connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::pdu::{self, Digests, Header, Limits, LoginStage, RESERVED_TAG};
use datapath::scsi::{self, Cdb};
use datapath::session::{ChapConfig, Request};
use datapath::text::encode_pairs;
use gateway::server::{self, RunningTarget, TargetConfig, TargetNodeConfig};
use gateway::session::ChapCredentials;

const IQN: &str = "iqn.2026-11.test:loopback";

fn start_target(configure: impl FnOnce(&mut TargetConfig)) -> RunningTarget {
    let node = TargetNodeConfig::new(IQN, vec![(0, "ram:16M".into()), (1, "null:1G".into())]);
    let mut config = TargetConfig::new("127.0.0.1:0".parse().unwrap(), node);
    config.threads = Some(2);
    config.max_cmd_window = 16;
    config.stall_timeout = Duration::from_millis(500);
    configure(&mut config);
    server::start(config).expect("target starts")
}

fn client(addr: SocketAddr) -> Client {
    let mut config = ClientConfig::new(addr, Some(IQN.into()));
    config.initiator_name = "iqn.2026-11.test:good-initiator".into();
    Client::connect(&config).expect("login")
}

/// READ(10) (0x28) or WRITE(10) (0x2a) of 512-byte blocks, `buffer` lent to it.
fn rw10(opcode: u8, lba: u32, blocks: u16, buffer: Vec<u8>) -> Request {
    let cdb = if opcode == scsi::cdb::opcode::WRITE_10 {
        Cdb::write_10(lba, blocks, 512, false)
    } else {
        Cdb::read_10(lba, blocks, 512, false)
    };
    Request::new(0, cdb.expect("a 10-byte CDB carries it"), buffer, 0)
}

fn write_read_back(client: &mut Client, lba: u32, seed: u8) {
    let data: Vec<u8> = (0..65536u32)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let outcome = client
        .execute(rw10(0x2a, lba, 128, data.clone()))
        .expect("write");
    assert_eq!(outcome.status, 0);
    let outcome = client
        .execute(rw10(0x28, lba, 128, vec![0; 65536]))
        .expect("read");
    assert_eq!(outcome.status, 0);
    assert!(outcome.buffer == data, "read back differs at LBA {lba}");
}

#[test]
fn our_initiator_writes_and_reads_back_a_ram_lun() {
    let target = start_target(|_| {});
    let addr = target.addrs()[0];
    assert_ne!(addr.port(), 0);
    let mut a = client(addr);
    let mut b = client(addr);
    for round in 0..8u32 {
        write_read_back(&mut a, round * 128, 3 + round as u8);
        write_read_back(&mut b, 4096 + round * 128, 101 + round as u8);
    }
    // A large transfer crosses bursts and R2Ts.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    a.execute(rw10(0x2a, 10000, 2048, big.clone())).unwrap();
    let back = b
        .execute(rw10(0x28, 10000, 2048, vec![0; 1 << 20]))
        .unwrap();
    assert!(back.buffer == big);
    a.logout().unwrap();
    b.logout().unwrap();
    target.shutdown();
}

#[test]
fn discovery_through_the_server() {
    let target = start_target(|_| {});
    let addr = target.addrs()[0];
    let targets = Client::discover(&ClientConfig::new(addr, None)).expect("discovery");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].name, IQN);
    assert_eq!(targets[0].addresses, [(addr.to_string(), 1)]);
}

#[test]
fn chap_login_through_the_server() {
    let target = start_target(|config| {
        config.targets[0].chap = Some(ChapCredentials {
            user: "user".into(),
            secret: b"twelve-chars-or-more".to_vec(),
        });
    });
    let addr = target.addrs()[0];
    let mut config = ClientConfig::new(addr, Some(IQN.into()));
    config.chap = Some(ChapConfig {
        user: "user".into(),
        secret: b"twelve-chars-or-more".to_vec(),
        mutual: None,
    });
    let mut good = Client::connect(&config).expect("CHAP login");
    write_read_back(&mut good, 0, 9);
    config.chap.as_mut().unwrap().secret = b"wrong-secret-here".to_vec();
    assert!(Client::connect(&config).is_err());
}

/// A raw initiator for hostile tests.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Raw { stream }
    }

    fn send(&mut self, header: &Header, data: &[u8]) {
        let mut bytes = Vec::new();
        pdu::encode_pdu(header, data, Digests::default(), &mut bytes).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    /// Reads one PDU; `None` at end of stream.
    fn recv(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(Some(pdu)) = pdu::decode_pdu(&buf, Digests::default(), &Limits::default()) {
                return Some((pdu.header, buf[pdu.data].to_vec()));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True when the target closes the connection (after any PDUs it still sends).
    fn closed_by_target(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }

    fn login(addr: SocketAddr, isid: [u8; 6]) -> Raw {
        let mut raw = Raw::connect(addr);
        let pairs: Vec<(String, String)> = [
            ("InitiatorName", "iqn.2026-11.test:raw"),
            ("SessionType", "Normal"),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut text = Vec::new();
        encode_pairs(&pairs, &mut text);
        raw.send(
            &Header::LoginRequest(pdu::LoginRequest {
                transit: true,
                continue_: false,
                current_stage: LoginStage::SecurityNegotiation,
                next_stage: LoginStage::FullFeaturePhase,
                version_max: 0,
                version_min: 0,
                isid,
                tsih: 0,
                initiator_task_tag: 1,
                cid: 0,
                cmd_sn: 1,
                exp_stat_sn: 0,
            }),
            &text,
        );
        let (header, _) = raw.recv().expect("login response");
        let Header::LoginResponse(resp) = header else {
            panic!("{header:?}")
        };
        assert_eq!(resp.status_class, 0);
        assert!(resp.transit);
        raw
    }

    fn nop(&mut self, itt: u32, cmd_sn: u32) -> bool {
        self.send(
            &Header::NopOut(pdu::NopOut {
                immediate: true,
                lun: [0; 8],
                initiator_task_tag: itt,
                target_transfer_tag: RESERVED_TAG,
                cmd_sn,
                exp_stat_sn: 0,
            }),
            &[],
        );
        matches!(self.recv(), Some((Header::NopIn(n), _)) if n.initiator_task_tag == itt)
    }
}

fn command(cmd_sn: u32, itt: u32) -> Header {
    let cdb = Cdb::test_unit_ready();
    Header::ScsiCommand(pdu::ScsiCommand {
        immediate: false,
        final_pdu: true,
        read: false,
        write: false,
        attribute: pdu::TaskAttribute::Simple,
        lun: [0; 8],
        initiator_task_tag: itt,
        expected_data_transfer_length: 0,
        cmd_sn,
        exp_stat_sn: 0,
        cdb,
        bidi_read_length: None,
    })
}

/// Runs `attack` on a raw connection while a good session keeps working.
fn survives(attack: impl FnOnce(SocketAddr)) {
    let target = start_target(|_| {});
    let addr = target.addrs()[0];
    let mut good = client(addr);
    write_read_back(&mut good, 0, 1);
    attack(addr);
    write_read_back(&mut good, 256, 2);
    good.logout().unwrap();
}

/// A ring of one submission entry: every turn's receives and sends overflow it, and each
/// is submitted or put off to the next turn, never queued; sixteen sessions still write and
/// read back, and nothing but required entries ever waited (none here, without file LUNs).
#[test]
fn a_one_entry_ring_serves_sixteen_sessions_without_a_backlog_of_arms() {
    let target = start_target(|config| {
        config.threads = Some(1);
        config.client_limits.ring_entries = 1;
    });
    let addr = target.addrs()[0];
    let workers: Vec<_> = (0..16u32)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = client(addr);
                for round in 0..4 {
                    write_read_back(
                        &mut client,
                        (c * 4 + round) * 128,
                        (c * 4 + round) as u8 | 1,
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("session ran");
    }
    let stats = target.stats();
    assert!(stats.ring_backlog_high_water <= 1, "{stats:?}");
    eprintln!("arms put off to a later turn: {}", stats.arms_deferred);
    target.shutdown();
}

#[test]
fn garbage_bytes_close_only_that_connection() {
    survives(|addr| {
        let mut raw = Raw::connect(addr);
        let garbage: Vec<u8> = (0..96u32).map(|i| (i * 97 + 13) as u8 | 0x1c).collect();
        raw.stream.write_all(&garbage).unwrap();
        assert!(raw.closed_by_target());
    });
}

#[test]
fn oversized_data_segment_closes_only_that_connection() {
    survives(|addr| {
        let mut raw = Raw::login(addr, [0x80, 0, 0, 0, 0, 1]);
        let mut bhs = [0u8; 48];
        pdu::encode_header(&command(1, 5), 0, Digests::default(), &mut bhs).unwrap();
        // DataSegmentLength 16 MiB - 1, far over our MaxRecvDataSegmentLength.
        bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        raw.stream.write_all(&bhs).unwrap();
        assert!(raw.closed_by_target());
    });
}

#[test]
fn unknown_opcode_is_rejected_and_closes_only_that_connection() {
    survives(|addr| {
        let mut raw = Raw::login(addr, [0x80, 0, 0, 0, 0, 2]);
        let mut bhs = [0u8; 48];
        bhs[0] = 0x1d;
        raw.stream.write_all(&bhs).unwrap();
        let reject = raw.recv();
        assert!(
            matches!(reject, Some((Header::Reject(ref r), _)) if r.reason == 0x05),
            "{reject:?}"
        );
        assert!(raw.closed_by_target());
    });
}

#[test]
fn commands_outside_the_window_are_ignored_then_the_session_goes_on() {
    survives(|addr| {
        let mut raw = Raw::login(addr, [0x80, 0, 0, 0, 0, 3]);
        raw.send(&command(1_000_000, 7), &[]);
        // Ignored (RFC 7143 4.2.2.1): the next thing we hear is the answer to the ping.
        assert!(raw.nop(8, 1));
        raw.send(&command(1, 9), &[]);
        let response = raw.recv();
        assert!(
            matches!(response, Some((Header::ScsiResponse(ref r), _)) if r.initiator_task_tag == 9),
            "{response:?}"
        );
    });
}

#[test]
fn initiator_stalling_mid_pdu_is_disconnected() {
    survives(|addr| {
        let mut raw = Raw::login(addr, [0x80, 0, 0, 0, 0, 4]);
        let mut bhs = [0u8; 48];
        pdu::encode_header(&command(1, 5), 0, Digests::default(), &mut bhs).unwrap();
        raw.stream.write_all(&bhs[..20]).unwrap();
        assert!(raw.closed_by_target());
    });
}

#[test]
fn a_new_login_with_the_same_isid_reinstates_the_session() {
    let target = start_target(|_| {});
    let addr = target.addrs()[0];
    let mut first = Raw::login(addr, [0x80, 0, 0, 0, 0, 5]);
    let mut second = Raw::login(addr, [0x80, 0, 0, 0, 0, 5]);
    assert!(first.closed_by_target());
    assert!(second.nop(1, 1));
    let mut other = Raw::login(addr, [0x80, 0, 0, 0, 0, 6]);
    assert!(other.nop(1, 1));
    assert!(second.nop(2, 1));
}

#[test]
fn shutdown_closes_connections_and_returns() {
    // An address of its own in 127/8: the other tests listen on 127.0.0.1, and one of them
    // could be given this port the moment the target frees it.
    let target = start_target(|config| {
        config.portals = vec!["127.0.0.117:0".parse().unwrap()];
    });
    let addr = target.addrs()[0];
    let mut raw = Raw::login(addr, [0x80, 0, 0, 0, 0, 7]);
    let started = Instant::now();
    target.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(raw.closed_by_target());
    assert!(TcpStream::connect(addr).is_err());
}

/// Sends immediate NOP-Outs with `ping` bytes each, never reading the echoes, for at most
/// `count` PDUs or until the socket has been full for `stuck` (the target stopped reading).
fn nop_flood_without_reading(raw: &mut Raw, count: u32, ping: usize, stuck: Duration) -> u32 {
    raw.stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let data = vec![0x5a; ping];
    let mut sent = 0;
    let mut blocked_since: Option<Instant> = None;
    while sent < count {
        let mut bytes = Vec::new();
        let nop = Header::NopOut(pdu::NopOut {
            immediate: true,
            lun: [0; 8],
            initiator_task_tag: sent + 10,
            target_transfer_tag: RESERVED_TAG,
            cmd_sn: 2,
            exp_stat_sn: 0,
        });
        pdu::encode_pdu(&nop, &data, Digests::default(), &mut bytes).unwrap();
        match raw.stream.write_all(&bytes) {
            Ok(()) => {
                sent += 1;
                blocked_since = None;
            }
            Err(_) => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= stuck {
                    break;
                }
            }
        }
    }
    sent
}

#[test]
fn a_client_that_never_reads_is_held_at_its_output_limit() {
    const LIMIT: usize = 64 << 10;
    let target = start_target(|config| {
        config.client_limits.max_output_bytes_per_connection = LIMIT;
    });
    let addr = target.addrs()[0];
    let mut good = client(addr);
    let mut raw = Raw::login(addr, [0x80, 0, 0, 0, 0, 0x41]);
    // 8 KiB pings (the login's MaxRecvDataSegmentLength) up to 16 MiB of echoes owed.
    let sent = nop_flood_without_reading(&mut raw, 2048, 8192, Duration::from_millis(500));
    let owed = target.stats().output_owed_bytes as usize;
    // The limit, the PDU that crossed it, and one send buffer lent to the kernel.
    assert!(
        owed <= LIMIT + 8192 + 48 + (256 << 10),
        "{owed} bytes owed after {sent} pings"
    );
    assert!(
        sent < 2048,
        "the target stopped reading: all {sent} pings went out"
    );
    // Its neighbour is untouched, and the flooder is answered once it reads.
    write_read_back(&mut good, 0, 3);
    assert!(raw
        .recv()
        .is_some_and(|(h, _)| matches!(h, Header::NopIn(_))));
}

#[test]
fn silent_connections_are_limited_per_address_and_closed_after_the_first_byte_deadline() {
    let target = start_target(|config| {
        config.threads = Some(1);
        config.client_limits.max_logins_per_source = 4;
        config.client_limits.first_pdu_timeout = Duration::from_millis(300);
    });
    let addr = target.addrs()[0];
    let silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while target.stats().refused < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = target.stats();
    assert_eq!((stats.logging_in, stats.refused), (4, 6), "{stats:?}");
    // The four held are closed once their first byte is overdue, and nothing is left.
    while target.stats().connections > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(target.stats().connections, 0, "{:?}", target.stats());
    drop(silent);
    // A real initiator from the same address logs in and works.
    let mut good = client(addr);
    write_read_back(&mut good, 0, 4);
}

#[test]
fn past_the_login_limit_the_connection_logging_in_longest_makes_room() {
    let target = start_target(|config| {
        config.threads = Some(1);
        config.client_limits.max_logins = 3;
    });
    let addr = target.addrs()[0];
    let mut oldest = TcpStream::connect(addr).unwrap();
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _others: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while target.stats().logging_in < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // A fourth (a real login) evicts the oldest silent one and logs in.
    let mut good = client(addr);
    write_read_back(&mut good, 0, 5);
    let mut byte = [0u8; 1];
    assert!(
        matches!(oldest.read(&mut byte), Ok(0) | Err(_)),
        "the oldest login-phase connection was closed"
    );
}
