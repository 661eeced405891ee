//! Parsing and emitting iSCSI PDUs, RFC 7143 section 11.
//!
//! [`Header::parse`] and [`Header::emit`] convert between the typed [`Header`] and the wire
//! bytes of one BHS (section 11.2.1) plus its AHS (section 11.2.2). [`frame`] reads the
//! lengths of a received PDU from its BHS and checks them against the receiver's [`Limits`]
//! before anything is read or allocated; [`decode_pdu`] and [`encode_pdu`] handle a whole
//! PDU with padding and CRC32C digests (sections 11.1 and 13.1).
//!
//! Parsing validates structure (defined opcode, login stage codes, task attribute, AHS types
//! and lengths) and ignores reserved bits; protocol meaning (sequence numbers, whether a
//! status code is allowed) is the session's business. Emitting writes reserved fields as zero.
//! Neither allocates, except the `Vec` that holds a SCSI Command's CDB.
#![forbid(unsafe_code)]

use std::ops::Range;

use super::digest::{self, DIGEST_LEN};
use super::types::*;
use super::view::BhsView;
use crate::scsi::{Cdb, DataDirection as CdbDirection};

/// Length of the Basic Header Segment, section 11.2.1.
pub const BHS_LEN: usize = 48;

/// Largest value the 24-bit DataSegmentLength field can hold.
pub const MAX_DATA_SEGMENT_LENGTH: u32 = 0x00ff_ffff;

/// Largest CDB this codec carries (16 bytes in the BHS plus an Extended CDB AHS), and the
/// length of the BHS's CDB field (section 11.3.5): the CDB type's own limits.
pub use crate::scsi::cdb::{BHS_CDB_LEN, MAX_CDB_LEN};

/// MaxRecvDataSegmentLength that holds during login, before any is negotiated (section 13.12).
pub const LOGIN_MAX_DATA_SEGMENT_LENGTH: u32 = 8192;

/// AHS type codes, section 11.2.2.
const AHS_TYPE_EXTENDED_CDB: u8 = 1;
const AHS_TYPE_BIDI_READ_LENGTH: u8 = 2;
/// AHSLength of a Bidirectional Read Expected Data Transfer Length AHS (section 11.3.6):
/// the reserved byte plus the 4-byte length.
const BIDI_AHS_LENGTH: u16 = 5;
/// Bytes a Bidirectional Read AHS takes on the wire.
const BIDI_AHS_WIRE_LEN: usize = 8;

/// Flag bits of byte 1 shared by many opcodes.
const FLAG_FINAL: u8 = 0x80;
const FLAG_CONTINUE: u8 = 0x40;

/// Why a PDU could not be parsed, framed or emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// The input ends before the structure it must hold (a BHS, an AHS, a sense field).
    #[error("truncated: {needed} bytes needed, {got} present")]
    Truncated { needed: usize, got: usize },
    /// The opcode is not one RFC 7143 defines (vendor opcodes are not supported either).
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The data segment is longer than the receiver's limit or the 24-bit field.
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataSegmentTooLong { len: usize, max: usize },
    /// TotalAHSLength is larger than the receiver's limit.
    #[error("AHS of {len} bytes exceeds the limit of {max}")]
    AhsTooLong { len: usize, max: usize },
    /// An AHS whose type this codec does not know (section 11.2.2 defines 1 and 2).
    #[error("unknown AHS type {0}")]
    UnknownAhsType(u8),
    /// An AHS that is malformed: bad length, duplicated, or on a PDU that carries none.
    #[error("bad AHS of type {ahs_type}: {reason}")]
    BadAhs { ahs_type: u8, reason: &'static str },
    /// The header digest received differs from the one computed (section 13.1).
    #[error("header digest mismatch: computed {expected:#010x}, received {found:#010x}")]
    HeaderDigestMismatch { expected: u32, found: u32 },
    /// The data digest received differs from the one computed (section 13.1).
    #[error("data digest mismatch: computed {expected:#010x}, received {found:#010x}")]
    DataDigestMismatch { expected: u32, found: u32 },
    /// A header field holds a value its encoding does not allow.
    #[error("invalid {field}: {value}")]
    InvalidField { field: &'static str, value: u32 },
    /// The output buffer cannot hold what is to be written; nothing was written.
    #[error("buffer too small: {needed} bytes needed, {got} available")]
    BufferTooSmall { needed: usize, got: usize },
    /// A CDB longer than [`MAX_CDB_LEN`].
    #[error("CDB of {0} bytes is longer than {MAX_CDB_LEN}")]
    CdbTooLong(usize),
    /// A SCSI Response's SenseLength runs past its data segment (section 11.4.7).
    #[error("SenseLength {sense_length} exceeds the {available} bytes after it")]
    SenseLengthTooLong { sense_length: u16, available: usize },
}

/// Receive limits, from negotiation or configuration. Input over a limit is an error before
/// any byte of it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The MaxRecvDataSegmentLength this side declared (8192 during login).
    pub max_data_segment_length: u32,
    /// Largest total AHS accepted, in bytes (the field itself allows up to 1020).
    pub max_ahs_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_data_segment_length: 262_144,
            max_ahs_length: 1024,
        }
    }
}

impl Limits {
    /// The limits in force during login (section 13.12: MaxRecvDataSegmentLength 8192).
    pub fn login() -> Limits {
        Limits {
            max_data_segment_length: LOGIN_MAX_DATA_SEGMENT_LENGTH,
            ..Limits::default()
        }
    }
}

/// The layout of one received PDU, read from its BHS (section 11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes of AHS after the BHS (TotalAHSLength * 4).
    pub ahs_len: usize,
    /// 4 when a header digest follows the AHS, else 0.
    pub header_digest_len: usize,
    /// DataSegmentLength: payload bytes, without padding.
    pub data_len: usize,
    /// Zero bytes after the data up to a 4-byte boundary.
    pub pad_len: usize,
    /// 4 when a data digest follows the padding (digests negotiated and data present), else 0.
    pub data_digest_len: usize,
}

impl Frame {
    /// Bytes from the start of the PDU to the start of the data segment.
    pub fn header_len(&self) -> usize {
        BHS_LEN + self.ahs_len + self.header_digest_len
    }

    /// Where the data segment lies within the PDU.
    pub fn data_range(&self) -> Range<usize> {
        let start = self.header_len();
        start..start + self.data_len
    }

    /// Bytes of the whole PDU on the wire.
    pub fn total_len(&self) -> usize {
        self.header_len() + self.data_len + self.pad_len + self.data_digest_len
    }
}

/// Reads the layout of a received PDU from its BHS and checks the opcode and the lengths
/// against `limits`, so a receiver can size its read before taking in more bytes.
pub fn frame(bhs: &[u8], digests: Digests, limits: &Limits) -> Result<Frame, PduError> {
    let view = BhsView::new_checked(bhs)?;
    if view.opcode().is_none() {
        return Err(PduError::UnknownOpcode(view.opcode_raw()));
    }
    let ahs_len = view.total_ahs_length_bytes();
    if ahs_len > limits.max_ahs_length {
        return Err(PduError::AhsTooLong {
            len: ahs_len,
            max: limits.max_ahs_length,
        });
    }
    let data_len = view.data_segment_length();
    if data_len > limits.max_data_segment_length {
        return Err(PduError::DataSegmentTooLong {
            len: data_len as usize,
            max: limits.max_data_segment_length as usize,
        });
    }
    let data_len = data_len as usize;
    Ok(Frame {
        ahs_len,
        header_digest_len: if digests.header { DIGEST_LEN } else { 0 },
        data_len,
        pad_len: digest::pad_len(data_len),
        data_digest_len: if digests.data && data_len > 0 {
            DIGEST_LEN
        } else {
            0
        },
    })
}

/// A PDU found at the start of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPdu {
    pub header: Header,
    /// Where the data segment lies in the buffer given to [`decode_pdu`] (padding excluded).
    pub data: Range<usize>,
    /// Bytes of the buffer the PDU took, digests and padding included.
    pub consumed: usize,
}

/// Decodes the PDU at the start of `buf`, verifying digests. `Ok(None)` means `buf` holds
/// only part of a PDU so far: read more and call again. Lengths are checked against `limits`
/// from the first 48 bytes on, and the header digest as soon as the header is complete.
pub fn decode_pdu(
    buf: &[u8],
    digests: Digests,
    limits: &Limits,
) -> Result<Option<DecodedPdu>, PduError> {
    let Some(bhs) = buf.get(..BHS_LEN) else {
        return Ok(None);
    };
    let layout = frame(bhs, digests, limits)?;
    let Some(header_bytes) = buf.get(..layout.header_len()) else {
        return Ok(None);
    };
    let header = decode_header(header_bytes, &layout)?;
    let total = layout.total_len();
    if buf.len() < total {
        return Ok(None);
    }
    let data = layout.data_range();
    if layout.data_digest_len > 0 {
        let padded_end = data.end + layout.pad_len;
        let covered = buf.get(data.start..padded_end).unwrap_or_default();
        let expected = digest::crc32c(covered);
        let received = buf
            .get(padded_end..padded_end + DIGEST_LEN)
            .unwrap_or_default();
        let found = digest::digest_from_wire(wire_digest(received));
        if expected != found {
            return Err(PduError::DataDigestMismatch { expected, found });
        }
    }
    Ok(Some(DecodedPdu {
        header,
        data,
        consumed: total,
    }))
}

/// Parses a received header whose bytes (BHS, AHS, and the header digest when `layout`
/// has one) are all in `bytes`, checking the digest before the fields (section 13.1).
pub fn decode_header(bytes: &[u8], layout: &Frame) -> Result<Header, PduError> {
    let covered = BHS_LEN + layout.ahs_len;
    let needed = layout.header_len();
    if bytes.len() < needed {
        return Err(PduError::Truncated {
            needed,
            got: bytes.len(),
        });
    }
    let (head, rest) = bytes.split_at(covered);
    if layout.header_digest_len > 0 {
        let expected = digest::header_digest(head);
        let found = digest::digest_from_wire(wire_digest(rest));
        if expected != found {
            return Err(PduError::HeaderDigestMismatch { expected, found });
        }
    }
    let (bhs, ahs) = head.split_at(BHS_LEN);
    Header::parse(bhs, ahs)
}

/// Four digest bytes from a slice already checked to hold them.
fn wire_digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    bytes
        .first_chunk::<DIGEST_LEN>()
        .copied()
        .unwrap_or_default()
}

/// Writes BHS, AHS and (if negotiated) the header digest of a PDU whose data segment is
/// `data_len` bytes. Returns the bytes written; on error `out` is left untouched.
pub fn encode_header(
    header: &Header,
    data_len: u32,
    digests: Digests,
    out: &mut [u8],
) -> Result<usize, PduError> {
    let header_len = BHS_LEN + header.ahs_len();
    let needed = header_len + if digests.header { DIGEST_LEN } else { 0 };
    if out.len() < needed {
        return Err(PduError::BufferTooSmall {
            needed,
            got: out.len(),
        });
    }
    let (head, rest) = out.split_at_mut(header_len);
    let written = header.emit(data_len, head)?;
    debug_assert_eq!(written, header_len);
    if digests.header {
        let value = digest::header_digest(head);
        rest[..DIGEST_LEN].copy_from_slice(&digest::digest_to_wire(value));
    }
    Ok(needed)
}

/// The header digest of a PDU with this header and a `data_len`-byte data segment
/// (section 13.1: CRC32C over the BHS and every AHS), for a path that frames elsewhere.
pub fn header_digest_of(header: &Header, data_len: u32) -> Result<u32, PduError> {
    let mut raw = [0u8; BHS_LEN + 1024];
    let n = header.emit(data_len, &mut raw)?;
    Ok(digest::header_digest(&raw[..n]))
}

/// What follows a data segment on the wire: zero padding to a 4-byte boundary, then the
/// data digest over data and padding when digests are on and the segment is not empty.
/// Returns the bytes and how many of them to send.
pub fn data_trailer(data: &[u8], digests: Digests) -> ([u8; 8], usize) {
    let mut trailer = [0u8; 8];
    let pad = digest::pad_len(data.len());
    if digests.data && !data.is_empty() {
        let value = digest::data_digest(data);
        trailer[pad..pad + DIGEST_LEN].copy_from_slice(&digest::digest_to_wire(value));
        (trailer, pad + DIGEST_LEN)
    } else {
        (trailer, pad)
    }
}

/// Appends a whole PDU (header, digests, data, padding) to `out`. On error `out` is left
/// as it was.
pub fn encode_pdu(
    header: &Header,
    data: &[u8],
    digests: Digests,
    out: &mut Vec<u8>,
) -> Result<(), PduError> {
    let data_len = checked_data_len(data.len())?;
    let start = out.len();
    let header_len = BHS_LEN + header.ahs_len() + if digests.header { DIGEST_LEN } else { 0 };
    out.resize(start + header_len, 0);
    if let Err(e) = encode_header(header, data_len, digests, &mut out[start..]) {
        out.truncate(start);
        return Err(e);
    }
    out.extend_from_slice(data);
    let (trailer, trailer_len) = data_trailer(data, digests);
    out.extend_from_slice(&trailer[..trailer_len]);
    Ok(())
}

fn checked_data_len(len: usize) -> Result<u32, PduError> {
    match u32::try_from(len) {
        Ok(n) if n <= MAX_DATA_SEGMENT_LENGTH => Ok(n),
        _ => Err(PduError::DataSegmentTooLong {
            len,
            max: MAX_DATA_SEGMENT_LENGTH as usize,
        }),
    }
}

/// Splits a SCSI Response data segment (section 11.4.7) into sense data and response
/// data. An empty segment has neither; otherwise it starts with a 2-byte SenseLength.
pub fn split_scsi_response_data(data: &[u8]) -> Result<(&[u8], &[u8]), PduError> {
    if data.is_empty() {
        return Ok((&[], &[]));
    }
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return Err(PduError::Truncated {
            needed: 2,
            got: data.len(),
        });
    };
    let sense_length = u16::from_be_bytes(*length);
    match rest.split_at_checked(usize::from(sense_length)) {
        Some(parts) => Ok(parts),
        None => Err(PduError::SenseLengthTooLong {
            sense_length,
            available: rest.len(),
        }),
    }
}

/// Appends a SCSI Response data segment: SenseLength, sense data, response data
/// (section 11.4.7). Sense data longer than 65535 bytes cannot be expressed.
pub fn encode_scsi_response_data(
    sense: &[u8],
    response_data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), PduError> {
    let sense_length = u16::try_from(sense.len()).map_err(|_| PduError::InvalidField {
        field: "SenseLength",
        value: u32::try_from(sense.len()).unwrap_or(u32::MAX),
    })?;
    out.extend_from_slice(&sense_length.to_be_bytes());
    out.extend_from_slice(sense);
    out.extend_from_slice(response_data);
    Ok(())
}

/// The header of the PDU a Reject refers to: the Reject's data segment (section 11.17.1).
pub fn rejected_header(data: &[u8]) -> Result<BhsView<&[u8]>, PduError> {
    BhsView::new_checked(data)
}

fn bit(flags: u8, mask: u8) -> bool {
    flags & mask != 0
}

fn flag(set: bool, mask: u8) -> u8 {
    if set {
        mask
    } else {
        0
    }
}

fn task_attribute(bits: u8) -> Result<TaskAttribute, PduError> {
    Ok(match bits {
        0 => TaskAttribute::Untagged,
        1 => TaskAttribute::Simple,
        2 => TaskAttribute::Ordered,
        3 => TaskAttribute::HeadOfQueue,
        4 => TaskAttribute::Aca,
        other => {
            return Err(PduError::InvalidField {
                field: "ATTR",
                value: other.into(),
            })
        }
    })
}

/// Login flags byte (sections 11.12.1-11.12.4): `T|C|.|.|CSG(2)|NSG(2)`.
fn login_stages(flags: u8) -> Result<(LoginStage, LoginStage), PduError> {
    let csg_bits = (flags >> 2) & 3;
    let current = LoginStage::from_bits(csg_bits).ok_or(PduError::InvalidField {
        field: "CSG",
        value: csg_bits.into(),
    })?;
    let nsg_bits = flags & 3;
    let next = match LoginStage::from_bits(nsg_bits) {
        Some(stage) => stage,
        // NSG is reserved when T is clear (section 11.12.3): ignore a value it cannot hold.
        None if !bit(flags, FLAG_FINAL) => current,
        None => {
            return Err(PduError::InvalidField {
                field: "NSG",
                value: nsg_bits.into(),
            })
        }
    };
    Ok((current, next))
}

fn login_flags(transit: bool, continue_: bool, current: LoginStage, next: LoginStage) -> u8 {
    flag(transit, FLAG_FINAL) | flag(continue_, FLAG_CONTINUE) | (current as u8) << 2 | next as u8
}

/// Checks a value that must fit in the `mask` bits of a byte.
fn fits(field: &'static str, value: u8, mask: u8) -> Result<(), PduError> {
    if value & !mask != 0 {
        return Err(PduError::InvalidField {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

/// The parts of a SCSI Command's AHS, borrowed from the wire.
#[derive(Default)]
struct CommandAhs<'a> {
    extended_cdb: Option<&'a [u8]>,
    bidi_read_length: Option<u32>,
}

/// Walks the AHS list (section 11.2.2). Each AHS is `AHSLength(2) | AHSType(1) |
/// AHS-specific(AHSLength)`, padded to 4 bytes; AHSLength counts the type-specific byte.
/// Every step consumes at least 4 bytes, so the loop is bounded by the AHS length.
fn parse_command_ahs(mut ahs: &[u8]) -> Result<CommandAhs<'_>, PduError> {
    let mut parsed = CommandAhs::default();
    while let Some((&[len_hi, len_lo, type_byte], rest)) = ahs.split_first_chunk::<3>() {
        // The top two bits of AHSType are reserved.
        let ahs_type = type_byte & 0x3f;
        let ahs_length = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let padded = (3 + ahs_length).next_multiple_of(4) - 3;
        let (Some(specific), Some(next)) = (rest.get(..ahs_length), rest.get(padded..)) else {
            return Err(PduError::BadAhs {
                ahs_type,
                reason: "AHSLength runs past TotalAHSLength",
            });
        };
        match ahs_type {
            AHS_TYPE_EXTENDED_CDB => {
                if parsed.extended_cdb.is_some() {
                    return Err(PduError::BadAhs {
                        ahs_type,
                        reason: "duplicate",
                    });
                }
                // The first type-specific byte is reserved; the CDB continues after it.
                let Some((_, cdb_tail)) = specific.split_first() else {
                    return Err(PduError::BadAhs {
                        ahs_type,
                        reason: "AHSLength 0",
                    });
                };
                if BHS_CDB_LEN + cdb_tail.len() > MAX_CDB_LEN {
                    return Err(PduError::CdbTooLong(BHS_CDB_LEN + cdb_tail.len()));
                }
                parsed.extended_cdb = Some(cdb_tail);
            }
            AHS_TYPE_BIDI_READ_LENGTH => {
                if parsed.bidi_read_length.is_some() {
                    return Err(PduError::BadAhs {
                        ahs_type,
                        reason: "duplicate",
                    });
                }
                let Some(&[_, a, b, c, d]) = specific
                    .first_chunk::<5>()
                    .filter(|_| ahs_length == usize::from(BIDI_AHS_LENGTH))
                else {
                    return Err(PduError::BadAhs {
                        ahs_type,
                        reason: "AHSLength is not 5",
                    });
                };
                parsed.bidi_read_length = Some(u32::from_be_bytes([a, b, c, d]));
            }
            other => return Err(PduError::UnknownAhsType(other)),
        }
        ahs = next;
    }
    if !ahs.is_empty() {
        return Err(PduError::BadAhs {
            ahs_type: 0,
            reason: "trailing bytes shorter than an AHS",
        });
    }
    Ok(parsed)
}

impl Header {
    /// Parses a BHS (`bhs`, at least 48 bytes; more are ignored) and its AHS (`ahs`, at least
    /// TotalAHSLength * 4 bytes; more are ignored). Reserved bits are ignored.
    pub fn parse(bhs: &[u8], ahs: &[u8]) -> Result<Header, PduError> {
        let v = BhsView::new_checked(bhs)?;
        let Some(opcode) = v.opcode() else {
            return Err(PduError::UnknownOpcode(v.opcode_raw()));
        };
        let ahs_len = v.total_ahs_length_bytes();
        let Some(ahs) = ahs.get(..ahs_len) else {
            return Err(PduError::Truncated {
                needed: ahs_len,
                got: ahs.len(),
            });
        };
        if opcode != Opcode::ScsiCommand {
            if let Some(&type_byte) = ahs.get(2) {
                return Err(PduError::BadAhs {
                    ahs_type: type_byte & 0x3f,
                    reason: "AHS on a PDU that carries none",
                });
            }
        }
        let flags = v.flags();
        let immediate = v.immediate();
        let final_pdu = bit(flags, FLAG_FINAL);
        let lun = v.lun();
        let initiator_task_tag = v.initiator_task_tag();
        Ok(match opcode {
            // Section 11.18.
            Opcode::NopOut => Header::NopOut(NopOut {
                immediate,
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                cmd_sn: v.u32_at::<24>(),
                exp_stat_sn: v.u32_at::<28>(),
            }),
            // Section 11.3.
            Opcode::ScsiCommand => {
                let extra = parse_command_ahs(ahs)?;
                let tail = extra.extended_cdb.unwrap_or_default();
                let (read, write) = (bit(flags, 0x40), bit(flags, 0x20));
                let expected = v.u32_at::<20>();
                // The flags say which way data moves; a bidirectional command's CDB
                // names its write side (its read length is in the AHS).
                let direction = match (read, write) {
                    (_, true) => CdbDirection::Write(expected),
                    (true, false) => CdbDirection::Read(expected),
                    (false, false) => CdbDirection::None,
                };
                // parse_command_ahs bounds the tail, so this cannot fail.
                let cdb = Cdb::from_wire(v.bytes_at::<32, BHS_CDB_LEN>(), tail, direction)
                    .map_err(|_| PduError::CdbTooLong(BHS_CDB_LEN + tail.len()))?;
                Header::ScsiCommand(ScsiCommand {
                    immediate,
                    final_pdu,
                    read,
                    write,
                    attribute: task_attribute(flags & 0x07)?,
                    lun,
                    initiator_task_tag,
                    expected_data_transfer_length: expected,
                    cmd_sn: v.u32_at::<24>(),
                    exp_stat_sn: v.u32_at::<28>(),
                    cdb,
                    bidi_read_length: extra.bidi_read_length,
                })
            }
            // Section 11.5.
            Opcode::TaskMgmtRequest => Header::TaskMgmtRequest(TaskMgmtRequest {
                immediate,
                function: flags & 0x7f,
                lun,
                initiator_task_tag,
                referenced_task_tag: v.u32_at::<20>(),
                cmd_sn: v.u32_at::<24>(),
                exp_stat_sn: v.u32_at::<28>(),
                ref_cmd_sn: v.u32_at::<32>(),
                exp_data_sn: v.u32_at::<36>(),
            }),
            // Section 11.12. The I bit is always 1 and carries no information.
            Opcode::LoginRequest => {
                let (current_stage, next_stage) = login_stages(flags)?;
                Header::LoginRequest(LoginRequest {
                    transit: final_pdu,
                    continue_: bit(flags, FLAG_CONTINUE),
                    current_stage,
                    next_stage,
                    version_max: v.u8_at::<2>(),
                    version_min: v.u8_at::<3>(),
                    isid: v.bytes_at::<8, 6>(),
                    tsih: v.u16_at::<14>(),
                    initiator_task_tag,
                    cid: v.u16_at::<20>(),
                    cmd_sn: v.u32_at::<24>(),
                    exp_stat_sn: v.u32_at::<28>(),
                })
            }
            // Section 11.10.
            Opcode::TextRequest => Header::TextRequest(TextRequest {
                immediate,
                final_pdu,
                continue_: bit(flags, FLAG_CONTINUE),
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                cmd_sn: v.u32_at::<24>(),
                exp_stat_sn: v.u32_at::<28>(),
            }),
            // Section 11.7.1.
            Opcode::DataOut => Header::DataOut(DataOut {
                final_pdu,
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                exp_stat_sn: v.u32_at::<28>(),
                data_sn: v.u32_at::<36>(),
                buffer_offset: v.u32_at::<40>(),
            }),
            // Section 11.14.
            Opcode::LogoutRequest => Header::LogoutRequest(LogoutRequest {
                immediate,
                reason_code: flags & 0x7f,
                initiator_task_tag,
                cid: v.u16_at::<20>(),
                cmd_sn: v.u32_at::<24>(),
                exp_stat_sn: v.u32_at::<28>(),
            }),
            // Section 11.16.
            Opcode::SnackRequest => Header::SnackRequest(SnackRequest {
                snack_type: flags & 0x0f,
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                exp_stat_sn: v.u32_at::<28>(),
                beg_run: v.u32_at::<40>(),
                run_length: v.u32_at::<44>(),
            }),
            // Section 11.19.
            Opcode::NopIn => Header::NopIn(NopIn {
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
            }),
            // Section 11.4.
            Opcode::ScsiResponse => Header::ScsiResponse(ScsiResponse {
                bidi_read_overflow: bit(flags, 0x10),
                bidi_read_underflow: bit(flags, 0x08),
                overflow: bit(flags, 0x04),
                underflow: bit(flags, 0x02),
                response: v.u8_at::<2>(),
                status: v.u8_at::<3>(),
                initiator_task_tag,
                snack_tag: v.u32_at::<20>(),
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
                exp_data_sn: v.u32_at::<36>(),
                bidi_read_residual_count: v.u32_at::<40>(),
                residual_count: v.u32_at::<44>(),
            }),
            // Section 11.6.
            Opcode::TaskMgmtResponse => Header::TaskMgmtResponse(TaskMgmtResponse {
                response: v.u8_at::<2>(),
                initiator_task_tag,
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
            }),
            // Section 11.13.
            Opcode::LoginResponse => {
                let (current_stage, next_stage) = login_stages(flags)?;
                Header::LoginResponse(LoginResponse {
                    transit: final_pdu,
                    continue_: bit(flags, FLAG_CONTINUE),
                    current_stage,
                    next_stage,
                    version_max: v.u8_at::<2>(),
                    version_active: v.u8_at::<3>(),
                    isid: v.bytes_at::<8, 6>(),
                    tsih: v.u16_at::<14>(),
                    initiator_task_tag,
                    stat_sn: v.u32_at::<24>(),
                    exp_cmd_sn: v.u32_at::<28>(),
                    max_cmd_sn: v.u32_at::<32>(),
                    status_class: v.u8_at::<36>(),
                    status_detail: v.u8_at::<37>(),
                })
            }
            // Section 11.11.
            Opcode::TextResponse => Header::TextResponse(TextResponse {
                final_pdu,
                continue_: bit(flags, FLAG_CONTINUE),
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
            }),
            // Section 11.7. Status (byte 3) is only valid with the S bit.
            Opcode::DataIn => Header::DataIn(DataIn {
                final_pdu,
                acknowledge: bit(flags, 0x40),
                overflow: bit(flags, 0x04),
                underflow: bit(flags, 0x02),
                status: bit(flags, 0x01).then(|| v.u8_at::<3>()),
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
                data_sn: v.u32_at::<36>(),
                buffer_offset: v.u32_at::<40>(),
                residual_count: v.u32_at::<44>(),
            }),
            // Section 11.15.
            Opcode::LogoutResponse => Header::LogoutResponse(LogoutResponse {
                response: v.u8_at::<2>(),
                initiator_task_tag,
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
                time2wait: v.u16_at::<40>(),
                time2retain: v.u16_at::<42>(),
            }),
            // Section 11.8.
            Opcode::R2t => Header::R2t(R2t {
                lun,
                initiator_task_tag,
                target_transfer_tag: v.u32_at::<20>(),
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
                r2t_sn: v.u32_at::<36>(),
                buffer_offset: v.u32_at::<40>(),
                desired_data_transfer_length: v.u32_at::<44>(),
            }),
            // Section 11.9.
            Opcode::AsyncMessage => Header::AsyncMessage(AsyncMessage {
                lun,
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
                async_event: v.u8_at::<36>(),
                async_vcode: v.u8_at::<37>(),
                parameter1: v.u16_at::<38>(),
                parameter2: v.u16_at::<40>(),
                parameter3: v.u16_at::<42>(),
            }),
            // Section 11.17.
            Opcode::Reject => Header::Reject(Reject {
                reason: v.u8_at::<2>(),
                stat_sn: v.u32_at::<24>(),
                exp_cmd_sn: v.u32_at::<28>(),
                max_cmd_sn: v.u32_at::<32>(),
                data_sn_or_r2t_sn: v.u32_at::<36>(),
            }),
        })
    }

    /// Bytes of AHS this header emits: an Extended CDB AHS for a CDB over 16 bytes
    /// (section 11.3.5) and a Bidirectional Read AHS (section 11.3.6). Always a multiple of 4.
    pub fn ahs_len(&self) -> usize {
        match self {
            Header::ScsiCommand(cmd) => {
                let tail = cmd.cdb.extended().len();
                let extended = if tail > 0 {
                    4 + tail.next_multiple_of(4)
                } else {
                    0
                };
                let bidi = if cmd.bidi_read_length.is_some() {
                    BIDI_AHS_WIRE_LEN
                } else {
                    0
                };
                extended + bidi
            }
            _ => 0,
        }
    }

    /// Checks that every field fits its wire encoding, so that `emit` fails before writing.
    fn check_encodable(&self, data_segment_length: u32) -> Result<(), PduError> {
        if data_segment_length > MAX_DATA_SEGMENT_LENGTH {
            return Err(PduError::DataSegmentTooLong {
                len: data_segment_length as usize,
                max: MAX_DATA_SEGMENT_LENGTH as usize,
            });
        }
        match self {
            Header::ScsiCommand(cmd) if cmd.cdb.len() > MAX_CDB_LEN => {
                Err(PduError::CdbTooLong(cmd.cdb.len()))
            }
            Header::TaskMgmtRequest(h) => fits("Function", h.function, 0x7f),
            Header::LogoutRequest(h) => fits("ReasonCode", h.reason_code, 0x7f),
            Header::SnackRequest(h) => fits("SNACK Type", h.snack_type, 0x0f),
            _ => Ok(()),
        }
    }

    /// Writes the BHS and AHS into the start of `out` and returns how many bytes that took
    /// (48 + [`Header::ahs_len`]). No digest. On error `out` is left untouched.
    pub fn emit(&self, data_segment_length: u32, out: &mut [u8]) -> Result<usize, PduError> {
        self.check_encodable(data_segment_length)?;
        let ahs_len = self.ahs_len();
        let needed = BHS_LEN + ahs_len;
        let Some(target) = out.get_mut(..needed) else {
            return Err(PduError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        };
        let (bhs, ahs) = target.split_at_mut(BHS_LEN);
        let mut v = BhsView::new_checked(bhs)?;
        v.clear();
        v.set_data_segment_length(data_segment_length);
        // At most (4 + 244) + 8 bytes, checked above: fits the 8-bit word count.
        v.set_total_ahs_length_words((ahs_len / 4) as u8);
        match self {
            Header::NopOut(h) => {
                v.set_opcode(Opcode::NopOut, h.immediate);
                v.set_flags(FLAG_FINAL);
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<24>(h.cmd_sn);
                v.set_u32::<28>(h.exp_stat_sn);
            }
            Header::ScsiCommand(h) => {
                v.set_opcode(Opcode::ScsiCommand, h.immediate);
                v.set_flags(
                    flag(h.final_pdu, FLAG_FINAL)
                        | flag(h.read, 0x40)
                        | flag(h.write, 0x20)
                        | h.attribute as u8,
                );
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.expected_data_transfer_length);
                v.set_u32::<24>(h.cmd_sn);
                v.set_u32::<28>(h.exp_stat_sn);
                // Shorter CDBs travel zero-padded to 16.
                v.set_bytes::<32, BHS_CDB_LEN>(h.cdb.padded());
                emit_command_ahs(h.cdb.extended(), h.bidi_read_length, ahs);
            }
            Header::TaskMgmtRequest(h) => {
                v.set_opcode(Opcode::TaskMgmtRequest, h.immediate);
                v.set_flags(FLAG_FINAL | h.function);
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.referenced_task_tag);
                v.set_u32::<24>(h.cmd_sn);
                v.set_u32::<28>(h.exp_stat_sn);
                v.set_u32::<32>(h.ref_cmd_sn);
                v.set_u32::<36>(h.exp_data_sn);
            }
            Header::LoginRequest(h) => {
                v.set_opcode(Opcode::LoginRequest, true);
                v.set_flags(login_flags(
                    h.transit,
                    h.continue_,
                    h.current_stage,
                    h.next_stage,
                ));
                v.set_u8::<2>(h.version_max);
                v.set_u8::<3>(h.version_min);
                v.set_bytes::<8, 6>(h.isid);
                v.set_u16::<14>(h.tsih);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u16::<20>(h.cid);
                v.set_u32::<24>(h.cmd_sn);
                v.set_u32::<28>(h.exp_stat_sn);
            }
            Header::TextRequest(h) => {
                v.set_opcode(Opcode::TextRequest, h.immediate);
                v.set_flags(flag(h.final_pdu, FLAG_FINAL) | flag(h.continue_, FLAG_CONTINUE));
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<24>(h.cmd_sn);
                v.set_u32::<28>(h.exp_stat_sn);
            }
            Header::DataOut(h) => {
                v.set_opcode(Opcode::DataOut, false);
                v.set_flags(flag(h.final_pdu, FLAG_FINAL));
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<28>(h.exp_stat_sn);
                v.set_u32::<36>(h.data_sn);
                v.set_u32::<40>(h.buffer_offset);
            }
            Header::LogoutRequest(h) => {
                v.set_opcode(Opcode::LogoutRequest, h.immediate);
                v.set_flags(FLAG_FINAL | h.reason_code);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u16::<20>(h.cid);
                v.set_u32::<24>(h.cmd_sn);
                v.set_u32::<28>(h.exp_stat_sn);
            }
            Header::SnackRequest(h) => {
                v.set_opcode(Opcode::SnackRequest, false);
                v.set_flags(FLAG_FINAL | h.snack_type);
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<28>(h.exp_stat_sn);
                v.set_u32::<40>(h.beg_run);
                v.set_u32::<44>(h.run_length);
            }
            Header::NopIn(h) => {
                v.set_opcode(Opcode::NopIn, false);
                v.set_flags(FLAG_FINAL);
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
            }
            Header::ScsiResponse(h) => {
                v.set_opcode(Opcode::ScsiResponse, false);
                v.set_flags(
                    FLAG_FINAL
                        | flag(h.bidi_read_overflow, 0x10)
                        | flag(h.bidi_read_underflow, 0x08)
                        | flag(h.overflow, 0x04)
                        | flag(h.underflow, 0x02),
                );
                v.set_u8::<2>(h.response);
                v.set_u8::<3>(h.status);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.snack_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u32::<36>(h.exp_data_sn);
                v.set_u32::<40>(h.bidi_read_residual_count);
                v.set_u32::<44>(h.residual_count);
            }
            Header::TaskMgmtResponse(h) => {
                v.set_opcode(Opcode::TaskMgmtResponse, false);
                v.set_flags(FLAG_FINAL);
                v.set_u8::<2>(h.response);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
            }
            Header::LoginResponse(h) => {
                v.set_opcode(Opcode::LoginResponse, false);
                v.set_flags(login_flags(
                    h.transit,
                    h.continue_,
                    h.current_stage,
                    h.next_stage,
                ));
                v.set_u8::<2>(h.version_max);
                v.set_u8::<3>(h.version_active);
                v.set_bytes::<8, 6>(h.isid);
                v.set_u16::<14>(h.tsih);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u8::<36>(h.status_class);
                v.set_u8::<37>(h.status_detail);
            }
            Header::TextResponse(h) => {
                v.set_opcode(Opcode::TextResponse, false);
                v.set_flags(flag(h.final_pdu, FLAG_FINAL) | flag(h.continue_, FLAG_CONTINUE));
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
            }
            Header::DataIn(h) => {
                v.set_opcode(Opcode::DataIn, false);
                v.set_flags(
                    flag(h.final_pdu, FLAG_FINAL)
                        | flag(h.acknowledge, 0x40)
                        | flag(h.overflow, 0x04)
                        | flag(h.underflow, 0x02)
                        | flag(h.status.is_some(), 0x01),
                );
                v.set_u8::<3>(h.status.unwrap_or(0));
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u32::<36>(h.data_sn);
                v.set_u32::<40>(h.buffer_offset);
                v.set_u32::<44>(h.residual_count);
            }
            Header::LogoutResponse(h) => {
                v.set_opcode(Opcode::LogoutResponse, false);
                v.set_flags(FLAG_FINAL);
                v.set_u8::<2>(h.response);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u16::<40>(h.time2wait);
                v.set_u16::<42>(h.time2retain);
            }
            Header::R2t(h) => {
                v.set_opcode(Opcode::R2t, false);
                v.set_flags(FLAG_FINAL);
                v.set_lun(h.lun);
                v.set_initiator_task_tag(h.initiator_task_tag);
                v.set_u32::<20>(h.target_transfer_tag);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u32::<36>(h.r2t_sn);
                v.set_u32::<40>(h.buffer_offset);
                v.set_u32::<44>(h.desired_data_transfer_length);
            }
            Header::AsyncMessage(h) => {
                v.set_opcode(Opcode::AsyncMessage, false);
                v.set_flags(FLAG_FINAL);
                v.set_lun(h.lun);
                v.set_initiator_task_tag(RESERVED_TAG);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u8::<36>(h.async_event);
                v.set_u8::<37>(h.async_vcode);
                v.set_u16::<38>(h.parameter1);
                v.set_u16::<40>(h.parameter2);
                v.set_u16::<42>(h.parameter3);
            }
            Header::Reject(h) => {
                v.set_opcode(Opcode::Reject, false);
                v.set_flags(FLAG_FINAL);
                v.set_u8::<2>(h.reason);
                v.set_initiator_task_tag(RESERVED_TAG);
                v.set_u32::<24>(h.stat_sn);
                v.set_u32::<28>(h.exp_cmd_sn);
                v.set_u32::<32>(h.max_cmd_sn);
                v.set_u32::<36>(h.data_sn_or_r2t_sn);
            }
        }
        Ok(needed)
    }
}

/// Writes a SCSI Command's AHS into `out`, which is exactly [`Header::ahs_len`] bytes:
/// the Extended CDB AHS (AHSLength = tail + 1 for its reserved byte, padded to 4), then the
/// Bidirectional Read AHS.
fn emit_command_ahs(cdb_tail: &[u8], bidi_read_length: Option<u32>, out: &mut [u8]) {
    out.fill(0);
    let mut rest = out;
    if !cdb_tail.is_empty() {
        let wire_len = 4 + cdb_tail.len().next_multiple_of(4);
        let (segment, after) = rest.split_at_mut(wire_len);
        // CDB length is checked against MAX_CDB_LEN, so the tail + 1 fits in 16 bits.
        let ahs_length = (cdb_tail.len() + 1) as u16;
        segment[..2].copy_from_slice(&ahs_length.to_be_bytes());
        segment[2] = AHS_TYPE_EXTENDED_CDB;
        segment[4..4 + cdb_tail.len()].copy_from_slice(cdb_tail);
        rest = after;
    }
    if let Some(length) = bidi_read_length {
        rest[..2].copy_from_slice(&BIDI_AHS_LENGTH.to_be_bytes());
        rest[2] = AHS_TYPE_BIDI_READ_LENGTH;
        rest[4..8].copy_from_slice(&length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BHS built from (offset, bytes) pairs, everything else zero.
    fn bhs(fields: &[(usize, &[u8])]) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        for &(offset, bytes) in fields {
            b[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    fn emit_vec(header: &Header, data_len: u32) -> Vec<u8> {
        let mut out = vec![0u8; BHS_LEN + header.ahs_len()];
        let n = header.emit(data_len, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn header_digest_of_is_the_digest_encode_header_writes() {
        let header = parse_one(&bhs(&[(0, &[0x20, 0x80]), (16, &[0, 0, 0, 9])])).unwrap();
        let digests = Digests {
            header: true,
            data: false,
        };
        let mut out = [0u8; BHS_LEN + DIGEST_LEN];
        assert_eq!(encode_header(&header, 12, digests, &mut out), Ok(out.len()));
        let wire = digest::digest_from_wire(wire_digest(&out[BHS_LEN..]));
        assert_eq!(header_digest_of(&header, 12), Ok(wire));
    }

    fn parse_one(bytes: &[u8]) -> Result<Header, PduError> {
        Header::parse(&bytes[..BHS_LEN], &bytes[BHS_LEN..])
    }

    /// The SCSI Command of RFC 3720 appendix B.4 (READ(10) of 2 blocks, 1024 bytes).
    const RFC3720_READ: [u8; 48] = [
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
        0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00,
    ];

    #[test]
    fn scsi_command_rfc3720_example() {
        let header = Header::parse(&RFC3720_READ, &[]).unwrap();
        let mut bytes = [0u8; 16];
        bytes[0] = 0x28;
        bytes[8] = 0x02;
        let cdb = Cdb::from_bytes(&bytes, CdbDirection::Read(1024)).unwrap();
        let expected = ScsiCommand {
            immediate: false,
            final_pdu: true,
            read: true,
            write: false,
            attribute: TaskAttribute::Untagged,
            lun: [0; 8],
            initiator_task_tag: 0x1400_0000,
            expected_data_transfer_length: 1024,
            cmd_sn: 0x14,
            exp_stat_sn: 0x18,
            cdb,
            bidi_read_length: None,
        };
        assert_eq!(header, Header::ScsiCommand(expected));
        assert_eq!(emit_vec(&header, 0), RFC3720_READ);

        let mut out = [0u8; 52];
        let digests = Digests {
            header: true,
            data: true,
        };
        assert_eq!(encode_header(&header, 0, digests, &mut out), Ok(52));
        assert_eq!(&out[..48], &RFC3720_READ);
        // The RFC's published header CRC, least significant byte first.
        assert_eq!(&out[48..], &[0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn scsi_command_flags_and_short_cdb() {
        let header = Header::ScsiCommand(ScsiCommand {
            immediate: true,
            final_pdu: false,
            read: false,
            write: true,
            attribute: TaskAttribute::Aca,
            lun: [0, 1, 0, 0, 0, 0, 0, 0],
            initiator_task_tag: 7,
            expected_data_transfer_length: 4096,
            cmd_sn: 1,
            exp_stat_sn: 2,
            cdb: Cdb::from_bytes(&[0x2a, 0, 0, 0, 0, 8, 0, 0, 8, 0], CdbDirection::None).unwrap(),
            bidi_read_length: None,
        });
        let wire = emit_vec(&header, 512);
        let expected = bhs(&[
            (0, &[0x41, 0x24]),
            (5, &[0x00, 0x02, 0x00]),
            (8, &[0, 1]),
            (16, &[0, 0, 0, 7]),
            (20, &[0, 0, 0x10, 0]),
            (24, &[0, 0, 0, 1]),
            (28, &[0, 0, 0, 2]),
            (32, &[0x2a, 0, 0, 0, 0, 8, 0, 0, 8, 0]),
        ]);
        assert_eq!(wire, expected);
        // The CDB comes back padded to 16 bytes.
        let Header::ScsiCommand(parsed) = parse_one(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(parsed.cdb.len(), 16);
        assert_eq!(&parsed.cdb[..10], &[0x2a, 0, 0, 0, 0, 8, 0, 0, 8, 0]);
        assert_eq!(parsed.attribute, TaskAttribute::Aca);
    }

    #[test]
    fn scsi_command_extended_cdb_and_bidi_ahs() {
        let cdb: Vec<u8> = (1..=32).collect();
        let header = Header::ScsiCommand(ScsiCommand {
            immediate: false,
            final_pdu: true,
            read: true,
            write: true,
            attribute: TaskAttribute::Simple,
            lun: [0; 8],
            initiator_task_tag: 1,
            expected_data_transfer_length: 0,
            cmd_sn: 0,
            exp_stat_sn: 0,
            cdb: Cdb::from_bytes(&cdb, CdbDirection::Write(0)).unwrap(),
            bidi_read_length: Some(0x0102_0304),
        });
        // Extended CDB AHS: 4 + 16 bytes; Bidirectional Read AHS: 8 bytes.
        assert_eq!(header.ahs_len(), 28);
        let wire = emit_vec(&header, 0);
        assert_eq!(wire[4], 7, "TotalAHSLength in words");
        assert_eq!(&wire[32..48], &cdb[..16]);
        assert_eq!(
            &wire[48..52],
            &[0x00, 17, 1, 0],
            "AHSLength = 16 + 1 reserved byte"
        );
        assert_eq!(&wire[52..68], &cdb[16..]);
        assert_eq!(&wire[68..76], &[0, 5, 2, 0, 1, 2, 3, 4]);
        assert_eq!(parse_one(&wire).unwrap(), header);

        // An odd tail is padded to 4 bytes and AHSLength still counts the real bytes.
        let Header::ScsiCommand(mut odd) = header.clone() else {
            unreachable!()
        };
        odd.cdb = Cdb::from_bytes(&cdb[..17], CdbDirection::Write(0)).unwrap();
        odd.bidi_read_length = None;
        let odd = Header::ScsiCommand(odd);
        assert_eq!(odd.ahs_len(), 8);
        let wire = emit_vec(&odd, 0);
        assert_eq!(&wire[48..56], &[0, 2, 1, 0, 17, 0, 0, 0]);
        assert_eq!(parse_one(&wire).unwrap(), odd);
    }

    #[test]
    fn scsi_command_bad_fields() {
        let mut b = RFC3720_READ;
        b[1] = 0xc5; // ATTR 5 is not defined
        assert_eq!(
            Header::parse(&b, &[]),
            Err(PduError::InvalidField {
                field: "ATTR",
                value: 5
            })
        );

        let mut with_ahs = RFC3720_READ.to_vec();
        with_ahs[4] = 1;
        with_ahs.extend_from_slice(&[0, 1, 3, 0]); // AHS type 3 is reserved
        assert_eq!(parse_one(&with_ahs), Err(PduError::UnknownAhsType(3)));
        with_ahs[48..52].copy_from_slice(&[0, 1, 2, 0]); // bidi AHS with AHSLength 1
        assert!(matches!(
            parse_one(&with_ahs),
            Err(PduError::BadAhs { ahs_type: 2, .. })
        ));
        with_ahs[48..52].copy_from_slice(&[0, 9, 1, 0]); // runs past TotalAHSLength
        assert!(matches!(
            parse_one(&with_ahs),
            Err(PduError::BadAhs { ahs_type: 1, .. })
        ));
        // The AHS bytes given are shorter than TotalAHSLength says.
        assert_eq!(
            Header::parse(&with_ahs[..48], &with_ahs[48..50]),
            Err(PduError::Truncated { needed: 4, got: 2 })
        );

        // The longest CDB an Extended CDB AHS may carry is 260 bytes in all.
        for (tail, result_ok) in [(244usize, true), (245, false)] {
            let mut wire = RFC3720_READ.to_vec();
            let wire_len = 4 + tail.next_multiple_of(4);
            wire[4] = (wire_len / 4) as u8;
            wire.extend_from_slice(&((tail + 1) as u16).to_be_bytes());
            wire.extend_from_slice(&[1, 0]);
            wire.resize(48 + wire_len, 0x77);
            match parse_one(&wire) {
                Ok(Header::ScsiCommand(c)) if result_ok => assert_eq!(c.cdb.len(), 16 + tail),
                Err(PduError::CdbTooLong(261)) if !result_ok => {}
                other => panic!("tail {tail}: {other:?}"),
            }
        }
        // A CDB over 260 bytes cannot be built (`Cdb::from_bytes`), so none is emitted.
    }

    #[test]
    fn scsi_response_offsets() {
        let wire = bhs(&[
            (0, &[0x21, 0x86, 0x00, 0x02]),
            (5, &[0, 0, 20]),
            (16, &[0xaa, 0xbb, 0xcc, 0xdd]),
            (20, &[0, 0, 0, 9]),
            (24, &[0, 0, 1, 0]),
            (28, &[0, 0, 2, 0]),
            (32, &[0, 0, 3, 0]),
            (36, &[0, 0, 4, 0]),
            (40, &[0, 0, 5, 0]),
            (44, &[0, 0, 6, 0]),
        ]);
        let expected = Header::ScsiResponse(ScsiResponse {
            bidi_read_overflow: false,
            bidi_read_underflow: false,
            overflow: true,
            underflow: true,
            response: 0,
            status: 2,
            initiator_task_tag: 0xaabb_ccdd,
            snack_tag: 9,
            stat_sn: 0x100,
            exp_cmd_sn: 0x200,
            max_cmd_sn: 0x300,
            exp_data_sn: 0x400,
            bidi_read_residual_count: 0x500,
            residual_count: 0x600,
        });
        assert_eq!(parse_one(&wire).unwrap(), expected);
        assert_eq!(emit_vec(&expected, 20), wire);
    }

    #[test]
    fn data_in_offsets() {
        let wire = bhs(&[
            (0, &[0x25, 0x83, 0x00, 0x02]), // F, U, S; status CHECK CONDITION
            (5, &[0, 0x02, 0x00]),
            (8, &[0, 3]),
            (16, &[0, 0, 0, 0x11]),
            (20, &[0xff, 0xff, 0xff, 0xff]),
            (24, &[0, 0, 0, 0x21]),
            (28, &[0, 0, 0, 0x22]),
            (32, &[0, 0, 0, 0x23]),
            (36, &[0, 0, 0, 0x24]),
            (40, &[0, 0, 0x10, 0]),
            (44, &[0, 0, 0, 0x30]),
        ]);
        let expected = Header::DataIn(DataIn {
            final_pdu: true,
            acknowledge: false,
            overflow: false,
            underflow: true,
            status: Some(2),
            lun: [0, 3, 0, 0, 0, 0, 0, 0],
            initiator_task_tag: 0x11,
            target_transfer_tag: RESERVED_TAG,
            stat_sn: 0x21,
            exp_cmd_sn: 0x22,
            max_cmd_sn: 0x23,
            data_sn: 0x24,
            buffer_offset: 0x1000,
            residual_count: 0x30,
        });
        assert_eq!(parse_one(&wire).unwrap(), expected);
        assert_eq!(emit_vec(&expected, 512), wire);

        // Without the S bit the status byte is reserved and ignored.
        let mut no_status = wire;
        no_status[1] = 0x40; // A only
        let Header::DataIn(d) = parse_one(&no_status).unwrap() else {
            panic!()
        };
        assert_eq!(d.status, None);
        assert!(d.acknowledge && !d.final_pdu);
    }

    #[test]
    fn login_request_offsets() {
        let wire = bhs(&[
            (0, &[0x43, 0x87, 0x00, 0x00]), // I=1; T, CSG=1, NSG=3
            (5, &[0, 0, 0x40]),
            (8, &[0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]),
            (14, &[0, 0]),
            (16, &[0, 0, 0, 1]),
            (20, &[0, 5]),
            (24, &[0, 0, 0, 0x10]),
            (28, &[0, 0, 0, 0x20]),
        ]);
        let expected = Header::LoginRequest(LoginRequest {
            transit: true,
            continue_: false,
            current_stage: LoginStage::LoginOperationalNegotiation,
            next_stage: LoginStage::FullFeaturePhase,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
            tsih: 0,
            initiator_task_tag: 1,
            cid: 5,
            cmd_sn: 0x10,
            exp_stat_sn: 0x20,
        });
        assert_eq!(parse_one(&wire).unwrap(), expected);
        assert_eq!(emit_vec(&expected, 0x40), wire);

        // A Login Request without the I bit still parses (the bit carries no choice).
        let mut no_i = wire;
        no_i[0] = 0x03;
        assert_eq!(parse_one(&no_i).unwrap(), expected);
    }

    #[test]
    fn login_stage_codes() {
        let mut wire = bhs(&[(0, &[0x43, 0x08])]); // CSG = 2
        assert_eq!(
            parse_one(&wire),
            Err(PduError::InvalidField {
                field: "CSG",
                value: 2
            })
        );
        wire[1] = 0x82; // T with NSG = 2
        assert_eq!(
            parse_one(&wire),
            Err(PduError::InvalidField {
                field: "NSG",
                value: 2
            })
        );
        wire[1] = 0x02; // NSG is reserved without T: ignored
        let Header::LoginRequest(h) = parse_one(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(h.next_stage, LoginStage::SecurityNegotiation);
        assert!(!h.transit);
        wire[0] = 0x23;
        wire[1] = 0x88; // Login Response, CSG = 2
        assert_eq!(
            parse_one(&wire),
            Err(PduError::InvalidField {
                field: "CSG",
                value: 2
            })
        );
    }

    #[test]
    fn login_response_offsets() {
        let wire = bhs(&[
            (0, &[0x23, 0x43, 0x00, 0x00]), // C, CSG=0, NSG=3
            (8, &[0x40, 0, 0, 0, 0, 1]),
            (14, &[0x12, 0x34]),
            (16, &[0, 0, 0, 2]),
            (24, &[0, 0, 0, 3]),
            (28, &[0, 0, 0, 4]),
            (32, &[0, 0, 0, 5]),
            (36, &[0x02, 0x01]), // initiator error: authentication failure
        ]);
        let expected = Header::LoginResponse(LoginResponse {
            transit: false,
            continue_: true,
            current_stage: LoginStage::SecurityNegotiation,
            next_stage: LoginStage::FullFeaturePhase,
            version_max: 0,
            version_active: 0,
            isid: [0x40, 0, 0, 0, 0, 1],
            tsih: 0x1234,
            initiator_task_tag: 2,
            stat_sn: 3,
            exp_cmd_sn: 4,
            max_cmd_sn: 5,
            status_class: 2,
            status_detail: 1,
        });
        assert_eq!(parse_one(&wire).unwrap(), expected);
        assert_eq!(emit_vec(&expected, 0), wire);
    }

    #[test]
    fn r2t_offsets() {
        let wire = bhs(&[
            (0, &[0x31, 0x80]),
            (8, &[0, 2]),
            (16, &[0, 0, 0, 0x0a]),
            (20, &[0, 0, 0, 0x0b]),
            (24, &[0, 0, 0, 0x0c]),
            (28, &[0, 0, 0, 0x0d]),
            (32, &[0, 0, 0, 0x0e]),
            (36, &[0, 0, 0, 0x0f]),
            (40, &[0, 1, 0, 0]),
            (44, &[0, 0, 0x20, 0]),
        ]);
        let expected = Header::R2t(R2t {
            lun: [0, 2, 0, 0, 0, 0, 0, 0],
            initiator_task_tag: 0x0a,
            target_transfer_tag: 0x0b,
            stat_sn: 0x0c,
            exp_cmd_sn: 0x0d,
            max_cmd_sn: 0x0e,
            r2t_sn: 0x0f,
            buffer_offset: 0x10000,
            desired_data_transfer_length: 0x2000,
        });
        assert_eq!(parse_one(&wire).unwrap(), expected);
        assert_eq!(emit_vec(&expected, 0), wire);
    }

    #[test]
    fn reject_carries_the_rejected_header() {
        let reject = Header::Reject(Reject {
            reason: 0x09,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            data_sn_or_r2t_sn: 4,
        });
        let wire = emit_vec(&reject, 48);
        let expected = bhs(&[
            (0, &[0x3f, 0x80, 0x09, 0x00]),
            (5, &[0, 0, 48]),
            (16, &[0xff, 0xff, 0xff, 0xff]),
            (24, &[0, 0, 0, 1]),
            (28, &[0, 0, 0, 2]),
            (32, &[0, 0, 0, 3]),
            (36, &[0, 0, 0, 4]),
        ]);
        assert_eq!(wire, expected);

        let mut pdu = Vec::new();
        encode_pdu(&reject, &RFC3720_READ, Digests::default(), &mut pdu).unwrap();
        let decoded = decode_pdu(&pdu, Digests::default(), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(decoded.header, reject);
        let rejected = rejected_header(&pdu[decoded.data]).unwrap();
        assert_eq!(rejected.opcode(), Some(Opcode::ScsiCommand));
        assert_eq!(rejected.initiator_task_tag(), 0x1400_0000);
        assert!(rejected_header(&[0u8; 20]).is_err());
    }

    /// The remaining opcodes: each field lands at the offset its RFC section gives.
    #[test]
    fn other_opcodes_offsets() {
        let cases: Vec<(Header, [u8; 48])> = vec![
            (
                Header::NopOut(NopOut {
                    immediate: true,
                    lun: [1; 8],
                    initiator_task_tag: 2,
                    target_transfer_tag: RESERVED_TAG,
                    cmd_sn: 3,
                    exp_stat_sn: 4,
                }),
                bhs(&[
                    (0, &[0x40, 0x80]),
                    (8, &[1; 8]),
                    (16, &[0, 0, 0, 2]),
                    (20, &[0xff; 4]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                ]),
            ),
            (
                Header::TaskMgmtRequest(TaskMgmtRequest {
                    immediate: true,
                    function: 1,
                    lun: [2; 8],
                    initiator_task_tag: 3,
                    referenced_task_tag: 4,
                    cmd_sn: 5,
                    exp_stat_sn: 6,
                    ref_cmd_sn: 7,
                    exp_data_sn: 8,
                }),
                bhs(&[
                    (0, &[0x42, 0x81]),
                    (8, &[2; 8]),
                    (16, &[0, 0, 0, 3]),
                    (20, &[0, 0, 0, 4]),
                    (24, &[0, 0, 0, 5]),
                    (28, &[0, 0, 0, 6]),
                    (32, &[0, 0, 0, 7]),
                    (36, &[0, 0, 0, 8]),
                ]),
            ),
            (
                Header::TextRequest(TextRequest {
                    immediate: false,
                    final_pdu: true,
                    continue_: true,
                    lun: [0; 8],
                    initiator_task_tag: 1,
                    target_transfer_tag: 2,
                    cmd_sn: 3,
                    exp_stat_sn: 4,
                }),
                bhs(&[
                    (0, &[0x04, 0xc0]),
                    (16, &[0, 0, 0, 1]),
                    (20, &[0, 0, 0, 2]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                ]),
            ),
            (
                Header::DataOut(DataOut {
                    final_pdu: true,
                    lun: [3; 8],
                    initiator_task_tag: 1,
                    target_transfer_tag: 2,
                    exp_stat_sn: 3,
                    data_sn: 4,
                    buffer_offset: 5,
                }),
                bhs(&[
                    (0, &[0x05, 0x80]),
                    (8, &[3; 8]),
                    (16, &[0, 0, 0, 1]),
                    (20, &[0, 0, 0, 2]),
                    (28, &[0, 0, 0, 3]),
                    (36, &[0, 0, 0, 4]),
                    (40, &[0, 0, 0, 5]),
                ]),
            ),
            (
                Header::LogoutRequest(LogoutRequest {
                    immediate: true,
                    reason_code: 1,
                    initiator_task_tag: 1,
                    cid: 0x0102,
                    cmd_sn: 3,
                    exp_stat_sn: 4,
                }),
                bhs(&[
                    (0, &[0x46, 0x81]),
                    (16, &[0, 0, 0, 1]),
                    (20, &[1, 2]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                ]),
            ),
            (
                Header::SnackRequest(SnackRequest {
                    snack_type: 1,
                    lun: [4; 8],
                    initiator_task_tag: 1,
                    target_transfer_tag: 2,
                    exp_stat_sn: 3,
                    beg_run: 4,
                    run_length: 5,
                }),
                bhs(&[
                    (0, &[0x10, 0x81]),
                    (8, &[4; 8]),
                    (16, &[0, 0, 0, 1]),
                    (20, &[0, 0, 0, 2]),
                    (28, &[0, 0, 0, 3]),
                    (40, &[0, 0, 0, 4]),
                    (44, &[0, 0, 0, 5]),
                ]),
            ),
            (
                Header::NopIn(NopIn {
                    lun: [5; 8],
                    initiator_task_tag: RESERVED_TAG,
                    target_transfer_tag: 2,
                    stat_sn: 3,
                    exp_cmd_sn: 4,
                    max_cmd_sn: 5,
                }),
                bhs(&[
                    (0, &[0x20, 0x80]),
                    (8, &[5; 8]),
                    (16, &[0xff; 4]),
                    (20, &[0, 0, 0, 2]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                    (32, &[0, 0, 0, 5]),
                ]),
            ),
            (
                Header::TaskMgmtResponse(TaskMgmtResponse {
                    response: 1,
                    initiator_task_tag: 2,
                    stat_sn: 3,
                    exp_cmd_sn: 4,
                    max_cmd_sn: 5,
                }),
                bhs(&[
                    (0, &[0x22, 0x80, 1]),
                    (16, &[0, 0, 0, 2]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                    (32, &[0, 0, 0, 5]),
                ]),
            ),
            (
                Header::TextResponse(TextResponse {
                    final_pdu: false,
                    continue_: true,
                    lun: [6; 8],
                    initiator_task_tag: 1,
                    target_transfer_tag: 2,
                    stat_sn: 3,
                    exp_cmd_sn: 4,
                    max_cmd_sn: 5,
                }),
                bhs(&[
                    (0, &[0x24, 0x40]),
                    (8, &[6; 8]),
                    (16, &[0, 0, 0, 1]),
                    (20, &[0, 0, 0, 2]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                    (32, &[0, 0, 0, 5]),
                ]),
            ),
            (
                Header::LogoutResponse(LogoutResponse {
                    response: 2,
                    initiator_task_tag: 1,
                    stat_sn: 3,
                    exp_cmd_sn: 4,
                    max_cmd_sn: 5,
                    time2wait: 0x0102,
                    time2retain: 0x0304,
                }),
                bhs(&[
                    (0, &[0x26, 0x80, 2]),
                    (16, &[0, 0, 0, 1]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                    (32, &[0, 0, 0, 5]),
                    (40, &[1, 2, 3, 4]),
                ]),
            ),
            (
                Header::AsyncMessage(AsyncMessage {
                    lun: [7; 8],
                    stat_sn: 3,
                    exp_cmd_sn: 4,
                    max_cmd_sn: 5,
                    async_event: 1,
                    async_vcode: 9,
                    parameter1: 0x0a0b,
                    parameter2: 0x0c0d,
                    parameter3: 0x0e0f,
                }),
                bhs(&[
                    (0, &[0x32, 0x80]),
                    (8, &[7; 8]),
                    (16, &[0xff; 4]),
                    (24, &[0, 0, 0, 3]),
                    (28, &[0, 0, 0, 4]),
                    (32, &[0, 0, 0, 5]),
                    (36, &[1, 9, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]),
                ]),
            ),
        ];
        for (header, wire) in cases {
            assert_eq!(emit_vec(&header, 0), wire, "{:?}", header.opcode());
            assert_eq!(parse_one(&wire).unwrap(), header, "{:?}", header.opcode());
        }
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let clean = bhs(&[(0, &[0x20, 0x80]), (16, &[0, 0, 0, 1])]);
        let mut noisy = clean;
        noisy[0] |= 0xc0; // reserved bit and I bit on a target PDU
        noisy[1] = 0x7f; // flags other than F are reserved on NOP-In
        noisy[2] = 0xff;
        noisy[36..48].fill(0xff);
        assert_eq!(parse_one(&noisy).unwrap(), parse_one(&clean).unwrap());
    }

    #[test]
    fn unknown_opcodes_and_stray_ahs() {
        for raw in [0x07u8, 0x1c, 0x1e, 0x30, 0x3c] {
            let wire = bhs(&[(0, &[raw])]);
            assert_eq!(parse_one(&wire), Err(PduError::UnknownOpcode(raw)));
            assert_eq!(
                frame(&wire, Digests::default(), &Limits::default()),
                Err(PduError::UnknownOpcode(raw))
            );
        }
        let mut nop = bhs(&[(0, &[0x00, 0x80]), (4, &[1])]).to_vec();
        nop.extend_from_slice(&[0, 5, 2, 0]);
        assert!(matches!(
            parse_one(&nop),
            Err(PduError::BadAhs { ahs_type: 2, .. })
        ));
    }

    #[test]
    fn emit_checks_field_ranges_and_buffer() {
        let tmf = Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate: false,
            function: 0x80,
            lun: [0; 8],
            initiator_task_tag: 0,
            referenced_task_tag: 0,
            cmd_sn: 0,
            exp_stat_sn: 0,
            ref_cmd_sn: 0,
            exp_data_sn: 0,
        });
        let mut out = [0x55u8; 48];
        assert_eq!(
            tmf.emit(0, &mut out),
            Err(PduError::InvalidField {
                field: "Function",
                value: 0x80
            })
        );
        let nop = Header::NopIn(NopIn {
            lun: [0; 8],
            initiator_task_tag: 0,
            target_transfer_tag: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        });
        assert!(matches!(
            nop.emit(1 << 24, &mut out),
            Err(PduError::DataSegmentTooLong { .. })
        ));
        let mut small = [0x55u8; 47];
        assert_eq!(
            nop.emit(0, &mut small),
            Err(PduError::BufferTooSmall {
                needed: 48,
                got: 47
            })
        );
        assert!(small.iter().all(|&b| b == 0x55));
        assert!(out.iter().all(|&b| b == 0x55));
        let digests = Digests {
            header: true,
            data: false,
        };
        let mut fifty = [0x55u8; 50];
        assert_eq!(
            encode_header(&nop, 0, digests, &mut fifty),
            Err(PduError::BufferTooSmall {
                needed: 52,
                got: 50
            })
        );
        assert!(fifty.iter().all(|&b| b == 0x55));

        let mut pdu = vec![9u8];
        assert!(encode_pdu(&tmf, b"", Digests::default(), &mut pdu).is_err());
        assert_eq!(pdu, vec![9u8], "failed encode leaves the Vec as it was");
    }

    #[test]
    fn frame_checks_limits() {
        let mut wire = bhs(&[(0, &[0x25, 0x80]), (4, &[0, 0x00, 0x20, 0x01])]);
        let limits = Limits {
            max_data_segment_length: 8192,
            max_ahs_length: 1024,
        };
        assert_eq!(
            frame(&wire, Digests::default(), &limits),
            Err(PduError::DataSegmentTooLong {
                len: 8193,
                max: 8192
            })
        );
        wire[7] = 0x00; // 8192 bytes exactly
        let f = frame(
            &wire,
            Digests {
                header: true,
                data: true,
            },
            &limits,
        )
        .unwrap();
        assert_eq!(
            f,
            Frame {
                ahs_len: 0,
                header_digest_len: 4,
                data_len: 8192,
                pad_len: 0,
                data_digest_len: 4
            }
        );
        assert_eq!(f.total_len(), 48 + 4 + 8192 + 4);
        wire[4] = 2;
        let tight = Limits {
            max_ahs_length: 4,
            ..limits
        };
        assert_eq!(
            frame(&wire, Digests::default(), &tight),
            Err(PduError::AhsTooLong { len: 8, max: 4 })
        );
        assert_eq!(
            frame(&wire[..47], Digests::default(), &limits),
            Err(PduError::Truncated {
                needed: 48,
                got: 47
            })
        );
        // No data, no data digest, even when negotiated.
        let empty = bhs(&[(0, &[0x20, 0x80])]);
        let f = frame(
            &empty,
            Digests {
                header: false,
                data: true,
            },
            &limits,
        )
        .unwrap();
        assert_eq!(f.data_digest_len, 0);
        assert_eq!(f.total_len(), 48);
        assert_eq!(Limits::login().max_data_segment_length, 8192);
    }

    #[test]
    fn decode_waits_verifies_and_pads() {
        let header = Header::TextResponse(TextResponse {
            final_pdu: true,
            continue_: false,
            lun: [0; 8],
            initiator_task_tag: 5,
            target_transfer_tag: RESERVED_TAG,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
        });
        let data = b"TargetName=iqn.x\0"; // 17 bytes: 3 bytes of padding
        let digests = Digests {
            header: true,
            data: true,
        };
        let mut pdu = Vec::new();
        encode_pdu(&header, data, digests, &mut pdu).unwrap();
        assert_eq!(pdu.len(), 48 + 4 + 17 + 3 + 4);
        assert_eq!(&pdu[69..72], &[0, 0, 0]);
        let crc = digest::crc32c(&pdu[52..72]);
        assert_eq!(&pdu[72..], &crc.to_le_bytes());
        assert_eq!(
            data_trailer(data, digests),
            ([0, 0, 0, pdu[72], pdu[73], pdu[74], pdu[75], 0], 7)
        );

        let limits = Limits::login();
        for cut in 0..pdu.len() {
            assert_eq!(
                decode_pdu(&pdu[..cut], digests, &limits),
                Ok(None),
                "cut at {cut}"
            );
        }
        pdu.extend_from_slice(&[0xab; 10]); // the start of the next PDU
        let d = decode_pdu(&pdu, digests, &limits).unwrap().unwrap();
        assert_eq!(d.header, header);
        assert_eq!(&pdu[d.data.clone()], data);
        assert_eq!(d.consumed, 76);

        let mut bad = pdu.clone();
        bad[20] ^= 1;
        assert!(matches!(
            decode_pdu(&bad, digests, &limits),
            Err(PduError::HeaderDigestMismatch { .. })
        ));
        // The header digest is checked as soon as the header is in, before the data.
        assert!(decode_pdu(&bad[..52], digests, &limits).is_err());
        let mut bad = pdu.clone();
        bad[70] = 1; // a padding byte: covered by the data digest
        assert!(matches!(
            decode_pdu(&bad, digests, &limits),
            Err(PduError::DataDigestMismatch { .. })
        ));
    }

    #[test]
    fn scsi_response_data_segment() {
        assert_eq!(split_scsi_response_data(&[]), Ok((&[][..], &[][..])));
        let seg = [0, 3, 0x70, 0, 5, 0xee];
        assert_eq!(
            split_scsi_response_data(&seg),
            Ok((&[0x70, 0, 5][..], &[0xee][..]))
        );
        assert_eq!(
            split_scsi_response_data(&[0]),
            Err(PduError::Truncated { needed: 2, got: 1 })
        );
        assert_eq!(
            split_scsi_response_data(&[0, 4, 1, 2]),
            Err(PduError::SenseLengthTooLong {
                sense_length: 4,
                available: 2
            })
        );
        let mut out = Vec::new();
        encode_scsi_response_data(&[0x70, 0, 5], &[0xee], &mut out).unwrap();
        assert_eq!(out, seg);
    }
}
