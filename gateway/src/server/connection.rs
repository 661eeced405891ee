//! One connection's byte handling, without I/O: framing received bytes into PDUs (RFC 7143
//! section 11.1, lengths checked against our limits before anything is read), running the
//! session's commands on the logical units, encoding what the session sends, and spotting
//! an initiator that stalls in the middle of a PDU.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::pdu::{self, Limits, BHS_LEN};

use crate::session::{
    CommandId, CommandResult, TargetError, TargetEvent, TargetSession, TargetState,
};

use super::{FileIo, LunExecutor, Submission};

/// Largest AHS accepted (the field allows 1020 bytes).
const MAX_AHS_LEN: usize = 1024;

/// Encoded output held before the session is asked for more: bounds a connection's send
/// buffer while a large read drains.
const TX_HIGH_WATER: usize = 1 << 20;

/// Why a connection closed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("{0}")]
    Session(#[from] TargetError),
    #[error(
        "initiator stalled mid-PDU: {have} of {need} bytes received, nothing for {idle_ms} ms"
    )]
    Stalled {
        have: usize,
        need: usize,
        idle_ms: u128,
    },
    #[error("initiator closed the connection")]
    PeerClosed,
    #[error("logged out")]
    LoggedOut,
}

/// A connection: its session, receive buffer and pending output.
pub struct Connection {
    pub(super) session: TargetSession,
    peer: SocketAddr,
    rx: Vec<u8>,
    filled: usize,
    /// Encoded PDUs waiting to be sent.
    pub(super) tx: Vec<u8>,
    last_rx_progress: Instant,
    stall_timeout: Duration,
    /// Logical units by target name, resolved once the login names the target.
    luns: Arc<Vec<(String, Arc<dyn LunExecutor>)>>,
    executor: Option<Arc<dyn LunExecutor>>,
    events: Vec<TargetEvent>,
    closed: Option<CloseReason>,
    /// Commands whose file I/O the event loop has still to issue.
    file_ios: Vec<(CommandId, FileIo)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("session", &self.session)
            .field("filled", &self.filled)
            .field("tx", &self.tx.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(
        session: TargetSession,
        peer: SocketAddr,
        luns: Arc<Vec<(String, Arc<dyn LunExecutor>)>>,
        max_recv_data_segment_length: u32,
        stall_timeout: Duration,
        now: Instant,
    ) -> Connection {
        // One whole PDU at our limit, with AHS, digests and padding.
        let capacity = BHS_LEN + MAX_AHS_LEN + 4 + max_recv_data_segment_length as usize + 8;
        Connection {
            session,
            peer,
            rx: vec![0; capacity],
            filled: 0,
            tx: Vec::new(),
            last_rx_progress: now,
            stall_timeout,
            luns,
            executor: None,
            events: Vec::new(),
            closed: None,
            file_ios: Vec::new(),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Where the next received bytes go.
    pub fn recv_space(&mut self) -> &mut [u8] {
        let filled = self.filled;
        self.rx.get_mut(filled..).unwrap_or_default()
    }

    /// Why the connection must close, once it must. Pending output is still sent first.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    pub fn take_events(&mut self) -> Vec<TargetEvent> {
        std::mem::take(&mut self.events)
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
    }

    /// Closes from outside (reinstatement, shutdown).
    pub fn abort(&mut self, reason: TargetError) {
        self.session.close();
        self.close(CloseReason::Session(reason));
    }

    /// The peer ended the stream.
    pub fn handle_eof(&mut self) {
        self.close(CloseReason::PeerClosed);
    }

    /// `n` bytes arrived in [`Connection::recv_space`]: frames and handles every whole PDU.
    pub fn handle_received(&mut self, now: Instant, n: usize) {
        self.filled = (self.filled + n).min(self.rx.len());
        if n > 0 {
            self.last_rx_progress = now;
        }
        let mut start = 0;
        while self.closed.is_none() {
            let digests = self.session.digests();
            let limits = Limits {
                max_data_segment_length: self.session.max_recv_data_segment_length(),
                max_ahs_length: MAX_AHS_LEN,
            };
            let buf = self.rx.get(start..self.filled).unwrap_or_default();
            match pdu::decode_pdu(buf, digests, &limits) {
                Ok(None) => break,
                Ok(Some(decoded)) => {
                    let data = buf.get(decoded.data.clone()).unwrap_or_default().to_vec();
                    start += decoded.consumed;
                    if let Err(e) = self.session.handle_pdu(now, decoded.header, &data) {
                        self.close(CloseReason::Session(e));
                    }
                    self.run_commands();
                }
                Err(error) => {
                    let bhs = buf.get(..BHS_LEN).unwrap_or(buf).to_vec();
                    let error = self.session.handle_malformed_pdu(now, &bhs, error);
                    self.close(CloseReason::Session(error));
                }
            }
            self.collect_events();
        }
        // Keep the unread tail (a partial PDU) at the front.
        self.rx.copy_within(start..self.filled, 0);
        self.filled -= start;
        self.fill_output();
        if self.closed.is_none() && self.session.state() == TargetState::Closed {
            self.close(CloseReason::LoggedOut);
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.events.push(event);
        }
    }

    /// Starts every ready command on its logical unit: most finish here and now; READ,
    /// WRITE and SYNCHRONIZE CACHE on a file unit leave file I/O for the event loop
    /// ([`Connection::take_file_ios`]), finished later by [`Connection::complete_file_io`].
    fn run_commands(&mut self) {
        if self.executor.is_none() {
            if let Some(target) = self.session.target() {
                self.executor = self
                    .luns
                    .iter()
                    .find(|(name, _)| *name == target.name)
                    .map(|(_, e)| Arc::clone(e));
            }
        }
        while let Some(command) = self.session.poll_command() {
            let submission = match &self.executor {
                Some(executor) => executor.submit(
                    command.lun,
                    &command.cdb,
                    command.data_out,
                    command.expected_data_in_len,
                ),
                None => Submission::Done(CommandResult {
                    status: 0x02,
                    // ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
                    sense: vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0, 0, 0, 0, 0],
                    data_in: Vec::new(),
                    data_out_wanted: None,
                }),
            };
            match submission {
                Submission::Done(result) => self.session.complete_command(command.id, result),
                Submission::Io(io) => self.file_ios.push((command.id, io)),
            }
        }
    }

    /// The file I/O the commands started since the last call need.
    pub(super) fn take_file_ios(&mut self) -> Vec<(CommandId, FileIo)> {
        std::mem::take(&mut self.file_ios)
    }

    /// A command's file I/O finished: its result goes to the initiator.
    pub(super) fn complete_file_io(&mut self, id: CommandId, result: CommandResult) {
        self.session.complete_command(id, result);
        self.collect_events();
        self.fill_output();
    }

    /// Encodes what the session has to send, up to the high-water mark.
    pub fn fill_output(&mut self) {
        while self.tx.len() < TX_HIGH_WATER {
            let Some(transmit) = self.session.poll_transmit() else {
                break;
            };
            if let Err(error) = pdu::encode_pdu(
                &transmit.header,
                transmit.data(),
                transmit.digests,
                &mut self.tx,
            ) {
                tracing::error!(peer = %self.peer, %error, "cannot encode a PDU of ours");
                self.close(CloseReason::Session(TargetError::Malformed {
                    opcode: transmit.header.opcode() as u8,
                    source: error,
                }));
                break;
            }
        }
    }

    /// Timers: the session's (login, pings) and the mid-PDU stall.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if let Err(e) = self.session.handle_timeout(now) {
            self.close(CloseReason::Session(e));
        }
        if self.filled > 0 {
            let idle = now.saturating_duration_since(self.last_rx_progress);
            if idle >= self.stall_timeout {
                let need = self.pending_pdu_len();
                self.close(CloseReason::Stalled {
                    have: self.filled,
                    need,
                    idle_ms: idle.as_millis(),
                });
            }
        }
        self.fill_output();
    }

    /// Length of the PDU partly received, when its header is in.
    fn pending_pdu_len(&self) -> usize {
        let limits = Limits {
            max_data_segment_length: pdu::MAX_DATA_SEGMENT_LENGTH,
            max_ahs_length: MAX_AHS_LEN,
        };
        self.rx
            .get(..BHS_LEN.min(self.filled))
            .and_then(|bhs| pdu::frame(bhs, self.session.digests(), &limits).ok())
            .map_or(BHS_LEN, |f| f.total_len())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let session = self.session.poll_timeout();
        let stall = (self.filled > 0).then(|| self.last_rx_progress + self.stall_timeout);
        match (session, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
