//! Why a target connection failed. Each variant carries the protocol fact; the server logs
//! it and closes that connection only (RFC 7143 section 7: at ERL 0 the recovery is a new
//! connection and session).

use datapath::auth::chap::ChapError;
use datapath::pdu::{Opcode, PduError, Tag};
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
    /// A SCSI Command with the task tag of a task still in progress (section 11.3.4).
    #[error("SCSI Command reuses the task tag {itt:#x} of a task in progress")]
    TaskTagInUse { itt: Tag },
    /// A data segment on a SCSI Command that writes nothing (section 11.3.1: W bit clear).
    #[error("data segment of {len} bytes on SCSI Command {itt:#x} without the W bit")]
    DataWithoutWrite { itt: Tag, len: usize },
    /// Immediate data though ImmediateData=No was negotiated (section 13.11).
    #[error("{len} bytes of immediate data on SCSI Command {itt:#x} with ImmediateData=No")]
    ImmediateDataRefused { itt: Tag, len: u32 },
    /// More immediate data than FirstBurstLength or the Expected Data Transfer Length.
    #[error(
        "{len} bytes of immediate data on SCSI Command {itt:#x} exceed FirstBurstLength \
         {first_burst_length} or the Expected Data Transfer Length {edtl}"
    )]
    ImmediateDataTooLong {
        itt: Tag,
        len: u32,
        first_burst_length: u32,
        edtl: u32,
    },
    /// A Data-Out for a task that is not collecting write data.
    #[error("Data-Out for task {itt:#x}, which is not receiving data")]
    DataOutNotExpected { itt: Tag },
    /// A Data-Out whose offset and length overflow 32 bits.
    #[error("Data-Out for task {itt:#x} at {offset} + {len} overflows")]
    DataOutOverflow { itt: Tag, offset: u32, len: u32 },
    /// A Data-Out not where its burst stands (section 11.7.6: in order at ERL 0).
    #[error(
        "{burst} Data-Out for task {itt:#x} at {offset}+{len}; expected offset {expected} up to {end}"
    )]
    DataOutOutOfPlace {
        itt: Tag,
        burst: Burst,
        offset: u32,
        len: u32,
        expected: u32,
        end: u32,
    },
    /// A Data-Out with the wrong DataSN for its burst (section 11.7.5).
    #[error("{burst} Data-Out for task {itt:#x} with DataSN {got}, expected {expected}")]
    DataSnMismatch {
        itt: Tag,
        burst: Burst,
        expected: u32,
        got: u32,
    },
    /// A Data-Out past the command's Expected Data Transfer Length.
    #[error(
        "Data-Out for task {itt:#x} at {offset}+{len} past the Expected Data Transfer Length {edtl}"
    )]
    DataOutPastEnd {
        itt: Tag,
        offset: u32,
        len: u32,
        edtl: u32,
    },
    /// A Target Transfer Tag we did not give out (or no longer hold).
    #[error("{opcode:?} for task {itt:#x} with unknown Target Transfer Tag {ttt:#x}")]
    UnknownTargetTransferTag { opcode: Opcode, itt: Tag, ttt: Tag },
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
    /// An administrator dropped the session (the control plane's `session drop`).
    #[error("session dropped by the administrator")]
    Dropped,
    /// The target was deleted, or this initiator is no longer allowed on it (the
    /// control plane).
    #[error("target deleted or access revoked by the administrator")]
    Revoked,
}

/// Which burst of a write a Data-Out belongs to (section 11.7: unsolicited data carries the
/// reserved Target Transfer Tag, solicited data that of its R2T).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    Unsolicited,
    Solicited { ttt: Tag },
}

impl std::fmt::Display for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Burst::Unsolicited => f.write_str("unsolicited"),
            Burst::Solicited { ttt } => write!(f, "solicited (R2T {ttt:#x})"),
        }
    }
}
