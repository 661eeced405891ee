//! Why a target connection failed. Each variant carries the protocol fact; the server logs
//! it and closes that connection only (RFC 7143 section 7: at ERL 0 the recovery is a new
//! connection and session).

use datapath::auth::chap::ChapError;
use datapath::pdu::{Opcode, PduError};
use datapath::text::{NegotiationError, TextError};

/// A fatal fault on one connection. After `handle_*` returns one, send what
/// `poll_transmit` still gives (a Login Response with the failure status, a Reject) and
/// close the connection.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// A PDU that could not be framed or parsed.
    #[error("malformed PDU (opcode {opcode:#04x}): {source}")]
    Malformed { opcode: u8, source: PduError },
    /// A PDU the initiator may not send in this state.
    #[error("unexpected {opcode:?} during {state}")]
    UnexpectedPdu { opcode: Opcode, state: &'static str },
    /// A data segment longer than our MaxRecvDataSegmentLength.
    #[error("{opcode:?} data segment of {len} bytes exceeds our MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong {
        opcode: Opcode,
        len: usize,
        max: u32,
    },
    /// The login failed with this status (sent to the initiator in a Login Response).
    #[error("login refused with status {class:#04x}{detail:02x}: {reason}")]
    LoginRefused {
        class: u8,
        detail: u8,
        reason: String,
    },
    /// Malformed login or text keys.
    #[error("bad text: {0}")]
    Text(#[from] TextError),
    /// The initiator broke an operational negotiation rule.
    #[error("negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    /// A malformed CHAP value.
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    /// A protocol rule broken in the full feature phase (Data-Out out of place, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The login did not finish in time.
    #[error("login timed out")]
    LoginTimeout,
    /// Our NOP-In ping went unanswered.
    #[error("NOP-In ping unanswered for {after_ms} ms: initiator presumed dead")]
    PingTimeout { after_ms: u128 },
    /// Too many commands outside the window in a row.
    #[error("{count} commands in a row outside the command window")]
    WindowViolations { count: u32 },
    /// The session was replaced by a new login with the same initiator and ISID
    /// (section 6.3.5 session reinstatement).
    #[error("session reinstated by a new login from the same initiator and ISID")]
    Reinstated,
    /// The server is shutting down.
    #[error("target shutting down")]
    Shutdown,
}
