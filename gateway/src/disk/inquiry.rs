//! INQUIRY (SPC-4 6.6): standard data (6.6.2) and the VPD pages (SPC-4 7.8, SBC-3 6.6).

use super::sense::Check;
use super::{be16, truncate, LogicalUnit, ScsiTask};
use super::{MAX_COMPARE_AND_WRITE_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS};

/// VPD page codes, in the order the Supported VPD Pages page lists them.
pub mod page {
    pub const SUPPORTED_VPD_PAGES: u8 = 0x00;
    pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
    pub const DEVICE_IDENTIFICATION: u8 = 0x83;
    pub const EXTENDED_INQUIRY_DATA: u8 = 0x86;
    pub const BLOCK_LIMITS: u8 = 0xb0;
    pub const BLOCK_DEVICE_CHARACTERISTICS: u8 = 0xb1;
    pub const LOGICAL_BLOCK_PROVISIONING: u8 = 0xb2;
    pub const THIRD_PARTY_COPY: u8 = super::super::xcopy::THIRD_PARTY_COPY_PAGE;
}

const SUPPORTED_PAGES: [u8; 8] = [
    page::SUPPORTED_VPD_PAGES,
    page::UNIT_SERIAL_NUMBER,
    page::DEVICE_IDENTIFICATION,
    page::EXTENDED_INQUIRY_DATA,
    page::THIRD_PARTY_COPY,
    page::BLOCK_LIMITS,
    page::BLOCK_DEVICE_CHARACTERISTICS,
    page::LOGICAL_BLOCK_PROVISIONING,
];

/// Length of the standard INQUIRY data: through the eight version descriptors.
const STANDARD_LENGTH: usize = 74;

/// Version descriptors (SPC-4 table 146): SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0960, 0x0460, 0x04c0];

/// Peripheral device type 0: direct-access block device.
const DIRECT_ACCESS: u8 = 0x00;

/// Designator header fields (SPC-4 7.8.6.1).
const CODE_SET_BINARY: u8 = 0x1;
const CODE_SET_ASCII: u8 = 0x2;
const CODE_SET_UTF8: u8 = 0x3;
const PROTOCOL_ISCSI: u8 = 0x5;
const ASSOCIATION_LU: u8 = 0x00;
const ASSOCIATION_TARGET_PORT: u8 = 0x10;
const PIV: u8 = 0x80;
const TYPE_T10_VENDOR: u8 = 0x1;
const TYPE_NAA: u8 = 0x3;
const TYPE_RELATIVE_PORT: u8 = 0x4;
const TYPE_PORT_GROUP: u8 = 0x5;
const TYPE_SCSI_NAME: u8 = 0x8;

/// Validates the INQUIRY CDB: EVPD clear means standard data, for which PAGE CODE must be
/// zero (SPC-4 6.6.1). Returns (evpd, page code, allocation length).
fn parse_cdb(cdb: &[u8]) -> Result<(bool, u8, usize), Check> {
    if cdb.len() < 6 {
        return Err(Check::invalid_cdb_field(0, None));
    }
    let evpd = cdb[1] & 0x01 != 0;
    if cdb[1] & 0xfe != 0 {
        // CMDDT (obsolete) or reserved bits.
        return Err(Check::invalid_cdb_field(1, Some(1)));
    }
    let page_code = cdb[2];
    if !evpd && page_code != 0 {
        return Err(Check::invalid_cdb_field(2, None));
    }
    Ok((evpd, page_code, usize::from(be16(cdb, 3))))
}

/// Copies `text` into a fixed-width ASCII field, padded with spaces; characters outside
/// printable ASCII become spaces (SPC-4 4.4.1).
fn ascii_field(out: &mut [u8], text: &str) {
    out.fill(b' ');
    for (slot, byte) in out.iter_mut().zip(text.bytes()) {
        if (0x20..=0x7e).contains(&byte) {
            *slot = byte;
        }
    }
}

fn standard_data(peripheral: u8, vendor: &str, product: &str, revision: &str) -> Vec<u8> {
    let mut data = vec![0u8; STANDARD_LENGTH];
    data[0] = peripheral;
    data[2] = 0x06; // VERSION: SPC-4
    data[3] = 0x12; // HISUP, RESPONSE DATA FORMAT 2
    data[4] = (STANDARD_LENGTH - 5) as u8;
    data[7] = 0x02; // CMDQUE
    ascii_field(&mut data[8..16], vendor);
    ascii_field(&mut data[16..32], product);
    ascii_field(&mut data[32..36], revision);
    for (index, descriptor) in VERSION_DESCRIPTORS.iter().enumerate() {
        let at = 58 + 2 * index;
        data[at..at + 2].copy_from_slice(&descriptor.to_be_bytes());
    }
    data
}

/// INQUIRY to a LUN that has no logical unit: standard data with peripheral qualifier
/// 011b ("not capable of supporting a device") and device type 1Fh; VPD pages are not
/// available there.
pub fn missing_lun_inquiry(cdb: &[u8]) -> Result<Vec<u8>, Check> {
    let (evpd, _, allocation_length) = parse_cdb(cdb)?;
    if evpd {
        return Err(Check::invalid_cdb_field(1, Some(0)));
    }
    let data = standard_data(0x7f, "IOURING ", "no such LUN", "0001");
    Ok(truncate(data, allocation_length))
}

/// A VPD page: header with the page code and the 16-bit PAGE LENGTH, then `body`.
fn vpd_page(page_code: u8, body: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(4 + body.len());
    data.push(DIRECT_ACCESS);
    data.push(page_code);
    data.extend_from_slice(&(body.len() as u16).to_be_bytes());
    data.extend_from_slice(body);
    data
}

fn designator(out: &mut Vec<u8>, protocol_and_code_set: u8, piv_assoc_type: u8, value: &[u8]) {
    out.push(protocol_and_code_set);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

impl LogicalUnit {
    pub(super) fn inquiry(&self, task: &ScsiTask) -> Result<Vec<u8>, Check> {
        let (evpd, page_code, allocation_length) = parse_cdb(task.cdb)?;
        let config = &self.config;
        let data = if !evpd {
            let mut data = standard_data(
                DIRECT_ACCESS,
                &config.vendor,
                &config.product,
                &config.revision,
            );
            data[5] |= 0x08; // 3PC: EXTENDED COPY is supported
            if config.role.lu_cong() {
                data[1] |= 0x40; // LU_CONG (SPC-5 6.7.2)
            }
            // TPGS 01b: implicit ALUA; the target port answers REPORT TARGET PORT GROUPS
            // (`crate::portal::alua`, ahead of the unit).
            data[5] |= 0x10;
            data
        } else {
            match page_code {
                page::SUPPORTED_VPD_PAGES => vpd_page(page_code, &SUPPORTED_PAGES),
                page::UNIT_SERIAL_NUMBER => {
                    let mut serial = vec![0u8; config.serial.len().min(252)];
                    ascii_field(&mut serial, &config.serial);
                    vpd_page(page_code, &serial)
                }
                page::DEVICE_IDENTIFICATION => {
                    vpd_page(page_code, &self.device_identification(task))
                }
                page::EXTENDED_INQUIRY_DATA => vpd_page(
                    page_code,
                    &super::conglomerate::extended_inquiry_body(config.role),
                ),
                page::BLOCK_LIMITS => vpd_page(page_code, &self.block_limits()),
                page::BLOCK_DEVICE_CHARACTERISTICS => {
                    let mut body = [0u8; 0x3c];
                    body[1] = 0x01; // MEDIUM ROTATION RATE: non-rotating medium
                    body[3] = 0x40; // WABEREQ 01b: reads after a BLOCK ERASE succeed (zeros)
                    vpd_page(page_code, &body)
                }
                page::LOGICAL_BLOCK_PROVISIONING => vpd_page(page_code, &self.provisioning()),
                page::THIRD_PARTY_COPY => {
                    vpd_page(page_code, &super::xcopy::third_party_copy_page())
                }
                _ => return Err(Check::invalid_cdb_field(2, None)),
            }
        };
        Ok(truncate(data, allocation_length))
    }

    /// Device Identification (SPC-4 7.8.6): the logical unit's NAA and T10 vendor ID
    /// designators, then the target port's relative port, port group and SCSI name.
    fn device_identification(&self, task: &ScsiTask) -> Vec<u8> {
        let config = &self.config;
        let port = &task.target_port;
        let mut body = Vec::with_capacity(128);
        designator(
            &mut body,
            CODE_SET_BINARY,
            ASSOCIATION_LU | TYPE_NAA,
            &config.naa_id,
        );

        let mut t10 = vec![0u8; 8];
        ascii_field(&mut t10, &config.vendor);
        let serial: String = config.serial.chars().take(64).collect();
        let mut identifier = vec![0u8; serial.len()];
        ascii_field(&mut identifier, &serial);
        t10.extend_from_slice(&identifier);
        designator(
            &mut body,
            CODE_SET_ASCII,
            ASSOCIATION_LU | TYPE_T10_VENDOR,
            &t10,
        );

        let port_header = PROTOCOL_ISCSI << 4 | CODE_SET_BINARY;
        let mut relative = [0u8; 4];
        relative[2..].copy_from_slice(&port.relative_port_id.to_be_bytes());
        designator(
            &mut body,
            port_header,
            PIV | ASSOCIATION_TARGET_PORT | TYPE_RELATIVE_PORT,
            &relative,
        );
        let mut group = [0u8; 4];
        group[2..].copy_from_slice(&port.target_port_group.to_be_bytes());
        designator(
            &mut body,
            port_header,
            PIV | ASSOCIATION_TARGET_PORT | TYPE_PORT_GROUP,
            &group,
        );

        if !port.target_name.is_empty() {
            // SCSI name string (SPC-4 7.8.6.11): UTF-8, null terminated, padded with nulls
            // to a multiple of four bytes, at most 256 bytes.
            let mut name = format!("{},t,0x{:04x}", port.target_name, port.tpgt).into_bytes();
            name.truncate(251);
            name.push(0);
            while name.len() % 4 != 0 {
                name.push(0);
            }
            designator(
                &mut body,
                PROTOCOL_ISCSI << 4 | CODE_SET_UTF8,
                PIV | ASSOCIATION_TARGET_PORT | TYPE_SCSI_NAME,
                &name,
            );
        }
        body
    }

    /// Block Limits (SBC-3 6.6.3), page length 0x3C.
    fn block_limits(&self) -> Vec<u8> {
        let thin = self.thin();
        let mut body = vec![0u8; 0x3c];
        body[0] = 0x01; // WSNZ: WRITE SAME with zero blocks is refused
        body[1] = MAX_COMPARE_AND_WRITE_BLOCKS;
        body[2..4].copy_from_slice(&1u16.to_be_bytes()); // OPTIMAL TRANSFER LENGTH GRANULARITY
        let max_transfer = self.max_transfer_blocks();
        body[4..8].copy_from_slice(&max_transfer.to_be_bytes());
        body[8..12].copy_from_slice(&max_transfer.to_be_bytes()); // OPTIMAL TRANSFER LENGTH
        body[12..16].copy_from_slice(&max_transfer.to_be_bytes()); // MAXIMUM PREFETCH LENGTH
        if thin {
            body[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
            body[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
            body[24..28].copy_from_slice(&1u32.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
        }
        body[32..40].copy_from_slice(&self.max_write_same_blocks().to_be_bytes());
        // MAXIMUM ATOMIC TRANSFER LENGTH (WRITE ATOMIC(16)); no alignment or granularity.
        body[40..44].copy_from_slice(&max_transfer.to_be_bytes());
        body
    }

    /// Logical Block Provisioning (SBC-3 6.6.4): UNMAP and WRITE SAME(10/16) with UNMAP,
    /// unmapped blocks read as zeros, thin provisioned. Without thin provisioning every
    /// bit is clear (full provisioning).
    fn provisioning(&self) -> Vec<u8> {
        let mut body = vec![0u8; 4];
        if self.thin() {
            body[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ
            body[2] = 0x02; // PROVISIONING TYPE: thin
        }
        body
    }
}
