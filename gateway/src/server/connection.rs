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

use super::{Deferred, LunExecutor, Submission};

/// Largest AHS accepted (the field allows 1020 bytes).
const MAX_AHS_LEN: usize = 1024;

/// Encoded output held before the session is asked for more: bounds a connection's send
/// buffer while a large read drains. The event loop holds at most two such buffers per
/// connection (one lent to the kernel, one filling).
const TX_HIGH_WATER: usize = 256 << 10;

/// The receive buffer of a connection still logging in: one login PDU at the login's
/// MaxRecvDataSegmentLength. It grows to the negotiated size once the login is over, so
/// a connection that never logs in costs a few KiB, not a full-size buffer.
const LOGIN_RX_CAPACITY: usize =
    BHS_LEN + MAX_AHS_LEN + 4 + crate::session::LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH as usize + 8;

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
    #[error("initiator sent nothing for {after_ms} ms after connecting")]
    Silent { after_ms: u128 },
    #[error("initiator closed the connection")]
    PeerClosed,
    #[error("logged out")]
    LoggedOut,
}

/// The limits one connection runs under.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Our MaxRecvDataSegmentLength: the receive buffer holds one whole PDU of it.
    pub max_recv_data_segment_length: u32,
    /// An initiator that stops in the middle of a PDU this long is disconnected.
    pub stall_timeout: Duration,
    /// Output owed before the connection stops taking input
    /// ([`Connection::output_backlog`]).
    pub max_output_bytes: usize,
    /// A new connection that sends no byte this long is closed: a slot is worth more
    /// than the patience owed to a client that has not said anything.
    pub first_pdu_timeout: Duration,
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
    /// Commands the event loop has still to start off this connection's turn.
    deferred: Vec<(CommandId, Deferred)>,
    /// Data-In bytes that deferred commands will bring, by command: reserved against
    /// the output limit when the command starts.
    reads_in_flight: Vec<(CommandId, usize)>,
    reads_in_flight_bytes: usize,
    /// Output this connection may owe before it stops taking input
    /// ([`Connection::output_backlog`]).
    output_limit: usize,
    /// The receive buffer's size once logged in.
    full_rx_capacity: usize,
    /// Received bytes wait, unread, for output to drain.
    input_held: bool,
    /// Until the first byte arrives: when the connection is closed for silence.
    first_byte_deadline: Option<Instant>,
    accepted_at: Instant,
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
        limits: ConnectionLimits,
        now: Instant,
    ) -> Connection {
        // One whole PDU at our limit, with AHS, digests and padding.
        let full_rx_capacity =
            BHS_LEN + MAX_AHS_LEN + 4 + limits.max_recv_data_segment_length as usize + 8;
        Connection {
            session,
            peer,
            rx: vec![0; LOGIN_RX_CAPACITY.min(full_rx_capacity)],
            filled: 0,
            tx: Vec::new(),
            last_rx_progress: now,
            stall_timeout: limits.stall_timeout,
            luns,
            executor: None,
            events: Vec::new(),
            closed: None,
            deferred: Vec::new(),
            reads_in_flight: Vec::new(),
            reads_in_flight_bytes: 0,
            output_limit: limits.max_output_bytes.max(1),
            full_rx_capacity,
            input_held: false,
            first_byte_deadline: Some(now + limits.first_pdu_timeout),
            accepted_at: now,
        }
    }

    /// Output this connection owes its initiator: encoded bytes not yet handed to the
    /// event loop, what the session still has queued, and the read data of commands
    /// still running. While it is at [`ConnectionLimits::max_output_bytes`] the
    /// connection takes no input and starts no command, so an initiator that does not
    /// read makes its own TCP window close instead of the target's memory grow.
    pub fn output_backlog(&self) -> usize {
        self.tx.len() + self.session.queued_output_bytes() + self.reads_in_flight_bytes
    }

    /// The receive buffer's size.
    pub fn receive_buffer_bytes(&self) -> usize {
        self.rx.len()
    }

    fn output_full(&self) -> bool {
        self.output_backlog() >= self.output_limit
    }

    /// Whether the event loop should keep a receive armed: not while received PDUs wait
    /// for output to drain (they are handled first, by [`Connection::resume`], which must
    /// not run under a receive in flight).
    pub fn wants_input(&self) -> bool {
        self.closed.is_none()
            && !self.input_held
            && !self.output_full()
            && self.filled < self.rx.len()
    }

    /// Goes on with what output held back (buffered PDUs, commands not started), once
    /// output has drained. Call only while no receive is in flight: it moves the
    /// receive buffer's contents.
    pub fn resume(&mut self, now: Instant) {
        if self.closed.is_some() || self.output_full() {
            return;
        }
        if self.session.has_ready_commands() {
            self.run_commands();
        }
        if self.input_held {
            // The bytes waited on us, not on the initiator: the stall clock restarts.
            self.last_rx_progress = now;
            self.handle_received(now, 0);
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
            self.first_byte_deadline = None;
        }
        let mut start = 0;
        while self.closed.is_none() && !self.output_full() {
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
        // Keep the unread tail (a partial PDU, or whole PDUs held back while output is
        // full) at the front.
        self.input_held = self.closed.is_none() && self.output_full() && self.filled > start;
        self.rx.copy_within(start..self.filled, 0);
        self.filled -= start;
        if self.rx.len() < self.full_rx_capacity && self.session.state() != TargetState::Login {
            self.rx.resize(self.full_rx_capacity, 0);
        }
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
    /// WRITE and SYNCHRONIZE CACHE on a file unit leave file I/O for the event loop, and
    /// other commands that touch a file leave a job for the blocking pool
    /// ([`Connection::take_deferred`]), finished later by
    /// [`Connection::complete_deferred`].
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
        while !self.output_full() {
            let Some(command) = self.session.poll_command() else {
                break;
            };
            let data_in_len = command.expected_data_in_len as usize;
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
                Submission::Io(io) => self.defer(command.id, data_in_len, Deferred::Io(io)),
                Submission::Blocking(job) => {
                    self.defer(command.id, data_in_len, Deferred::Blocking(job))
                }
            }
        }
    }

    fn defer(&mut self, id: CommandId, data_in_len: usize, work: Deferred) {
        self.reads_in_flight.push((id, data_in_len));
        self.reads_in_flight_bytes += data_in_len;
        self.deferred.push((id, work));
    }

    /// The deferred work the commands started since the last call need.
    pub(super) fn take_deferred(&mut self) -> Vec<(CommandId, Deferred)> {
        std::mem::take(&mut self.deferred)
    }

    /// A deferred command finished (or timed out): its result goes to the initiator.
    pub(super) fn complete_deferred(&mut self, id: CommandId, result: CommandResult) {
        if let Some(at) = self.reads_in_flight.iter().position(|(c, _)| *c == id) {
            let (_, reserved) = self.reads_in_flight.swap_remove(at);
            self.reads_in_flight_bytes -= reserved;
        }
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
        if self.first_byte_deadline.is_some_and(|at| now >= at) {
            let after_ms = now.saturating_duration_since(self.accepted_at).as_millis();
            self.session.close();
            self.close(CloseReason::Silent { after_ms });
            return;
        }
        if let Err(e) = self.session.handle_timeout(now) {
            self.close(CloseReason::Session(e));
        }
        // Bytes held back while output is full wait on us, not on the initiator.
        if self.filled > 0 && !self.input_held {
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
        let stall = (self.filled > 0 && !self.input_held)
            .then(|| self.last_rx_progress + self.stall_timeout);
        [session, stall, self.first_byte_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the initiator never got past the login (for quieter logs of floods).
    pub fn never_logged_in(&self) -> bool {
        self.session.state() == TargetState::Login
            || matches!(self.closed, Some(CloseReason::Silent { .. }))
    }
}
