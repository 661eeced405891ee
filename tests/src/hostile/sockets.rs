//! Attacks on connection slots: many connections from one loopback source address that
//! send nothing ([`idle_flood`]) or trickle a Login Request a byte at a time
//! ([`login_slowloris`]). Both watch for the gateway closing them, which is the defence.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use datapath::client::random_isid;
use datapath::pdu::{self, Digests, Header, LoginRequest, LoginStage};
use datapath::text::encode_pairs;

use super::wire::{connect_from, is_timeout, ATTACKER_NAME};
use super::{is_closed_by_peer, AttackReport, Until, MAX_CONNECTIONS};

/// Bound of one connect: on loopback a connect takes microseconds unless the gateway's
/// accept queue is full, and then the SYN is dropped and retried only after a second.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// After this many connects in a row fail, the gateway is taking no more: stop trying.
const MAX_CONSECUTIVE_CONNECT_FAILURES: usize = 20;

/// How often the held connections are checked for a close by the gateway.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

/// Connections that never send a byte.
#[derive(Debug, Clone)]
pub struct IdleFlood {
    pub portal: SocketAddrV4,
    /// Where they come from (127.0.0.2 keeps them apart from a client on 127.0.0.1).
    pub source: Ipv4Addr,
    /// How many (at most [`MAX_CONNECTIONS`]).
    pub connections: usize,
}

/// Opens the connections, calls `on_open` once they are open (or the gateway stopped
/// taking more), then holds them until `until`, counting those the gateway closes.
pub fn idle_flood(
    spec: &IdleFlood,
    until: &Until,
    on_open: &mut dyn FnMut(&AttackReport),
) -> AttackReport {
    let started = Instant::now();
    let mut report = AttackReport::new("idle-flood");
    let mut held = HeldConnections::open(
        spec.portal,
        spec.source,
        spec.connections,
        until,
        &mut report,
        &mut |_| {},
    );
    report.elapsed = started.elapsed();
    on_open(&report);
    while !until.reached() {
        held.sweep_closed(&mut report, started);
        pause_until(until, SWEEP_INTERVAL);
    }
    held.sweep_closed(&mut report, started);
    report.elapsed = started.elapsed();
    report
}

/// Connections that each send a Login Request one byte per `byte_interval`.
#[derive(Debug, Clone)]
pub struct Slowloris {
    pub portal: SocketAddrV4,
    pub source: Ipv4Addr,
    pub connections: usize,
    /// The target the trickled Login Request names.
    pub target: String,
    pub byte_interval: Duration,
}

/// Opens the connections, each sending the first byte of a Login Request at once, then
/// one more byte on each every `byte_interval` until `until`; `on_open` is called once
/// they are open. A fair login PDU is a few hundred bytes: at a byte every few seconds it
/// would take longer than any login deadline to arrive.
pub fn login_slowloris(
    spec: &Slowloris,
    until: &Until,
    on_open: &mut dyn FnMut(&AttackReport),
) -> AttackReport {
    let started = Instant::now();
    let mut report = AttackReport::new("login-slowloris");
    let login = match login_request_bytes(&spec.target) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.note_error(e);
            return report;
        }
    };
    let mut held = HeldConnections::open(
        spec.portal,
        spec.source,
        spec.connections,
        until,
        &mut report,
        &mut |stream| {
            let _ = stream.write(&login[..1]);
        },
    );
    report.bytes_sent = held.open_count() as u64;
    report.elapsed = started.elapsed();
    on_open(&report);
    let mut position = 1;
    while !until.reached() && position < login.len() {
        pause_until(until, spec.byte_interval);
        if until.reached() {
            break;
        }
        held.send_byte(login[position], &mut report, started);
        held.sweep_closed(&mut report, started);
        position += 1;
    }
    // The whole PDU went out on the survivors (a very long run): hold them still.
    while !until.reached() {
        held.sweep_closed(&mut report, started);
        pause_until(until, SWEEP_INTERVAL);
    }
    held.sweep_closed(&mut report, started);
    report.pdus_sent = report.bytes_sent;
    report.elapsed = started.elapsed();
    report
}

/// A fair first Login Request (security stage, AuthMethod=None) for `target`, encoded.
fn login_request_bytes(target: &str) -> Result<Vec<u8>, String> {
    let header = Header::LoginRequest(LoginRequest {
        transit: true,
        continue_: false,
        current_stage: LoginStage::SecurityNegotiation,
        next_stage: LoginStage::LoginOperationalNegotiation,
        version_max: 0,
        version_min: 0,
        isid: random_isid(),
        tsih: 0,
        initiator_task_tag: 0,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
    });
    let pairs: Vec<(String, String)> = [
        ("InitiatorName", ATTACKER_NAME),
        ("SessionType", "Normal"),
        ("TargetName", target),
        ("AuthMethod", "None"),
    ]
    .iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    let mut text = Vec::new();
    encode_pairs(&pairs, &mut text);
    let mut out = Vec::new();
    pdu::encode_pdu(&header, &text, Digests::default(), &mut out)
        .map_err(|e| format!("encode Login Request: {e}"))?;
    Ok(out)
}

/// Sleeps `step`, or less when `until` comes sooner.
fn pause_until(until: &Until, step: Duration) {
    let left = until.deadline().saturating_duration_since(Instant::now());
    let step = step.min(left);
    // Sleep in short slices so a stop flag is seen within one.
    let slice_end = Instant::now() + step;
    while !until.reached() && Instant::now() < slice_end {
        thread::sleep(SWEEP_INTERVAL.min(slice_end.saturating_duration_since(Instant::now())));
    }
}

/// The attack's open connections; a slot is emptied when the gateway closes it.
struct HeldConnections {
    streams: Vec<Option<TcpStream>>,
}

impl HeldConnections {
    /// Opens up to `wanted` connections, calling `first_send` on each as it opens. Stops
    /// early at `until` or once the gateway has refused many in a row.
    fn open(
        portal: SocketAddrV4,
        source: Ipv4Addr,
        wanted: usize,
        until: &Until,
        report: &mut AttackReport,
        first_send: &mut dyn FnMut(&mut TcpStream),
    ) -> HeldConnections {
        let wanted = wanted.min(MAX_CONNECTIONS);
        if let Err(e) = raise_fd_limit(wanted as u64 + 256) {
            report.note_error(format!("raising RLIMIT_NOFILE: {e}"));
        }
        let mut streams = Vec::with_capacity(wanted);
        let mut failures_in_a_row = 0;
        while streams.len() < wanted && !until.reached() {
            match connect_from(source, portal, CONNECT_TIMEOUT) {
                Ok(mut stream) => {
                    failures_in_a_row = 0;
                    let _ = stream.set_nonblocking(true);
                    first_send(&mut stream);
                    streams.push(Some(stream));
                }
                Err(e) => {
                    report.note_error(format!(
                        "connect {source} -> {portal} after {} connections: {e}",
                        streams.len()
                    ));
                    failures_in_a_row += 1;
                    if failures_in_a_row >= MAX_CONSECUTIVE_CONNECT_FAILURES {
                        break;
                    }
                }
            }
        }
        report.connections_opened = streams.len();
        report.connections_failed = wanted - streams.len();
        HeldConnections { streams }
    }

    fn open_count(&self) -> usize {
        self.streams.iter().flatten().count()
    }

    /// Sends `byte` on every open connection (non-blocking: one byte always fits unless
    /// the connection is gone).
    fn send_byte(&mut self, byte: u8, report: &mut AttackReport, started: Instant) {
        for slot in &mut self.streams {
            let Some(stream) = slot else { continue };
            match stream.write(&[byte]) {
                Ok(_) => report.bytes_sent += 1,
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    if !is_closed_by_peer(&e) {
                        report.note_error(format!("send: {e}"));
                    }
                    report.closed_by_target(started);
                    *slot = None;
                }
            }
        }
    }

    /// Finds the connections the gateway closed (end of stream, reset) and forgets them.
    /// Anything the gateway sent instead (a Login Reject) is read and dropped.
    fn sweep_closed(&mut self, report: &mut AttackReport, started: Instant) {
        let mut poll_fds: Vec<libc::pollfd> = Vec::new();
        let mut slots = Vec::new();
        for (index, slot) in self.streams.iter().enumerate() {
            if let Some(stream) = slot {
                poll_fds.push(libc::pollfd {
                    fd: stream.as_raw_fd(),
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                });
                slots.push(index);
            }
        }
        if poll_fds.is_empty() {
            return;
        }
        // SAFETY: `poll_fds` is a valid array of its length; timeout 0 does not block.
        let ready = unsafe { libc::poll(poll_fds.as_mut_ptr(), poll_fds.len() as libc::nfds_t, 0) };
        if ready <= 0 {
            return;
        }
        for (poll_fd, index) in poll_fds.iter().zip(slots) {
            if poll_fd.revents == 0 {
                continue;
            }
            let gone = poll_fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
                || self.streams[index]
                    .as_mut()
                    .is_some_and(drain_reports_closed);
            if gone {
                report.closed_by_target(started);
                self.streams[index] = None;
            }
        }
    }
}

/// Reads what the gateway sent; `true` when the read shows the connection is over.
fn drain_reports_closed(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    match stream.read(&mut sink) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if is_timeout(&e) => false,
        Err(_) => true,
    }
}

/// Raises this process's soft limit of open files to at least `wanted` (and the hard
/// limit too when we may, as root), for floods of thousands of connections. Returns the
/// soft limit now in force.
pub fn raise_fd_limit(wanted: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max.max(wanted),
    };
    // SAFETY: `raised` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(wanted);
    }
    // Not allowed past the hard limit: take what the hard limit allows.
    let capped = libc::rlimit {
        rlim_cur: limit.rlim_max.min(wanted),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(capped.rlim_cur)
}
