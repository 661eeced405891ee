//! A session with a chosen ISID, for the commands whose meaning depends on the I_T nexus:
//! reservations (a registration belongs to the initiator port, name and ISID, SPC-4
//! 5.12.7) and task management (`iscsi-ctl reset`). By default the ISID is derived from the
//! initiator name, so successive `iscsi-ctl pr --out` runs of one host act as one
//! initiator port, as a host's kernel initiator does; `--isid` sets it.
//!
//! The blocking `datapath::client::Client` picks a random ISID per login and has no task
//! management call yet, and its file is being reworked elsewhere. This is the smallest
//! loop around one `Conn` that does both (no Data-In placement: reservation data is
//! small, and the session copies it once). It should fold into `Client` when that lands.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datapath::client::{ClientConfig, ClientError};
use datapath::conn::{Conn, ConnError};
use datapath::pdu::Isid;
use datapath::scsi::{Cdb, Lun};
use datapath::session::{
    CommandOutcome, Event, Session, SessionState, TaskManagementFunction, TaskManagementOutcome,
};
use datapath::transport::{TcpConnection, TransportError};

use crate::commands::CtlError;

const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const RECEIVE_BYTES: usize = 64 * 1024;

/// The ISID this host uses for `initiator_name` unless told otherwise: FNV-1a of the name,
/// in an ISID of the random type (T = 11b, RFC 7143 section 11.12.5).
pub fn stable_isid(initiator_name: &str) -> Isid {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in initiator_name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = hash.to_be_bytes();
    [
        0xc0 | (bytes[0] & 0x3f),
        bytes[1],
        bytes[2],
        bytes[3],
        bytes[4],
        bytes[5],
    ]
}

/// `--isid`: 12 hex digits.
pub fn parse_isid(text: &str) -> Result<Isid, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("'{text}' is not an ISID (12 hex digits)"));
    }
    let mut isid = [0u8; 6];
    for (i, byte) in isid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(isid)
}

pub struct NexusSession {
    portal: SocketAddr,
    socket: TcpConnection,
    conn: Conn,
    rx: Vec<u8>,
    command_timeout: Duration,
}

impl NexusSession {
    /// Connects and logs in with `isid`.
    pub fn connect(config: &ClientConfig, isid: Isid) -> Result<NexusSession, CtlError> {
        let portal = config.portal;
        let socket = TcpConnection::connect(portal, config.connect_timeout)
            .map_err(|source| ClientError::Connect { portal, source })?;
        let session_config = config.session_config(isid, 4, 2);
        let mut this = NexusSession {
            portal,
            socket,
            conn: Conn::new(Session::new(session_config, Instant::now())),
            rx: vec![0; RECEIVE_BYTES],
            command_timeout: config.command_timeout,
        };
        let deadline = Instant::now() + config.connect_timeout.max(Duration::from_secs(5));
        loop {
            this.turn(deadline)?;
            while let Some(event) = this.conn.session_mut().poll_event() {
                match event {
                    Event::LoginComplete => return Ok(this),
                    Event::LoginFailed {
                        status_class,
                        status_detail,
                        reason,
                    } => {
                        return Err(ClientError::LoginFailed {
                            portal,
                            status_class,
                            status_detail,
                            reason,
                        }
                        .into())
                    }
                    Event::Redirect { address, .. } => {
                        return Err(ClientError::Redirected { portal, address }.into())
                    }
                    Event::ConnectionFailed(source) => {
                        return Err(ClientError::Session { portal, source }.into())
                    }
                    _ => {}
                }
            }
        }
    }

    /// Runs one command; `data` is its Data-Out (writes) and is ignored otherwise.
    pub fn execute(
        &mut self,
        lun: u64,
        cdb: &Cdb,
        data: Vec<u8>,
    ) -> Result<CommandOutcome, CtlError> {
        let direction = cdb.direction();
        let buffer = match direction {
            datapath::scsi::DataDirection::Read(len) => vec![0; len as usize],
            datapath::scsi::DataDirection::Write(_) => data,
            _ => Vec::new(),
        };
        let request = datapath::session::Request::new(lun, cdb.clone(), buffer, 0);
        let task = self
            .conn
            .session_mut()
            .submit(Instant::now(), request)
            .map_err(|e| ClientError::Submit(e.to_string()))?;
        let deadline = Instant::now() + self.command_timeout;
        loop {
            self.turn(deadline)?;
            while let Some(event) = self.conn.session_mut().poll_event() {
                match event {
                    Event::CommandComplete(done, result) if done == task => {
                        return result.map_err(|f| ClientError::Command(f.error).into());
                    }
                    Event::ConnectionFailed(source) => {
                        return Err(ClientError::Session {
                            portal: self.portal,
                            source,
                        }
                        .into())
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `function` (for `lun` when it addresses one) and waits for the answer.
    pub fn task_management(
        &mut self,
        function: TaskManagementFunction,
        lun: u64,
    ) -> Result<TaskManagementOutcome, CtlError> {
        let id = self
            .conn
            .session_mut()
            .task_management(Instant::now(), function, Lun::from_u64(lun).to_field())
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let deadline = Instant::now() + self.command_timeout;
        loop {
            self.turn(deadline)?;
            if let Some(outcome) = self.conn.session_mut().poll_task_management() {
                if outcome.id == id {
                    return Ok(outcome);
                }
            }
            while let Some(event) = self.conn.session_mut().poll_event() {
                if let Event::ConnectionFailed(source) = event {
                    return Err(ClientError::Session {
                        portal: self.portal,
                        source,
                    }
                    .into());
                }
            }
        }
    }

    /// Keeps the session serviced (answers the target's NOP-In pings) until `until`: a
    /// node that only slept would look dead to a target that pings every second.
    pub fn service_until(&mut self, until: Instant) -> Result<(), CtlError> {
        while Instant::now() < until {
            self.turn(until)?;
            while let Some(event) = self.conn.session_mut().poll_event() {
                if let Event::ConnectionFailed(source) = event {
                    return Err(ClientError::Session {
                        portal: self.portal,
                        source,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Whether the session is still logged in (a cold reset ends it).
    pub fn logged_in(&self) -> bool {
        self.conn.session().state() == SessionState::FullFeature
    }

    /// Logs out, unless the session already ended.
    pub fn logout(mut self) {
        if self.logged_in() {
            self.conn.session_mut().logout(Instant::now());
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.turn(deadline).is_ok() {
                if matches!(
                    self.conn.session_mut().poll_event(),
                    Some(Event::LogoutComplete | Event::ConnectionFailed(_))
                ) {
                    break;
                }
            }
        }
        let _ = self.socket.shutdown();
    }

    /// Sends what the session queued, then receives once (until the session's own next
    /// deadline, at most until `deadline`).
    fn turn(&mut self, deadline: Instant) -> Result<(), CtlError> {
        let portal = self.portal;
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Closed("the answer came").into());
        }
        loop {
            let queued = self
                .conn
                .fill_send()
                .map_err(|source| ClientError::Pdu { portal, source })?;
            if queued == 0 {
                break;
            }
            let mut slices = Vec::new();
            self.conn.send_slices(&mut slices);
            let sent = self.socket.send_all(&slices, SEND_TIMEOUT);
            drop(slices);
            self.conn.handle_sent();
            sent.map_err(|source| ClientError::Transport { portal, source })?;
        }
        let session = self.conn.session_mut();
        if matches!(session.state(), SessionState::Closed | SessionState::Failed) {
            return Err(ClientError::Closed("the answer came").into());
        }
        let wait = match session.poll_timeout() {
            Some(at) if at <= now => {
                session.handle_timeout(now);
                return Ok(());
            }
            Some(at) => (at - now).min(deadline - now),
            None => deadline - now,
        };
        match self.socket.recv(&mut self.rx, wait) {
            Ok(0) => {
                self.conn.session_mut().handle_connection_lost(
                    Instant::now(),
                    "the target closed the connection".into(),
                );
                Ok(())
            }
            Ok(n) => self
                .conn
                .handle_received(Instant::now(), &self.rx[..n])
                .map_err(|error| {
                    match error {
                        ConnError::Pdu(source) => ClientError::Pdu { portal, source },
                        ConnError::Session(source) => ClientError::Session { portal, source },
                        other => ClientError::Submit(other.to_string()),
                    }
                    .into()
                }),
            Err(TransportError::TimedOut { .. }) => {
                self.conn.session_mut().handle_timeout(Instant::now());
                Ok(())
            }
            Err(source) => Err(ClientError::Transport { portal, source }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isids_are_stable_per_name_and_of_the_random_type() {
        let a = stable_isid("iqn.2026-12.test:a");
        assert_eq!(a, stable_isid("iqn.2026-12.test:a"));
        assert_ne!(a, stable_isid("iqn.2026-12.test:b"));
        assert_eq!(a[0] >> 6, 0b11);
        assert_eq!(parse_isid("0x400001370000"), Ok([0x40, 0, 1, 0x37, 0, 0]));
        assert!(parse_isid("12345").is_err());
    }
}
