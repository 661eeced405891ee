//! The sans-IO iSCSI target session, RFC 7143, one connection per session
//! (MaxConnections=1) at error recovery level 0.
//!
//! Like the initiator session in `datapath::session`: no sockets, no clock. Every call
//! takes `now`; input goes in through `handle_*`, output comes out through `poll_*`.
//!
//! # Driving a session
//! 1. [`TargetSession::new`] for each accepted connection.
//! 2. Loop:
//!    - frame received bytes with [`TargetSession::digests`] and
//!      [`TargetSession::max_recv_data_segment_length`]; deliver each PDU with
//!      [`TargetSession::handle_pdu`], or [`TargetSession::handle_malformed_pdu`] when the
//!      codec refused it;
//!    - run every [`CommandRequest`] from [`TargetSession::poll_command`] on the logical unit
//!      and hand the result back with [`TargetSession::complete_command`];
//!    - send every [`Transmit`] from [`TargetSession::poll_transmit`], framed with its own
//!      `digests` (the last Login Response goes out without digests even when they were
//!      negotiated);
//!    - call [`TargetSession::handle_timeout`] when [`TargetSession::poll_timeout`] passes;
//!    - drain [`TargetSession::poll_event`].
//! 3. When a `handle_*` call returns `Err`, or [`TargetSession::state`] is `Closed`, send
//!    what `poll_transmit` still gives and close the connection.
//!
//! # What is where
//! - `login`: the login responder, sections 6, 11.12, 11.13, 12.1.3 (CHAP) and 13.
//! - `command`: SCSI Command, Data-Out, R2T, Data-In, SCSI Response (sections 11.3, 11.4,
//!   11.7, 11.8) with ImmediateData, InitialR2T, FirstBurstLength, MaxBurstLength and
//!   MaxOutstandingR2T (section 13).
//!   Write data can be placed in its buffer before it is received
//!   ([`TargetSession::place_data`]).
//! - `window`: the command window (section 4.2.2.1).
//! - `nop`: NOP-Out and NOP-In (sections 11.18, 11.19).
//! - `task_mgmt`: Task Management (sections 11.5, 11.6).
//! - `text`: Text and SendTargets (sections 11.10, 11.11, appendix C).
//! - `logout`: Logout (sections 11.14, 11.15).
//! - Here: the dispatch of PDUs by opcode and state, the transmit queue and its limits,
//!   timers, and Reject (section 11.17).
#![forbid(unsafe_code)]

mod command;
mod error;
mod login;
mod logout;
mod nop;
mod renegotiate;
mod task_mgmt;
mod text;
mod window;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::pdu::{
    self, Digests, Header, Isid, LunField, Opcode, PduError, SerialNumber, Tag, BHS_LEN,
    RESERVED_TAG,
};
use datapath::scsi::Lun;
use datapath::text::{
    encode_pairs, parse_pairs, split_text, OperationalOffer, OperationalParams, TextAccumulator,
    TextLimits,
};

pub use command::Placement;
pub use error::{Burst, TargetError};

use command::{Payload, Task};
use login::LoginState;

/// MaxRecvDataSegmentLength in force during login (section 13.12).
pub const LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

/// Longest text (login or Text Request) accepted after joining continued PDUs.
const MAX_TEXT_LEN: usize = 65_536;

/// Commands outside the window tolerated in a row before the connection is closed: RFC
/// 7143 section 4.2.2.1 says to ignore them, but an initiator that sends nothing else is
/// broken and only holds resources.
const MAX_WINDOW_VIOLATIONS: u32 = 16;

/// Login status classes and details (section 11.13.5) and reject reasons (section
/// 11.17.1): the data path's one list.
pub use datapath::pdu::{login_status, reject_reason};

/// CHAP credentials of one side (RFC 7143 section 12.1.3). Never printed.
#[derive(Clone)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// One target node as a session sees it: its name, its LUN numbers, who may log in.
#[derive(Debug, Clone)]
pub struct TargetNode {
    /// TargetName (iqn. or eui.).
    pub name: String,
    pub alias: Option<String>,
    /// The LUN numbers that exist (for task management's "LUN does not exist").
    pub luns: Vec<u64>,
    /// When set, the initiator must authenticate with CHAP with these credentials.
    pub chap: Option<ChapCredentials>,
    /// When set (and `chap` is set), the target answers the initiator's challenge as this.
    pub mutual_chap: Option<ChapCredentials>,
    /// When set, only these InitiatorNames may log in (others are told the target does not exist, 0x0203, as SendTargets hides it from them).
    pub allowed_initiators: Option<Vec<String>>,
    /// The largest write (Expected Data Transfer Length) a command may carry: bounds the
    /// buffer a write collects before the logical unit runs it.
    pub max_transfer_bytes: u32,
}

/// A network portal and its portal group, for SendTargets (section 4.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Portal {
    pub addr: SocketAddr,
    pub group_tag: u16,
}

/// What every session of a target shares.
#[derive(Debug, Clone)]
pub struct TargetSessionConfig {
    /// Shared with the configurations the control plane publishes later: a change
    /// rebuilds only the nodes it touches.
    pub targets: Arc<[Arc<TargetNode>]>,
    pub portals: Vec<Portal>,
    /// Our operational wishes (MaxRecvDataSegmentLength, burst lengths, ...).
    pub offer: OperationalOffer,
    /// Commands a session may have accepted and not completed: sets MaxCmdSN.
    pub cmd_window: u32,
    pub login_timeout: Duration,
    /// Silence from the initiator this long makes us ping it with a NOP-In;
    /// `Duration::ZERO` turns pings off.
    pub nop_interval: Duration,
    /// An unanswered ping fails the connection after this long.
    pub nop_timeout: Duration,
    /// CHAP credentials required on discovery sessions, if any.
    pub discovery_chap: Option<ChapCredentials>,
    /// Where normal logins at the virtual portal are sent (`crate::portal`); `None`
    /// serves them where they are.
    pub redirect: Option<Arc<crate::portal::RedirectPlan>>,
}

impl TargetSessionConfig {
    /// Our usual offer: 256 KiB PDUs, 1 MiB bursts, ImmediateData, InitialR2T=Yes,
    /// up to 4 R2Ts outstanding per command.
    pub fn default_offer() -> OperationalOffer {
        OperationalOffer {
            header_digests: vec![
                datapath::text::DigestChoice::None,
                datapath::text::DigestChoice::Crc32c,
            ],
            data_digests: vec![
                datapath::text::DigestChoice::None,
                datapath::text::DigestChoice::Crc32c,
            ],
            // InitialR2T=Yes (the RFC default): a write's data beyond its immediate data
            // waits for our R2T, so an abort that follows the command can still stop it.
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            max_outstanding_r2t: 4,
            default_time2wait: 0,
            default_time2retain: 0,
            ..OperationalOffer::default()
        }
    }

    pub fn new(targets: Vec<TargetNode>, portals: Vec<Portal>) -> TargetSessionConfig {
        TargetSessionConfig {
            targets: targets.into_iter().map(Arc::new).collect(),
            portals,
            offer: Self::default_offer(),
            cmd_window: 64,
            login_timeout: Duration::from_secs(30),
            nop_interval: Duration::from_secs(30),
            nop_timeout: Duration::from_secs(30),
            discovery_chap: None,
            redirect: None,
        }
    }
}

/// What differs per connection.
#[derive(Clone)]
pub struct ConnectionParams {
    /// The TSIH this session gets if its login succeeds (non-zero, unique in the target).
    pub tsih: u16,
    /// Random bytes for our CHAP challenge (at least 16, fresh per connection).
    pub chap_challenge: Vec<u8>,
    /// The first StatSN (any value, section 11.13.3).
    pub initial_stat_sn: u32,
    /// The portal group the connection came in on (TargetPortalGroupTag).
    pub portal_group_tag: u16,
    /// It came in on the virtual portal: a normal login is redirected
    /// ([`TargetSessionConfig::redirect`]).
    pub via_virtual_portal: bool,
}

impl std::fmt::Debug for ConnectionParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionParams")
            .field("tsih", &self.tsih)
            .field("portal_group_tag", &self.portal_group_tag)
            .finish_non_exhaustive()
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Login,
    FullFeature,
    /// Logged out, or failed: send what is left and close the connection.
    Closed,
}

impl TargetState {
    fn name(self) -> &'static str {
        match self {
            TargetState::Login => "login",
            TargetState::FullFeature => "full feature phase",
            TargetState::Closed => "closed",
        }
    }
}

/// The kind of session the initiator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Normal,
    Discovery,
}

/// What the session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEvent {
    /// The login is about to complete: a new normal session with this identity. A session
    /// with the same initiator, ISID and target must be closed (reinstatement, section
    /// 6.3.5) before the final Login Response goes out.
    LoggedIn {
        initiator_name: String,
        isid: Isid,
        /// `None` for a discovery session.
        target_name: Option<String>,
        tsih: u16,
    },
    /// The initiator logged out.
    LoggedOut,
    /// LOGICAL UNIT RESET of this LUN: the session aborted its own tasks on it; the
    /// driver resets the unit's state shared by every nexus (reservations, unit
    /// attentions). Reported before the response is polled.
    LogicalUnitReset { lun: u64 },
    /// TARGET WARM RESET or, with `cold`, TARGET COLD RESET (SAM-5 7.9, 7.10, RFC 7143
    /// 11.5.1): every unit of the target is reset; after a cold reset the session closes
    /// once its response is sent, and the driver closes the target's other sessions.
    TargetReset { cold: bool },
}

/// Data of a PDU to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransmitData {
    None,
    Owned(Vec<u8>),
    /// A range of a command's read data, shared rather than copied.
    Shared {
        buffer: Arc<Vec<u8>>,
        offset: usize,
        len: usize,
    },
}

/// One PDU to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub header: Header,
    pub data: TransmitData,
    /// The digests to frame this PDU with.
    pub digests: Digests,
}

impl Transmit {
    /// The data segment.
    pub fn data(&self) -> &[u8] {
        match &self.data {
            TransmitData::None => &[],
            TransmitData::Owned(bytes) => bytes,
            TransmitData::Shared {
                buffer,
                offset,
                len,
            } => buffer
                .get(*offset..offset.saturating_add(*len))
                .unwrap_or(&[]),
        }
    }
}

/// Identifies a command handed out by [`TargetSession::poll_command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(Tag);

impl CommandId {
    /// An identifier for tests of code that only carries it around.
    #[cfg(test)]
    pub(crate) fn for_tests(itt: Tag) -> CommandId {
        CommandId(itt)
    }
}

/// A SCSI command ready for the logical unit: all its write data is in.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub id: CommandId,
    /// The LUN number (SAM addressing decoded).
    pub lun: u64,
    pub cdb: Vec<u8>,
    /// Write data: exactly the Expected Data Transfer Length for a write, else empty.
    pub data_out: Vec<u8>,
    /// Expected Data Transfer Length for a read (0 if the command does not read).
    pub expected_data_in_len: u32,
}

impl std::fmt::Debug for CommandRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRequest")
            .field("id", &self.id)
            .field("lun", &self.lun)
            .field("cdb", &self.cdb)
            .field("data_out_len", &self.data_out.len())
            .field("expected_data_in_len", &self.expected_data_in_len)
            .finish()
    }
}

/// What the logical unit made of a command.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CommandResult {
    /// SCSI status (0x00 GOOD, 0x02 CHECK CONDITION, ...).
    pub status: u8,
    /// Sense data (fixed or descriptor format), empty if none.
    pub sense: Vec<u8>,
    /// Read data; longer than the Expected Data Transfer Length is an overflow.
    pub data_in: Vec<u8>,
    /// For a write: the Data-Out length the CDB asked for, when known. Differing from the
    /// Expected Data Transfer Length gives a residual (section 11.4.5.1).
    pub data_out_wanted: Option<u32>,
}

impl std::fmt::Debug for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandResult")
            .field("status", &self.status)
            .field("sense", &self.sense)
            .field("data_in_len", &self.data_in.len())
            .finish()
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetStats {
    pub pdus_received: u64,
    pub pdus_sent: u64,
    pub commands: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub r2ts: u64,
    pub rejects: u64,
    pub dropped_out_of_window: u64,
    pub pings_sent: u64,
    /// Write data received straight into its command's buffer ([`Placement`]).
    pub data_out_bytes_placed: u64,
    /// Write data copied once into its command's buffer from the receive buffer: small
    /// segments staged whole, and the head of a placed one that came in with its header
    /// (design rule 3: a copy on the data path is counted).
    pub data_out_bytes_copied: u64,
}

/// Entries of the transmit queue. Read data is cut into Data-In PDUs only as it is polled.
#[derive(Debug)]
enum Outgoing {
    Pdu(Transmit),
    /// The SCSI Response that ends a command the window counted: until it leaves, the
    /// command still holds its slot of the window.
    CommandStatus(Transmit),
    DataIn(command::ReadReply),
}

impl Outgoing {
    /// Bytes this entry still puts on the wire (header and data; digests left out).
    fn wire_bytes(&self) -> usize {
        match self {
            Outgoing::Pdu(t) | Outgoing::CommandStatus(t) => BHS_LEN + t.data().len(),
            Outgoing::DataIn(reply) => reply.remaining_bytes(),
        }
    }

    /// Whether sending this entry completes a command the window counts.
    fn ends_command(&self) -> bool {
        match self {
            Outgoing::Pdu(_) => false,
            Outgoing::CommandStatus(_) => true,
            Outgoing::DataIn(reply) => reply.carries_status(),
        }
    }
}

/// Our outstanding NOP-In ping.
#[derive(Debug, Clone, Copy)]
struct Ping {
    ttt: Tag,
    sent: Instant,
}

/// A text response too long for one PDU, sent piece by piece (section 11.11: C bit).
#[derive(Debug)]
struct PendingText {
    ttt: Tag,
    itt: Tag,
    rest: Vec<u8>,
}

/// The target side of one iSCSI connection and its session.
pub struct TargetSession {
    config: Arc<TargetSessionConfig>,
    conn: ConnectionParams,
    state: TargetState,
    login: Option<LoginState>,
    session_type: SessionType,
    /// Index into `config.targets` of the target logged in to.
    target: Option<usize>,
    initiator_name: String,
    /// The ISID of the session, once logged in: with the initiator name, the I_T nexus.
    isid: Isid,
    params: OperationalParams,
    digests: Digests,
    exp_cmd_sn: u32,
    /// The MaxCmdSN last advertised; never lowered.
    max_cmd_sn: u32,
    stat_sn: u32,
    tasks: BTreeMap<Tag, Task>,
    ready: VecDeque<CommandRequest>,
    outbox: VecDeque<Outgoing>,
    /// Bytes the outbox still holds for the wire ([`Outgoing::wire_bytes`] summed).
    outbox_bytes: usize,
    /// Commands whose status waits in the outbox ([`Outgoing::ends_command`] counted).
    statuses_owed: usize,
    events: VecDeque<TargetEvent>,
    text_in: TextAccumulator,
    pending_text: Option<PendingText>,
    next_ttt: Tag,
    last_received: Instant,
    ping: Option<Ping>,
    window_violations: u32,
    stats: TargetStats,
    /// The subsidiary LUs (bound volumes) this session's host reaches, for task
    /// management's "LUN does not exist"; kept current by the driver.
    subsidiaries: Option<Arc<dyn SubsidiaryLuns>>,
}

/// Which subsidiary logical units (two-level LUNs, by `LunAddress::key`) a session's
/// host reaches through the target's endpoints: the driver hands the session its host's
/// bindings, so LOGICAL UNIT RESET and ABORT TASK SET find a bound volume.
pub trait SubsidiaryLuns: Send + Sync {
    fn contains(&self, key: u64) -> bool;
}

impl std::fmt::Debug for TargetSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSession")
            .field("state", &self.state)
            .field("initiator", &self.initiator_name)
            .field("tasks", &self.tasks.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl TargetSession {
    /// A session for a newly accepted connection, waiting for the first Login Request.
    pub fn new(
        config: Arc<TargetSessionConfig>,
        conn: ConnectionParams,
        now: Instant,
    ) -> TargetSession {
        TargetSession {
            login: Some(LoginState::new(now + config.login_timeout)),
            stat_sn: conn.initial_stat_sn,
            config,
            conn,
            state: TargetState::Login,
            session_type: SessionType::Normal,
            target: None,
            initiator_name: String::new(),
            isid: [0; 6],
            params: OperationalParams::default(),
            digests: Digests::default(),
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            tasks: BTreeMap::new(),
            ready: VecDeque::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            statuses_owed: 0,
            events: VecDeque::new(),
            text_in: TextAccumulator::new(MAX_TEXT_LEN),
            pending_text: None,
            next_ttt: 1,
            last_received: now,
            ping: None,
            window_violations: 0,
            stats: TargetStats::default(),
            subsidiaries: None,
        }
    }

    /// The subsidiary LUs the host reaches now (its bindings), or none.
    pub fn set_subsidiaries(&mut self, subsidiaries: Option<Arc<dyn SubsidiaryLuns>>) {
        self.subsidiaries = subsidiaries;
    }

    pub fn state(&self) -> TargetState {
        self.state
    }

    /// The digests in force for received PDUs.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Our MaxRecvDataSegmentLength: frame received PDUs against it.
    pub fn max_recv_data_segment_length(&self) -> u32 {
        match self.state {
            TargetState::Login => LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
            _ => self.params.target_max_recv_data_segment_length,
        }
    }

    /// The negotiated parameters (defaults before the login completes).
    pub fn params(&self) -> &OperationalParams {
        &self.params
    }

    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// Moves the session to a new configuration (the control plane changed the target
    /// nodes): a login in progress sees the new nodes, a session keeps its target under
    /// its name. False, and the old configuration kept, when that target is gone: the
    /// caller closes the connection.
    pub fn replace_config(&mut self, config: Arc<TargetSessionConfig>) -> bool {
        self.replace_config_at(config, None)
    }

    /// [`TargetSession::replace_config`] with where the caller found the session's target
    /// in `config.targets` (checked by name): no search through thousands of targets.
    pub fn replace_config_at(
        &mut self,
        config: Arc<TargetSessionConfig>,
        index: Option<usize>,
    ) -> bool {
        let Some(name) = self.target().map(|t| t.name.clone()) else {
            self.config = config;
            return true;
        };
        let hinted = index.filter(|&i| config.targets.get(i).is_some_and(|t| t.name == name));
        match hinted.or_else(|| config.targets.iter().position(|t| t.name == name)) {
            Some(index) => {
                self.config = config;
                self.target = Some(index);
                true
            }
            None => false,
        }
    }

    /// The target logged in to, once the login names it.
    pub fn target(&self) -> Option<&TargetNode> {
        self.target
            .and_then(|i| self.config.targets.get(i))
            .map(Arc::as_ref)
    }

    pub fn initiator_name(&self) -> &str {
        &self.initiator_name
    }

    /// The session's ISID (zeros before the login completes).
    pub fn isid(&self) -> [u8; 6] {
        self.isid
    }

    pub fn tsih(&self) -> u16 {
        self.conn.tsih
    }

    pub fn stats(&self) -> TargetStats {
        self.stats
    }

    /// Commands accepted and not yet completed.
    pub fn outstanding_commands(&self) -> usize {
        self.tasks.len()
    }

    /// Bytes queued for the wire and not yet handed out by
    /// [`TargetSession::poll_transmit`]: responses, NOP-In echoes and read data still to
    /// be cut into Data-In. The driver stops taking input while this is high, so a
    /// client that does not read cannot make the target queue without bound.
    pub fn queued_output_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// Commands waiting for the logical unit ([`TargetSession::poll_command`]).
    pub fn has_ready_commands(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Delivers one PDU from the initiator. `Err` is fatal: flush `poll_transmit`, close.
    pub fn handle_pdu(
        &mut self,
        now: Instant,
        header: Header,
        data: &[u8],
    ) -> Result<(), TargetError> {
        if self.state == TargetState::Closed {
            return Ok(());
        }
        self.receive(now, header, Payload::Bytes(data))
    }

    /// Delivers a PDU whose data segment was received into the buffer that
    /// [`TargetSession::place_data`] lent for it (the data digest, if any, already checked
    /// over the placed bytes). Otherwise like [`TargetSession::handle_pdu`].
    pub fn handle_placed_pdu(
        &mut self,
        now: Instant,
        header: Header,
        placement: Placement,
    ) -> Result<(), TargetError> {
        self.receive(now, header, Payload::Placed(placement))
    }

    fn receive(
        &mut self,
        now: Instant,
        header: Header,
        data: Payload<'_>,
    ) -> Result<(), TargetError> {
        if self.state == TargetState::Closed {
            return Ok(());
        }
        self.last_received = now;
        self.stats.pdus_received += 1;
        let result = self.dispatch(now, header, data);
        if result.is_err() {
            self.state = TargetState::Closed;
        }
        result
    }

    /// A PDU the codec refused (`bhs` is its 48-byte header as received). A Reject goes out
    /// when the header can name what was rejected; the connection then closes, since the
    /// byte stream cannot be trusted past a malformed PDU.
    pub fn handle_malformed_pdu(
        &mut self,
        _now: Instant,
        bhs: &[u8],
        error: PduError,
    ) -> TargetError {
        let opcode = bhs.first().map_or(0, |b| b & 0x3f);
        if self.state == TargetState::FullFeature {
            if let Some(header) = bhs.get(..BHS_LEN) {
                let reason = match error {
                    PduError::UnknownOpcode(_) => reject_reason::COMMAND_NOT_SUPPORTED,
                    PduError::DataDigestMismatch { .. } => reject_reason::DATA_DIGEST_ERROR,
                    _ => reject_reason::INVALID_PDU_FIELD,
                };
                self.queue_reject(reason, header);
            }
        }
        self.state = TargetState::Closed;
        TargetError::Malformed {
            opcode,
            source: error,
        }
    }

    /// Queues an Async Message (RFC 7143 section 11.9) to the initiator: `event` 1 asks
    /// it to log out within `parameter3` seconds; 2 and 3 announce that the target drops
    /// the connection or the session (Time2Wait in `parameter2`, Time2Retain in
    /// `parameter3`); 4 asks it to renegotiate. Only in full feature phase; false
    /// otherwise (nothing queued).
    pub fn queue_async_message(
        &mut self,
        event: u8,
        parameter1: u16,
        parameter2: u16,
        parameter3: u16,
    ) -> bool {
        if self.state != TargetState::FullFeature {
            return false;
        }
        let header = Header::AsyncMessage(pdu::AsyncMessage {
            // Events 1-4 are about the connection or session, not a LU: LUN 0.
            lun: lun_field(0),
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            async_event: event,
            async_vcode: 0,
            parameter1,
            parameter2,
            parameter3,
        });
        self.push(header, Vec::new());
        true
    }

    /// Queues Async Message event 0 (a SCSI asynchronous event, RFC 7143 section 11.9.1)
    /// about `lun`: the data segment is SenseLength and the sense data. False outside
    /// full feature phase (nothing queued).
    pub fn queue_scsi_async_event(&mut self, lun: u64, sense: &[u8]) -> bool {
        if self.state != TargetState::FullFeature {
            return false;
        }
        let mut data = Vec::with_capacity(2 + sense.len());
        data.extend_from_slice(&(sense.len() as u16).to_be_bytes());
        data.extend_from_slice(sense);
        let header = Header::AsyncMessage(pdu::AsyncMessage {
            lun: lun_field(lun),
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            async_event: 0,
            async_vcode: 0,
            parameter1: 0,
            parameter2: 0,
            parameter3: 0,
        });
        self.push(header, data);
        true
    }

    /// Ends the session from outside (reinstatement, shutdown). Outstanding commands are
    /// dropped; the caller closes the connection.
    pub fn close(&mut self) {
        self.state = TargetState::Closed;
        self.tasks.clear();
        self.ready.clear();
    }

    fn dispatch(
        &mut self,
        now: Instant,
        header: Header,
        payload: Payload<'_>,
    ) -> Result<(), TargetError> {
        let opcode = header.opcode();
        let max = self.max_recv_data_segment_length();
        let data_len = payload.len();
        // Only SCSI Command and Data-Out data is placed; any other handler reads it here.
        let data = payload.bytes();
        if data_len > max as usize {
            return Err(TargetError::DataSegmentTooLong {
                opcode,
                len: data_len,
                max,
            });
        }
        if !opcode.is_initiator() {
            return Err(self.unexpected(opcode));
        }
        if self.state == TargetState::Login {
            return match header {
                Header::LoginRequest(request) => self.handle_login_request(now, request, data),
                _ => Err(self.unexpected(opcode)),
            };
        }
        let discovery = self.session_type == SessionType::Discovery;
        match header {
            Header::NopOut(h) => self.handle_nop_out(now, h, data),
            Header::ScsiCommand(h) if !discovery => self.handle_scsi_command(h, payload),
            Header::TaskMgmtRequest(h) if !discovery => self.handle_task_mgmt(h),
            Header::TextRequest(h) => self.handle_text_request(h, data),
            Header::DataOut(h) if !discovery => self.handle_data_out(h, payload),
            Header::LogoutRequest(h) => self.handle_logout(h),
            Header::SnackRequest(h) => {
                // SNACK needs ErrorRecoveryLevel > 0 (section 11.16); we run ERL 0.
                tracing::warn!(
                    itt = h.initiator_task_tag,
                    "SNACK at ErrorRecoveryLevel 0 rejected"
                );
                let bhs = self.reencode(&Header::SnackRequest(h));
                self.queue_reject(reject_reason::PROTOCOL_ERROR, &bhs);
                Ok(())
            }
            Header::LoginRequest(_) => Err(self.unexpected(opcode)),
            other => {
                // SCSI, task management and Data-Out in a discovery session (section
                // 4.4.1: discovery sessions carry only text, NOP and logout).
                tracing::warn!(opcode = ?other.opcode(), "PDU not allowed in a discovery session; rejected");
                let bhs = self.reencode(&other);
                self.queue_reject(reject_reason::PROTOCOL_ERROR, &bhs);
                Ok(())
            }
        }
    }

    fn unexpected(&self, opcode: Opcode) -> TargetError {
        TargetError::UnexpectedPdu {
            opcode,
            state: self.state.name(),
        }
    }

    /// The wire header of a parsed PDU, for the data segment of a Reject.
    fn reencode(&self, header: &Header) -> Vec<u8> {
        let mut out = vec![0u8; BHS_LEN + header.ahs_len()];
        if header.emit(0, &mut out).is_err() {
            out.clear();
        }
        out.truncate(BHS_LEN);
        out
    }

    /// Call when the instant from [`TargetSession::poll_timeout`] has passed. `Err` is
    /// fatal, as from `handle_pdu`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TargetError> {
        match self.state {
            TargetState::Closed => Ok(()),
            TargetState::Login => {
                if self.login.as_ref().is_some_and(|l| now >= l.deadline) {
                    self.state = TargetState::Closed;
                    return Err(TargetError::LoginTimeout);
                }
                Ok(())
            }
            TargetState::FullFeature => {
                if let Some(ping) = self.ping {
                    if now.saturating_duration_since(ping.sent) >= self.config.nop_timeout {
                        self.state = TargetState::Closed;
                        return Err(TargetError::PingTimeout {
                            after_ms: now.saturating_duration_since(ping.sent).as_millis(),
                        });
                    }
                } else if let Some(at) = self.ping_due() {
                    if now >= at {
                        self.send_ping(now);
                    }
                }
                Ok(())
            }
        }
    }

    fn ping_due(&self) -> Option<Instant> {
        if self.config.nop_interval.is_zero() || self.state != TargetState::FullFeature {
            return None;
        }
        Some(self.last_received + self.config.nop_interval)
    }

    /// When [`TargetSession::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            TargetState::Closed => None,
            TargetState::Login => self.login.as_ref().map(|l| l.deadline),
            TargetState::FullFeature => match self.ping {
                Some(ping) => Some(ping.sent + self.config.nop_timeout),
                None => self.ping_due(),
            },
        }
    }

    pub fn poll_event(&mut self) -> Option<TargetEvent> {
        self.events.pop_front()
    }

    /// The next command ready for the logical unit.
    pub fn poll_command(&mut self) -> Option<CommandRequest> {
        self.ready.pop_front()
    }

    /// The next PDU to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        {
            let entry = self.outbox.pop_front()?;
            let (ends_command, before) = (entry.ends_command(), entry.wire_bytes());
            let (mut transmit, rest) = match entry {
                Outgoing::Pdu(t) | Outgoing::CommandStatus(t) => (t, None),
                Outgoing::DataIn(mut reply) => {
                    let (t, done) = self.next_data_in(&mut reply);
                    (t, (!done).then_some(reply))
                }
            };
            match rest {
                Some(reply) => {
                    self.outbox_bytes -= before - reply.remaining_bytes();
                    self.outbox.push_front(Outgoing::DataIn(reply));
                }
                None => {
                    self.outbox_bytes -= before;
                    if ends_command {
                        // The command's slot of the window frees as its status leaves,
                        // and this PDU already carries the wider window.
                        self.statuses_owed -= 1;
                        self.update_window();
                    }
                }
            }
            // ExpCmdSN and MaxCmdSN are stamped as late as possible, so they are current.
            let (exp, max) = (self.exp_cmd_sn, self.max_cmd_sn);
            match &mut transmit.header {
                Header::NopIn(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::ScsiResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::TaskMgmtResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::TextResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::DataIn(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::LogoutResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::R2t(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::Reject(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                Header::AsyncMessage(h) => (h.exp_cmd_sn, h.max_cmd_sn) = (exp, max),
                // Login responses carry the values of their moment (set when queued).
                _ => {}
            }
            self.stats.pdus_sent += 1;
            Some(transmit)
        }
    }

    /// Queues a PDU with the current digests.
    fn push(&mut self, header: Header, data: Vec<u8>) {
        let transmit = self.transmit(header, data);
        self.enqueue(Outgoing::Pdu(transmit));
    }

    /// A PDU with the current digests.
    fn transmit(&self, header: Header, data: Vec<u8>) -> Transmit {
        let data = if data.is_empty() {
            TransmitData::None
        } else {
            TransmitData::Owned(data)
        };
        Transmit {
            header,
            data,
            digests: self.digests,
        }
    }

    /// The one way into the outbox, which keeps its byte and status counts.
    fn enqueue(&mut self, entry: Outgoing) {
        self.outbox_bytes += entry.wire_bytes();
        self.statuses_owed += usize::from(entry.ends_command());
        self.outbox.push_back(entry);
    }

    /// Counts the outbox again after entries were removed from its middle (aborts).
    fn recount_outbox(&mut self) {
        self.outbox_bytes = self.outbox.iter().map(Outgoing::wire_bytes).sum();
        self.statuses_owed = self.outbox.iter().filter(|o| o.ends_command()).count();
    }

    /// Takes the next StatSN for a PDU that carries status.
    fn take_stat_sn(&mut self) -> u32 {
        let sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        sn
    }

    fn allocate_ttt(&mut self) -> Tag {
        let ttt = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        ttt
    }

    /// Section 11.17: the Reject carries the rejected PDU's header as its data.
    fn queue_reject(&mut self, reason: u8, rejected_bhs: &[u8]) {
        self.stats.rejects += 1;
        let stat_sn = self.take_stat_sn();
        let data = rejected_bhs.get(..BHS_LEN).unwrap_or(rejected_bhs).to_vec();
        self.push(
            Header::Reject(pdu::Reject {
                reason,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                data_sn_or_r2t_sn: 0,
            }),
            data,
        );
    }
}

/// Whether `initiator` may see and log in to `target` (its ACL).
fn initiator_allowed(target: &TargetNode, initiator: &str) -> bool {
    match &target.allowed_initiators {
        None => true,
        Some(list) => list.iter().any(|i| i.eq_ignore_ascii_case(initiator)),
    }
}

/// Splits `text` into pieces for PDUs of at most `max` bytes.
fn text_pieces(text: &[u8], max: u32) -> VecDeque<Vec<u8>> {
    split_text(text, max as usize)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Parses login text with login limits.
fn parse_login_text(text: &[u8]) -> Result<Vec<(String, String)>, TargetError> {
    let limits = TextLimits {
        max_text_len: MAX_TEXT_LEN,
        ..TextLimits::default()
    };
    Ok(parse_pairs(text, &limits)?)
}

/// The LUN field for a LUN number.
pub fn lun_field(lun: u64) -> LunField {
    Lun::from_u64(lun).to_field()
}
