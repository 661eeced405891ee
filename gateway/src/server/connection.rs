//! One connection's byte handling, without I/O: framing received bytes into PDUs (RFC 7143
//! section 11.1, lengths checked against our limits before anything is read), receiving
//! write data straight into its command's buffer once the header says where it goes (the
//! header phase of SPDK's `iscsi_read_pdu`: [`TargetSession::place_data`]), running the
//! session's commands on the logical units, encoding what the session sends, and spotting
//! an initiator that stalls in the middle of a PDU.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::pdu::{self, digest, Header, Limits, PduError, BHS_LEN};

use crate::session::{
    CommandId, CommandResult, Placement, TargetError, TargetEvent, TargetSession,
    TargetSessionConfig, TargetState,
};

use super::attention::Attentions;
use super::lun_stats::{op_kind, LoopLunStats, OpKind, Sample, StatsUnit};
use super::rx_buffers::RxBufferPool;
use super::{Deferred, LiveTarget, LunExecutor, LunInfo, Submission};
use crate::portal::{AluaGroups, PortalLoad};
use crate::reservation::{Nexus, NexusView, ResetKind};

/// Largest AHS accepted (the field allows 1020 bytes).
const MAX_AHS_LEN: usize = 1024;

/// Encoded output held before the session is asked for more: bounds a connection's send
/// buffer while a large read drains. The event loop holds at most two such buffers per
/// connection (one lent to the kernel, one filling).
const TX_HIGH_WATER: usize = 256 << 10;

/// The receive buffer a connection owns: one login PDU at the login's
/// MaxRecvDataSegmentLength. Larger PDUs, and bursts that fill it, are received into a
/// full-size buffer taken from the event loop's pool for as long as they last
/// ([`RxBufferPool`]), so an idle session costs a few KiB, not a full-size buffer.
const SMALL_RX_CAPACITY: usize =
    BHS_LEN + MAX_AHS_LEN + 4 + crate::session::LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH as usize + 8;

/// Write data at least this long still to come after its header is received in place;
/// shorter segments are received with their header and copied once (counted in the
/// session's stats). Placing costs a receive per PDU, so below this a copy is cheaper
/// (4 KiB random writes at 32 in flight ran at half the IOPS with every segment placed).
const PLACE_MIN_BYTES: usize = 32 << 10;

/// A PDU whose data segment is being received into its command's buffer.
#[derive(Debug)]
struct Placing {
    header: Header,
    /// The BHS as received, for a Reject if the data digest fails.
    bhs: [u8; BHS_LEN],
    placement: Placement,
    /// Bytes of the data segment in place so far.
    have: usize,
    /// Padding and data digest after the data segment, received into the receive buffer.
    trailer_len: usize,
    data_digest: bool,
}

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
    /// The buffer receives go into: the connection's own small one, or a full-size one
    /// from the pool while large PDUs or bursts arrive.
    rx: Vec<u8>,
    /// The small buffer, set aside while `rx` is a full-size one.
    small_rx: Vec<u8>,
    rx_pool: Option<Arc<RxBufferPool>>,
    filled: usize,
    /// The data segment being received in place, if any: receives go there first.
    placing: Option<Placing>,
    /// The last PDU carried write data worth placing: the next receive takes only up to
    /// the end of the next header (SPDK reads every header alone), so that its data can
    /// be placed rather than land in the receive buffer. Small PDUs turn it off, and
    /// receives take as much as fits again.
    header_first: bool,
    /// Encoded PDUs waiting to be sent.
    pub(super) tx: Vec<u8>,
    last_rx_progress: Instant,
    stall_timeout: Duration,
    /// Target nodes and their logical units, resolved once the login names the target.
    luns: Arc<Vec<Arc<LiveTarget>>>,
    executor: Option<Arc<dyn LunExecutor>>,
    /// The LUNs of the target logged in to, as last seen (for unit attentions).
    target_luns: Vec<LunInfo>,
    /// The volumes bound for this host on that target, as last seen: a configuration
    /// with other bindings announces REPORTED LUNS DATA HAS CHANGED once to the nexus.
    bindings: Option<Arc<crate::conglomerate::HostBindings>>,
    attentions: Attentions,
    /// Deferred commands' start, for their latency: (command, unit, kind, write bytes,
    /// start).
    timings: Vec<(CommandId, StatsUnit, OpKind, u64, Instant)>,
    /// Finished commands not yet counted by the event loop ([`Connection::drain_samples`]).
    samples: Vec<Sample>,
    /// This session's I_T nexus once logged in to a target, with what its units'
    /// reservations allow it (`crate::reservation`).
    nexus: Option<NexusView>,
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
    /// A full-size receive buffer's length: one whole PDU at our limit.
    full_rx_capacity: usize,
    /// Received bytes wait, unread, for output to drain.
    input_held: bool,
    /// Until the first byte arrives: when the connection is closed for silence.
    first_byte_deadline: Option<Instant>,
    accepted_at: Instant,
    /// The portal it came in on (its session is counted there once logged in).
    portal: Option<Arc<PortalLoad>>,
    counted_on_portal: bool,
    /// The ALUA states: commands meet the own port group's state, and REPORT TARGET
    /// PORT GROUPS is answered from it.
    alua: Option<Arc<AluaGroups>>,
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

/// The relative target port every portal of this gateway reports (one target port).
const TARGET_PORT: u16 = 1;

impl Drop for Connection {
    /// The I_T nexus ends with its connection (one connection per session): logout,
    /// connection loss, reinstatement, a cold reset, shutdown.
    fn drop(&mut self) {
        if let (Some(executor), Some(view)) = (&self.executor, &self.nexus) {
            executor.nexus_lost(view);
        }
        if let (true, Some(portal)) = (self.counted_on_portal, &self.portal) {
            portal.session_left();
        }
    }
}

impl Connection {
    pub fn new(
        session: TargetSession,
        peer: SocketAddr,
        luns: Arc<Vec<Arc<LiveTarget>>>,
        limits: ConnectionLimits,
        now: Instant,
    ) -> Connection {
        // One whole PDU at our limit, with AHS, digests and padding.
        let full_rx_capacity =
            BHS_LEN + MAX_AHS_LEN + 4 + limits.max_recv_data_segment_length as usize + 8;
        Connection {
            session,
            peer,
            rx: vec![0; SMALL_RX_CAPACITY.min(full_rx_capacity)],
            small_rx: Vec::new(),
            rx_pool: None,
            filled: 0,
            placing: None,
            header_first: false,
            tx: Vec::new(),
            last_rx_progress: now,
            stall_timeout: limits.stall_timeout,
            luns,
            executor: None,
            target_luns: Vec::new(),
            bindings: None,
            attentions: Attentions::default(),
            timings: Vec::new(),
            samples: Vec::new(),
            nexus: None,
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
            portal: None,
            counted_on_portal: false,
            alua: None,
        }
    }

    /// The portal the connection came in on and the ALUA states its commands meet.
    pub fn with_port(mut self, portal: Option<Arc<PortalLoad>>, alua: Arc<AluaGroups>) -> Self {
        self.portal = portal;
        self.alua = Some(alua);
        self
    }

    /// The pool full-size receive buffers come from (without one they are allocated).
    pub fn with_rx_pool(mut self, pool: Arc<RxBufferPool>) -> Self {
        self.rx_pool = Some(pool);
        self
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
            && (self.receiving_in_place() || self.filled < self.rx.len())
    }

    /// Whether the next receive goes into a command's buffer.
    fn receiving_in_place(&self) -> bool {
        self.placing
            .as_ref()
            .is_some_and(|p| p.have < p.placement.len())
    }

    /// Whether part of a PDU has been received.
    fn mid_pdu(&self) -> bool {
        self.filled > 0 || self.placing.is_some()
    }

    /// Goes on with what output held back (buffered PDUs, commands not started), once
    /// output has drained. Call only while no receive is in flight: it moves the
    /// receive buffer's contents.
    pub fn resume(&mut self, now: Instant) {
        if self.closed.is_some() || self.output_full() {
            return;
        }
        if self.session.has_ready_commands() {
            self.run_commands(now);
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

    /// Where the next received bytes go: the rest of a data segment being received in
    /// place, else the receive buffer's free tail.
    pub fn recv_space(&mut self) -> &mut [u8] {
        let filled = self.filled;
        let end = match self.header_first_end() {
            Some(end) => end.max(filled + 1).min(self.rx.len()),
            None => self.rx.len(),
        };
        match self.placing.as_mut().filter(|p| p.have < p.placement.len()) {
            Some(placing) => {
                let have = placing.have;
                placing
                    .placement
                    .target()
                    .get_mut(have..)
                    .unwrap_or_default()
            }
            None => self.rx.get_mut(filled..end).unwrap_or_default(),
        }
    }

    /// Where the next header ends in the receive buffer, while receiving header first and
    /// that header is not in yet (after the trailer of a PDU placed, if one waits).
    fn header_first_end(&self) -> Option<usize> {
        if !self.header_first || self.session.state() != TargetState::FullFeature {
            return None;
        }
        let at = self.placing.as_ref().map_or(0, |p| p.trailer_len);
        let digests = self.session.digests();
        let digest_len = if digests.header {
            digest::DIGEST_LEN
        } else {
            0
        };
        let header_end = match self
            .rx
            .get(at..at + BHS_LEN)
            .filter(|_| self.filled >= at + BHS_LEN)
        {
            None => at + BHS_LEN + digest_len,
            Some(bhs) => {
                let limits = Limits {
                    max_data_segment_length: pdu::MAX_DATA_SEGMENT_LENGTH,
                    max_ahs_length: MAX_AHS_LEN,
                };
                at + pdu::frame(bhs, digests, &limits).ok()?.header_len()
            }
        };
        (self.filled < header_end).then_some(header_end)
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
        let mut into_rx = 0;
        match self.placing.as_mut().filter(|p| p.have < p.placement.len()) {
            Some(placing) => placing.have = (placing.have + n).min(placing.placement.len()),
            None => {
                into_rx = n;
                self.filled = (self.filled + n).min(self.rx.len());
            }
        }
        let rx_was_full = self.filled == self.rx.len();
        if n > 0 {
            self.last_rx_progress = now;
            self.first_byte_deadline = None;
        }
        let mut start = 0;
        while self.closed.is_none() && !self.output_full() {
            if self.placing.is_some() {
                match self.finish_placing(now, start) {
                    Some(consumed) => {
                        start += consumed;
                        self.run_commands(now);
                        self.collect_events();
                        continue;
                    }
                    None => break,
                }
            }
            let digests = self.session.digests();
            let limits = Limits {
                max_data_segment_length: self.session.max_recv_data_segment_length(),
                max_ahs_length: MAX_AHS_LEN,
            };
            let buf = self.rx.get(start..self.filled).unwrap_or_default();
            match pdu::decode_pdu(buf, digests, &limits) {
                Ok(None) => {
                    start += self.start_placing(start, &limits);
                    break;
                }
                Ok(Some(decoded)) => {
                    let data = buf.get(decoded.data.clone()).unwrap_or_default();
                    self.header_first = data.len() >= PLACE_MIN_BYTES
                        && matches!(decoded.header, Header::ScsiCommand(_) | Header::DataOut(_));
                    let result = self.session.handle_pdu(now, decoded.header, data);
                    start += decoded.consumed;
                    if let Err(e) = result {
                        self.close(CloseReason::Session(e));
                    }
                    self.run_commands(now);
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
        self.input_held = self.closed.is_none()
            && self.output_full()
            && (self.filled > start || self.placing.is_some());
        self.rx.copy_within(start..self.filled, 0);
        self.filled -= start;
        self.fit_receive_buffer(rx_was_full, into_rx);
        self.fill_output();
        if self.closed.is_none() && self.session.state() == TargetState::Closed {
            self.close(CloseReason::LoggedOut);
        }
    }

    /// Picks the buffer the next receive goes into. A full-size one is taken when the
    /// small one was filled by a receive (a burst: receiving it in small pieces would cost
    /// a system call each) or cannot hold the PDU whose header has arrived; it goes back to
    /// the pool at the first receive the small one would have held with room to spare,
    /// once nothing is left in it. Call only with no receive in flight.
    fn fit_receive_buffer(&mut self, rx_was_full: bool, received: usize) {
        let small_capacity = SMALL_RX_CAPACITY.min(self.full_rx_capacity);
        let pending_len = if self.filled > 0 {
            self.pending_pdu_len()
        } else {
            0
        };
        if self.rx.len() > small_capacity {
            if self.filled == 0 && self.placing.is_none() && received <= small_capacity / 2 {
                let full = std::mem::replace(&mut self.rx, std::mem::take(&mut self.small_rx));
                if let Some(pool) = &self.rx_pool {
                    pool.give(full);
                }
                return;
            }
            if pending_len <= self.rx.len() {
                return;
            }
            // Our limit was raised live (a renegotiation): a larger buffer for it.
        } else {
            if self.placing.is_some() || self.session.state() == TargetState::Login {
                // Placed data goes to its command's buffer, headers only to this one.
                // Login PDUs are bounded by the login's own limit, which this one holds.
                return;
            }
            let full = self.filled == self.rx.len();
            if !(rx_was_full || full || pending_len > self.rx.len()) {
                return;
            }
        }
        // One whole PDU at our limit, which a renegotiation may have raised since the
        // connection began.
        let full_len = self.full_rx_capacity.max(
            BHS_LEN + MAX_AHS_LEN + 4 + self.session.max_recv_data_segment_length() as usize + 8,
        );
        let mut large = match &self.rx_pool {
            Some(pool) => pool.take(full_len),
            None => vec![0; full_len],
        };
        if let (Some(dst), Some(src)) = (large.get_mut(..self.filled), self.rx.get(..self.filled)) {
            dst.copy_from_slice(src);
        }
        let previous = std::mem::replace(&mut self.rx, large);
        if previous.len() > small_capacity {
            if let Some(pool) = &self.rx_pool {
                pool.give(previous);
            }
        } else {
            self.small_rx = previous;
        }
    }

    /// The header phase: when the receive buffer from `start` holds a whole header (its
    /// digest checked by the codec already) of write data with much still to come, asks
    /// the session where the data goes and receives the rest there. Returns the bytes of
    /// the receive buffer taken (the header, and data that came with it, copied once).
    fn start_placing(&mut self, start: usize, limits: &Limits) -> usize {
        let digests = self.session.digests();
        let buf = self.rx.get(start..self.filled).unwrap_or_default();
        let Some(frame) = buf
            .get(..BHS_LEN)
            .and_then(|bhs| pdu::frame(bhs, digests, limits).ok())
        else {
            return 0;
        };
        let header_len = frame.header_len();
        let Some(head) = buf.get(..header_len) else {
            return 0;
        };
        let in_buffer = (buf.len() - header_len).min(frame.data_len);
        if frame.data_len - in_buffer < PLACE_MIN_BYTES {
            return 0;
        }
        let (bhs, ahs) = head.split_at(BHS_LEN);
        let ahs = ahs.get(..frame.ahs_len).unwrap_or_default();
        let Ok(header) = Header::parse(bhs, ahs) else {
            // Refused when the PDU is whole, as before.
            return 0;
        };
        let Some(mut placement) = self.session.place_data(&header, frame.data_len) else {
            return 0;
        };
        let mut bhs_copy = [0u8; BHS_LEN];
        bhs_copy.copy_from_slice(bhs);
        let early = buf
            .get(header_len..header_len + in_buffer)
            .unwrap_or_default();
        if let Some(dst) = placement.target().get_mut(..in_buffer) {
            dst.copy_from_slice(early);
        }
        placement.note_copied(in_buffer);
        self.header_first = true;
        self.placing = Some(Placing {
            header,
            bhs: bhs_copy,
            placement,
            have: in_buffer,
            trailer_len: frame.pad_len + frame.data_digest_len,
            data_digest: frame.data_digest_len > 0,
        });
        header_len + in_buffer
    }

    /// Delivers the PDU being received in place once its data and trailer are in (the
    /// trailer from `start` in the receive buffer), checking the data digest over the
    /// placed bytes first. Returns the receive buffer bytes taken, or `None` while more
    /// is to come.
    fn finish_placing(&mut self, now: Instant, start: usize) -> Option<usize> {
        let placing = self.placing.as_ref()?;
        if placing.have < placing.placement.len() {
            return None;
        }
        let trailer = self
            .rx
            .get(start..self.filled)?
            .get(..placing.trailer_len)?;
        let placing = self.placing.take()?;
        let pad = placing.trailer_len - if placing.data_digest { 4 } else { 0 };
        if placing.data_digest {
            let (padding, wire) = trailer.split_at(pad);
            let crc = digest::crc32c(placing.placement.placed());
            let expected = digest::crc32c_append(crc, padding);
            let found =
                digest::digest_from_wire(wire.first_chunk::<4>().copied().unwrap_or_default());
            if expected != found {
                // The placement is dropped: the bytes it received were never accepted.
                let error = PduError::DataDigestMismatch { expected, found };
                let error = self.session.handle_malformed_pdu(now, &placing.bhs, error);
                self.close(CloseReason::Session(error));
                return Some(placing.trailer_len);
            }
        }
        if let Err(e) = self
            .session
            .handle_placed_pdu(now, placing.header, placing.placement)
        {
            self.close(CloseReason::Session(e));
        }
        Some(placing.trailer_len)
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match &event {
                TargetEvent::LoggedIn {
                    initiator_name,
                    isid,
                    target_name: Some(_),
                    ..
                } => {
                    self.resolve_executor();
                    let nexus = Nexus::new(initiator_name, *isid, TARGET_PORT);
                    if let Some(executor) = &self.executor {
                        executor.nexus_joined(&nexus);
                    }
                    self.nexus = Some(NexusView::new(nexus));
                    if let Some(portal) = &self.portal {
                        portal.session_joined();
                        self.counted_on_portal = true;
                    }
                }
                // Applied before the Task Management response is sent (the caller fills
                // the output after collecting events).
                TargetEvent::LogicalUnitReset { lun } => {
                    if let Some(executor) = &self.executor {
                        executor.reset(Some(*lun), ResetKind::LogicalUnit);
                    }
                }
                TargetEvent::TargetReset { cold } => {
                    if let Some(executor) = &self.executor {
                        let kind = if *cold {
                            ResetKind::TargetCold
                        } else {
                            ResetKind::TargetWarm
                        };
                        executor.reset(None, kind);
                    }
                }
                _ => {}
            }
            self.events.push(event);
        }
    }

    /// The host's bound volumes, as the session's task management looks them up.
    fn subsidiaries(&self) -> Option<Arc<dyn crate::session::SubsidiaryLuns>> {
        self.bindings
            .clone()
            .map(|b| b as Arc<dyn crate::session::SubsidiaryLuns>)
    }

    /// Finds the executor of the target logged in to, once.
    fn resolve_executor(&mut self) {
        if self.executor.is_none() {
            if let Some(target) = self.session.target() {
                if let Some(live) = self.luns.iter().find(|t| t.name == target.name) {
                    let initiator = self.session.initiator_name();
                    self.executor = Some(Arc::clone(live.executor_for(initiator)));
                    self.bindings = live.bindings_for(initiator).cloned();
                    self.session.set_subsidiaries(self.subsidiaries());
                    self.target_luns = live.luns.clone();
                }
            }
        }
    }

    /// Starts every ready command on its logical unit: most finish here and now; READ,
    /// WRITE and SYNCHRONIZE CACHE on a file unit leave file I/O for the event loop, and
    /// other commands that touch a file leave a job for the blocking pool
    /// ([`Connection::take_deferred`]), finished later by
    /// [`Connection::complete_deferred`].
    fn run_commands(&mut self, now: Instant) {
        self.resolve_executor();
        while !self.output_full() {
            let Some(command) = self.session.poll_command() else {
                break;
            };
            if let Some(sense) = self.attentions.take_for(command.lun, &command.cdb) {
                let result = CommandResult {
                    status: 0x02,
                    sense,
                    data_in: Vec::new(),
                    data_out_wanted: None,
                };
                self.session.complete_command(command.id, result);
                continue;
            }
            if let Some(result) = self.port_answer(command.lun, &command.cdb) {
                self.session.complete_command(command.id, result);
                continue;
            }
            let data_in_len = command.expected_data_in_len as usize;
            // The turn's time: the command arrived in this turn (or waited for output
            // room until it).
            let started = now;
            let attached = self.attached_unit(command.lun);
            let kind = op_kind(&command.cdb);
            let write_bytes = command.data_out.len() as u64;
            // A bound volume comes back from the lookup that runs the command.
            let mut bound = None;
            let submission = match (&self.executor, &mut self.nexus) {
                (Some(executor), Some(nexus)) => {
                    let (submission, unit) = executor.submit_as_bound(
                        nexus,
                        command.lun,
                        &command.cdb,
                        command.data_out,
                        command.expected_data_in_len,
                    );
                    bound = unit;
                    submission
                }
                (Some(executor), None) => {
                    bound = executor.subsidiary_unit(command.lun);
                    executor.submit(
                        crate::disk::Nexus {
                            initiator_name: self.session.initiator_name(),
                            isid: self.session.isid(),
                        },
                        command.lun,
                        &command.cdb,
                        command.data_out,
                        command.expected_data_in_len,
                    )
                }
                (None, _) => Submission::Done(CommandResult {
                    status: 0x02,
                    // ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
                    sense: vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0, 0, 0, 0, 0],
                    data_in: Vec::new(),
                    data_out_wanted: None,
                }),
            };
            let unit_id = attached.or_else(|| bound.map(StatsUnit::Bound));
            match submission {
                Submission::Done(result) => {
                    if let Some(unit_id) = unit_id {
                        self.sample(unit_id, kind, write_bytes, &result, started);
                    }
                    self.session.complete_command(command.id, result)
                }
                Submission::Io(io) => {
                    if let Some(unit_id) = unit_id {
                        self.timings
                            .push((command.id, unit_id, kind, write_bytes, started));
                    }
                    self.defer(command.id, data_in_len, Deferred::Io(io))
                }
                Submission::Blocking(job) => {
                    if let Some(unit_id) = unit_id {
                        self.timings
                            .push((command.id, unit_id, kind, write_bytes, started));
                    }
                    self.defer(command.id, data_in_len, Deferred::Blocking(job))
                }
            }
        }
    }

    /// What the target port answers itself (`crate::portal::alua`): REPORT TARGET PORT
    /// GROUPS, and NOT READY for medium access while the own port group is in standby,
    /// unavailable or transitioning. One atomic load per command otherwise.
    fn port_answer(&mut self, lun: u64, cdb: &[u8]) -> Option<CommandResult> {
        let alua = self.alua.as_deref()?;
        if let Some(data) = alua.report(cdb) {
            return Some(CommandResult {
                status: 0,
                sense: Vec::new(),
                data_in: data,
                data_out_wanted: None,
            });
        }
        let check = alua.refusal(cdb)?;
        // A unit attention pending for this nexus is reported before the refusal.
        if let (Some(executor), Some(nexus)) = (&self.executor, &mut self.nexus) {
            if let Some(first) = executor.answer_first(nexus, lun, cdb) {
                return Some(first);
            }
        }
        Some(CommandResult {
            status: 0x02,
            sense: check.to_fixed_sense(),
            data_in: Vec::new(),
            data_out_wanted: None,
        })
    }

    /// The LUN of the target's map behind `lun`, as the statistics key it (a two-level
    /// LUN's volume comes from [`LunExecutor::submit_as_bound`]).
    fn attached_unit(&self, lun: u64) -> Option<StatsUnit> {
        if lun > datapath::scsi::lun::SIMPLE_MAX {
            return None;
        }
        self.target_luns
            .binary_search_by_key(&lun, |info| info.lun)
            .ok()
            .map(|at| StatsUnit::Attached(self.target_luns[at].unit_id))
    }

    /// Counts a finished command: its bytes when it succeeded, its latency always.
    fn sample(
        &mut self,
        unit: StatsUnit,
        kind: OpKind,
        write_bytes: u64,
        result: &CommandResult,
        started: Instant,
    ) {
        let bytes = match (result.status, kind) {
            (0, OpKind::Read) => result.data_in.len() as u64,
            (0, OpKind::Write) => write_bytes,
            _ => 0,
        };
        self.samples.push(Sample {
            unit,
            kind,
            bytes,
            started,
        });
    }

    /// Hands the finished commands' figures to the event loop's table, as finished now
    /// (one clock reading for all of them).
    pub(super) fn drain_samples(&mut self, into: &mut LoopLunStats) {
        if self.samples.is_empty() {
            return;
        }
        let end = Instant::now();
        for sample in self.samples.drain(..) {
            into.record(&sample, end);
        }
    }

    /// Moves this connection to a configuration the control plane published. A session
    /// whose target is gone, or whose initiator the target no longer allows, is closed;
    /// one whose target's LUNs changed gets the unit attentions the change calls for
    /// (commands already started finish on the units they started on). Others go on
    /// undisturbed: the same units, no unit attention.
    pub(super) fn apply_config(
        &mut self,
        session_config: &Arc<TargetSessionConfig>,
        targets: &Arc<Vec<Arc<LiveTarget>>>,
    ) {
        self.luns = Arc::clone(targets);
        // The snapshot's targets and the session configuration's are in the same order.
        let index = self
            .session
            .target()
            .and_then(|target| super::find_target(targets, &target.name));
        if !self
            .session
            .replace_config_at(Arc::clone(session_config), index)
        {
            self.abort(TargetError::Revoked);
            return;
        }
        let Some(live) = index.and_then(|i| targets.get(i)) else {
            return;
        };
        let initiator = self.session.initiator_name();
        let allowed = live
            .allowed_initiators
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == initiator));
        if !allowed {
            self.abort(TargetError::Revoked);
            return;
        }
        if self.executor.is_some() {
            let bindings = live.bindings_for(initiator).cloned();
            let executor = Arc::clone(live.executor_for(initiator));
            if self.attentions.handle_change(&self.target_luns, &live.luns) {
                // Also told at once, as Async Message event 0 with the sense data (issue
                // 15); the unit attention stays pending for hosts that ignore the event.
                let sense = crate::disk::sense::Check::new(
                    crate::disk::sense::key::UNIT_ATTENTION,
                    super::attention::REPORTED_LUNS_DATA_HAS_CHANGED,
                )
                .to_fixed_sense();
                let lun = live.luns.first().map_or(0, |info| info.lun);
                if self.session.queue_scsi_async_event(lun, &sense) {
                    self.fill_output();
                }
            }
            let same_bindings = match (&self.bindings, &bindings) {
                (Some(old), Some(new)) => Arc::ptr_eq(old, new),
                (None, None) => true,
                _ => false,
            };
            if !same_bindings {
                self.attentions.handle_bindings_change();
            }
            self.bindings = bindings;
            self.session.set_subsidiaries(self.subsidiaries());
            self.executor = Some(executor);
            self.target_luns = live.luns.clone();
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
        if let Some(at) = self.timings.iter().position(|t| t.0 == id) {
            let (_, unit_id, kind, write_bytes, started) = self.timings.swap_remove(at);
            self.sample(unit_id, kind, write_bytes, &result, started);
        }
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
        if self.mid_pdu() && !self.input_held {
            let idle = now.saturating_duration_since(self.last_rx_progress);
            if idle >= self.stall_timeout {
                let (have, need) = match &self.placing {
                    Some(p) => (p.have + self.filled, p.placement.len() + p.trailer_len),
                    None => (self.filled, self.pending_pdu_len()),
                };
                self.close(CloseReason::Stalled {
                    have,
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
        let stall = (self.mid_pdu() && !self.input_held)
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

#[cfg(test)]
mod tests {
    //! The receive path over a byte stream cut at every size: write data lands in its
    //! command's buffer, digests are checked over the placed bytes, and a bad one takes
    //! nothing.
    use std::sync::Mutex;

    use datapath::pdu::{Digests, RESERVED_TAG};

    use super::*;
    use crate::session::tests::logged_in_session;

    /// Keeps the write data of every command.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<u8>>>);

    impl LunExecutor for Recorder {
        fn execute(
            &self,
            _: crate::disk::Nexus<'_>,
            _lun: u64,
            _cdb: &[u8],
            data_out: &[u8],
            _: u32,
        ) -> CommandResult {
            self.0.lock().unwrap().push(data_out.to_vec());
            CommandResult {
                status: 0,
                sense: Vec::new(),
                data_in: Vec::new(),
                data_out_wanted: None,
            }
        }
    }

    fn connection(digests: bool) -> (Connection, Arc<Recorder>) {
        let digest = if digests { "CRC32C" } else { "None" };
        let session = logged_in_session(&[
            ("HeaderDigest", digest),
            ("DataDigest", digest),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("FirstBurstLength", "262144"),
            ("MaxBurstLength", "262144"),
        ]);
        let recorder = Arc::new(Recorder::default());
        let executor: Arc<dyn LunExecutor> = Arc::clone(&recorder) as _;
        let node = super::super::TargetNodeConfig::new(crate::session::tests::TARGET, Vec::new());
        let luns = Arc::new(vec![Arc::new(LiveTarget::from_node(&node, executor))]);
        let limits = ConnectionLimits {
            max_recv_data_segment_length: 256 << 10,
            stall_timeout: Duration::from_secs(5),
            max_output_bytes: 8 << 20,
            first_pdu_timeout: Duration::from_secs(5),
        };
        let conn = Connection::new(
            session,
            "127.0.0.1:1".parse().unwrap(),
            luns,
            limits,
            Instant::now(),
        );
        (conn, recorder)
    }

    fn digests_of(conn: &Connection) -> Digests {
        conn.session.digests()
    }

    /// A 1 MiB WRITE: 64 KiB immediate, 192 KiB unsolicited Data-Out, the rest solicited
    /// by R2T, each encoded as the initiator would.
    fn write_pdus(
        conn: &mut Connection,
        itt: u32,
        payload: &[u8],
        corrupt_at: Option<usize>,
    ) -> Vec<u8> {
        let digests = digests_of(conn);
        let mut wire = Vec::new();
        let mut cdb = vec![0x2a, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb[7..9].copy_from_slice(&2048u16.to_be_bytes());
        let command = Header::ScsiCommand(pdu::ScsiCommand {
            immediate: false,
            final_pdu: false,
            read: false,
            write: true,
            attribute: pdu::TaskAttribute::Simple,
            lun: [0; 8],
            initiator_task_tag: itt,
            expected_data_transfer_length: payload.len() as u32,
            cmd_sn: 9 + itt,
            exp_stat_sn: 0,
            cdb: datapath::scsi::Cdb::from_bytes(&cdb, datapath::scsi::DataDirection::None)
                .expect("16 bytes"),
            bidi_read_length: None,
        });
        pdu::encode_pdu(&command, &payload[..65536], digests, &mut wire).unwrap();
        let mut offset = 65536;
        let mut data_sn = 0;
        while offset < 65536 * 4 {
            let header = Header::DataOut(pdu::DataOut {
                final_pdu: offset + 65536 == 65536 * 4,
                lun: [0; 8],
                initiator_task_tag: itt,
                target_transfer_tag: RESERVED_TAG,
                exp_stat_sn: 0,
                data_sn,
                buffer_offset: offset as u32,
            });
            pdu::encode_pdu(
                &header,
                &payload[offset..offset + 65536],
                digests,
                &mut wire,
            )
            .unwrap();
            offset += 65536;
            data_sn += 1;
        }
        if let Some(at) = corrupt_at {
            wire[at] ^= 0x40;
        }
        wire
    }

    fn feed(conn: &mut Connection, bytes: &[u8], chunk: usize) {
        let mut pos = 0;
        while pos < bytes.len() && conn.close_reason().is_none() {
            let space = conn.recv_space();
            let n = space.len().min(chunk).min(bytes.len() - pos);
            space[..n].copy_from_slice(&bytes[pos..pos + n]);
            conn.handle_received(Instant::now(), n);
            pos += n;
        }
    }

    /// Answers every R2T the target sent with its Data-Out.
    fn answer_r2ts(conn: &mut Connection, payload: &[u8], chunk: usize) {
        let digests = digests_of(conn);
        let limits = Limits {
            max_data_segment_length: 1 << 24,
            max_ahs_length: MAX_AHS_LEN,
        };
        loop {
            let tx = std::mem::take(&mut conn.tx);
            let mut at = 0;
            let mut wire = Vec::new();
            while let Some(pdu) = pdu::decode_pdu(&tx[at..], digests, &limits).unwrap() {
                at += pdu.consumed;
                let Header::R2t(r2t) = pdu.header else {
                    continue;
                };
                let segment = 256 << 10;
                let mut offset = r2t.buffer_offset as usize;
                let end = offset + r2t.desired_data_transfer_length as usize;
                let mut data_sn = 0;
                while offset < end {
                    let len = segment.min(end - offset);
                    let header = Header::DataOut(pdu::DataOut {
                        final_pdu: offset + len == end,
                        lun: [0; 8],
                        initiator_task_tag: r2t.initiator_task_tag,
                        target_transfer_tag: r2t.target_transfer_tag,
                        exp_stat_sn: 0,
                        data_sn,
                        buffer_offset: offset as u32,
                    });
                    pdu::encode_pdu(&header, &payload[offset..offset + len], digests, &mut wire)
                        .unwrap();
                    offset += len;
                    data_sn += 1;
                }
            }
            if wire.is_empty() {
                return;
            }
            feed(conn, &wire, chunk);
            conn.fill_output();
        }
    }

    fn payload() -> Vec<u8> {
        (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn write_data_lands_in_its_buffer_at_any_receive_size() {
        for digests in [false, true] {
            for chunk in [1, 7, 48, 1000, 4096, 65536 + 13, 1 << 20] {
                let (mut conn, recorder) = connection(digests);
                let payload = payload();
                let wire = write_pdus(&mut conn, 1, &payload, None);
                feed(&mut conn, &wire, chunk);
                answer_r2ts(&mut conn, &payload, chunk);
                assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
                let written = recorder.0.lock().unwrap();
                assert_eq!(written.len(), 1, "digests {digests}, chunk {chunk}");
                assert!(written[0] == payload, "digests {digests}, chunk {chunk}");
                let stats = conn.session.stats();
                assert_eq!(
                    stats.data_out_bytes_placed + stats.data_out_bytes_copied,
                    1 << 20
                );
                if chunk == 1 << 20 {
                    // Receives take what is there: the first fills the receive buffer
                    // and is copied, then headers come first and data is placed.
                    assert!(
                        stats.data_out_bytes_copied <= conn.receive_buffer_bytes() as u64
                            && stats.data_out_bytes_placed >= 3 << 18,
                        "{stats:?}"
                    );
                }
                if chunk <= 65536 + 13 {
                    assert!(
                        stats.data_out_bytes_copied <= 8 * (chunk as u64),
                        "at most one receive's worth copied per PDU: {stats:?}"
                    );
                }
            }
        }
    }

    /// One WRITE(10) of `payload.len()` bytes, all of it immediate data.
    fn immediate_write(conn: &Connection, itt: u32, payload: &[u8]) -> Vec<u8> {
        let mut cdb = vec![0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb[7..9].copy_from_slice(&((payload.len() / 512) as u16).to_be_bytes());
        let command = Header::ScsiCommand(pdu::ScsiCommand {
            immediate: false,
            final_pdu: true,
            read: false,
            write: !payload.is_empty(),
            attribute: pdu::TaskAttribute::Simple,
            lun: [0; 8],
            initiator_task_tag: itt,
            expected_data_transfer_length: payload.len() as u32,
            cmd_sn: 9 + itt,
            exp_stat_sn: 0,
            cdb: datapath::scsi::Cdb::from_bytes(&cdb, datapath::scsi::DataDirection::None)
                .expect("16 bytes"),
            bidi_read_length: None,
        });
        let mut wire = Vec::new();
        pdu::encode_pdu(&command, payload, digests_of(conn), &mut wire).unwrap();
        wire
    }

    #[test]
    fn an_idle_session_holds_a_small_receive_buffer_and_lends_the_full_one_back() {
        let (conn, recorder) = connection(false);
        let pool = Arc::new(RxBufferPool::new(4));
        let mut conn = conn.with_rx_pool(Arc::clone(&pool));
        let small = conn.receive_buffer_bytes();
        assert!(small <= 10 << 10, "logged in, idle: {small} bytes");
        // A 16 KiB write with immediate data (too short to be placed) does not fit: the
        // connection takes a full-size buffer for it.
        let payload: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        let wire = immediate_write(&conn, 1, &payload);
        feed(&mut conn, &wire, 1 << 20);
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
        assert_eq!(recorder.0.lock().unwrap().last(), Some(&payload));
        assert!(conn.receive_buffer_bytes() > 256 << 10);
        // A short PDU with nothing left over: the full-size buffer goes back to the pool.
        let wire = immediate_write(&conn, 2, &[]);
        feed(&mut conn, &wire, 1 << 20);
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
        assert_eq!(conn.receive_buffer_bytes(), small);
        assert_eq!(pool.spare_count(), 1);
        // The next large PDU takes that spare one.
        let wire = immediate_write(&conn, 3, &payload);
        feed(&mut conn, &wire[..wire.len() - 100], 4096);
        assert_eq!(pool.spare_count(), 0);
        assert!(conn.receive_buffer_bytes() > 256 << 10);
        feed(&mut conn, &wire[wire.len() - 100..], 4096);
        assert_eq!(recorder.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_bad_data_digest_on_placed_data_closes_without_running_the_write() {
        let (mut conn, recorder) = connection(true);
        let payload = payload();
        // A byte in the second unsolicited Data-Out's data segment.
        let header_len = BHS_LEN + 4;
        let first = header_len + 65536 + 4;
        let wire = write_pdus(&mut conn, 1, &payload, Some(first * 2 + 1000));
        feed(&mut conn, &wire, 4096);
        assert!(matches!(
            conn.close_reason(),
            Some(CloseReason::Session(TargetError::Malformed {
                source: PduError::DataDigestMismatch { .. },
                ..
            }))
        ));
        assert!(recorder.0.lock().unwrap().is_empty());
    }

    #[test]
    fn data_out_at_a_wrong_offset_is_not_placed_and_is_refused() {
        let (mut conn, recorder) = connection(false);
        let payload = payload();
        let mut wire = write_pdus(&mut conn, 1, &payload, None);
        // The first Data-Out claims offset 0, over the immediate data.
        let data_out = BHS_LEN + 65536;
        wire[data_out + 40..data_out + 44].copy_from_slice(&0u32.to_be_bytes());
        feed(&mut conn, &wire, 4096);
        assert!(
            matches!(
                conn.close_reason(),
                Some(CloseReason::Session(TargetError::DataOutOutOfPlace {
                    offset: 0,
                    expected: 65536,
                    ..
                }))
            ),
            "{:?}",
            conn.close_reason()
        );
        assert_eq!(
            conn.session.stats().data_out_bytes_placed,
            65536 - 4096 + BHS_LEN as u64
        );
        assert!(recorder.0.lock().unwrap().is_empty());
    }
}
