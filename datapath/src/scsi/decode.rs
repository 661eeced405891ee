//! Decoders for the parameter data of INQUIRY, REPORT LUNS and READ CAPACITY.
//!
//! - Standard INQUIRY data: SPC-4 6.6.2.
//! - Vital product data pages (SPC-4 7.8): Supported VPD Pages (0x00), Unit Serial Number
//!   (0x80), Device Identification (0x83, SPC-4 7.8.6, with the designator formats of
//!   7.8.6.2 onwards); Block Limits (0xB0) from SBC-3/SBC-4 6.6.
//! - REPORT LUNS parameter data: SPC-4, REPORT LUNS command.
//! - READ CAPACITY(10) and READ CAPACITY(16) parameter data: SBC-3/SBC-4.
//!
//! Every decoder takes the bytes the target returned (the Data-In payload) and never
//! panics. The truncation policy is the module's (see [`super`]): missing header bytes
//! are [`ScsiError::Truncated`]; a response cut short of its own announced length decodes
//! what fits and says `truncated: true`, with `full_length` telling the allocation length
//! that would have fetched all of it. Bytes beyond the announced length are ignored.

use std::fmt;

use super::bytes::{bytes_at, require, slice_at, u16_at, u32_at, u64_at, u8_at};
use super::lun::Lun;
use super::ScsiError;

/// An ASCII field (SPC-4 4.4.1: printable, left-aligned, space-padded): padding spaces and
/// NULs trimmed at both ends; a byte outside printable ASCII becomes U+FFFD rather than
/// letting control characters reach a terminal.
fn ascii_text(bytes: &[u8]) -> String {
    let trimmed = trim_padding(bytes);
    trimmed
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                char::REPLACEMENT_CHARACTER
            }
        })
        .collect()
}

/// A UTF-8 field, which SPC-4 null-terminates and null-pads (SCSI name strings): cut at
/// the first NUL, invalid sequences replaced, control characters replaced.
fn utf8_text(bytes: &[u8]) -> String {
    let until_nul = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(trim_padding(until_nul))
        .chars()
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

fn trim_padding(bytes: &[u8]) -> &[u8] {
    let is_pad = |b: &u8| *b == b' ' || *b == 0;
    let start = bytes.iter().position(|b| !is_pad(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_pad(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or(&[])
}

/// Lower-case hex without separators, as `naa.` and `eui.` names are written.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

// ---------------------------------------------------------------------------------------
// Names for the codes that appear in INQUIRY data.

/// PERIPHERAL DEVICE TYPE names, SPC-4 6.6.2 (table "Peripheral device type").
pub fn device_type_name(device_type: u8) -> &'static str {
    match device_type & 0x1f {
        0x00 => "direct access block device",
        0x01 => "sequential access device",
        0x02 => "printer device",
        0x03 => "processor device",
        0x04 => "write-once device",
        0x05 => "CD/DVD device",
        0x06 => "scanner device",
        0x07 => "optical memory device",
        0x08 => "media changer device",
        0x09 => "communications device",
        0x0a | 0x0b => "obsolete",
        0x0c => "storage array controller device",
        0x0d => "enclosure services device",
        0x0e => "simplified direct-access device",
        0x0f => "optical card reader/writer device",
        0x10 => "bridge controller commands",
        0x11 => "object-based storage device",
        0x12 => "automation/drive interface",
        0x13 => "security manager device",
        0x14 => "host managed zoned block device",
        0x1e => "well known logical unit",
        0x1f => "unknown or no device type",
        _ => "reserved",
    }
}

/// PERIPHERAL QUALIFIER meanings, SPC-4 6.6.2.
pub fn peripheral_qualifier_name(qualifier: u8) -> &'static str {
    match qualifier & 0x07 {
        0 => "connected",
        1 => "supported, not connected",
        2 => "reserved",
        3 => "not supported",
        _ => "vendor specific",
    }
}

/// VERSION: the standard the device claims to conform to.
pub fn version_name(version: u8) -> &'static str {
    match version {
        0x00 => "no standard claimed",
        0x03 => "SPC",
        0x04 => "SPC-2",
        0x05 => "SPC-3",
        0x06 => "SPC-4",
        0x07 => "SPC-5",
        _ => "unknown",
    }
}

/// TPGS: which kind of asymmetric logical unit access the device supports.
pub fn tpgs_name(tpgs: u8) -> &'static str {
    match tpgs & 0x03 {
        0 => "not supported",
        1 => "implicit",
        2 => "explicit",
        _ => "implicit and explicit",
    }
}

/// VPD page names, SPC-4 7.8 and SBC-3/SBC-4 6.6.
pub fn vpd_page_name(page_code: u8) -> &'static str {
    match page_code {
        0x00 => "Supported VPD Pages",
        0x80 => "Unit Serial Number",
        0x83 => "Device Identification",
        0x84 => "Software Interface Identification",
        0x85 => "Management Network Addresses",
        0x86 => "Extended INQUIRY Data",
        0x87 => "Mode Page Policy",
        0x88 => "SCSI Ports",
        0x89 => "ATA Information",
        0x8a => "Power Condition",
        0x8b => "Device Constituents",
        0x8c => "CFA Profile Information",
        0x8d => "Power Consumption",
        0x8f => "Third-party Copy",
        0x90 => "Protocol Specific Logical Unit Information",
        0x91 => "Protocol Specific Port Information",
        0x92 => "SCSI Feature Sets",
        0xb0 => "Block Limits",
        0xb1 => "Block Device Characteristics",
        0xb2 => "Logical Block Provisioning",
        0xb3 => "Referrals",
        0xb4 => "Supported Block Lengths and Protection Types",
        0xb5 => "Block Device Characteristics Extension",
        0xb6 => "Zoned Block Device Characteristics",
        0xb7 => "Block Limits Extension",
        0xc0..=0xff => "vendor specific",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------
// Standard INQUIRY data, SPC-4 6.6.2.

/// Standard INQUIRY data. Needs the 5-byte header (through ADDITIONAL LENGTH); flags and
/// strings past the end of a short response read as zero / empty with `truncated` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// PERIPHERAL QUALIFIER (byte 0 bits 7-5): 0 connected, 1 not connected, 3 no LU.
    pub peripheral_qualifier: u8,
    /// PERIPHERAL DEVICE TYPE (byte 0 bits 4-0); see [`device_type_name`].
    pub device_type: u8,
    /// RMB: removable medium.
    pub removable: bool,
    /// LU_CONG (SPC-5): the logical unit is a conglomerate.
    pub lu_cong: bool,
    /// VERSION; see [`version_name`].
    pub version: u8,
    /// NORMACA: the NACA bit in the CONTROL byte is supported.
    pub norm_aca: bool,
    /// HISUP: hierarchical LUN addressing supported.
    pub hisup: bool,
    /// RESPONSE DATA FORMAT: 2 for every current device.
    pub response_data_format: u8,
    /// SCCS: embedded storage array controller.
    pub sccs: bool,
    /// ACC: access controls coordinator.
    pub acc: bool,
    /// TPGS: asymmetric logical unit access; see [`tpgs_name`].
    pub tpgs: u8,
    /// 3PC: third-party copy commands supported.
    pub third_party_copy: bool,
    /// PROTECT: protection information supported.
    pub protect: bool,
    /// ENCSERV: embedded enclosure services.
    pub enc_serv: bool,
    /// MULTIP: multi-port device.
    pub multi_port: bool,
    /// CMDQUE: command queuing (a full task set) supported.
    pub cmd_que: bool,
    /// T10 VENDOR IDENTIFICATION (bytes 8-15), trimmed.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION (bytes 16-31), trimmed.
    pub product: String,
    /// PRODUCT REVISION LEVEL (bytes 32-35), trimmed.
    pub revision: String,
    /// ADDITIONAL LENGTH + 5: the whole standard data the target has.
    pub full_length: usize,
    /// The response ended before `full_length`.
    pub truncated: bool,
}

impl StandardInquiry {
    const HEADER: usize = 5;

    pub fn decode(data: &[u8]) -> Result<StandardInquiry, ScsiError> {
        require("standard INQUIRY data", data, Self::HEADER)?;
        let full_length = Self::HEADER + usize::from(u8_at(data, 4));
        let present = slice_at(data, 0, full_length);
        let b0 = u8_at(present, 0);
        let b1 = u8_at(present, 1);
        let b3 = u8_at(present, 3);
        let b5 = u8_at(present, 5);
        let b6 = u8_at(present, 6);
        let b7 = u8_at(present, 7);
        Ok(StandardInquiry {
            peripheral_qualifier: b0 >> 5,
            device_type: b0 & 0x1f,
            removable: b1 & 0x80 != 0,
            lu_cong: b1 & 0x40 != 0,
            version: u8_at(present, 2),
            norm_aca: b3 & 0x20 != 0,
            hisup: b3 & 0x10 != 0,
            response_data_format: b3 & 0x0f,
            sccs: b5 & 0x80 != 0,
            acc: b5 & 0x40 != 0,
            tpgs: (b5 >> 4) & 0x03,
            third_party_copy: b5 & 0x08 != 0,
            protect: b5 & 0x01 != 0,
            enc_serv: b6 & 0x40 != 0,
            multi_port: b6 & 0x10 != 0,
            cmd_que: b7 & 0x02 != 0,
            vendor: ascii_text(slice_at(present, 8, 16)),
            product: ascii_text(slice_at(present, 16, 32)),
            revision: ascii_text(slice_at(present, 32, 36)),
            full_length,
            truncated: data.len() < full_length,
        })
    }

    pub fn device_type_name(&self) -> &'static str {
        device_type_name(self.device_type)
    }

    pub fn peripheral_qualifier_name(&self) -> &'static str {
        peripheral_qualifier_name(self.peripheral_qualifier)
    }

    pub fn version_name(&self) -> &'static str {
        version_name(self.version)
    }

    pub fn tpgs_name(&self) -> &'static str {
        tpgs_name(self.tpgs)
    }
}

// ---------------------------------------------------------------------------------------
// VPD pages, SPC-4 7.8.

/// The common 4-byte VPD header (SPC-4 7.8.1): qualifier/type, PAGE CODE, 16-bit PAGE
/// LENGTH. Older pages (0x00, 0x80) define byte 2 as reserved and byte 3 as the length;
/// reading bytes 2-3 as one field gives the same value because byte 2 is zero there.
struct VpdPage<'a> {
    /// The page up to its announced end or the end of the data, whichever comes first.
    /// Offsets into it are the spec's byte numbers.
    page: &'a [u8],
    full_length: usize,
    truncated: bool,
}

const VPD_HEADER: usize = 4;

fn vpd_page<'a>(
    data: &'a [u8],
    page_code: u8,
    what: &'static str,
) -> Result<VpdPage<'a>, ScsiError> {
    require(what, data, VPD_HEADER)?;
    let got = u8_at(data, 1);
    if got != page_code {
        return Err(ScsiError::WrongVpdPage {
            expected: page_code,
            got,
        });
    }
    let full_length = VPD_HEADER + usize::from(u16_at(data, 2));
    Ok(VpdPage {
        page: slice_at(data, 0, full_length),
        full_length,
        truncated: data.len() < full_length,
    })
}

/// VPD page 0x00: the page codes the device supports, in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedVpdPages {
    pub pages: Vec<u8>,
    pub full_length: usize,
    pub truncated: bool,
}

impl SupportedVpdPages {
    pub const PAGE_CODE: u8 = 0x00;

    pub fn decode(data: &[u8]) -> Result<SupportedVpdPages, ScsiError> {
        let vpd = vpd_page(data, Self::PAGE_CODE, "Supported VPD Pages page")?;
        Ok(SupportedVpdPages {
            pages: slice_at(vpd.page, VPD_HEADER, vpd.page.len()).to_vec(),
            full_length: vpd.full_length,
            truncated: vpd.truncated,
        })
    }

    pub fn supports(&self, page_code: u8) -> bool {
        self.pages.contains(&page_code)
    }
}

/// VPD page 0x80: PRODUCT SERIAL NUMBER, ASCII, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSerialNumber {
    pub serial: String,
    pub full_length: usize,
    pub truncated: bool,
}

impl UnitSerialNumber {
    pub const PAGE_CODE: u8 = 0x80;

    pub fn decode(data: &[u8]) -> Result<UnitSerialNumber, ScsiError> {
        let vpd = vpd_page(data, Self::PAGE_CODE, "Unit Serial Number page")?;
        Ok(UnitSerialNumber {
            serial: ascii_text(slice_at(vpd.page, VPD_HEADER, vpd.page.len())),
            full_length: vpd.full_length,
            truncated: vpd.truncated,
        })
    }
}

/// CODE SET values, SPC-4 7.8.6.1.
pub mod code_set {
    pub const BINARY: u8 = 0x1;
    pub const ASCII: u8 = 0x2;
    pub const UTF8: u8 = 0x3;
}

/// ASSOCIATION values, SPC-4 7.8.6.1.
pub mod association {
    pub const LOGICAL_UNIT: u8 = 0;
    pub const TARGET_PORT: u8 = 1;
    pub const TARGET_DEVICE: u8 = 2;
}

/// DESIGNATOR TYPE values, SPC-4 7.8.6.1 (0xA from SPC-5).
pub mod designator_type {
    pub const VENDOR_SPECIFIC: u8 = 0x0;
    pub const T10_VENDOR_ID: u8 = 0x1;
    pub const EUI64: u8 = 0x2;
    pub const NAA: u8 = 0x3;
    pub const RELATIVE_TARGET_PORT: u8 = 0x4;
    pub const TARGET_PORT_GROUP: u8 = 0x5;
    pub const LOGICAL_UNIT_GROUP: u8 = 0x6;
    pub const MD5_LOGICAL_UNIT: u8 = 0x7;
    pub const SCSI_NAME_STRING: u8 = 0x8;
    pub const PROTOCOL_SPECIFIC_PORT: u8 = 0x9;
    pub const UUID: u8 = 0xa;
}

pub fn code_set_name(code_set: u8) -> &'static str {
    match code_set & 0x0f {
        code_set::BINARY => "binary",
        code_set::ASCII => "ASCII",
        code_set::UTF8 => "UTF-8",
        _ => "reserved",
    }
}

pub fn association_name(association: u8) -> &'static str {
    match association & 0x03 {
        association::LOGICAL_UNIT => "logical unit",
        association::TARGET_PORT => "target port",
        association::TARGET_DEVICE => "target device",
        _ => "reserved",
    }
}

pub fn designator_type_name(designator_type: u8) -> &'static str {
    match designator_type & 0x0f {
        designator_type::VENDOR_SPECIFIC => "vendor specific",
        designator_type::T10_VENDOR_ID => "T10 vendor ID based",
        designator_type::EUI64 => "EUI-64 based",
        designator_type::NAA => "NAA",
        designator_type::RELATIVE_TARGET_PORT => "relative target port",
        designator_type::TARGET_PORT_GROUP => "target port group",
        designator_type::LOGICAL_UNIT_GROUP => "logical unit group",
        designator_type::MD5_LOGICAL_UNIT => "MD5 logical unit",
        designator_type::SCSI_NAME_STRING => "SCSI name string",
        designator_type::PROTOCOL_SPECIFIC_PORT => "protocol specific port",
        designator_type::UUID => "UUID",
        _ => "reserved",
    }
}

/// PROTOCOL IDENTIFIER names, SPC-4 7.6.1 (0xA-0xB from SPC-5).
pub fn protocol_name(protocol_identifier: u8) -> &'static str {
    match protocol_identifier & 0x0f {
        0x0 => "Fibre Channel",
        0x1 => "parallel SCSI",
        0x2 => "SSA",
        0x3 => "IEEE 1394",
        0x4 => "SCSI RDMA",
        0x5 => "iSCSI",
        0x6 => "SAS",
        0x7 => "ADT",
        0x8 => "ATA/ATAPI",
        0x9 => "UAS",
        0xa => "SCSI over PCI Express",
        0xb => "PCI Express",
        0xf => "no specific protocol",
        _ => "reserved",
    }
}

/// A designator's value, interpreted by its type and code set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesignatorValue {
    /// T10 vendor ID based, ASCII: the 8-byte vendor and the vendor specific rest.
    T10VendorId {
        vendor: String,
        identifier: String,
    },
    /// EUI-64 based (8, 12 or 16 bytes). Displays as `eui.<hex>`.
    Eui64(Vec<u8>),
    /// NAA (8 or 16 bytes; the first nibble is the NAA type). Displays as `naa.<hex>`.
    Naa(Vec<u8>),
    RelativeTargetPort(u16),
    TargetPortGroup(u16),
    LogicalUnitGroup(u16),
    /// SCSI name string (UTF-8), e.g. an iSCSI name with `,t,0x0001` appended for a port.
    ScsiName(String),
    /// Any other designator in the ASCII or UTF-8 code set.
    Text(String),
    /// Any other designator in the binary code set. Displays as `0x<hex>`.
    Binary(Vec<u8>),
}

impl DesignatorValue {
    fn interpret(designator_type: u8, code_set: u8, designator: &[u8]) -> DesignatorValue {
        let is_text = code_set == code_set::ASCII || code_set == code_set::UTF8;
        let text = || {
            if code_set == code_set::UTF8 {
                utf8_text(designator)
            } else {
                ascii_text(designator)
            }
        };
        // Relative port, port group and LU group: 4 bytes, the number in the last two.
        let number16 = || (designator.len() == 4).then(|| u16_at(designator, 2));
        match designator_type {
            designator_type::T10_VENDOR_ID if is_text => DesignatorValue::T10VendorId {
                vendor: ascii_text(slice_at(designator, 0, 8)),
                identifier: ascii_text(slice_at(designator, 8, designator.len())),
            },
            designator_type::EUI64 => DesignatorValue::Eui64(designator.to_vec()),
            designator_type::NAA => DesignatorValue::Naa(designator.to_vec()),
            designator_type::RELATIVE_TARGET_PORT => number16().map_or_else(
                || DesignatorValue::Binary(designator.to_vec()),
                DesignatorValue::RelativeTargetPort,
            ),
            designator_type::TARGET_PORT_GROUP => number16().map_or_else(
                || DesignatorValue::Binary(designator.to_vec()),
                DesignatorValue::TargetPortGroup,
            ),
            designator_type::LOGICAL_UNIT_GROUP => number16().map_or_else(
                || DesignatorValue::Binary(designator.to_vec()),
                DesignatorValue::LogicalUnitGroup,
            ),
            designator_type::SCSI_NAME_STRING => DesignatorValue::ScsiName(utf8_text(designator)),
            _ if is_text => DesignatorValue::Text(text()),
            _ => DesignatorValue::Binary(designator.to_vec()),
        }
    }
}

impl fmt::Display for DesignatorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DesignatorValue::T10VendorId { vendor, identifier } => {
                write!(f, "{vendor} {identifier}")
            }
            DesignatorValue::Eui64(bytes) => write!(f, "eui.{}", hex(bytes)),
            DesignatorValue::Naa(bytes) => write!(f, "naa.{}", hex(bytes)),
            DesignatorValue::RelativeTargetPort(n)
            | DesignatorValue::TargetPortGroup(n)
            | DesignatorValue::LogicalUnitGroup(n) => write!(f, "{n}"),
            DesignatorValue::ScsiName(text) | DesignatorValue::Text(text) => f.write_str(text),
            DesignatorValue::Binary(bytes) => write!(f, "0x{}", hex(bytes)),
        }
    }
}

/// One designation descriptor of the Device Identification page (SPC-4 7.8.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentificationDescriptor {
    /// PROTOCOL IDENTIFIER; meaningful only when [`Self::protocol`] says so.
    pub protocol_identifier: u8,
    /// CODE SET: 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// PIV: the protocol identifier is valid (for target port / device associations).
    pub piv: bool,
    /// ASSOCIATION: 0 logical unit, 1 target port, 2 target device.
    pub association: u8,
    pub designator_type: u8,
    /// The DESIGNATOR bytes as sent.
    pub designator: Vec<u8>,
    /// The designator interpreted by type and code set.
    pub value: DesignatorValue,
}

impl IdentificationDescriptor {
    pub fn code_set_name(&self) -> &'static str {
        code_set_name(self.code_set)
    }

    pub fn association_name(&self) -> &'static str {
        association_name(self.association)
    }

    pub fn designator_type_name(&self) -> &'static str {
        designator_type_name(self.designator_type)
    }

    /// The transport protocol this designator belongs to, when PIV is set and the
    /// association is a target port or target device (SPC-4 7.8.6.1).
    pub fn protocol(&self) -> Option<&'static str> {
        let applies = self.association == association::TARGET_PORT
            || self.association == association::TARGET_DEVICE;
        (self.piv && applies).then(|| protocol_name(self.protocol_identifier))
    }
}

/// VPD page 0x83: every designation descriptor, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentification {
    pub descriptors: Vec<IdentificationDescriptor>,
    pub full_length: usize,
    /// The page, or its last descriptor, was cut short; that descriptor is left out.
    pub truncated: bool,
}

impl DeviceIdentification {
    pub const PAGE_CODE: u8 = 0x83;
    const DESCRIPTOR_HEADER: usize = 4;

    pub fn decode(data: &[u8]) -> Result<DeviceIdentification, ScsiError> {
        let vpd = vpd_page(data, Self::PAGE_CODE, "Device Identification page")?;
        let mut descriptors = Vec::new();
        let mut truncated = vpd.truncated;
        let mut rest = slice_at(vpd.page, VPD_HEADER, vpd.page.len());
        // Bounded: each pass consumes at least the 4-byte descriptor header of a page
        // that is at most 65535 bytes long.
        while !rest.is_empty() {
            if rest.len() < Self::DESCRIPTOR_HEADER {
                truncated = true;
                break;
            }
            let end = Self::DESCRIPTOR_HEADER + usize::from(u8_at(rest, 3));
            if rest.len() < end {
                truncated = true;
                break;
            }
            let b0 = u8_at(rest, 0);
            let b1 = u8_at(rest, 1);
            let designator = slice_at(rest, Self::DESCRIPTOR_HEADER, end);
            let code_set = b0 & 0x0f;
            let designator_type = b1 & 0x0f;
            descriptors.push(IdentificationDescriptor {
                protocol_identifier: b0 >> 4,
                code_set,
                piv: b1 & 0x80 != 0,
                association: (b1 >> 4) & 0x03,
                designator_type,
                designator: designator.to_vec(),
                value: DesignatorValue::interpret(designator_type, code_set, designator),
            });
            rest = slice_at(rest, end, rest.len());
        }
        Ok(DeviceIdentification {
            descriptors,
            full_length: vpd.full_length,
            truncated,
        })
    }

    /// The descriptors that name the logical unit itself (association 0).
    pub fn logical_unit_designators(&self) -> impl Iterator<Item = &IdentificationDescriptor> {
        self.descriptors
            .iter()
            .filter(|d| d.association == association::LOGICAL_UNIT)
    }

    /// The target port group of the port that answered (a target port group designator
    /// with target port association), which REPORT TARGET PORT GROUPS gives a state.
    pub fn target_port_group(&self) -> Option<u16> {
        self.descriptors.iter().find_map(|d| match d.value {
            DesignatorValue::TargetPortGroup(id) if d.association == association::TARGET_PORT => {
                Some(id)
            }
            _ => None,
        })
    }

    /// The best name for the logical unit: NAA, then EUI-64, UUID, SCSI name string,
    /// T10 vendor ID, in that order (globally unique forms first).
    pub fn preferred_logical_unit_designator(&self) -> Option<&IdentificationDescriptor> {
        let rank = |d: &IdentificationDescriptor| match d.designator_type {
            designator_type::NAA => 0,
            designator_type::EUI64 => 1,
            designator_type::UUID => 2,
            designator_type::SCSI_NAME_STRING => 3,
            designator_type::T10_VENDOR_ID => 4,
            _ => 5,
        };
        self.logical_unit_designators().min_by_key(|d| rank(d))
    }
}

/// VPD page 0xB0, Block Limits (SBC-3/SBC-4 6.6). Lengths are in logical blocks; zero
/// means "no limit reported" (or, for the unmap fields, that UNMAP is not supported).
/// A device that returns the older 0x10-byte page (through OPTIMAL TRANSFER LENGTH) is not
/// truncated: the later fields are simply absent and read as zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLimits {
    /// WSNZ: WRITE SAME with NUMBER OF LOGICAL BLOCKS zero is refused.
    pub write_same_no_zero: bool,
    pub max_compare_and_write_length_blocks: u8,
    pub optimal_transfer_length_granularity_blocks: u16,
    pub max_transfer_length_blocks: u32,
    pub optimal_transfer_length_blocks: u32,
    /// MAXIMUM PREFETCH LENGTH (SBC-3 also used it for XDREAD/XDWRITE).
    pub max_prefetch_length_blocks: u32,
    pub max_unmap_lba_count: u32,
    pub max_unmap_block_descriptor_count: u32,
    pub optimal_unmap_granularity_blocks: u32,
    /// UGAVALID: `unmap_granularity_alignment_blocks` is meaningful.
    pub unmap_granularity_alignment_valid: bool,
    pub unmap_granularity_alignment_blocks: u32,
    pub max_write_same_length_blocks: u64,
    /// SBC-4 atomic write limits.
    pub max_atomic_transfer_length_blocks: u32,
    pub atomic_alignment_blocks: u32,
    pub atomic_transfer_length_granularity_blocks: u32,
    pub max_atomic_transfer_length_with_boundary_blocks: u32,
    pub max_atomic_boundary_size_blocks: u32,
    pub full_length: usize,
    pub truncated: bool,
}

impl BlockLimits {
    pub const PAGE_CODE: u8 = 0xb0;

    pub fn decode(data: &[u8]) -> Result<BlockLimits, ScsiError> {
        let vpd = vpd_page(data, Self::PAGE_CODE, "Block Limits page")?;
        let p = vpd.page;
        let alignment = u32_at(p, 32);
        Ok(BlockLimits {
            write_same_no_zero: u8_at(p, 4) & 0x01 != 0,
            max_compare_and_write_length_blocks: u8_at(p, 5),
            optimal_transfer_length_granularity_blocks: u16_at(p, 6),
            max_transfer_length_blocks: u32_at(p, 8),
            optimal_transfer_length_blocks: u32_at(p, 12),
            max_prefetch_length_blocks: u32_at(p, 16),
            max_unmap_lba_count: u32_at(p, 20),
            max_unmap_block_descriptor_count: u32_at(p, 24),
            optimal_unmap_granularity_blocks: u32_at(p, 28),
            unmap_granularity_alignment_valid: alignment & 0x8000_0000 != 0,
            unmap_granularity_alignment_blocks: alignment & 0x7fff_ffff,
            max_write_same_length_blocks: u64_at(p, 36),
            max_atomic_transfer_length_blocks: u32_at(p, 44),
            atomic_alignment_blocks: u32_at(p, 48),
            atomic_transfer_length_granularity_blocks: u32_at(p, 52),
            max_atomic_transfer_length_with_boundary_blocks: u32_at(p, 56),
            max_atomic_boundary_size_blocks: u32_at(p, 60),
            full_length: vpd.full_length,
            truncated: vpd.truncated,
        })
    }
}

// ---------------------------------------------------------------------------------------
// REPORT LUNS parameter data, SPC-4.

/// REPORT LUNS parameter data: the LUN list, bounded both by LUN LIST LENGTH and by the
/// bytes present (a partial last entry is dropped and counts as truncation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLuns {
    pub luns: Vec<Lun>,
    /// LUN LIST LENGTH + 8: the allocation length that fetches the whole list.
    pub full_length: usize,
    pub truncated: bool,
}

impl ReportLuns {
    const HEADER: usize = 8;
    const ENTRY: usize = 8;

    pub fn decode(data: &[u8]) -> Result<ReportLuns, ScsiError> {
        require("REPORT LUNS parameter data", data, Self::HEADER)?;
        let list_length = u32_at(data, 0) as usize;
        let full_length = Self::HEADER.saturating_add(list_length);
        let list = slice_at(data, Self::HEADER, full_length);
        let luns = list
            .chunks_exact(Self::ENTRY)
            .map(|entry| Lun::from_field(bytes_at(entry, 0)))
            .collect();
        Ok(ReportLuns {
            luns,
            full_length,
            truncated: data.len() < full_length || !list.len().is_multiple_of(Self::ENTRY),
        })
    }
}

// ---------------------------------------------------------------------------------------
// READ CAPACITY parameter data, SBC-3/SBC-4.

/// READ CAPACITY(10) parameter data (8 bytes, all required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCapacity10 {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA, or 0xFFFFFFFF when the capacity does
    /// not fit (then ask READ CAPACITY(16)).
    pub last_lba: u32,
    pub block_length_bytes: u32,
}

impl ReadCapacity10 {
    pub const LENGTH: usize = 8;

    pub fn decode(data: &[u8]) -> Result<ReadCapacity10, ScsiError> {
        require("READ CAPACITY(10) parameter data", data, Self::LENGTH)?;
        Ok(ReadCapacity10 {
            last_lba: u32_at(data, 0),
            block_length_bytes: u32_at(data, 4),
        })
    }

    /// The device is too large for this command: its answer is a placeholder.
    pub fn needs_read_capacity_16(&self) -> bool {
        self.last_lba == u32::MAX
    }

    pub fn block_count(&self) -> u64 {
        u64::from(self.last_lba) + 1
    }

    pub fn capacity_bytes(&self) -> u128 {
        u128::from(self.block_count()) * u128::from(self.block_length_bytes)
    }
}

/// READ CAPACITY(16) parameter data. The LBA and block length (12 bytes) are required;
/// the flag bytes 12-15 read as zero when absent, with `truncated` set when fewer than
/// the command's 32 bytes arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCapacity16 {
    pub last_lba: u64,
    pub block_length_bytes: u32,
    /// P_TYPE: with PROT_EN, protection type = P_TYPE + 1.
    pub p_type: u8,
    /// PROT_EN: protection information is enabled.
    pub prot_en: bool,
    /// P_I_EXPONENT: 2^n protection information intervals per logical block.
    pub p_i_exponent: u8,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: 2^n logical blocks per physical block.
    pub logical_blocks_per_physical_block_exponent: u8,
    /// LBPME: logical block provisioning management (thin provisioning) enabled.
    pub lbpme: bool,
    /// LBPRZ: unmapped blocks read as zeros.
    pub lbprz: bool,
    /// LOWEST ALIGNED LOGICAL BLOCK ADDRESS: first LBA at a physical block boundary.
    pub lowest_aligned_lba: u16,
    pub truncated: bool,
}

impl ReadCapacity16 {
    const REQUIRED: usize = 12;
    pub const LENGTH: usize = 32;

    pub fn decode(data: &[u8]) -> Result<ReadCapacity16, ScsiError> {
        require("READ CAPACITY(16) parameter data", data, Self::REQUIRED)?;
        let b12 = u8_at(data, 12);
        let b13 = u8_at(data, 13);
        Ok(ReadCapacity16 {
            last_lba: u64_at(data, 0),
            block_length_bytes: u32_at(data, 8),
            p_type: (b12 >> 1) & 0x07,
            prot_en: b12 & 0x01 != 0,
            p_i_exponent: b13 >> 4,
            logical_blocks_per_physical_block_exponent: b13 & 0x0f,
            lbpme: u8_at(data, 14) & 0x80 != 0,
            lbprz: u8_at(data, 14) & 0x40 != 0,
            lowest_aligned_lba: u16_at(data, 14) & 0x3fff,
            truncated: data.len() < Self::LENGTH,
        })
    }

    pub fn block_count(&self) -> u128 {
        u128::from(self.last_lba) + 1
    }

    pub fn capacity_bytes(&self) -> u128 {
        self.block_count() * u128::from(self.block_length_bytes)
    }

    /// Physical block length in bytes (logical block length times 2^exponent).
    pub fn physical_block_length_bytes(&self) -> u64 {
        u64::from(self.block_length_bytes) << self.logical_blocks_per_physical_block_exponent
    }

    /// The protection type (1, 2 or 3) when protection is enabled.
    pub fn protection_type(&self) -> Option<u8> {
        self.prot_en.then_some(self.p_type + 1)
    }
}

#[cfg(test)]
mod tests;
