//! Typed PDU headers, one struct per opcode, RFC 7143 sections 11.2 to 11.19.
//!
//! Each struct holds the header fields of its PDU as plain values. `DataSegmentLength` and
//! `TotalAHSLength` are not fields here: the codec derives them from the data segment it is
//! given and from the AHS the header carries. Opcodes are listed in spec order.

/// A task tag (Initiator Task Tag or Target Transfer Tag). `0xffff_ffff` is reserved.
pub type Tag = u32;

/// The reserved tag value, meaning "no task" / "no transfer" (section 11.18, 11.19).
pub const RESERVED_TAG: Tag = 0xffff_ffff;

/// An 8-byte Logical Unit Number field in its wire encoding (SAM-5 section 4.7).
/// Kept raw here; `scsi::Lun` knows the addressing methods.
pub type LunField = [u8; 8];

/// Initiator Session ID, 6 bytes (section 11.12.5).
pub type Isid = [u8; 6];

/// Opcodes, section 11.1.1, in spec order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    NopOut = 0x00,
    ScsiCommand = 0x01,
    TaskMgmtRequest = 0x02,
    LoginRequest = 0x03,
    TextRequest = 0x04,
    DataOut = 0x05,
    LogoutRequest = 0x06,
    SnackRequest = 0x10,
    NopIn = 0x20,
    ScsiResponse = 0x21,
    TaskMgmtResponse = 0x22,
    LoginResponse = 0x23,
    TextResponse = 0x24,
    DataIn = 0x25,
    LogoutResponse = 0x26,
    R2t = 0x31,
    AsyncMessage = 0x32,
    Reject = 0x3f,
}

impl Opcode {
    /// Decodes the 6-bit opcode field; `None` for an opcode RFC 7143 does not define
    /// (vendor opcodes 0x1c-0x1e and 0x3c-0x3e are not supported either).
    pub fn from_u8(value: u8) -> Option<Opcode> {
        Some(match value & 0x3f {
            0x00 => Opcode::NopOut,
            0x01 => Opcode::ScsiCommand,
            0x02 => Opcode::TaskMgmtRequest,
            0x03 => Opcode::LoginRequest,
            0x04 => Opcode::TextRequest,
            0x05 => Opcode::DataOut,
            0x06 => Opcode::LogoutRequest,
            0x10 => Opcode::SnackRequest,
            0x20 => Opcode::NopIn,
            0x21 => Opcode::ScsiResponse,
            0x22 => Opcode::TaskMgmtResponse,
            0x23 => Opcode::LoginResponse,
            0x24 => Opcode::TextResponse,
            0x25 => Opcode::DataIn,
            0x26 => Opcode::LogoutResponse,
            0x31 => Opcode::R2t,
            0x32 => Opcode::AsyncMessage,
            0x3f => Opcode::Reject,
            _ => return None,
        })
    }

    /// True for PDUs an initiator sends (opcodes below 0x20).
    pub fn is_initiator(self) -> bool {
        (self as u8) < 0x20
    }
}

/// SCSI task attribute, section 11.3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskAttribute {
    Untagged = 0,
    #[default]
    Simple = 1,
    Ordered = 2,
    HeadOfQueue = 3,
    Aca = 4,
}

/// NOP-Out, section 11.18.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Command, section 11.3. The CDB is held whole: up to 16 bytes travel in the BHS,
/// the rest in an Extended CDB AHS (section 11.3.5). `bidi_read_length` is the
/// Bidirectional Expected Read-Data Length AHS (section 11.3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_pdu: bool,
    pub read: bool,
    pub write: bool,
    pub attribute: TaskAttribute,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub expected_data_transfer_length: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The whole CDB, at most 16 + 244 bytes. The BHS carries the first 16 (zero-padded),
    /// the rest travels in an Extended CDB AHS; a parsed CDB is 16 bytes or longer.
    pub cdb: crate::scsi::Cdb,
    pub bidi_read_length: Option<u32>,
}

/// Task Management Function Request, section 11.5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    /// The function code (1 = ABORT TASK ... 8 = TASK REASSIGN), section 11.5.1.
    pub function: u8,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub referenced_task_tag: Tag,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Login stage, section 11.12.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStage {
    SecurityNegotiation = 0,
    LoginOperationalNegotiation = 1,
    FullFeaturePhase = 3,
}

impl LoginStage {
    pub fn from_bits(bits: u8) -> Option<LoginStage> {
        match bits & 3 {
            0 => Some(LoginStage::SecurityNegotiation),
            1 => Some(LoginStage::LoginOperationalNegotiation),
            3 => Some(LoginStage::FullFeaturePhase),
            _ => None,
        }
    }
}

/// Login Request, section 11.12. The I bit is always 1 on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub transit: bool,
    pub continue_: bool,
    pub current_stage: LoginStage,
    /// Only meaningful when `transit` is set; encoded as 0 otherwise is not required.
    pub next_stage: LoginStage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub initiator_task_tag: Tag,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Text Request, section 11.10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_pdu: bool,
    pub continue_: bool,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Data-Out, section 11.7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    pub final_pdu: bool,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

/// Logout Request, section 11.14.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    /// 0 = close the session, 1 = close the connection, 2 = remove the connection for recovery.
    pub reason_code: u8,
    pub initiator_task_tag: Tag,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SNACK Request, section 11.16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnackRequest {
    /// 0 = Data/R2T, 1 = Status, 2 = DataACK, 3 = R-Data.
    pub snack_type: u8,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

/// NOP-In, section 11.19.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Response, section 11.4. Sense data, if any, is in the data segment
/// (a 2-byte SenseLength then the sense bytes, section 11.4.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    pub bidi_read_overflow: bool,
    pub bidi_read_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// 0x00 = command completed at target, 0x01 = target failure.
    pub response: u8,
    /// SCSI status byte (0x00 GOOD, 0x02 CHECK CONDITION, ...).
    pub status: u8,
    pub initiator_task_tag: Tag,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_read_residual_count: u32,
    pub residual_count: u32,
}

/// Task Management Function Response, section 11.6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// 0 = function complete, 1 = task does not exist, ... 255 = rejected (section 11.6.1).
    pub response: u8,
    pub initiator_task_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// Login Response status classes and details, section 11.13.5, as `(class, detail)`: the
/// one list the initiator and the gateway use.
pub mod login_status {
    pub const SUCCESS: (u8, u8) = (0x00, 0x00);
    pub const TARGET_MOVED_TEMPORARILY: (u8, u8) = (0x01, 0x01);
    pub const TARGET_MOVED_PERMANENTLY: (u8, u8) = (0x01, 0x02);
    pub const INITIATOR_ERROR: (u8, u8) = (0x02, 0x00);
    pub const AUTHENTICATION_FAILURE: (u8, u8) = (0x02, 0x01);
    pub const AUTHORIZATION_FAILURE: (u8, u8) = (0x02, 0x02);
    pub const NOT_FOUND: (u8, u8) = (0x02, 0x03);
    pub const TARGET_REMOVED: (u8, u8) = (0x02, 0x04);
    pub const UNSUPPORTED_VERSION: (u8, u8) = (0x02, 0x05);
    pub const TOO_MANY_CONNECTIONS: (u8, u8) = (0x02, 0x06);
    pub const MISSING_PARAMETER: (u8, u8) = (0x02, 0x07);
    pub const CANT_INCLUDE_IN_SESSION: (u8, u8) = (0x02, 0x08);
    pub const SESSION_TYPE_NOT_SUPPORTED: (u8, u8) = (0x02, 0x09);
    pub const SESSION_DOES_NOT_EXIST: (u8, u8) = (0x02, 0x0a);
    pub const INVALID_DURING_LOGIN: (u8, u8) = (0x02, 0x0b);
    pub const TARGET_ERROR: (u8, u8) = (0x03, 0x00);
    pub const SERVICE_UNAVAILABLE: (u8, u8) = (0x03, 0x01);
    pub const OUT_OF_RESOURCES: (u8, u8) = (0x03, 0x02);
}

/// Login Response, section 11.13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub continue_: bool,
    pub current_stage: LoginStage,
    pub next_stage: LoginStage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub initiator_task_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

/// Text Response, section 11.11.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_pdu: bool,
    pub continue_: bool,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Data-In, section 11.7. When `status` is `Some`, the S bit is set and the PDU
/// carries the command's SCSI status (and `stat_sn`, residuals are valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIn {
    pub final_pdu: bool,
    pub acknowledge: bool,
    pub overflow: bool,
    pub underflow: bool,
    pub status: Option<u8>,
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub residual_count: u32,
}

/// Logout Response, section 11.15.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: u8,
    pub initiator_task_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

/// Ready To Transfer, section 11.8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: LunField,
    pub initiator_task_tag: Tag,
    pub target_transfer_tag: Tag,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
}

/// Asynchronous Message, section 11.9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: LunField,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// 0 = SCSI async event, 1 = logout request, 2 = drop connection, 3 = drop all
    /// connections, 4 = renegotiate, 255 = vendor specific.
    pub async_event: u8,
    pub async_vcode: u8,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
}

/// Reject reasons, section 11.17.1.
pub mod reject_reason {
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    pub const SNACK_REJECT: u8 = 0x03;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    pub const INVALID_DATA_ACK: u8 = 0x08;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    pub const OUT_OF_RESOURCES: u8 = 0x0a;
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// Reject, section 11.17. The data segment holds the rejected PDU's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn_or_r2t_sn: u32,
}

/// One PDU header, typed. The data segment travels beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    SnackRequest(SnackRequest),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

impl Header {
    pub fn opcode(&self) -> Opcode {
        match self {
            Header::NopOut(_) => Opcode::NopOut,
            Header::ScsiCommand(_) => Opcode::ScsiCommand,
            Header::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Header::LoginRequest(_) => Opcode::LoginRequest,
            Header::TextRequest(_) => Opcode::TextRequest,
            Header::DataOut(_) => Opcode::DataOut,
            Header::LogoutRequest(_) => Opcode::LogoutRequest,
            Header::SnackRequest(_) => Opcode::SnackRequest,
            Header::NopIn(_) => Opcode::NopIn,
            Header::ScsiResponse(_) => Opcode::ScsiResponse,
            Header::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Header::LoginResponse(_) => Opcode::LoginResponse,
            Header::TextResponse(_) => Opcode::TextResponse,
            Header::DataIn(_) => Opcode::DataIn,
            Header::LogoutResponse(_) => Opcode::LogoutResponse,
            Header::R2t(_) => Opcode::R2t,
            Header::AsyncMessage(_) => Opcode::AsyncMessage,
            Header::Reject(_) => Opcode::Reject,
        }
    }

    /// The Initiator Task Tag, for the PDUs that carry one.
    pub fn initiator_task_tag(&self) -> Option<Tag> {
        Some(match self {
            Header::NopOut(h) => h.initiator_task_tag,
            Header::ScsiCommand(h) => h.initiator_task_tag,
            Header::TaskMgmtRequest(h) => h.initiator_task_tag,
            Header::LoginRequest(h) => h.initiator_task_tag,
            Header::TextRequest(h) => h.initiator_task_tag,
            Header::DataOut(h) => h.initiator_task_tag,
            Header::LogoutRequest(h) => h.initiator_task_tag,
            Header::SnackRequest(h) => h.initiator_task_tag,
            Header::NopIn(h) => h.initiator_task_tag,
            Header::ScsiResponse(h) => h.initiator_task_tag,
            Header::TaskMgmtResponse(h) => h.initiator_task_tag,
            Header::LoginResponse(h) => h.initiator_task_tag,
            Header::TextResponse(h) => h.initiator_task_tag,
            Header::DataIn(h) => h.initiator_task_tag,
            Header::LogoutResponse(h) => h.initiator_task_tag,
            Header::R2t(h) => h.initiator_task_tag,
            Header::AsyncMessage(_) | Header::Reject(_) => return None,
        })
    }
}

/// Digests negotiated for a connection (HeaderDigest / DataDigest = CRC32C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}
