//! SCSI for an iSCSI initiator: LUN encoding, CDB builders, response decoders and sense data.
//!
//! Pure functions over bytes: nothing here does I/O, keeps state or allocates beyond the
//! decoded result. What each submodule implements:
//! - [`lun`]: the 8-byte LUN field, SAM-5 section 4.7 (single level LUNs with the
//!   peripheral device addressing method and the flat space addressing method).
//! - [`cdb`]: command descriptor blocks. SPC-4/SPC-5 clause 6: INQUIRY (SPC-4 6.6),
//!   REPORT LUNS, REQUEST SENSE, TEST UNIT READY. SBC-3/SBC-4 clause 5: READ(10), READ(16),
//!   READ CAPACITY(10), READ CAPACITY(16) (a SERVICE ACTION IN(16) service action),
//!   SYNCHRONIZE CACHE(10)/(16), WRITE(10), WRITE(16).
//! - [`decode`]: the parameter data those commands return: standard INQUIRY data
//!   (SPC-4 6.6.2); the VPD pages (SPC-4 7.8) Supported VPD Pages (0x00), Unit Serial
//!   Number (0x80), Device Identification (0x83, SPC-4 7.8.6) and the SBC-3/SBC-4 Block
//!   Limits page (0xB0, SBC-3 6.6); REPORT LUNS parameter data; READ CAPACITY(10) and
//!   READ CAPACITY(16) parameter data.
//! - [`probe`]: the LUN probe before I/O (TEST UNIT READY past unit attentions, READ
//!   CAPACITY(16) then (10), Block Limits), a sans-IO sequence of CDBs and answers: the one
//!   stateful part, still without I/O.
//! - [`reservation`]: RESERVE/RELEASE(6)/(10) and PERSISTENT RESERVE IN/OUT (SPC-2 7.21-7.24,
//!   SPC-4 6.15, 6.16): CDBs, parameter lists, PR IN data and iSCSI TransportIDs, each
//!   with `parse` and `emit` (the target parses what the initiator emits).
//! - [`sense`]: sense data in fixed and descriptor format (SPC-4 4.5), the sense key and
//!   ASC/ASCQ names (SPC-4 4.5.6 and Annex D), and SCSI status codes (SAM-5 5.3).
//!
//! Truncation policy, the same everywhere: a response shorter than the bytes that carry
//! its essential fields (the header and the length field, READ CAPACITY's LBA and block
//! length, sense data's key) is an error, [`ScsiError::Truncated`]. A response that has
//! those but stops before the length its own header announces (the allocation length
//! was too small, or the target sent less) decodes what fits, sets `truncated: true`,
//! and reports the full length the target announced so the caller can ask again with a
//! larger allocation length. Fields that did not fit read as zero, which in these
//! formats means "not reported".
#![forbid(unsafe_code)]

pub mod alua;
mod bytes;
pub mod cdb;
pub mod decode;
pub mod lun;
pub mod probe;
pub mod reservation;
pub mod sense;
pub mod xcopy;

pub use cdb::{fits_10_byte_cdb, Cdb, DataDirection};
pub use decode::{
    BlockLimits, DesignatorValue, DeviceIdentification, IdentificationDescriptor, ReadCapacity10,
    ReadCapacity16, ReportLuns, StandardInquiry, SupportedVpdPages, UnitSerialNumber,
};
pub use lun::Lun;
pub use sense::{
    asc_lookup, asc_name, is_unit_attention, sense_key_name, status_name, Sense, SenseFormat,
    SenseKeySpecific,
};

/// Errors of the SCSI layer: building a CDB the command cannot express, or decoding
/// parameter data or sense data that cannot be decoded.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScsiError {
    /// The data stops before the bytes that carry the structure's essential fields.
    #[error("{what}: need at least {needed} bytes, got {got}")]
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// A VPD page came back with another page code than the one asked for.
    #[error("VPD page: asked for page 0x{expected:02x}, got page 0x{got:02x}")]
    WrongVpdPage { expected: u8, got: u8 },
    /// Sense data whose RESPONSE CODE is not one of 0x70-0x73 (SPC-4 4.5.1).
    #[error("sense data: response code 0x{0:02x} is neither fixed (0x70/0x71) nor descriptor (0x72/0x73) format")]
    UnknownSenseFormat(u8),
    /// blocks times block length is more than the 32-bit iSCSI Expected Data Transfer Length.
    #[error(
        "{blocks} blocks of {block_length_bytes} bytes exceed a 32-bit expected data transfer length"
    )]
    TransferTooLong {
        blocks: u64,
        block_length_bytes: u32,
    },
    /// Text that is neither a LUN number nor a raw 16-hex-digit LUN field.
    #[error("not a LUN: {text:?} (expected a number, or 0x and 16 hex digits)")]
    InvalidLun { text: String },
    /// A logical block length of zero: no transfer length can be computed from it.
    #[error("logical block length 0 is not valid")]
    ZeroBlockLength,
    /// A CDB outside 1 to 260 bytes (RFC 7143 11.3.5: 16 in the BHS, 244 in an AHS).
    #[error("CDB length {0} is outside 1..=260")]
    CdbLength(usize),
    /// A field whose value the structure does not allow.
    #[error("{what}: {reason}")]
    BadField {
        what: &'static str,
        reason: &'static str,
    },
}
