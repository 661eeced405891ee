//! Attacks from one logged-in connection: PDUs that each make the gateway owe a large
//! answer, sent by a client that never reads the answers ([`nop_flood`], [`slow_reader`]),
//! and one fair WRITE to a LUN whose backing store hangs ([`stuck_write`]).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::pdu::{self, Digests, Header, NopOut, ScsiCommand, TaskAttribute};
use datapath::scsi::{Cdb, Lun, Sense};
use datapath::session::Request;

use super::wire::{RawSession, Sent};
use super::{is_closed_by_peer, AttackReport, Until};

/// Login bound of every attack that logs in.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The MaxRecvDataSegmentLength the attacker offers: large, so every answer the gateway
/// owes is as large as it will make it (RFC 7143 allows up to 2^24 - 1).
const ATTACKER_MAX_RECV_BYTES: u32 = 262_144;

/// The "no reply wanted / no target transfer" tag (RFC 7143 section 11.18.2).
const RESERVED_TAG: u32 = 0xffff_ffff;

/// NOP-Out pings with `ping_bytes` of data, each asking for a NOP-In echo of that data.
#[derive(Debug, Clone)]
pub struct NopFlood {
    pub portal: SocketAddrV4,
    pub source: Ipv4Addr,
    /// `None`: a discovery session (no authentication needed on the gateway).
    pub target: Option<String>,
    /// Ping data per NOP-Out; at most the gateway's MaxRecvDataSegmentLength (256 KiB).
    pub ping_bytes: usize,
}

/// Logs in, then sends immediate NOP-Outs (they take no CmdSN, so no window limits them)
/// as fast as the socket takes them, never reading an echo.
pub fn nop_flood(spec: &NopFlood, until: &Until) -> AttackReport {
    let started = Instant::now();
    let mut report = AttackReport::new("nop-flood");
    let Some(mut session) = login_or_report(
        spec.source,
        spec.portal,
        spec.target.as_deref(),
        &mut report,
    ) else {
        report.elapsed = started.elapsed();
        return report;
    };
    let ping = crate::pattern(spec.ping_bytes, 11);
    let mut out = Vec::with_capacity(pdu::BHS_LEN + ping.len() + 4);
    while !until.reached() {
        let header = Header::NopOut(NopOut {
            immediate: true,
            lun: [0; 8],
            initiator_task_tag: session.next_itt(),
            target_transfer_tag: RESERVED_TAG,
            cmd_sn: session.cmd_sn,
            exp_stat_sn: session.exp_stat_sn,
        });
        if !encode_and_send(
            &mut session,
            &mut out,
            &header,
            &ping,
            until,
            started,
            &mut report,
        ) {
            break;
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// READs of `read_bytes` each, from LBA 0 of `lun`.
#[derive(Debug, Clone)]
pub struct SlowReader {
    pub portal: SocketAddrV4,
    pub source: Ipv4Addr,
    pub target: String,
    pub lun: u64,
    pub read_bytes: u32,
    /// The LUN's logical block length (the gateway's default is 512).
    pub block_bytes: u32,
}

/// Logs in, then sends READ(16)s numbered CmdSN, CmdSN + 1, ... whatever MaxCmdSN the
/// gateway granted (it never learns of a new one: it never reads), never reading Data-In.
pub fn slow_reader(spec: &SlowReader, until: &Until) -> AttackReport {
    let started = Instant::now();
    let mut report = AttackReport::new("slow-reader");
    let blocks = spec.read_bytes / spec.block_bytes.max(1);
    let cdb = match Cdb::read_16(0, blocks, spec.block_bytes, false) {
        Ok(cdb) => cdb,
        Err(e) => {
            report.note_error(format!("READ(16) of {} bytes: {e}", spec.read_bytes));
            return report;
        }
    };
    let Some(mut session) =
        login_or_report(spec.source, spec.portal, Some(&spec.target), &mut report)
    else {
        report.elapsed = started.elapsed();
        return report;
    };
    let lun = Lun::from_u64(spec.lun).to_field();
    let mut out = Vec::with_capacity(pdu::BHS_LEN);
    while !until.reached() {
        let header = Header::ScsiCommand(ScsiCommand {
            immediate: false,
            final_pdu: true,
            read: true,
            write: false,
            attribute: TaskAttribute::Simple,
            lun,
            initiator_task_tag: session.next_itt(),
            expected_data_transfer_length: blocks * spec.block_bytes,
            cmd_sn: session.cmd_sn,
            exp_stat_sn: session.exp_stat_sn,
            cdb: cdb.clone(),
            bidi_read_length: None,
        });
        session.cmd_sn = session.cmd_sn.wrapping_add(1);
        if !encode_and_send(
            &mut session,
            &mut out,
            &header,
            &[],
            until,
            started,
            &mut report,
        ) {
            break;
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// One fair WRITE to a LUN whose backing store is about to hang (or hangs already).
#[derive(Debug, Clone)]
pub struct StuckWrite {
    pub portal: SocketAddrV4,
    pub target: String,
    pub lun: u64,
    pub write_bytes: u32,
    pub block_bytes: u32,
}

/// Logs in with datapath's blocking client and writes `write_bytes` at LBA 0, waiting for
/// the answer until `until`'s deadline. The report's `first_error` says how the gateway
/// answered (`GOOD`, a sense, or no answer in time): a gateway that times stuck commands
/// out answers CHECK CONDITION, ABORTED COMMAND / TIMEOUT ON LOGICAL UNIT (3Eh/02h).
pub fn stuck_write(spec: &StuckWrite, until: &Until) -> AttackReport {
    let started = Instant::now();
    let mut report = AttackReport::new("stuck-write");
    let mut config = ClientConfig::new(spec.portal.into(), Some(spec.target.clone()));
    config.initiator_name = super::wire::ATTACKER_NAME.to_owned();
    config.connect_timeout = LOGIN_TIMEOUT;
    config.login_timeout = LOGIN_TIMEOUT;
    config.command_timeout = until
        .deadline()
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    // Pings would fail the connection before the command's own timeout.
    config.nop_interval = Duration::ZERO;
    let mut client = match Client::connect(&config) {
        Ok(client) => client,
        Err(e) => {
            report.connections_failed = 1;
            report.note_error(format!("login: {e}"));
            report.elapsed = started.elapsed();
            return report;
        }
    };
    report.connections_opened = 1;
    let blocks = spec.write_bytes / spec.block_bytes.max(1);
    let cdb = match Cdb::write_16(0, blocks, spec.block_bytes, false) {
        Ok(cdb) => cdb,
        Err(e) => {
            report.note_error(format!("WRITE(16): {e}"));
            return report;
        }
    };
    let data = crate::pattern((blocks * spec.block_bytes) as usize, 12);
    report.pdus_sent = 1;
    report.bytes_sent = data.len() as u64;
    let answer = client.execute(Request::new(spec.lun, cdb, data, 0));
    report.note_error(match answer {
        Ok(outcome) if outcome.status == 0 => "GOOD".to_owned(),
        Ok(outcome) => format!(
            "status {:#04x}, sense {}",
            outcome.status,
            outcome
                .sense
                .as_deref()
                .map(describe_sense)
                .unwrap_or_else(|| "none".into())
        ),
        Err(e) => format!("no answer: {e}"),
    });
    report.elapsed = started.elapsed();
    report
}

/// Sense key, ASC and ASCQ in words, or the raw bytes when they do not decode.
fn describe_sense(sense: &[u8]) -> String {
    match Sense::decode(sense) {
        Ok(decoded) => decoded.to_string(),
        Err(_) => format!("{sense:02x?}"),
    }
}

fn login_or_report(
    source: Ipv4Addr,
    portal: SocketAddrV4,
    target: Option<&str>,
    report: &mut AttackReport,
) -> Option<RawSession> {
    match RawSession::login(
        source,
        portal,
        target,
        ATTACKER_MAX_RECV_BYTES,
        LOGIN_TIMEOUT,
    ) {
        Ok(session) => {
            report.connections_opened = 1;
            Some(session)
        }
        Err(e) => {
            report.connections_failed = 1;
            report.note_error(e);
            None
        }
    }
}

/// Sends one encoded PDU; `false` when the attack is over (time, a close, an error).
/// Encodes `header` and `data` into `out` (reused between PDUs) and sends it; `false` when
/// the attack must stop (an encoding error, the deadline, the target gone).
fn encode_and_send(
    session: &mut RawSession,
    out: &mut Vec<u8>,
    header: &pdu::Header,
    data: &[u8],
    until: &Until,
    started: Instant,
    report: &mut AttackReport,
) -> bool {
    out.clear();
    if let Err(e) = pdu::encode_pdu(header, data, Digests::default(), out) {
        report.note_error(format!("encode {:?}: {e}", header.opcode()));
        return false;
    }
    send_pdu(session, out, until, started, report)
}

fn send_pdu(
    session: &mut RawSession,
    bytes: &[u8],
    until: &Until,
    started: Instant,
    report: &mut AttackReport,
) -> bool {
    match super::wire::send_by(&mut session.stream, bytes, &|| until.reached()) {
        Ok(Sent::All) => {
            report.pdus_sent += 1;
            report.bytes_sent += bytes.len() as u64;
            true
        }
        Ok(Sent::Partly { sent }) => {
            report.bytes_sent += sent as u64;
            false
        }
        Err(e) if is_closed_by_peer(&e) => {
            report.closed_by_target(started);
            false
        }
        Err(e) => {
            report.note_error(format!("send: {e}"));
            false
        }
    }
}
