//! The sans-IO iSCSI initiator session, RFC 7143, one connection (MaxConnections=1) at
//! error recovery level 0.
//!
//! In the manner of quinn-proto: no sockets, no clock. Every call takes `now`, which must
//! never go back (command deadlines are kept in submission order); input goes in through
//! `handle_*`, output comes out through `poll_*`. The same session runs over
//! io_uring TCP, an offload adapter model, test harnesses and fuzzers.
//!
//! # Driving a session
//! 1. [`Session::new`] queues the first Login Request.
//! 2. Loop: send everything [`Session::poll_transmit`] gives (framing each PDU with
//!    [`Session::digests`] and the payload from [`Session::transmit_data`], which must be
//!    called before any further `handle_*` call); deliver every received PDU with
//!    [`Session::handle_pdu`] (frame incoming PDUs against
//!    [`Session::max_recv_data_segment_length`]); call [`Session::handle_timeout`] when the
//!    instant from [`Session::poll_timeout`] has passed; drain [`Session::poll_event`].
//! 3. When `handle_pdu` returns `Err`, or [`Session::state`] is `Closed` or `Failed`, close
//!    the connection. If the transport dies first, call [`Session::handle_connection_lost`].
//!
//! # What is where
//! - `login`: login phase, sections 6 (text negotiation, stages, T and C bits), 11.12 and
//!   11.13 (Login Request and Response), 12.1 (CHAP through `auth::chap`).
//! - `discovery`: SendTargets over Text Request/Response, section 11.10, 11.11 and
//!   appendix C.
//! - `command`: SCSI Command, Data-In, R2T, Data-Out and SCSI Response, sections 11.3,
//!   11.4, 11.7, 11.8, with the data transfer keys of section 13 (ImmediateData,
//!   InitialR2T, FirstBurstLength, MaxBurstLength, MaxOutstandingR2T, DataPDUInOrder).
//! - `tasks`: the commands in progress, a slab indexed by the Initiator Task Tag
//!   (section 11.2.1.8) with a generation in the tag's upper bits, and their submission
//!   order for the command timeout.
//! - `window`: CmdSN/ExpCmdSN/MaxCmdSN and StatSN, section 4.2.2.
//! - `nop`: NOP-Out/NOP-In, sections 11.18 and 11.19, keepalive pings.
//! - Here: Reject (11.17), Async Message (11.9), Logout (11.14, 11.15), timeouts and the
//!   failure path. At ERL 0 every protocol fault fails the connection and with it every
//!   outstanding command (section 7: at ERL 0 the
//!   only recovery is a new session).
#![forbid(unsafe_code)]

mod abort;
mod command;
pub mod connect;
mod discovery;
mod error;
mod liveness;
mod login;
mod nop;
pub mod redirect;
mod task_mgmt;
mod tasks;
mod window;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use abort::AbortRejection;
pub use error::{
    login_status_name, reject_reason_name, CommandError, CommandFailure, SessionError,
};
pub use liveness::Liveness;
pub use task_mgmt::{
    TaskManagementFunction, TaskManagementId, TaskManagementOutcome, TaskManagementRejection,
    TaskManagementResponse,
};

use crate::pdu::{self, Header, Isid, LoginStage, LunField, Opcode, Tag, TaskAttribute};
use crate::scsi::Cdb;
use crate::text::{OperationalOffer, OperationalParams};

use command::{DataOutBurst, Payload};
use discovery::Discovery;
use login::Login;
use nop::Keepalive;
use tasks::TaskTable;
use window::{CmdWindow, StatWindow};

/// MaxRecvDataSegmentLength in force during login (section 13.12: the default, 8192).
pub const LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

/// What the initiator asks for. [`SessionConfig::new`] fills in the usual values.
#[derive(Clone)]
pub struct SessionConfig {
    /// InitiatorName (an iqn. or eui. name).
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// TargetName for a normal session; `None` opens a discovery session.
    pub target_name: Option<String>,
    /// Initiator Session ID (section 11.12.5); unique per initiator-target pair.
    pub isid: Isid,
    /// 0 for a new session.
    pub tsih: u16,
    pub cid: u16,
    /// CHAP credentials; `None` offers AuthMethod=None.
    pub chap: Option<ChapConfig>,
    /// Operational keys we propose.
    pub offer: OperationalOffer,
    /// The whole login must finish within this.
    pub login_timeout: Duration,
    /// A command sent and unanswered this long fails the connection (its state on the
    /// target is unknown at ERL 0); a command held back by the window this long fails
    /// alone. `Duration::ZERO` turns the limit off.
    pub command_timeout: Duration,
    /// Silence from the target for this long makes us send a NOP-Out ping.
    /// `Duration::ZERO` turns pings off.
    pub nop_interval: Duration,
    /// A ping unanswered this long fails the connection.
    pub nop_timeout: Duration,
    /// The Logout Response must come within this after `logout` is called.
    pub logout_timeout: Duration,
    /// Bound on commands waiting for the command window. Together with
    /// `max_outstanding_commands` it sizes the task table; past 2^20 - 1 commands in all,
    /// `submit` answers `QueueFull`.
    pub max_queued_commands: usize,
    /// Bound on commands sent and not yet answered (on top of the target's window).
    pub max_outstanding_commands: usize,
    /// Random bytes for our CHAP challenge when mutual CHAP is configured (section 12.1.3:
    /// at least 16 bytes, fresh for each login).
    pub chap_challenge: Vec<u8>,
    /// The CmdSN of the leading login (section 11.12.8).
    pub initial_cmd_sn: u32,
}

impl SessionConfig {
    /// A configuration with RFC default operational keys, AuthMethod=None, and timeouts of
    /// the usual size (login 15 s, command 30 s, ping after 5 s idle with 5 s to answer,
    /// logout 15 s).
    pub fn new(initiator_name: impl Into<String>, target_name: Option<String>) -> SessionConfig {
        SessionConfig {
            initiator_name: initiator_name.into(),
            initiator_alias: None,
            target_name,
            // Type 10b (random), section 11.12.5; callers should put their own random
            // qualifier here.
            isid: [0x80, 0x00, 0x00, 0x00, 0x00, 0x01],
            tsih: 0,
            cid: 0,
            chap: None,
            offer: OperationalOffer::default(),
            login_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(30),
            nop_interval: Duration::from_secs(5),
            nop_timeout: Duration::from_secs(5),
            logout_timeout: Duration::from_secs(15),
            max_queued_commands: 1024,
            max_outstanding_commands: 128,
            chap_challenge: Vec::new(),
            initial_cmd_sn: 1,
        }
    }

    fn is_discovery(&self) -> bool {
        self.target_name.is_none()
    }
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("initiator_name", &self.initiator_name)
            .field("target_name", &self.target_name)
            .field("isid", &self.isid)
            .field("tsih", &self.tsih)
            .field("cid", &self.cid)
            .field("chap", &self.chap.as_ref().map(|c| &c.user))
            .finish_non_exhaustive()
    }
}

/// CHAP credentials (RFC 7143 section 12.1.3, RFC 1994).
#[derive(Clone)]
pub struct ChapConfig {
    pub user: String,
    pub secret: Vec<u8>,
    /// For mutual CHAP: the name and secret the target must prove it knows.
    pub mutual: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ChapConfig {
    /// Secrets are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .field("mutual_user", &self.mutual.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Logging in; `stage` is the current login stage (CSG).
    Login {
        stage: LoginStage,
    },
    FullFeature,
    /// `logout` was called: new commands are refused; the Logout Request goes out once
    /// the commands in flight have completed.
    LoggingOut,
    /// Logged out (or redirected, or the login abandoned): close the connection.
    Closed,
    /// A fatal error: close the connection.
    Failed,
}

impl SessionState {
    fn name(&self) -> &'static str {
        match self {
            SessionState::Login { .. } => "login",
            SessionState::FullFeature => "full feature phase",
            SessionState::LoggingOut => "logging out",
            SessionState::Closed => "closed",
            SessionState::Failed => "failed",
        }
    }
}

/// Identifies a submitted command; it is the command's Initiator Task Tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Tag);

impl TaskId {
    /// The Initiator Task Tag the command travels under.
    pub fn itt(self) -> Tag {
        self.0
    }
}

/// One PDU to send: the header and where its data segment comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub header: Header,
    pub data: TransmitData,
}

/// The data segment of a [`Transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransmitData {
    None,
    /// Data the session made (login and text keys, NOP echo).
    Owned(Vec<u8>),
    /// A slice of a command's buffer (immediate data, Data-Out): borrow it through
    /// [`Session::transmit_data`], no copy.
    CommandBuffer {
        task: TaskId,
        offset: u32,
        len: u32,
    },
}

/// Which way a command moves data, and how much.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    None,
    /// Read up to `len` bytes into the buffer.
    Read {
        len: u32,
    },
    /// Write the first `len` bytes of the buffer.
    Write {
        len: u32,
    },
}

impl DataDirection {
    /// The bytes the command moves (the iSCSI Expected Data Transfer Length).
    pub fn transfer_len(self) -> u32 {
        match self {
            DataDirection::None => 0,
            DataDirection::Read { len } | DataDirection::Write { len } => len,
        }
    }

    /// Whether a command whose connection was lost can be sent again with the `buffer`
    /// that came back: not a write whose data did not come back (an adapter that kept
    /// it), which must fail instead. The one rule of every path that sends a command again
    /// (multipath's reissue, an adapter move's commands cut at Parameter3).
    pub fn can_send_again(self, buffer: &[u8]) -> bool {
        match self {
            DataDirection::Write { len } => buffer.len() >= len as usize,
            _ => true,
        }
    }
}

/// The session's view of the data phase a CDB declares ([`crate::scsi::Cdb::direction`]).
impl From<crate::scsi::DataDirection> for DataDirection {
    fn from(direction: crate::scsi::DataDirection) -> Self {
        match direction {
            crate::scsi::DataDirection::None => DataDirection::None,
            crate::scsi::DataDirection::Read(len) => DataDirection::Read { len },
            crate::scsi::DataDirection::Write(len) => DataDirection::Write { len },
        }
    }
}

/// One SCSI command, the one request type of every layer: the session, the paths (software
/// shard, dependent and independent adapters), the shard pools and the blocking client
/// all take it. The buffer is owned by the command while it is in flight and handed back
/// on completion: read data lands in it, write data comes from it.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The LUN as a number ([`crate::scsi::Lun::from_u64`] encodes it).
    pub lun: u64,
    /// Inline up to 16 bytes: building and sending one allocates nothing.
    pub cdb: Cdb,
    pub direction: DataDirection,
    /// At least as long as the transfer length in `direction`.
    pub buffer: Vec<u8>,
    pub attribute: TaskAttribute,
    /// The caller's tag, returned in the completion (the session itself does not read it).
    pub user_data: u64,
}

impl Request {
    /// `cdb` for `lun`, with the data phase the CDB declares, SIMPLE task attribute.
    pub fn new(lun: u64, cdb: Cdb, buffer: Vec<u8>, user_data: u64) -> Request {
        Request {
            lun,
            direction: cdb.direction().into(),
            cdb,
            buffer,
            attribute: TaskAttribute::Simple,
            user_data,
        }
    }
}

impl Request {
    /// A request from raw CDB bytes (a vendor or hand-built command), 1 to 260 bytes, with
    /// the data phase the caller declares; `user_data` 0, SIMPLE task attribute.
    pub fn raw(
        lun: u64,
        cdb: &[u8],
        direction: DataDirection,
        buffer: Vec<u8>,
    ) -> Result<Request, crate::scsi::ScsiError> {
        let cdb = Cdb::from_bytes(cdb, direction.into())?;
        Ok(Request {
            direction,
            ..Request::new(lun, cdb, buffer, 0)
        })
    }
}

/// The CDB's view of a session data phase (the inverse of the `From` above).
impl From<DataDirection> for crate::scsi::DataDirection {
    fn from(direction: DataDirection) -> Self {
        match direction {
            DataDirection::None => crate::scsi::DataDirection::None,
            DataDirection::Read { len } => crate::scsi::DataDirection::Read(len),
            DataDirection::Write { len } => crate::scsi::DataDirection::Write(len),
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("lun", &self.lun)
            .field("cdb", &self.cdb.as_bytes())
            .field("direction", &self.direction)
            .field("buffer_len", &self.buffer.len())
            .field("attribute", &self.attribute)
            .field("user_data", &self.user_data)
            .finish()
    }
}

/// Why `submit` refused a command.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRejection {
    #[error("session is not in full feature phase")]
    NotLoggedIn,
    #[error("a discovery session carries no SCSI commands")]
    DiscoverySession,
    #[error("the command queue is full")]
    QueueFull,
    #[error("buffer of {buffer} bytes is shorter than the {transfer}-byte transfer")]
    BufferTooShort { buffer: usize, transfer: u32 },
}

/// A refused command, handed back whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command not accepted: {reason}")]
pub struct SubmitError {
    pub reason: SubmitRejection,
    pub request: Request,
}

/// Residual reported by the target (section 11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residual {
    None,
    /// The target transferred this many bytes fewer than expected.
    Underflow(u32),
    /// The target had this many bytes more than expected.
    Overflow(u32),
}

/// A command the target completed (any SCSI status).
#[derive(Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// SCSI status (0x00 GOOD, 0x02 CHECK CONDITION, 0x08 BUSY, ...).
    pub status: u8,
    pub sense: Option<Vec<u8>>,
    pub residual: Residual,
    pub buffer: Vec<u8>,
    /// Bytes moved: read bytes placed in the buffer, or write bytes the target took.
    pub transferred: u32,
}

impl std::fmt::Debug for CommandOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandOutcome")
            .field("status", &self.status)
            .field("sense", &self.sense)
            .field("residual", &self.residual)
            .field("buffer_len", &self.buffer.len())
            .field("transferred", &self.transferred)
            .finish()
    }
}

/// A target found by SendTargets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    /// `host:port` (IPv6 hosts in brackets) and portal group tag.
    pub addresses: Vec<(String, u16)>,
}

/// Async Message events surfaced to the caller (section 11.9.1).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsyncEvent {
    /// Event 0: a SCSI asynchronous event, with its sense data.
    Scsi { lun: LunField, sense: Vec<u8> },
    /// Event 1: the target asks for a logout within `within_secs` (Parameter3); the
    /// driver moves its I/O and calls [`Session::logout`]. `time2wait` (Parameter2) is the
    /// least wait before this connection's ISID and CID are used again.
    LogoutRequested { within_secs: u16, time2wait: u16 },
    /// Event 4: the target asks to renegotiate; the session has sent a Text Request
    /// ([`Event::Renegotiated`] follows with the target's answer).
    Renegotiate,
    /// Event 255 or unknown events.
    Other { event: u8, vcode: u8 },
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    LoginComplete,
    /// The target refused the login (a `ConnectionFailed` follows).
    LoginFailed {
        status_class: u8,
        status_detail: u8,
        reason: String,
    },
    /// The target sent us elsewhere (status class 1); the session is `Closed`. The driver
    /// follows it through its [`redirect::PortalRoute`].
    Redirect {
        address: redirect::TargetAddress,
        kind: redirect::RedirectKind,
    },
    TargetsDiscovered(Vec<DiscoveredTarget>),
    CommandComplete(TaskId, Result<CommandOutcome, CommandFailure>),
    AsyncMessage(AsyncEvent),
    /// The target answered the renegotiation it asked for with these keys (a
    /// MaxRecvDataSegmentLength among them is in force).
    Renegotiated(Vec<(String, String)>),
    LogoutComplete,
    ConnectionFailed(SessionError),
}

/// What the target told us about itself during login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetInfo {
    pub alias: Option<String>,
    pub portal_group_tag: Option<u16>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub commands_submitted: u64,
    pub commands_completed: u64,
    pub commands_failed: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes copied in user space: Data-In payload copied into command buffers by
    /// [`Session::handle_pdu`] (payload placed through [`Session::data_in_destination`]
    /// is not counted: it was never copied).
    pub bytes_copied: u64,
    pub pdus_sent: u64,
    pub pdus_received: u64,
    pub data_in_pdus: u64,
    pub data_out_pdus: u64,
    pub r2ts: u64,
    pub nop_pings_sent: u64,
    pub nop_pings_answered: u64,
    pub nop_target_pings_answered: u64,
    pub rejects: u64,
    /// ABORT TASK requests sent, and commands that ended aborted (by the target's answer,
    /// or locally before they were sent).
    pub aborts_sent: u64,
    pub tasks_aborted: u64,
}

/// An entry of the transmit queue. Data-Out bursts are cut into PDUs only as they are
/// polled, so a large R2T costs one entry.
#[derive(Debug)]
enum Outgoing {
    Pdu(Transmit),
    DataOut(DataOutBurst),
}

#[derive(Debug)]
struct LogoutState {
    deadline: Instant,
    /// The Logout Request's ITT once it is queued.
    itt: Option<Tag>,
}

/// The initiator session. See the module docs for the calling order.
pub struct Session {
    config: SessionConfig,
    state: SessionState,
    login: Option<Login>,
    params: Option<OperationalParams>,
    digests: pdu::Digests,
    target_info: TargetInfo,
    tsih: u16,
    window: CmdWindow,
    stat: StatWindow,
    /// Every command accepted and not yet completed, queued or in flight, by tag.
    tasks: TaskTable,
    /// Commands accepted but not yet sent (window shut or too many in flight).
    waiting: VecDeque<Tag>,
    in_flight: usize,
    outbox: VecDeque<Outgoing>,
    events: VecDeque<Event>,
    discovery: Option<Discovery>,
    keepalive: Keepalive,
    logout: Option<LogoutState>,
    /// ABORT TASK requests awaiting their response (`abort`).
    aborts: Vec<abort::PendingAbort>,
    /// Other task management requests awaiting their response (`task_mgmt`).
    task_mgmt: Vec<task_mgmt::PendingTaskManagement>,
    /// Their answers, for [`Session::poll_task_management`].
    task_mgmt_done: VecDeque<TaskManagementOutcome>,
    last_received: Instant,
    stats: SessionStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("tasks", &self.tasks.len())
            .field("waiting", &self.waiting.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session and queues its first Login Request.
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        // At most `max_queued_commands` wait and `max_outstanding_commands` (at least 1)
        // are in flight.
        let max_tasks = config
            .max_queued_commands
            .saturating_add(config.max_outstanding_commands.max(1));
        let mut session = Session {
            window: CmdWindow::new(config.initial_cmd_sn),
            tsih: config.tsih,
            config,
            state: SessionState::Login {
                stage: LoginStage::SecurityNegotiation,
            },
            login: None,
            params: None,
            digests: pdu::Digests::default(),
            target_info: TargetInfo::default(),
            stat: StatWindow::default(),
            tasks: TaskTable::new(max_tasks),
            waiting: VecDeque::new(),
            in_flight: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            discovery: None,
            keepalive: Keepalive::default(),
            logout: None,
            aborts: Vec::new(),
            task_mgmt: Vec::new(),
            task_mgmt_done: VecDeque::new(),
            last_received: now,
            stats: SessionStats::default(),
        };
        session.start_login(now);
        session
    }

    /// Delivers one PDU from the target. `Err` is fatal: close the connection. By then the
    /// session has failed every outstanding command with an error naming the fault and
    /// queued `Event::ConnectionFailed`.
    pub fn handle_pdu(
        &mut self,
        now: Instant,
        header: Header,
        data: &[u8],
    ) -> Result<(), SessionError> {
        self.handle_pdu_payload(now, header, Payload::Bytes(data))
    }

    /// Where the data segment of a received Data-In belongs: the slice of the reading
    /// command's buffer at its Buffer Offset, `data_len` bytes long. A transport that
    /// receives the payload straight into this slice then calls
    /// [`Session::handle_pdu_placed`], and the bytes are placed once, never copied
    /// (DESIGN rule 3). `None` when the PDU is not a Data-In this session expects next
    /// (unknown tag, not a read, DataSN or offset out of order, out of range): receive the
    /// payload elsewhere and hand it to [`Session::handle_pdu`], which reports the fault.
    pub fn data_in_destination(&mut self, header: &Header, data_len: u32) -> Option<&mut [u8]> {
        if !matches!(
            self.state,
            SessionState::FullFeature | SessionState::LoggingOut
        ) || data_len > self.max_recv_data_segment_length()
        {
            return None;
        }
        let Header::DataIn(h) = header else {
            return None;
        };
        let in_order = self.params.as_ref().is_none_or(|p| p.data_pdu_in_order);
        self.tasks.get_mut(h.initiator_task_tag)?.placement(
            h.data_sn,
            h.buffer_offset,
            data_len,
            in_order,
        )
    }

    /// Delivers a Data-In whose `data_len` payload bytes were already received into the
    /// slice [`Session::data_in_destination`] gave for this same header (nothing is
    /// copied, and `SessionStats::bytes_copied` does not grow). Any other PDU must go
    /// through [`Session::handle_pdu`]; passing one here with a payload is a fault.
    pub fn handle_pdu_placed(
        &mut self,
        now: Instant,
        header: Header,
        data_len: u32,
    ) -> Result<(), SessionError> {
        self.handle_pdu_payload(now, header, Payload::Placed(data_len))
    }

    fn handle_pdu_payload(
        &mut self,
        now: Instant,
        header: Header,
        payload: Payload<'_>,
    ) -> Result<(), SessionError> {
        if matches!(self.state, SessionState::Closed | SessionState::Failed) {
            return Ok(());
        }
        self.last_received = now;
        self.stats.pdus_received += 1;
        match self.dispatch(now, header, payload) {
            Ok(()) => {
                self.issue_waiting(now);
                self.maybe_send_logout();
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        header: Header,
        payload: Payload<'_>,
    ) -> Result<(), SessionError> {
        let opcode = header.opcode();
        let max = self.max_recv_data_segment_length();
        if payload.len() > max as usize {
            return Err(SessionError::PduTooLong {
                opcode,
                len: payload.len(),
                max,
            });
        }
        if let Header::DataIn(h) = header {
            if matches!(self.state, SessionState::Login { .. }) {
                return Err(self.unexpected(opcode));
            }
            return self.handle_data_in(h, payload);
        }
        let data = match payload {
            Payload::Bytes(data) => data,
            Payload::Placed(0) => &[],
            Payload::Placed(_) => {
                return Err(SessionError::InvalidPdu {
                    opcode,
                    reason: "payload placed for a PDU other than Data-In",
                })
            }
        };
        if opcode.is_initiator() {
            return Err(self.unexpected(opcode));
        }
        if let SessionState::Login { .. } = self.state {
            return match header {
                Header::LoginResponse(resp) => self.handle_login_response(now, resp, data),
                Header::Reject(reject) => Err(SessionError::Reject {
                    reason: reject.reason,
                    opcode: rejected_opcode(data),
                }),
                _ => Err(self.unexpected(opcode)),
            };
        }
        match header {
            Header::NopIn(h) => self.handle_nop_in(now, h, data),
            Header::ScsiResponse(h) => self.handle_scsi_response(h, data),
            Header::TextResponse(h) => self.handle_text_response(h, data),
            Header::LogoutResponse(h) => self.handle_logout_response(h),
            Header::R2t(h) => self.handle_r2t(h),
            Header::AsyncMessage(h) => self.handle_async_message(now, h, data),
            Header::Reject(h) => self.handle_reject(h, data),
            Header::TaskMgmtResponse(h) => self.handle_task_mgmt_response(h),
            // Login responses after login are unexpected.
            _ => Err(self.unexpected(opcode)),
        }
    }

    fn unexpected(&self, opcode: Opcode) -> SessionError {
        SessionError::UnexpectedPdu {
            opcode,
            state: self.state.name(),
        }
    }

    /// Call when the instant from [`Session::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(err) = self.check_timeouts(now) {
            self.fail(err);
        }
    }

    fn check_timeouts(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.state {
            SessionState::Closed | SessionState::Failed => return Ok(()),
            SessionState::Login { .. } => {
                if let Some(login) = &self.login {
                    if now >= login.deadline() {
                        return Err(SessionError::LoginTimeout);
                    }
                }
                return Ok(());
            }
            SessionState::FullFeature | SessionState::LoggingOut => {}
        }
        if let Some(logout) = &self.logout {
            if now >= logout.deadline {
                return Err(SessionError::LogoutTimeout);
            }
        }
        self.check_command_timeouts(now)?;
        self.check_keepalive(now)
    }

    /// The transport died: every outstanding command fails with `ConnectionLost`.
    pub fn handle_connection_lost(&mut self, _now: Instant, reason: String) {
        // Our Logout Request was sent and nothing else was in flight: a target that closes
        // instead of answering (istgt 0.4 does, now and then) has ended the session as asked.
        let logout_sent = self.logout.as_ref().is_some_and(|l| l.itt.is_some());
        if self.state == SessionState::LoggingOut && logout_sent && self.tasks.is_empty() {
            tracing::warn!(%reason, "target closed the connection instead of answering Logout");
            self.state = SessionState::Closed;
            self.logout = None;
            self.outbox.clear();
            self.events.push_back(Event::LogoutComplete);
            return;
        }
        self.fail(SessionError::ConnectionLost(reason));
    }

    /// The next PDU to send, if any. Call [`Session::transmit_data`] for its payload before
    /// delivering more input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            let mut transmit = match self.outbox.pop_front()? {
                Outgoing::Pdu(t) => t,
                Outgoing::DataOut(burst) => match self.next_data_out(burst) {
                    Some(t) => t,
                    None => continue,
                },
            };
            // ExpStatSN is stamped as late as possible, so it acknowledges all we have seen.
            let exp_stat_sn = self.stat.exp_stat_sn();
            match &mut transmit.header {
                Header::NopOut(h) => h.exp_stat_sn = exp_stat_sn,
                Header::ScsiCommand(h) => h.exp_stat_sn = exp_stat_sn,
                Header::LoginRequest(h) => h.exp_stat_sn = exp_stat_sn,
                Header::TextRequest(h) => h.exp_stat_sn = exp_stat_sn,
                Header::DataOut(h) => h.exp_stat_sn = exp_stat_sn,
                Header::LogoutRequest(h) => h.exp_stat_sn = exp_stat_sn,
                Header::TaskMgmtRequest(h) => h.exp_stat_sn = exp_stat_sn,
                _ => {}
            }
            self.stats.pdus_sent += 1;
            return Some(transmit);
        }
    }

    /// The data segment of `t`: owned bytes as they are, or a slice of the command's
    /// buffer (empty if that command has completed meanwhile).
    pub fn transmit_data<'a>(&'a self, t: &'a Transmit) -> &'a [u8] {
        match &t.data {
            TransmitData::None => &[],
            TransmitData::Owned(bytes) => bytes,
            TransmitData::CommandBuffer { task, offset, len } => {
                let start = *offset as usize;
                let end = start.saturating_add(*len as usize);
                self.tasks
                    .get(task.0)
                    .and_then(|t| t.buffer.get(start..end))
                    .unwrap_or(&[])
            }
        }
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::Closed | SessionState::Failed => None,
            SessionState::Login { .. } => self.login.as_ref().map(Login::deadline),
            SessionState::FullFeature | SessionState::LoggingOut => {
                let mut earliest = self.keepalive_deadline();
                let mut consider = |t: Option<Instant>| {
                    if let Some(t) = t {
                        earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    }
                };
                consider(self.logout.as_ref().map(|l| l.deadline));
                consider(self.command_deadline());
                earliest
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Accepts a SCSI command. It goes out when the command window allows; a refused
    /// command is handed back in the error.
    pub fn submit(&mut self, now: Instant, cmd: Request) -> Result<TaskId, SubmitError> {
        let reject = |reason, request| Err(SubmitError { reason, request });
        if self.state != SessionState::FullFeature {
            return reject(SubmitRejection::NotLoggedIn, cmd);
        }
        if self.config.is_discovery() {
            return reject(SubmitRejection::DiscoverySession, cmd);
        }
        if self.waiting.len() >= self.config.max_queued_commands {
            return reject(SubmitRejection::QueueFull, cmd);
        }
        let transfer = cmd.direction.transfer_len();
        if cmd.buffer.len() < transfer as usize {
            return reject(
                SubmitRejection::BufferTooShort {
                    buffer: cmd.buffer.len(),
                    transfer,
                },
                cmd,
            );
        }
        let id = match self.tasks.insert(now, cmd) {
            Ok(id) => id,
            // Only when the configured bounds exceed what the tag can index.
            Err(cmd) => return reject(SubmitRejection::QueueFull, cmd),
        };
        self.waiting.push_back(id.0);
        self.stats.commands_submitted += 1;
        self.issue_waiting(now);
        Ok(id)
    }

    /// Discovery sessions: asks for SendTargets=All. Errors here are not fatal.
    pub fn send_targets(&mut self, _now: Instant) -> Result<(), SessionError> {
        if self.state != SessionState::FullFeature {
            return Err(SessionError::NotLoggedIn);
        }
        if !self.config.is_discovery() {
            return Err(SessionError::NotDiscoverySession);
        }
        if self.discovery.is_some() {
            return Err(SessionError::DiscoveryInProgress);
        }
        let itt = self.allocate_tag();
        let (discovery, request) = Discovery::start(itt, self.window.peek());
        self.discovery = Some(discovery);
        self.outbox.push_back(Outgoing::Pdu(request));
        Ok(())
    }

    /// Logs out (reason 0: close the session). Commands not yet sent fail with
    /// `CommandError::LoggingOut`; the Logout Request goes out once the commands in flight
    /// complete. During login this abandons the login.
    pub fn logout(&mut self, now: Instant) {
        match self.state {
            SessionState::Login { .. } => {
                self.login = None;
                self.state = SessionState::Closed;
                self.outbox.clear();
                self.events.push_back(Event::LogoutComplete);
            }
            SessionState::FullFeature => {
                self.state = SessionState::LoggingOut;
                self.logout = Some(LogoutState {
                    deadline: now + self.config.logout_timeout,
                    itt: None,
                });
                while let Some(tag) = self.waiting.pop_front() {
                    self.complete_with_error(tag, CommandError::LoggingOut);
                }
                self.maybe_send_logout();
            }
            SessionState::LoggingOut | SessionState::Closed | SessionState::Failed => {}
        }
    }

    fn maybe_send_logout(&mut self) {
        if self.state != SessionState::LoggingOut || self.in_flight > 0 || self.discovery.is_some()
        {
            return;
        }
        let Some(logout) = &self.logout else { return };
        if logout.itt.is_some() {
            return;
        }
        let itt = self.allocate_tag();
        if let Some(logout) = &mut self.logout {
            logout.itt = Some(itt);
        }
        let header = Header::LogoutRequest(pdu::LogoutRequest {
            immediate: true,
            reason_code: 0,
            initiator_task_tag: itt,
            cid: self.config.cid,
            cmd_sn: self.window.peek(),
            exp_stat_sn: 0,
        });
        self.outbox.push_back(Outgoing::Pdu(Transmit {
            header,
            data: TransmitData::None,
        }));
    }

    fn handle_logout_response(&mut self, resp: pdu::LogoutResponse) -> Result<(), SessionError> {
        let expected = self.logout.as_ref().and_then(|l| l.itt);
        if expected != Some(resp.initiator_task_tag) {
            return Err(SessionError::UnknownTaskTag {
                opcode: Opcode::LogoutResponse,
                tag: resp.initiator_task_tag,
            });
        }
        self.stat.acknowledge(resp.stat_sn);
        self.window.update(resp.exp_cmd_sn, resp.max_cmd_sn);
        if resp.response != 0 {
            return Err(SessionError::LogoutFailed {
                response: resp.response,
            });
        }
        self.state = SessionState::Closed;
        self.logout = None;
        self.outbox.clear();
        for tag in self.tasks.tags_in_submission_order() {
            self.complete_with_error(
                tag,
                CommandError::ConnectionLost("session logged out".into()),
            );
        }
        self.events.push_back(Event::LogoutComplete);
        Ok(())
    }

    /// Section 11.9.1.
    fn handle_async_message(
        &mut self,
        _now: Instant,
        msg: pdu::AsyncMessage,
        data: &[u8],
    ) -> Result<(), SessionError> {
        self.stat.acknowledge(msg.stat_sn);
        self.window.update(msg.exp_cmd_sn, msg.max_cmd_sn);
        match msg.async_event {
            0 => {
                let sense = command::parse_sense(data).ok_or(SessionError::InvalidPdu {
                    opcode: Opcode::AsyncMessage,
                    reason: "SenseLength runs past the data segment",
                })?;
                self.events.push_back(Event::AsyncMessage(AsyncEvent::Scsi {
                    lun: msg.lun,
                    sense: sense.map(<[u8]>::to_vec).unwrap_or_default(),
                }));
            }
            // The driver decides how to leave: a shard logs in a new connection first and
            // lets this one drain, then logs it out (make-before-break); logging out here at
            // once would end the commands in flight (RFC 7143 section 11.14).
            1 => self
                .events
                .push_back(Event::AsyncMessage(AsyncEvent::LogoutRequested {
                    within_secs: msg.parameter3,
                    time2wait: msg.parameter2,
                })),
            2 | 3 => {
                return Err(SessionError::TargetDroppedConnection {
                    event: msg.async_event,
                    time2wait: msg.parameter2,
                    time2retain: msg.parameter3,
                });
            }
            4 => {
                self.events
                    .push_back(Event::AsyncMessage(AsyncEvent::Renegotiate));
                self.start_renegotiation();
            }
            event => self
                .events
                .push_back(Event::AsyncMessage(AsyncEvent::Other {
                    event,
                    vcode: msg.async_vcode,
                })),
        }
        Ok(())
    }

    /// Section 11.17: the data segment carries the header of the rejected PDU. A rejected
    /// SCSI Command fails that command; any other rejected PDU fails the connection (at
    /// ERL 0 there is nothing to retry it with).
    fn handle_reject(&mut self, reject: pdu::Reject, data: &[u8]) -> Result<(), SessionError> {
        self.stats.rejects += 1;
        self.stat.acknowledge(reject.stat_sn);
        self.window.update(reject.exp_cmd_sn, reject.max_cmd_sn);
        let opcode = rejected_opcode(data);
        if opcode == Some(Opcode::ScsiCommand) {
            if let Some(tag) = data
                .get(16..20)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            {
                if self.tasks.get(tag).is_some_and(|t| t.is_issued()) {
                    self.complete_with_error(
                        tag,
                        CommandError::Rejected {
                            reason: reject.reason,
                        },
                    );
                    return Ok(());
                }
            }
        }
        Err(SessionError::Reject {
            reason: reject.reason,
            opcode,
        })
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The negotiated operational parameters, once login completed.
    pub fn params(&self) -> Option<&OperationalParams> {
        self.params.as_ref()
    }

    /// Digests in force; they switch on right after the Login Response that ends login.
    pub fn digests(&self) -> pdu::Digests {
        self.digests
    }

    /// The longest data segment we accept: 8192 during login, then what we declared.
    pub fn max_recv_data_segment_length(&self) -> u32 {
        match &self.params {
            Some(p) => p.initiator_max_recv_data_segment_length,
            None => LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
        }
    }

    /// The TSIH the target gave the session (or the configured one before that).
    pub fn tsih(&self) -> u16 {
        self.tsih
    }

    pub fn target_info(&self) -> &TargetInfo {
        &self.target_info
    }

    /// Commands accepted but not yet sent: held back by the command window (MaxCmdSN) or
    /// by `max_outstanding_commands`.
    pub fn commands_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// A fresh Initiator Task Tag for a login, text, ping or logout exchange: never the
    /// reserved value, never a command's (commands take theirs from the task table), never
    /// one of these exchanges in progress.
    fn allocate_tag(&mut self) -> Tag {
        let ping = self.keepalive.ping_tag();
        let discovery = self.discovery.as_ref().map(Discovery::itt);
        let logout = self.logout.as_ref().and_then(|l| l.itt);
        let login = self.login.as_ref().map(Login::itt);
        // Bounded by the commands held (one abort each).
        let aborts: Vec<Tag> = self
            .abort_tags()
            .chain(self.task_management_tags())
            .collect();
        self.tasks.control_tag(|tag| {
            [ping, discovery, logout, login].contains(&Some(tag)) || aborts.contains(&tag)
        })
    }

    /// The fatal path: fail every command, drop queued output, report the fault once.
    fn fail(&mut self, err: SessionError) -> SessionError {
        if matches!(self.state, SessionState::Failed | SessionState::Closed) {
            return err;
        }
        tracing::warn!(error = %err, "iSCSI connection failed");
        self.state = SessionState::Failed;
        self.outbox.clear();
        self.waiting.clear();
        self.login = None;
        self.discovery = None;
        self.logout = None;
        self.aborts.clear();
        self.task_mgmt.clear();
        let culprit = err.task_tag();
        let text = err.to_string();
        for tag in self.tasks.tags_in_submission_order() {
            let error = if Some(tag) == culprit {
                match err {
                    SessionError::CommandTimeout { .. } => CommandError::TimedOut,
                    _ => CommandError::Protocol(text.clone()),
                }
            } else {
                CommandError::ConnectionLost(text.clone())
            };
            self.complete_with_error(tag, error);
        }
        self.events.push_back(Event::ConnectionFailed(err.clone()));
        err
    }
}

/// The opcode of the PDU header carried in a Reject's data segment.
fn rejected_opcode(data: &[u8]) -> Option<Opcode> {
    data.first().and_then(|b| Opcode::from_u8(*b))
}
