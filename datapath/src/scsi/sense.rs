//! Sense data (SPC-4 4.5), sense key and ASC/ASCQ names, and SCSI status codes (SAM-5 5.3).
//!
//! Both sense data formats decode to one [`Sense`]:
//! - fixed format, response codes 0x70 (current) and 0x71 (deferred), SPC-4 4.5.3;
//! - descriptor format, response codes 0x72 and 0x73, SPC-4 4.5.2, with the Information
//!   (0x00), Command-specific information (0x01), Sense key specific (0x02), Field
//!   replaceable unit (0x03), Stream commands (0x04) and Block commands (0x05) descriptors
//!   decoded; other descriptor types are listed by type code.
//!
//! Truncation: fixed format needs the 3 bytes through SENSE KEY, descriptor format the 4
//! bytes through ASCQ; fields beyond a short buffer read as zero / absent and `truncated`
//! says the sense data ended before its ADDITIONAL SENSE LENGTH promised.

use std::borrow::Cow;
use std::fmt;

use super::bytes::{bytes_at as field, require as require_len, u8_at as byte};
use super::ScsiError;

/// SCSI status codes, SAM-5 5.3.1.
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    /// Obsolete since SAM-4.
    pub const INTERMEDIATE: u8 = 0x10;
    /// Obsolete since SAM-4.
    pub const INTERMEDIATE_CONDITION_MET: u8 = 0x14;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// Obsolete since SAM-3.
    pub const COMMAND_TERMINATED: u8 = 0x22;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const ACA_ACTIVE: u8 = 0x30;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// The SAM-5 name of a status code, or `status 0xNN` for a reserved one.
pub fn status_name(code: u8) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        status::GOOD => "GOOD",
        status::CHECK_CONDITION => "CHECK CONDITION",
        status::CONDITION_MET => "CONDITION MET",
        status::BUSY => "BUSY",
        status::INTERMEDIATE => "INTERMEDIATE",
        status::INTERMEDIATE_CONDITION_MET => "INTERMEDIATE-CONDITION MET",
        status::RESERVATION_CONFLICT => "RESERVATION CONFLICT",
        status::COMMAND_TERMINATED => "COMMAND TERMINATED",
        status::TASK_SET_FULL => "TASK SET FULL",
        status::ACA_ACTIVE => "ACA ACTIVE",
        status::TASK_ABORTED => "TASK ABORTED",
        other => return Cow::Owned(format!("status 0x{other:02x}")),
    })
}

/// Sense keys, SPC-4 4.5.6 (0xF COMPLETED from SPC-5).
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const RECOVERED_ERROR: u8 = 0x1;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const BLANK_CHECK: u8 = 0x8;
    pub const VENDOR_SPECIFIC: u8 = 0x9;
    pub const COPY_ABORTED: u8 = 0xa;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const RESERVED_C: u8 = 0xc;
    pub const VOLUME_OVERFLOW: u8 = 0xd;
    pub const MISCOMPARE: u8 = 0xe;
    pub const COMPLETED: u8 = 0xf;
}

/// The name of each of the 16 sense keys (only the low 4 bits are looked at).
pub fn sense_key_name(sense_key: u8) -> &'static str {
    match sense_key & 0x0f {
        key::NO_SENSE => "NO SENSE",
        key::RECOVERED_ERROR => "RECOVERED ERROR",
        key::NOT_READY => "NOT READY",
        key::MEDIUM_ERROR => "MEDIUM ERROR",
        key::HARDWARE_ERROR => "HARDWARE ERROR",
        key::ILLEGAL_REQUEST => "ILLEGAL REQUEST",
        key::UNIT_ATTENTION => "UNIT ATTENTION",
        key::DATA_PROTECT => "DATA PROTECT",
        key::BLANK_CHECK => "BLANK CHECK",
        key::VENDOR_SPECIFIC => "VENDOR SPECIFIC",
        key::COPY_ABORTED => "COPY ABORTED",
        key::ABORTED_COMMAND => "ABORTED COMMAND",
        key::RESERVED_C => "RESERVED (0xC)",
        key::VOLUME_OVERFLOW => "VOLUME OVERFLOW",
        key::MISCOMPARE => "MISCOMPARE",
        _ => "COMPLETED",
    }
}

/// Additional sense code and qualifier pairs (SPC-4 Annex D) the initiator, the gateway's
/// device server, `iscsi-bench` and the tests name, as `(ASC, ASCQ)`.
pub mod asc {
    pub const NO_ADDITIONAL_SENSE: (u8, u8) = (0x00, 0x00);
    pub const WRITE_ERROR: (u8, u8) = (0x0c, 0x00);
    pub const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: (u8, u8) = (0x1a, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: (u8, u8) = (0x1d, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: (u8, u8) = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: (u8, u8) = (0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    /// With UNIT ATTENTION: what a new I_T nexus (or a reset) reports first (SAM-5 5.14).
    pub const POWER_ON_RESET_OR_BUS_DEVICE_RESET: (u8, u8) = (0x29, 0x00);
    /// SBC-4's answer to a command that outran its time (with ABORTED COMMAND).
    pub const COMMAND_TIMEOUT_DURING_PROCESSING: (u8, u8) = (0x2e, 0x02);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: (u8, u8) = (0x39, 0x00);
    /// With UNIT ATTENTION, or in an iSCSI Async Message (event 0): the LUN inventory
    /// changed; REPORT LUNS tells the new one.
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: (u8, u8) = (0x3f, 0x0e);
}

/// True for CHECK CONDITION with sense key UNIT ATTENTION in `sense` (the iSCSI sense
/// data, or raw fixed or descriptor sense): the once-per-nexus report a command is
/// retried past.
pub fn is_unit_attention(status_code: u8, sense: Option<&[u8]>) -> bool {
    status_code == status::CHECK_CONDITION
        && sense
            .and_then(|bytes| Sense::decode(bytes).ok())
            .is_some_and(|s| s.key == key::UNIT_ATTENTION)
}

/// The SPC-4 Annex D name of an ASC/ASCQ pair a disk or iSCSI target reports, if known.
pub fn asc_lookup(asc: u8, ascq: u8) -> Option<&'static str> {
    Some(match (asc, ascq) {
        (0x00, 0x00) => "NO ADDITIONAL SENSE INFORMATION",
        (0x00, 0x06) => "I/O PROCESS TERMINATED",
        (0x00, 0x16) => "OPERATION IN PROGRESS",
        (0x00, 0x17) => "CLEANING REQUESTED",
        (0x00, 0x1d) => "ATA PASS THROUGH INFORMATION AVAILABLE",
        (0x01, 0x00) => "NO INDEX/SECTOR SIGNAL",
        (0x02, 0x00) => "NO SEEK COMPLETE",
        (0x03, 0x00) => "PERIPHERAL DEVICE WRITE FAULT",
        (0x04, 0x00) => "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE",
        (0x04, 0x01) => "LOGICAL UNIT IS IN PROCESS OF BECOMING READY",
        (0x04, 0x02) => "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
        (0x04, 0x03) => "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED",
        (0x04, 0x04) => "LOGICAL UNIT NOT READY, FORMAT IN PROGRESS",
        (0x04, 0x05) => "LOGICAL UNIT NOT READY, REBUILD IN PROGRESS",
        (0x04, 0x06) => "LOGICAL UNIT NOT READY, RECALCULATION IN PROGRESS",
        (0x04, 0x07) => "LOGICAL UNIT NOT READY, OPERATION IN PROGRESS",
        (0x04, 0x08) => "LOGICAL UNIT NOT READY, LONG WRITE IN PROGRESS",
        (0x04, 0x09) => "LOGICAL UNIT NOT READY, SELF-TEST IN PROGRESS",
        (0x04, 0x0a) => "LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION",
        (0x04, 0x0b) => "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE",
        (0x04, 0x0c) => "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE",
        (0x04, 0x0d) => "LOGICAL UNIT NOT READY, STRUCTURE CHECK REQUIRED",
        (0x04, 0x0e) => "LOGICAL UNIT NOT READY, SECURITY SESSION IN PROGRESS",
        (0x04, 0x10) => "LOGICAL UNIT NOT READY, AUXILIARY MEMORY NOT ACCESSIBLE",
        (0x04, 0x11) => "LOGICAL UNIT NOT READY, NOTIFY (ENABLE SPINUP) REQUIRED",
        (0x04, 0x12) => "LOGICAL UNIT NOT READY, OFFLINE",
        (0x04, 0x13) => "LOGICAL UNIT NOT READY, SA CREATION IN PROGRESS",
        (0x04, 0x14) => "LOGICAL UNIT NOT READY, SPACE ALLOCATION IN PROGRESS",
        (0x04, 0x1a) => "LOGICAL UNIT NOT READY, START STOP UNIT COMMAND IN PROGRESS",
        (0x04, 0x1b) => "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS",
        (0x04, 0x1c) => "LOGICAL UNIT NOT READY, ADDITIONAL POWER USE NOT YET GRANTED",
        (0x04, 0x1d) => "LOGICAL UNIT NOT READY, CONFIGURATION IN PROGRESS",
        (0x04, 0x1e) => "LOGICAL UNIT NOT READY, MICROCODE ACTIVATION REQUIRED",
        (0x04, 0x1f) => "LOGICAL UNIT NOT READY, MICROCODE DOWNLOAD REQUIRED",
        (0x04, 0x20) => "LOGICAL UNIT NOT READY, LOGICAL UNIT RESET REQUIRED",
        (0x04, 0x21) => "LOGICAL UNIT NOT READY, HARD RESET REQUIRED",
        (0x04, 0x22) => "LOGICAL UNIT NOT READY, POWER CYCLE REQUIRED",
        (0x05, 0x00) => "LOGICAL UNIT DOES NOT RESPOND TO SELECTION",
        (0x08, 0x00) => "LOGICAL UNIT COMMUNICATION FAILURE",
        (0x08, 0x01) => "LOGICAL UNIT COMMUNICATION TIME-OUT",
        (0x08, 0x02) => "LOGICAL UNIT COMMUNICATION PARITY ERROR",
        (0x0b, 0x00) => "WARNING",
        (0x0b, 0x01) => "WARNING - SPECIFIED TEMPERATURE EXCEEDED",
        (0x0c, 0x00) => "WRITE ERROR",
        (0x0c, 0x02) => "WRITE ERROR - AUTO REALLOCATION FAILED",
        (0x0c, 0x03) => "WRITE ERROR - RECOMMEND REASSIGNMENT",
        (0x0c, 0x0c) => "WRITE ERROR - UNEXPECTED UNSOLICITED DATA",
        (0x0c, 0x0d) => "WRITE ERROR - NOT ENOUGH UNSOLICITED DATA",
        (0x0e, 0x00) => "INVALID INFORMATION UNIT",
        (0x0e, 0x01) => "INFORMATION UNIT TOO SHORT",
        (0x0e, 0x02) => "INFORMATION UNIT TOO LONG",
        (0x0e, 0x03) => "INVALID FIELD IN COMMAND INFORMATION UNIT",
        (0x10, 0x00) => "ID CRC OR ECC ERROR",
        (0x10, 0x01) => "LOGICAL BLOCK GUARD CHECK FAILED",
        (0x10, 0x02) => "LOGICAL BLOCK APPLICATION TAG CHECK FAILED",
        (0x10, 0x03) => "LOGICAL BLOCK REFERENCE TAG CHECK FAILED",
        (0x11, 0x00) => "UNRECOVERED READ ERROR",
        (0x11, 0x01) => "READ RETRIES EXHAUSTED",
        (0x11, 0x02) => "ERROR TOO LONG TO CORRECT",
        (0x11, 0x04) => "UNRECOVERED READ ERROR - AUTO REALLOCATE FAILED",
        (0x11, 0x0a) => "MISCORRECTED ERROR",
        (0x11, 0x0b) => "UNRECOVERED READ ERROR - RECOMMEND REASSIGNMENT",
        (0x11, 0x0c) => "UNRECOVERED READ ERROR - RECOMMEND REWRITE THE DATA",
        (0x14, 0x01) => "RECORD NOT FOUND",
        (0x15, 0x00) => "RANDOM POSITIONING ERROR",
        (0x1a, 0x00) => "PARAMETER LIST LENGTH ERROR",
        (0x1b, 0x00) => "SYNCHRONOUS DATA TRANSFER ERROR",
        (0x1d, 0x00) => "MISCOMPARE DURING VERIFY OPERATION",
        (0x1d, 0x01) => "MISCOMPARE VERIFY OF UNMAPPED LBA",
        (0x20, 0x00) => "INVALID COMMAND OPERATION CODE",
        (0x20, 0x01) => "ACCESS DENIED - INITIATOR PENDING-ENROLLED",
        (0x20, 0x02) => "ACCESS DENIED - NO ACCESS RIGHTS",
        (0x20, 0x09) => "ACCESS DENIED - INVALID LU IDENTIFIER",
        (0x21, 0x00) => "LOGICAL BLOCK ADDRESS OUT OF RANGE",
        (0x21, 0x01) => "INVALID ELEMENT ADDRESS",
        (0x21, 0x02) => "INVALID ADDRESS FOR WRITE",
        (0x21, 0x04) => "UNALIGNED WRITE COMMAND",
        (0x21, 0x05) => "WRITE BOUNDARY VIOLATION",
        (0x21, 0x06) => "ATTEMPT TO READ INVALID DATA",
        (0x21, 0x07) => "READ BOUNDARY VIOLATION",
        (0x24, 0x00) => "INVALID FIELD IN CDB",
        (0x24, 0x01) => "CDB DECRYPTION ERROR",
        (0x24, 0x08) => "INVALID XCDB",
        (0x25, 0x00) => "LOGICAL UNIT NOT SUPPORTED",
        (0x26, 0x00) => "INVALID FIELD IN PARAMETER LIST",
        (0x26, 0x01) => "PARAMETER NOT SUPPORTED",
        (0x26, 0x02) => "PARAMETER VALUE INVALID",
        (0x26, 0x03) => "THRESHOLD PARAMETERS NOT SUPPORTED",
        (0x26, 0x04) => "INVALID RELEASE OF PERSISTENT RESERVATION",
        (0x27, 0x00) => "WRITE PROTECTED",
        (0x27, 0x01) => "HARDWARE WRITE PROTECTED",
        (0x27, 0x02) => "LOGICAL UNIT SOFTWARE WRITE PROTECTED",
        (0x27, 0x03) => "ASSOCIATED WRITE PROTECT",
        (0x27, 0x04) => "PERSISTENT WRITE PROTECT",
        (0x27, 0x05) => "PERMANENT WRITE PROTECT",
        (0x27, 0x06) => "CONDITIONAL WRITE PROTECT",
        (0x27, 0x07) => "SPACE ALLOCATION FAILED WRITE PROTECT",
        (0x28, 0x00) => "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED",
        (0x28, 0x01) => "IMPORT OR EXPORT ELEMENT ACCESSED",
        (0x29, 0x00) => "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED",
        (0x29, 0x01) => "POWER ON OCCURRED",
        (0x29, 0x02) => "SCSI BUS RESET OCCURRED",
        (0x29, 0x03) => "BUS DEVICE RESET FUNCTION OCCURRED",
        (0x29, 0x04) => "DEVICE INTERNAL RESET",
        (0x29, 0x05) => "TRANSCEIVER MODE CHANGED TO SINGLE-ENDED",
        (0x29, 0x06) => "TRANSCEIVER MODE CHANGED TO LVD",
        (0x29, 0x07) => "I_T NEXUS LOSS OCCURRED",
        (0x2a, 0x00) => "PARAMETERS CHANGED",
        (0x2a, 0x01) => "MODE PARAMETERS CHANGED",
        (0x2a, 0x02) => "LOG PARAMETERS CHANGED",
        (0x2a, 0x03) => "RESERVATIONS PREEMPTED",
        (0x2a, 0x04) => "RESERVATIONS RELEASED",
        (0x2a, 0x05) => "REGISTRATIONS PREEMPTED",
        (0x2a, 0x06) => "ASYMMETRIC ACCESS STATE CHANGED",
        (0x2a, 0x07) => "IMPLICIT ASYMMETRIC ACCESS STATE TRANSITION FAILED",
        (0x2a, 0x08) => "PRIORITY CHANGED",
        (0x2a, 0x09) => "CAPACITY DATA HAS CHANGED",
        (0x2a, 0x10) => "TIMESTAMP CHANGED",
        (0x2c, 0x00) => "COMMAND SEQUENCE ERROR",
        (0x2c, 0x07) => "PREVIOUS BUSY STATUS",
        (0x2c, 0x08) => "PREVIOUS TASK SET FULL STATUS",
        (0x2c, 0x09) => "PREVIOUS RESERVATION CONFLICT STATUS",
        (0x2c, 0x0c) => "ORWRITE GENERATION DOES NOT MATCH",
        (0x2e, 0x01) => "COMMAND TIMEOUT BEFORE PROCESSING",
        (0x2e, 0x02) => "COMMAND TIMEOUT DURING PROCESSING",
        (0x2f, 0x00) => "COMMANDS CLEARED BY ANOTHER INITIATOR",
        (0x2f, 0x01) => "COMMANDS CLEARED BY POWER LOSS NOTIFICATION",
        (0x2f, 0x02) => "COMMANDS CLEARED BY DEVICE SERVER",
        (0x30, 0x00) => "INCOMPATIBLE MEDIUM INSTALLED",
        (0x31, 0x00) => "MEDIUM FORMAT CORRUPTED",
        (0x31, 0x01) => "FORMAT COMMAND FAILED",
        (0x32, 0x00) => "NO DEFECT SPARE LOCATION AVAILABLE",
        (0x37, 0x00) => "ROUNDED PARAMETER",
        (0x38, 0x07) => "THIN PROVISIONING SOFT THRESHOLD REACHED",
        (0x39, 0x00) => "SAVING PARAMETERS NOT SUPPORTED",
        (0x3a, 0x00) => "MEDIUM NOT PRESENT",
        (0x3a, 0x01) => "MEDIUM NOT PRESENT - TRAY CLOSED",
        (0x3a, 0x02) => "MEDIUM NOT PRESENT - TRAY OPEN",
        (0x3e, 0x00) => "LOGICAL UNIT HAS NOT SELF-CONFIGURED YET",
        (0x3e, 0x01) => "LOGICAL UNIT FAILURE",
        (0x3e, 0x02) => "TIMEOUT ON LOGICAL UNIT",
        (0x3e, 0x03) => "LOGICAL UNIT FAILED SELF-TEST",
        (0x3f, 0x00) => "TARGET OPERATING CONDITIONS HAVE CHANGED",
        (0x3f, 0x01) => "MICROCODE HAS BEEN CHANGED",
        (0x3f, 0x02) => "CHANGED OPERATING DEFINITION",
        (0x3f, 0x03) => "INQUIRY DATA HAS CHANGED",
        (0x3f, 0x04) => "COMPONENT DEVICE ATTACHED",
        (0x3f, 0x05) => "DEVICE IDENTIFIER CHANGED",
        (0x3f, 0x06) => "REDUNDANCY GROUP CREATED OR MODIFIED",
        (0x3f, 0x07) => "REDUNDANCY GROUP DELETED",
        (0x3f, 0x08) => "SPARE CREATED OR MODIFIED",
        (0x3f, 0x09) => "SPARE DELETED",
        (0x3f, 0x0a) => "VOLUME SET CREATED OR MODIFIED",
        (0x3f, 0x0b) => "VOLUME SET DELETED",
        (0x3f, 0x0c) => "VOLUME SET DEASSIGNED",
        (0x3f, 0x0d) => "VOLUME SET REASSIGNED",
        (0x3f, 0x0e) => "REPORTED LUNS DATA HAS CHANGED",
        (0x3f, 0x0f) => "ECHO BUFFER OVERWRITTEN",
        (0x3f, 0x12) => "ISCSI IP ADDRESS ADDED",
        (0x3f, 0x13) => "ISCSI IP ADDRESS REMOVED",
        (0x3f, 0x14) => "ISCSI IP ADDRESS CHANGED",
        (0x43, 0x00) => "MESSAGE ERROR",
        (0x44, 0x00) => "INTERNAL TARGET FAILURE",
        (0x44, 0x01) => "PERSISTENT RESERVATION INFORMATION LOST",
        (0x45, 0x00) => "SELECT OR RESELECT FAILURE",
        (0x46, 0x00) => "UNSUCCESSFUL SOFT RESET",
        (0x47, 0x00) => "SCSI PARITY ERROR",
        (0x47, 0x01) => "DATA PHASE CRC ERROR DETECTED",
        (0x47, 0x02) => "SCSI PARITY ERROR DETECTED DURING ST DATA PHASE",
        (0x47, 0x03) => "INFORMATION UNIT IUCRC ERROR DETECTED",
        (0x47, 0x04) => "ASYNCHRONOUS INFORMATION PROTECTION ERROR DETECTED",
        (0x47, 0x05) => "PROTOCOL SERVICE CRC ERROR",
        (0x47, 0x7f) => "SOME COMMANDS CLEARED BY ISCSI PROTOCOL EVENT",
        (0x48, 0x00) => "INITIATOR DETECTED ERROR MESSAGE RECEIVED",
        (0x49, 0x00) => "INVALID MESSAGE ERROR",
        (0x4a, 0x00) => "COMMAND PHASE ERROR",
        (0x4b, 0x00) => "DATA PHASE ERROR",
        (0x4b, 0x01) => "INVALID TARGET PORT TRANSFER TAG RECEIVED",
        (0x4b, 0x02) => "TOO MUCH WRITE DATA",
        (0x4b, 0x03) => "ACK/NAK TIMEOUT",
        (0x4b, 0x04) => "NAK RECEIVED",
        (0x4b, 0x05) => "DATA OFFSET ERROR",
        (0x4b, 0x06) => "INITIATOR RESPONSE TIMEOUT",
        (0x4b, 0x07) => "CONNECTION LOST",
        (0x4c, 0x00) => "LOGICAL UNIT FAILED SELF-CONFIGURATION",
        (0x4e, 0x00) => "OVERLAPPED COMMANDS ATTEMPTED",
        (0x53, 0x00) => "MEDIA LOAD OR EJECT FAILED",
        (0x53, 0x02) => "MEDIUM REMOVAL PREVENTED",
        (0x55, 0x00) => "SYSTEM RESOURCE FAILURE",
        (0x55, 0x01) => "SYSTEM BUFFER FULL",
        (0x55, 0x02) => "INSUFFICIENT RESERVATION RESOURCES",
        (0x55, 0x03) => "INSUFFICIENT RESOURCES",
        (0x55, 0x04) => "INSUFFICIENT REGISTRATION RESOURCES",
        (0x55, 0x05) => "INSUFFICIENT ACCESS CONTROL RESOURCES",
        (0x5a, 0x00) => "OPERATOR REQUEST OR STATE CHANGE INPUT",
        (0x5d, 0x00) => "FAILURE PREDICTION THRESHOLD EXCEEDED",
        (0x5d, 0xff) => "FAILURE PREDICTION THRESHOLD EXCEEDED (FALSE)",
        (0x5e, 0x00) => "LOW POWER CONDITION ON",
        (0x5e, 0x01) => "IDLE CONDITION ACTIVATED BY TIMER",
        (0x5e, 0x02) => "STANDBY CONDITION ACTIVATED BY TIMER",
        (0x5e, 0x03) => "IDLE CONDITION ACTIVATED BY COMMAND",
        (0x5e, 0x04) => "STANDBY CONDITION ACTIVATED BY COMMAND",
        (0x65, 0x00) => "VOLTAGE FAULT",
        (0x67, 0x0a) => "SET TARGET PORT GROUPS COMMAND FAILED",
        _ => return None,
    })
}

/// The ASC/ASCQ name from [`asc_lookup`], or `ASC 0xNN ASCQ 0xNN` for a pair it does
/// not know. Families whose ASCQ is a parameter (0x40 diagnostic failure on component
/// NN, 0x4D tagged overlapped commands with task tag NN) are named with the number.
pub fn asc_name(asc: u8, ascq: u8) -> Cow<'static, str> {
    if let Some(name) = asc_lookup(asc, ascq) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(match (asc, ascq) {
        (0x40, 0x80..=0xff) => format!("DIAGNOSTIC FAILURE ON COMPONENT 0x{ascq:02x}"),
        (0x4d, _) => format!("TAGGED OVERLAPPED COMMANDS (TASK TAG 0x{ascq:02x})"),
        _ => format!("ASC 0x{asc:02x} ASCQ 0x{ascq:02x}"),
    })
}

/// Which of the two sense data formats the target used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenseFormat {
    Fixed,
    Descriptor,
}

/// The SENSE KEY SPECIFIC field (3 bytes, SPC-4 4.5.2.4), interpreted by sense key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenseKeySpecific {
    /// ILLEGAL REQUEST: which byte (and bit) of the CDB or parameter list was wrong.
    FieldPointer {
        /// C/D: the error is in the CDB (true) or in the parameter data (false).
        in_cdb: bool,
        /// The bit within the byte, when BPV says it is given.
        bit: Option<u8>,
        byte: u16,
    },
    /// NO SENSE or NOT READY: progress of an operation, as a fraction of 65536.
    Progress(u16),
    /// RECOVERED ERROR, MEDIUM ERROR, HARDWARE ERROR: the actual retry count.
    ActualRetryCount(u16),
    /// Any other sense key: the three bytes with SKSV cleared.
    Other([u8; 3]),
}

impl SenseKeySpecific {
    /// `None` when SKSV (bit 7 of the first byte) is clear: the field is not valid.
    fn decode(sense_key: u8, field: [u8; 3]) -> Option<SenseKeySpecific> {
        if field[0] & 0x80 == 0 {
            return None;
        }
        let value = u16::from_be_bytes([field[1], field[2]]);
        Some(match sense_key {
            key::ILLEGAL_REQUEST => SenseKeySpecific::FieldPointer {
                in_cdb: field[0] & 0x40 != 0,
                bit: (field[0] & 0x08 != 0).then_some(field[0] & 0x07),
                byte: value,
            },
            key::NO_SENSE | key::NOT_READY => SenseKeySpecific::Progress(value),
            key::RECOVERED_ERROR | key::MEDIUM_ERROR | key::HARDWARE_ERROR => {
                SenseKeySpecific::ActualRetryCount(value)
            }
            _ => SenseKeySpecific::Other([field[0] & 0x7f, field[1], field[2]]),
        })
    }
}

/// Decoded sense data, either format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    pub format: SenseFormat,
    /// Deferred error (0x71/0x73): it belongs to an earlier command, not this one.
    pub deferred: bool,
    /// SENSE KEY (4 bits); see [`sense_key_name`].
    pub key: u8,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION (for a disk, usually the first failing LBA) when marked valid.
    pub information: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION, when present and nonzero.
    pub command_specific: Option<u64>,
    pub sense_key_specific: Option<SenseKeySpecific>,
    /// FIELD REPLACEABLE UNIT CODE, when nonzero.
    pub field_replaceable_unit: Option<u8>,
    pub filemark: bool,
    /// EOM: end of medium.
    pub end_of_medium: bool,
    /// ILI: incorrect length indicator.
    pub incorrect_length: bool,
    /// SDAT_OVFL: the device had more sense data than fit.
    pub overflow: bool,
    /// Descriptor format: the type codes of descriptors not decoded above, in order.
    pub other_descriptors: Vec<u8>,
    /// The data ended before ADDITIONAL SENSE LENGTH said it would.
    pub truncated: bool,
}

impl Sense {
    const FIXED_REQUIRED: usize = 3;
    const DESCRIPTOR_REQUIRED: usize = 4;
    const HEADER: usize = 8;
    /// At most this many descriptors are looked at; 252 bytes of sense data hold at most
    /// 122 two-byte descriptors, so a larger count means garbage.
    const MAX_DESCRIPTORS: usize = 128;

    /// Decodes sense data as the target sent it (the iSCSI SenseLength prefix removed;
    /// see [`Sense::decode_iscsi_sense_data`]).
    pub fn decode(data: &[u8]) -> Result<Sense, ScsiError> {
        let Some(&first) = data.first() else {
            return Err(ScsiError::Truncated {
                what: "sense data",
                needed: 1,
                got: 0,
            });
        };
        match first & 0x7f {
            0x70 | 0x71 => Sense::decode_fixed(data),
            0x72 | 0x73 => Sense::decode_descriptor(data),
            other => Err(ScsiError::UnknownSenseFormat(other)),
        }
    }

    /// Decodes the data segment of an iSCSI SCSI Response (RFC 7143 11.4.7.2): a 2-byte
    /// SenseLength, the sense data, then possibly response data. `Ok(None)` when there is
    /// no sense data (empty segment or SenseLength zero).
    pub fn decode_iscsi_sense_data(segment: &[u8]) -> Result<Option<Sense>, ScsiError> {
        if segment.is_empty() {
            return Ok(None);
        }
        require_len("iSCSI sense data segment", segment, 2)?;
        let sense_length = usize::from(u16::from_be_bytes([segment[0], segment[1]]));
        if sense_length == 0 {
            return Ok(None);
        }
        let end = 2usize.saturating_add(sense_length).min(segment.len());
        let sense = segment.get(2..end).unwrap_or(&[]);
        let mut decoded = Sense::decode(sense)?;
        decoded.truncated |= segment.len() < 2 + sense_length;
        Ok(Some(decoded))
    }

    fn decode_fixed(data: &[u8]) -> Result<Sense, ScsiError> {
        require_len("fixed format sense data", data, Self::FIXED_REQUIRED)?;
        let (present, truncated) = announced(data);
        let b0 = byte(present, 0);
        let b2 = byte(present, 2);
        let key = b2 & 0x0f;
        let information = u32::from_be_bytes(field(present, 3));
        let command_specific = u32::from_be_bytes(field(present, 8));
        let fru = byte(present, 14);
        Ok(Sense {
            format: SenseFormat::Fixed,
            deferred: b0 & 0x7f == 0x71,
            key,
            asc: byte(present, 12),
            ascq: byte(present, 13),
            // VALID covers the INFORMATION field only.
            information: (b0 & 0x80 != 0).then_some(u64::from(information)),
            command_specific: (command_specific != 0).then_some(u64::from(command_specific)),
            sense_key_specific: SenseKeySpecific::decode(key, field(present, 15)),
            field_replaceable_unit: (fru != 0).then_some(fru),
            filemark: b2 & 0x80 != 0,
            end_of_medium: b2 & 0x40 != 0,
            incorrect_length: b2 & 0x20 != 0,
            overflow: b2 & 0x10 != 0,
            other_descriptors: Vec::new(),
            truncated,
        })
    }

    fn decode_descriptor(data: &[u8]) -> Result<Sense, ScsiError> {
        require_len(
            "descriptor format sense data",
            data,
            Self::DESCRIPTOR_REQUIRED,
        )?;
        let (present, mut truncated) = announced(data);
        let key = byte(present, 1) & 0x0f;
        let mut sense = Sense {
            format: SenseFormat::Descriptor,
            deferred: byte(present, 0) & 0x7f == 0x73,
            key,
            asc: byte(present, 2),
            ascq: byte(present, 3),
            information: None,
            command_specific: None,
            sense_key_specific: None,
            field_replaceable_unit: None,
            filemark: false,
            end_of_medium: false,
            incorrect_length: false,
            overflow: byte(present, 4) & 0x80 != 0,
            other_descriptors: Vec::new(),
            truncated: false,
        };
        let mut rest = present.get(Self::HEADER..).unwrap_or(&[]);
        for _ in 0..Self::MAX_DESCRIPTORS {
            if rest.is_empty() {
                break;
            }
            if rest.len() < 2 {
                truncated = true;
                break;
            }
            let end = 2 + usize::from(rest[1]);
            let Some(descriptor) = rest.get(..end) else {
                truncated = true;
                break;
            };
            sense.apply_descriptor(descriptor);
            rest = rest.get(end..).unwrap_or(&[]);
        }
        sense.truncated = truncated;
        Ok(sense)
    }

    /// One sense data descriptor: type, additional length, then its fields (SPC-4 4.5.2).
    fn apply_descriptor(&mut self, descriptor: &[u8]) {
        match byte(descriptor, 0) {
            // Information: VALID in byte 2, the 8-byte INFORMATION at 4.
            0x00 if descriptor.len() >= 12 => {
                if byte(descriptor, 2) & 0x80 != 0 {
                    self.information = Some(u64::from_be_bytes(field(descriptor, 4)));
                }
            }
            0x01 if descriptor.len() >= 12 => {
                self.command_specific = Some(u64::from_be_bytes(field(descriptor, 4)));
            }
            0x02 if descriptor.len() >= 7 => {
                self.sense_key_specific = SenseKeySpecific::decode(self.key, field(descriptor, 4));
            }
            0x03 if descriptor.len() >= 4 => {
                let fru = byte(descriptor, 3);
                self.field_replaceable_unit = (fru != 0).then_some(fru);
            }
            0x04 if descriptor.len() >= 4 => {
                let flags = byte(descriptor, 3);
                // OR-ed in: a stream and a block commands descriptor may both be sent.
                self.filemark |= flags & 0x80 != 0;
                self.end_of_medium |= flags & 0x40 != 0;
                self.incorrect_length |= flags & 0x20 != 0;
            }
            0x05 if descriptor.len() >= 4 => {
                self.incorrect_length |= byte(descriptor, 3) & 0x20 != 0;
            }
            other => self.other_descriptors.push(other),
        }
    }

    pub fn key_name(&self) -> &'static str {
        sense_key_name(self.key)
    }

    pub fn asc_name(&self) -> Cow<'static, str> {
        asc_name(self.asc, self.ascq)
    }

    /// The ASC/ASCQ pair as one number, `0xAAQQ`, handy for matching.
    pub fn asc_ascq(&self) -> u16 {
        u16::from_be_bytes([self.asc, self.ascq])
    }

    /// A UNIT ATTENTION: the command was not executed and may simply be retried.
    pub fn is_unit_attention(&self) -> bool {
        self.key == key::UNIT_ATTENTION
    }
}

/// `ILLEGAL REQUEST: INVALID FIELD IN CDB (0x24/0x00)`; deferred errors are prefixed
/// `deferred: `; an unknown pair shows as `ASC 0xNN ASCQ 0xNN` without repeating it.
impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.deferred {
            f.write_str("deferred: ")?;
        }
        match asc_lookup(self.asc, self.ascq) {
            Some(name) => write!(
                f,
                "{}: {name} (0x{:02x}/0x{:02x})",
                self.key_name(),
                self.asc,
                self.ascq
            ),
            None => write!(f, "{}: {}", self.key_name(), self.asc_name()),
        }
    }
}

/// The sense data up to what ADDITIONAL SENSE LENGTH (byte 7) announces, and whether the
/// buffer ended before that. Without byte 7 the whole buffer is taken, as truncated.
fn announced(data: &[u8]) -> (&[u8], bool) {
    match data.get(7) {
        Some(&additional) => {
            let full = Sense::HEADER + usize::from(additional);
            (data.get(..full).unwrap_or(data), data.len() < full)
        }
        None => (data, true),
    }
}

#[cfg(test)]
mod tests;
