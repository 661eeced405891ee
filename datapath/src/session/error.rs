//! Errors of the initiator session, each carrying the protocol fact that caused it.

use std::time::Duration;

use thiserror::Error;

use crate::auth::chap::ChapError;
use crate::pdu::{Opcode, Tag};
use crate::text::{NegotiationError, TextError};

/// A fault that ends the connection (returned by `Session::handle_pdu` and reported as
/// `Event::ConnectionFailed`), or, from `Session::send_targets` only, a call made in the
/// wrong state (`NotLoggedIn`, `NotDiscoverySession`, `DiscoveryInProgress`), which
/// leaves the session as it was.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    /// The target answered a Login Request with a non-zero status class other than a
    /// redirection (section 11.13.5).
    #[error("login rejected: {} (status {class:#04x}{detail:02x})", login_status_name(*class, *detail))]
    LoginRejected { class: u8, detail: u8 },
    /// The login did not reach full feature phase within `SessionConfig::login_timeout`.
    #[error("login timed out")]
    LoginTimeout,
    /// The login took more request/response round trips than the session allows.
    #[error("login did not finish within {max} round trips")]
    LoginRoundTrips { max: u32 },
    /// A Login Response that breaks the login rules of sections 6.2 and 11.13.
    #[error("login protocol violation: {0}")]
    LoginProtocol(&'static str),
    /// A redirection (status class 1) whose `TargetAddress` cannot be followed.
    #[error("login redirection: {0}")]
    Redirect(#[from] super::redirect::RedirectError),
    /// The target only speaks a version other than 0 (section 11.13.4).
    #[error("target's active version {active} is not 0")]
    UnsupportedVersion { active: u8 },
    /// The security stage ended before CHAP (and mutual CHAP, when asked for) completed.
    #[error("target ended the security stage before authentication completed")]
    AuthenticationIncomplete,
    /// The target chose an AuthMethod we did not offer.
    #[error("target chose AuthMethod={0:?}, which was not offered")]
    UnexpectedAuthMethod(String),
    /// A PDU this state does not expect (an initiator opcode, or a target opcode out of place).
    #[error("unexpected {opcode:?} PDU in state {state}")]
    UnexpectedPdu { opcode: Opcode, state: &'static str },
    /// A response names an Initiator Task Tag that has no outstanding task.
    #[error("{opcode:?} for unknown initiator task tag {tag:#010x}")]
    UnknownTaskTag { opcode: Opcode, tag: Tag },
    /// A Data-In for a command that reads nothing, or an R2T for one that writes nothing.
    #[error("{opcode:?} for task {tag:#010x}, whose command does not transfer data that way")]
    WrongDataDirection { opcode: Opcode, tag: Tag },
    /// Data-In outside the command's expected data (section 11.7.5).
    #[error("Data-In for task {tag:#010x} at offset {offset} length {len} lies outside the expected {expected} bytes")]
    DataOutOfRange {
        tag: Tag,
        offset: u32,
        len: u32,
        expected: u32,
    },
    /// Data-In not at the next offset while DataPDUInOrder=Yes (section 13.18).
    #[error("Data-In for task {tag:#010x} at offset {offset}, expected offset {expected_offset} (DataPDUInOrder=Yes)")]
    DataOutOfOrder {
        tag: Tag,
        offset: u32,
        expected_offset: u32,
    },
    /// Data-In that covers bytes already received (DataPDUInOrder=No).
    #[error("Data-In for task {tag:#010x} at offset {offset} length {len} overlaps data already received")]
    DataOverlap { tag: Tag, offset: u32, len: u32 },
    /// A DataSN out of sequence (section 11.7.4; at ERL 0 a gap cannot be recovered).
    #[error("Data-In for task {tag:#010x} has DataSN {got}, expected {expected}")]
    DataSnOutOfOrder { tag: Tag, expected: u32, got: u32 },
    /// GOOD status while fewer bytes arrived than the target claims to have sent.
    #[error("task {tag:#010x} completed GOOD with {received} bytes received, {expected} expected")]
    MissingData {
        tag: Tag,
        expected: u32,
        received: u32,
    },
    /// Residual flags or counts that contradict the command (section 11.4.5).
    #[error("task {tag:#010x}: invalid residual: {reason}")]
    BadResidual { tag: Tag, reason: &'static str },
    /// An R2T outside the command's data (section 11.8).
    #[error("R2T for task {tag:#010x} at offset {offset} length {len} lies outside the expected {expected} bytes")]
    R2tOutOfRange {
        tag: Tag,
        offset: u32,
        len: u32,
        expected: u32,
    },
    /// An R2T asking for more than MaxBurstLength (section 13.13).
    #[error("R2T for task {tag:#010x} asks for {len} bytes, over MaxBurstLength {max_burst}")]
    R2tTooLong { tag: Tag, len: u32, max_burst: u32 },
    /// R2TSN out of sequence.
    #[error("R2T for task {tag:#010x} has R2TSN {got}, expected {expected}")]
    R2tSnOutOfOrder { tag: Tag, expected: u32, got: u32 },
    /// More R2Ts outstanding for one task than MaxOutstandingR2T (section 13.17).
    #[error("task {tag:#010x} has more than MaxOutstandingR2T={max} R2Ts outstanding")]
    TooManyR2ts { tag: Tag, max: u32 },
    /// SenseLength larger than the data segment that carries it (section 11.4.7).
    #[error(
        "task {tag:#010x}: SenseLength {sense_len} exceeds the {segment_len}-byte data segment"
    )]
    SenseTruncated {
        tag: Tag,
        sense_len: usize,
        segment_len: usize,
    },
    /// A PDU whose fields contradict each other or the rules of its section.
    #[error("invalid {opcode:?} PDU: {reason}")]
    InvalidPdu {
        opcode: Opcode,
        reason: &'static str,
    },
    /// A data segment longer than we declared we can receive.
    #[error("{opcode:?} data segment of {len} bytes exceeds our MaxRecvDataSegmentLength {max}")]
    PduTooLong {
        opcode: Opcode,
        len: usize,
        max: u32,
    },
    /// Malformed text from the target.
    #[error("text from target: {0}")]
    TextError(#[from] TextError),
    /// Operational negotiation failed.
    #[error("negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    /// CHAP failed (including a wrong mutual response from the target).
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    /// A Text Response that breaks section 11.11 (C with F, no TTT to continue, ...).
    #[error("text response protocol violation: {0}")]
    TextProtocol(&'static str),
    /// A SendTargets response that lists an address before any TargetName, or an
    /// address that cannot be read.
    #[error("invalid SendTargets response: {0}")]
    InvalidSendTargets(String),
    /// A text response continued over more PDUs than the session allows.
    #[error("text response continued over more than {max} PDUs")]
    TextResponseTooLong { max: u32 },
    /// The target rejected a PDU that was not a command (section 11.17).
    #[error("target rejected a {opcode:?} PDU: {} (reason {reason:#04x})", reject_reason_name(*reason))]
    Reject { reason: u8, opcode: Option<Opcode> },
    /// Our NOP-Out ping went unanswered.
    #[error("no NOP-In answer to our ping within {waited:?}")]
    NopTimeout { waited: Duration },
    /// A command sent to the target got no response within `SessionConfig::command_timeout`;
    /// at ERL 0 its state on the target is unknown.
    #[error("task {tag:#010x} got no response within the command timeout")]
    CommandTimeout { tag: Tag },
    /// The Logout Response did not come within `SessionConfig::logout_timeout`.
    #[error("logout timed out")]
    LogoutTimeout,
    /// The Logout Response carried a non-zero response (section 11.15.1).
    #[error("logout failed with response {response}")]
    LogoutFailed { response: u8 },
    /// Async Message event 2 or 3: the target drops the connection or session (section 11.9.1).
    #[error("target announced it drops the connection (async event {event}, Time2Wait {time2wait}s, Time2Retain {time2retain}s)")]
    TargetDroppedConnection {
        event: u8,
        time2wait: u16,
        time2retain: u16,
    },
    /// The transport reported the connection lost.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// `send_targets` before login completed or after the session ended (not fatal).
    #[error("session is not in full feature phase")]
    NotLoggedIn,
    /// `send_targets` on a normal session (not fatal).
    #[error("SendTargets needs a discovery session")]
    NotDiscoverySession,
    /// `send_targets` while an earlier SendTargets is still running (not fatal).
    #[error("a SendTargets exchange is already running")]
    DiscoveryInProgress,
}

impl SessionError {
    /// The task a fault is about, if it is about one task.
    pub fn task_tag(&self) -> Option<Tag> {
        use SessionError::*;
        match *self {
            WrongDataDirection { tag, .. }
            | DataOutOfRange { tag, .. }
            | DataOutOfOrder { tag, .. }
            | DataOverlap { tag, .. }
            | DataSnOutOfOrder { tag, .. }
            | MissingData { tag, .. }
            | BadResidual { tag, .. }
            | R2tOutOfRange { tag, .. }
            | R2tTooLong { tag, .. }
            | R2tSnOutOfOrder { tag, .. }
            | TooManyR2ts { tag, .. }
            | SenseTruncated { tag, .. }
            | CommandTimeout { tag } => Some(tag),
            _ => None,
        }
    }
}

/// Why one command failed. The command's buffer is handed back beside it in
/// [`CommandFailure`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// No response within `SessionConfig::command_timeout` (the connection is failed too,
    /// when the command had been sent), or not sent within it because the window stayed shut.
    #[error("command timed out")]
    TimedOut,
    /// The connection ended (or failed because of another task) before the command completed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The target broke the protocol while answering this command; the connection is failed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// SCSI Response with a non-zero iSCSI response code (section 11.4.3).
    #[error("target failure (iSCSI response {response:#04x})")]
    TargetFailure { response: u8 },
    /// The target rejected the command PDU (section 11.17).
    #[error("command rejected: {} (reason {reason:#04x})", reject_reason_name(*reason))]
    Rejected { reason: u8 },
    /// The session started logging out before the command was sent.
    #[error("session logging out; command not sent")]
    LoggingOut,
    /// Ended by an ABORT TASK the caller asked for ([`crate::session::Session::abort_task`]):
    /// the target holds no such task any more (or it was never sent).
    #[error("command aborted (ABORT TASK)")]
    Aborted,
}

/// A failed command: the cause and the command's buffer, handed back.
#[derive(Clone, PartialEq, Eq, Error)]
#[error("{error}")]
pub struct CommandFailure {
    pub error: CommandError,
    pub buffer: Vec<u8>,
}

impl std::fmt::Debug for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandFailure")
            .field("error", &self.error)
            .field("buffer_len", &self.buffer.len())
            .finish()
    }
}

/// The name of a Login Response status (section 11.13.5).
pub fn login_status_name(class: u8, detail: u8) -> &'static str {
    use crate::pdu::login_status::*;
    match (class, detail) {
        SUCCESS => "success",
        TARGET_MOVED_TEMPORARILY => "target moved temporarily",
        TARGET_MOVED_PERMANENTLY => "target moved permanently",
        (1, _) => "redirection",
        INITIATOR_ERROR => "initiator error",
        AUTHENTICATION_FAILURE => "authentication failure",
        AUTHORIZATION_FAILURE => "authorization failure",
        NOT_FOUND => "target not found",
        TARGET_REMOVED => "target removed",
        UNSUPPORTED_VERSION => "unsupported version",
        TOO_MANY_CONNECTIONS => "too many connections",
        MISSING_PARAMETER => "missing parameter",
        CANT_INCLUDE_IN_SESSION => "can't include in session",
        SESSION_TYPE_NOT_SUPPORTED => "session type not supported",
        SESSION_DOES_NOT_EXIST => "session does not exist",
        INVALID_DURING_LOGIN => "invalid request during login",
        (2, _) => "initiator error (unknown detail)",
        TARGET_ERROR => "target error",
        SERVICE_UNAVAILABLE => "service unavailable",
        OUT_OF_RESOURCES => "out of resources",
        (3, _) => "target error (unknown detail)",
        _ => "unknown status class",
    }
}

/// The name of a Reject reason code (section 11.17.1).
pub fn reject_reason_name(reason: u8) -> &'static str {
    use crate::pdu::reject_reason::*;
    match reason {
        DATA_DIGEST_ERROR => "data (payload) digest error",
        SNACK_REJECT => "SNACK reject",
        PROTOCOL_ERROR => "protocol error",
        COMMAND_NOT_SUPPORTED => "command not supported",
        IMMEDIATE_COMMAND_REJECT => "immediate command reject (too many immediate commands)",
        TASK_IN_PROGRESS => "task in progress",
        INVALID_DATA_ACK => "invalid data ACK",
        INVALID_PDU_FIELD => "invalid PDU field",
        OUT_OF_RESOURCES => "long operation reject (out of resources)",
        0x0b => "deprecated (negotiation reset)",
        WAITING_FOR_LOGOUT => "waiting for logout",
        _ => "unknown reason",
    }
}
