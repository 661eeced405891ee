//! Command descriptor blocks for the commands an initiator needs to find and use a disk.
//!
//! Layouts: SPC-4/SPC-5 clause 6 (TEST UNIT READY, REQUEST SENSE, INQUIRY, REPORT LUNS)
//! and SBC-3/SBC-4 clause 5 (READ CAPACITY(10), READ(10), WRITE(10), SYNCHRONIZE
//! CACHE(10), READ(16), WRITE(16), SYNCHRONIZE CACHE(16), and READ CAPACITY(16), which is
//! service action 0x10 of SERVICE ACTION IN(16)). Every multi-byte field is big-endian.
//! The CONTROL byte (the last byte) is always zero: no NACA, no linked commands.
//!
//! A [`Cdb`] lives in a fixed 16-byte array, so building one for READ/WRITE allocates
//! nothing; it carries the data direction and length the iSCSI SCSI Command PDU needs
//! (R/W flags and Expected Data Transfer Length, RFC 7143 11.3).

use super::ScsiError;

/// Operation codes (SPC-4, SBC-3), in opcode order: the one list the initiator's builders,
/// the gateway's device server, `iscsi-bench` and the tests use.
pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const SANITIZE: u8 = 0x48;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const WRITE_ATOMIC_16: u8 = 0x9c;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;
}

/// Service actions of SERVICE ACTION IN(16) (SBC-3 5.15, 5.7) and MAINTENANCE IN
/// (SPC-4 6.35), in the low five bits of CDB byte 1.
pub mod service_action {
    /// MAINTENANCE IN service actions.
    pub const REPORT_TARGET_PORT_GROUPS: u8 = 0x0a;
    pub const REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0c;
    pub const READ_CAPACITY_16: u8 = 0x10;
    pub const GET_LBA_STATUS: u8 = 0x12;
}

/// The 36 bytes of standard INQUIRY data every target must return (SPC-4 6.6.2).
pub const INQUIRY_STANDARD_LENGTH: u16 = 36;
/// The READ CAPACITY(16) parameter data length.
pub const READ_CAPACITY_16_LENGTH: u32 = 32;
/// The READ CAPACITY(10) parameter data length.
pub const READ_CAPACITY_10_LENGTH: u32 = 8;
/// REPORT LUNS: SPC-4 requires an allocation length of at least 16.
pub const REPORT_LUNS_MIN_ALLOCATION: u32 = 16;
/// Fixed format sense data with no additional bytes beyond the standard 18.
pub const SENSE_FIXED_LENGTH: u8 = 18;

/// REPORT LUNS SELECT REPORT values (SPC-4 6.33).
pub mod select_report {
    /// Logical units of the addressed target, well-known logical units excluded.
    pub const DEFAULT: u8 = 0x00;
    /// Well-known logical units only.
    pub const WELL_KNOWN_ONLY: u8 = 0x01;
    /// All logical units, well-known ones included.
    pub const ALL: u8 = 0x02;
}

/// Which way data moves and how many bytes the command expects to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data phase (TEST UNIT READY, SYNCHRONIZE CACHE).
    None,
    /// Target to initiator, up to this many bytes (iSCSI R bit).
    Read(u32),
    /// Initiator to target, this many bytes (iSCSI W bit).
    Write(u32),
}

impl DataDirection {
    /// The iSCSI Expected Data Transfer Length.
    pub fn transfer_length(self) -> u32 {
        match self {
            DataDirection::None => 0,
            DataDirection::Read(n) | DataDirection::Write(n) => n,
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, DataDirection::Read(_))
    }

    pub fn is_write(self) -> bool {
        matches!(self, DataDirection::Write(_))
    }
}

/// The longest CDB iSCSI carries: 16 bytes in the BHS and up to 244 more in an Extended
/// CDB AHS (RFC 7143 11.3.5; SPC-4 4.2.2 variable-length CDBs).
pub const MAX_CDB_LEN: usize = 16 + 244;

/// The CDB bytes the iSCSI BHS holds (RFC 7143 11.3.5).
pub const BHS_CDB_LEN: usize = 16;

/// A CDB (1 to 260 bytes) with its data direction: the one CDB value that requests,
/// sessions and PDUs carry.
///
/// The first 16 bytes live inline, zero-padded (the form the BHS carries), so the
/// builders and every command of 16 bytes or fewer allocate nothing. A longer CDB keeps
/// its whole bytes on the heap as well (`long`, a thin pointer so that every request
/// stays small); the bytes past 16 travel in an Extended CDB AHS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cdb {
    bytes: [u8; BHS_CDB_LEN],
    len: u16,
    /// Set only for CDBs over 16 bytes: the whole CDB in its first `len` bytes (the first
    /// 16 also in `bytes`), the rest zero.
    long: Option<Box<[u8; MAX_CDB_LEN]>>,
    direction: DataDirection,
}

impl Cdb {
    fn new(len: u8, direction: DataDirection) -> Cdb {
        Cdb {
            bytes: [0; BHS_CDB_LEN],
            len: u16::from(len),
            long: None,
            direction,
        }
    }

    /// A CDB from raw bytes (a vendor command, or one taken from the wire), 1 to 260
    /// bytes, with the data phase the caller knows it has.
    pub fn from_bytes(bytes: &[u8], direction: DataDirection) -> Result<Cdb, ScsiError> {
        if bytes.is_empty() || bytes.len() > MAX_CDB_LEN {
            return Err(ScsiError::CdbLength(bytes.len()));
        }
        let head = bytes.len().min(BHS_CDB_LEN);
        let mut cdb = Cdb {
            bytes: [0; BHS_CDB_LEN],
            // At most 260: fits.
            len: bytes.len() as u16,
            long: (bytes.len() > BHS_CDB_LEN).then(|| {
                let mut long = Box::new([0u8; MAX_CDB_LEN]);
                long[..bytes.len()].copy_from_slice(bytes);
                long
            }),
            direction,
        };
        cdb.bytes[..head].copy_from_slice(&bytes[..head]);
        Ok(cdb)
    }

    /// A CDB of at most 16 bytes for builders in sibling modules (longer input is cut
    /// to 16: builders pass fixed arrays).
    pub(super) fn from_parts(bytes: &[u8], direction: DataDirection) -> Cdb {
        let mut cdb = Cdb::new(bytes.len().min(BHS_CDB_LEN) as u8, direction);
        let len = usize::from(cdb.len);
        cdb.bytes[..len].copy_from_slice(&bytes[..len]);
        cdb
    }

    /// A CDB as an iSCSI SCSI Command carries it: the BHS's 16 bytes (a shorter CDB
    /// arrives zero-padded, so it reads as 16 bytes) and the Extended CDB AHS's `tail`.
    pub fn from_wire(
        head: [u8; BHS_CDB_LEN],
        tail: &[u8],
        direction: DataDirection,
    ) -> Result<Cdb, ScsiError> {
        let len = BHS_CDB_LEN + tail.len();
        if len > MAX_CDB_LEN {
            return Err(ScsiError::CdbLength(len));
        }
        let long = (!tail.is_empty()).then(|| {
            let mut whole = Box::new([0u8; MAX_CDB_LEN]);
            whole[..BHS_CDB_LEN].copy_from_slice(&head);
            whole[BHS_CDB_LEN..len].copy_from_slice(tail);
            whole
        });
        Ok(Cdb {
            bytes: head,
            // At most 260: fits.
            len: len as u16,
            long,
            direction,
        })
    }

    /// The CDB as a SCSI Command PDU carries and parses it: at least the BHS's 16 bytes
    /// (a shorter CDB zero-padded), so a header built from it equals the header parsed
    /// back from the wire. Allocates nothing.
    pub fn into_wire_form(mut self) -> Cdb {
        self.len = self.len.max(BHS_CDB_LEN as u16);
        self
    }

    /// The CDB bytes, exactly as long as the command's CDB.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.long {
            Some(long) => &long[..usize::from(self.len)],
            None => &self.bytes[..usize::from(self.len)],
        }
    }

    /// The first 16 bytes, zero-padded: the form the iSCSI BHS carries (RFC 7143 11.3.5).
    pub fn padded(&self) -> [u8; BHS_CDB_LEN] {
        self.bytes
    }

    /// The bytes past the BHS's 16 (the Extended CDB AHS's content); empty for most CDBs.
    pub fn extended(&self) -> &[u8] {
        let len = usize::from(self.len);
        self.long
            .as_deref()
            .map_or(&[], |long| &long[BHS_CDB_LEN..len])
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never true: every CDB has at least its operation code. Present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }

    pub fn direction(&self) -> DataDirection {
        self.direction
    }

    /// TEST UNIT READY (SPC-4): 6 bytes, no data.
    pub fn test_unit_ready() -> Cdb {
        let mut cdb = Cdb::new(6, DataDirection::None);
        cdb.bytes[0] = opcode::TEST_UNIT_READY;
        cdb
    }

    /// REQUEST SENSE (SPC-4): asks for `allocation_length` bytes of sense data, in
    /// descriptor format when `descriptor_format` (the DESC bit) is set.
    pub fn request_sense(allocation_length: u8, descriptor_format: bool) -> Cdb {
        let mut cdb = Cdb::new(6, DataDirection::Read(u32::from(allocation_length)));
        cdb.bytes[0] = opcode::REQUEST_SENSE;
        cdb.bytes[1] = u8::from(descriptor_format);
        cdb.bytes[4] = allocation_length;
        cdb
    }

    /// INQUIRY for standard data (EVPD 0, page code 0), SPC-4 6.6.1.
    pub fn inquiry(allocation_length: u16) -> Cdb {
        Cdb::inquiry_with(false, 0, allocation_length)
    }

    /// INQUIRY for a vital product data page (EVPD 1), SPC-4 6.6.1.
    pub fn inquiry_vpd(page_code: u8, allocation_length: u16) -> Cdb {
        Cdb::inquiry_with(true, page_code, allocation_length)
    }

    fn inquiry_with(evpd: bool, page_code: u8, allocation_length: u16) -> Cdb {
        let mut cdb = Cdb::new(6, DataDirection::Read(u32::from(allocation_length)));
        cdb.bytes[0] = opcode::INQUIRY;
        cdb.bytes[1] = u8::from(evpd);
        cdb.bytes[2] = page_code;
        cdb.bytes[3..5].copy_from_slice(&allocation_length.to_be_bytes());
        cdb
    }

    /// REPORT LUNS (SPC-4): 12 bytes; `select_report` is one of [`select_report`].
    /// SPC-4 makes an allocation length below 16 an error at the target; it is sent as
    /// given so that a caller can test exactly that.
    pub fn report_luns(select_report: u8, allocation_length: u32) -> Cdb {
        let mut cdb = Cdb::new(12, DataDirection::Read(allocation_length));
        cdb.bytes[0] = opcode::REPORT_LUNS;
        cdb.bytes[2] = select_report;
        cdb.bytes[6..10].copy_from_slice(&allocation_length.to_be_bytes());
        cdb
    }

    /// REPORT TARGET PORT GROUPS (SPC-4 6.36): MAINTENANCE IN with service action 0x0a,
    /// length-only header format.
    pub fn report_target_port_groups(allocation_length: u32) -> Cdb {
        let mut cdb = Cdb::new(12, DataDirection::Read(allocation_length));
        cdb.bytes[..12].copy_from_slice(&super::alua::report_target_port_groups_cdb(
            allocation_length,
            false,
        ));
        cdb
    }

    /// READ CAPACITY(10) (SBC-3): 10 bytes, 8 bytes of data back. LBA and PMI zero.
    pub fn read_capacity_10() -> Cdb {
        let mut cdb = Cdb::new(10, DataDirection::Read(READ_CAPACITY_10_LENGTH));
        cdb.bytes[0] = opcode::READ_CAPACITY_10;
        cdb
    }

    /// READ CAPACITY(16) (SBC-3): SERVICE ACTION IN(16) with service action 0x10.
    /// [`READ_CAPACITY_16_LENGTH`] is the usual allocation length.
    pub fn read_capacity_16(allocation_length: u32) -> Cdb {
        let mut cdb = Cdb::new(16, DataDirection::Read(allocation_length));
        cdb.bytes[0] = opcode::SERVICE_ACTION_IN_16;
        cdb.bytes[1] = service_action::READ_CAPACITY_16;
        cdb.bytes[10..14].copy_from_slice(&allocation_length.to_be_bytes());
        cdb
    }

    /// READ(10) (SBC-3) of `blocks` blocks of `block_length_bytes` bytes from `lba`.
    /// Errors only when the byte count overflows 32 bits or `block_length_bytes` is 0.
    pub fn read_10(
        lba: u32,
        blocks: u16,
        block_length_bytes: u32,
        fua: bool,
    ) -> Result<Cdb, ScsiError> {
        let bytes = transfer_bytes(u64::from(blocks), block_length_bytes)?;
        Ok(Cdb::rw_10(
            opcode::READ_10,
            lba,
            blocks,
            fua,
            DataDirection::Read(bytes),
        ))
    }

    /// WRITE(10) (SBC-3), as [`Cdb::read_10`].
    pub fn write_10(
        lba: u32,
        blocks: u16,
        block_length_bytes: u32,
        fua: bool,
    ) -> Result<Cdb, ScsiError> {
        let bytes = transfer_bytes(u64::from(blocks), block_length_bytes)?;
        Ok(Cdb::rw_10(
            opcode::WRITE_10,
            lba,
            blocks,
            fua,
            DataDirection::Write(bytes),
        ))
    }

    /// READ(16) (SBC-3) of `blocks` blocks of `block_length_bytes` bytes from `lba`.
    pub fn read_16(
        lba: u64,
        blocks: u32,
        block_length_bytes: u32,
        fua: bool,
    ) -> Result<Cdb, ScsiError> {
        let bytes = transfer_bytes(u64::from(blocks), block_length_bytes)?;
        Ok(Cdb::rw_16(
            opcode::READ_16,
            lba,
            blocks,
            fua,
            DataDirection::Read(bytes),
        ))
    }

    /// WRITE(16) (SBC-3), as [`Cdb::read_16`].
    pub fn write_16(
        lba: u64,
        blocks: u32,
        block_length_bytes: u32,
        fua: bool,
    ) -> Result<Cdb, ScsiError> {
        let bytes = transfer_bytes(u64::from(blocks), block_length_bytes)?;
        Ok(Cdb::rw_16(
            opcode::WRITE_16,
            lba,
            blocks,
            fua,
            DataDirection::Write(bytes),
        ))
    }

    /// READ(10) when it can address the whole range, READ(16) otherwise: see
    /// [`fits_10_byte_cdb`].
    pub fn read(
        lba: u64,
        blocks: u32,
        block_length_bytes: u32,
        fua: bool,
    ) -> Result<Cdb, ScsiError> {
        match narrow_to_10(lba, blocks) {
            Some((lba, blocks)) => Cdb::read_10(lba, blocks, block_length_bytes, fua),
            None => Cdb::read_16(lba, blocks, block_length_bytes, fua),
        }
    }

    /// WRITE(10) when it can address the whole range, WRITE(16) otherwise.
    pub fn write(
        lba: u64,
        blocks: u32,
        block_length_bytes: u32,
        fua: bool,
    ) -> Result<Cdb, ScsiError> {
        match narrow_to_10(lba, blocks) {
            Some((lba, blocks)) => Cdb::write_10(lba, blocks, block_length_bytes, fua),
            None => Cdb::write_16(lba, blocks, block_length_bytes, fua),
        }
    }

    /// SYNCHRONIZE CACHE(10) (SBC-3) of `blocks` blocks from `lba`; 0 blocks means
    /// "to the end of the medium", so `(0, 0)` flushes everything. `immediate` sets IMMED:
    /// status returns before the flush completes.
    pub fn synchronize_cache_10(lba: u32, blocks: u16, immediate: bool) -> Cdb {
        let mut cdb = Cdb::new(10, DataDirection::None);
        cdb.bytes[0] = opcode::SYNCHRONIZE_CACHE_10;
        cdb.bytes[1] = if immediate { 0x02 } else { 0 };
        cdb.bytes[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb.bytes[7..9].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }

    /// SYNCHRONIZE CACHE(16) (SBC-3), as [`Cdb::synchronize_cache_10`].
    pub fn synchronize_cache_16(lba: u64, blocks: u32, immediate: bool) -> Cdb {
        let mut cdb = Cdb::new(16, DataDirection::None);
        cdb.bytes[0] = opcode::SYNCHRONIZE_CACHE_16;
        cdb.bytes[1] = if immediate { 0x02 } else { 0 };
        cdb.bytes[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb.bytes[10..14].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }

    /// UNMAP (SBC-3 5.28): 10 bytes, the host sends a `parameter_list_length`-byte
    /// parameter list (header and block descriptors).
    pub fn unmap(parameter_list_length: u16) -> Cdb {
        let mut cdb = Cdb::new(10, DataDirection::Write(u32::from(parameter_list_length)));
        cdb.bytes[0] = opcode::UNMAP;
        cdb.bytes[7..9].copy_from_slice(&parameter_list_length.to_be_bytes());
        cdb
    }

    /// Byte 1 of READ/WRITE(10) and (16): RDPROTECT/WRPROTECT 0, DPO 0, FUA bit 3.
    fn rw_flags(fua: bool) -> u8 {
        if fua {
            0x08
        } else {
            0
        }
    }

    fn rw_10(op: u8, lba: u32, blocks: u16, fua: bool, direction: DataDirection) -> Cdb {
        let mut cdb = Cdb::new(10, direction);
        cdb.bytes[0] = op;
        cdb.bytes[1] = Cdb::rw_flags(fua);
        cdb.bytes[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb.bytes[7..9].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }

    fn rw_16(op: u8, lba: u64, blocks: u32, fua: bool, direction: DataDirection) -> Cdb {
        let mut cdb = Cdb::new(16, direction);
        cdb.bytes[0] = op;
        cdb.bytes[1] = Cdb::rw_flags(fua);
        cdb.bytes[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb.bytes[10..14].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }
}

/// A CDB reads as its bytes (`cdb[0]`, `cdb.first()`, `&cdb[2..6]`).
impl std::ops::Deref for Cdb {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Cdb {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// True when a 10-byte READ/WRITE can carry the request: the block count fits its 16-bit
/// TRANSFER LENGTH and every block of the range, not only the first, lies below 2^32,
/// since a 10-byte command cannot address past LBA 0xFFFFFFFF.
pub fn fits_10_byte_cdb(lba: u64, blocks: u32) -> bool {
    narrow_to_10(lba, blocks).is_some()
}

fn narrow_to_10(lba: u64, blocks: u32) -> Option<(u32, u16)> {
    let blocks_10 = u16::try_from(blocks).ok()?;
    let lba_10 = u32::try_from(lba).ok()?;
    let end = lba.checked_add(u64::from(blocks))?;
    (end <= 1 << 32).then_some((lba_10, blocks_10))
}

fn transfer_bytes(blocks: u64, block_length_bytes: u32) -> Result<u32, ScsiError> {
    if block_length_bytes == 0 {
        return Err(ScsiError::ZeroBlockLength);
    }
    blocks
        .checked_mul(u64::from(block_length_bytes))
        .and_then(|bytes| u32::try_from(bytes).ok())
        .ok_or(ScsiError::TransferTooLong {
            blocks,
            block_length_bytes,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn long_cdbs_keep_their_bytes_and_pad_the_bhs_part() {
        let short = Cdb::from_bytes(
            &[0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0],
            DataDirection::Read(4096),
        )
        .expect("10 bytes");
        assert_eq!(short.len(), 10);
        assert_eq!(short.padded()[10..], [0; 6]);
        assert!(short.extended().is_empty());

        let bytes: Vec<u8> = (1..=32).collect();
        let long = Cdb::from_bytes(&bytes, DataDirection::None).expect("32 bytes");
        assert_eq!(long.as_bytes(), &bytes[..]);
        assert_eq!(long.padded()[..], bytes[..16]);
        assert_eq!(long.extended(), &bytes[16..]);

        assert_eq!(
            Cdb::from_bytes(&[], DataDirection::None),
            Err(ScsiError::CdbLength(0))
        );
        assert_eq!(
            Cdb::from_bytes(&[0; MAX_CDB_LEN + 1], DataDirection::None),
            Err(ScsiError::CdbLength(MAX_CDB_LEN + 1))
        );
    }

    #[test]
    fn test_unit_ready_layout() {
        let cdb = Cdb::test_unit_ready();
        assert_eq!(cdb.as_bytes(), &[0, 0, 0, 0, 0, 0]);
        assert_eq!(cdb.direction(), DataDirection::None);
    }

    #[test]
    fn request_sense_layout() {
        let cdb = Cdb::request_sense(252, true);
        assert_eq!(cdb.as_bytes(), &[0x03, 0x01, 0, 0, 252, 0]);
        assert_eq!(cdb.direction(), DataDirection::Read(252));
        assert_eq!(
            Cdb::request_sense(18, false).as_bytes(),
            &[0x03, 0, 0, 0, 18, 0]
        );
    }

    #[test]
    fn inquiry_layouts() {
        let standard = Cdb::inquiry(96);
        assert_eq!(standard.as_bytes(), &[0x12, 0x00, 0x00, 0x00, 0x60, 0x00]);
        assert_eq!(standard.direction(), DataDirection::Read(96));

        let vpd = Cdb::inquiry_vpd(0x83, 0x0102);
        assert_eq!(vpd.as_bytes(), &[0x12, 0x01, 0x83, 0x01, 0x02, 0x00]);
        assert_eq!(vpd.direction(), DataDirection::Read(0x102));
    }

    #[test]
    fn report_luns_layout() {
        let cdb = Cdb::report_luns(select_report::ALL, 0x0001_0203);
        assert_eq!(
            cdb.as_bytes(),
            &[0xa0, 0, 0x02, 0, 0, 0, 0x00, 0x01, 0x02, 0x03, 0, 0]
        );
        assert_eq!(cdb.direction(), DataDirection::Read(0x0001_0203));
        assert_eq!(cdb.len(), 12);
    }

    #[test]
    fn read_capacity_layouts() {
        let rc10 = Cdb::read_capacity_10();
        assert_eq!(rc10.as_bytes(), &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(rc10.direction(), DataDirection::Read(8));

        let rc16 = Cdb::read_capacity_16(32);
        assert_eq!(
            rc16.as_bytes(),
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]
        );
        assert_eq!(rc16.direction(), DataDirection::Read(32));
    }

    #[test]
    fn read_16_layout() {
        let cdb = Cdb::read_16(0x0102_0304_0506_0708, 0x10, 512, false).unwrap();
        assert_eq!(
            cdb.as_bytes(),
            &[0x88, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00]
        );
        assert_eq!(cdb.direction(), DataDirection::Read(0x10 * 512));
    }

    #[test]
    fn write_16_layout_with_fua() {
        let cdb = Cdb::write_16(0x1122_3344_5566_7788, 0x0a0b_0c0d, 1, true).unwrap();
        assert_eq!(
            cdb.as_bytes(),
            &[
                0x8a, 0x08, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x0a, 0x0b, 0x0c, 0x0d,
                0x00, 0x00
            ]
        );
        assert_eq!(cdb.direction(), DataDirection::Write(0x0a0b_0c0d));
    }

    #[test]
    fn read_10_and_write_10_layouts() {
        let read = Cdb::read_10(0x0102_0304, 0x0506, 4096, true).unwrap();
        assert_eq!(read.as_bytes(), &[0x28, 0x08, 1, 2, 3, 4, 0, 5, 6, 0]);
        assert_eq!(read.direction(), DataDirection::Read(0x0506 * 4096));

        let write = Cdb::write_10(7, 1, 512, false).unwrap();
        assert_eq!(write.as_bytes(), &[0x2a, 0x00, 0, 0, 0, 7, 0, 0, 1, 0]);
        assert_eq!(write.direction(), DataDirection::Write(512));
        assert_eq!(write.padded()[10..], [0; 6]);
    }

    #[test]
    fn synchronize_cache_layouts() {
        let sc10 = Cdb::synchronize_cache_10(0x0102_0304, 0x0506, true);
        assert_eq!(sc10.as_bytes(), &[0x35, 0x02, 1, 2, 3, 4, 0, 5, 6, 0]);
        assert_eq!(sc10.direction(), DataDirection::None);

        let sc16 = Cdb::synchronize_cache_16(0x0102_0304_0506_0708, 0x090a_0b0c, false);
        assert_eq!(
            sc16.as_bytes(),
            &[0x91, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0]
        );
    }

    #[test]
    fn picks_10_or_16() {
        assert_eq!(
            Cdb::read(0, 8, 512, false).unwrap().opcode(),
            opcode::READ_10
        );
        // Last block at 0xFFFFFFFF: still a 10-byte command.
        assert_eq!(
            Cdb::read(0xffff_fff8, 8, 512, false).unwrap().opcode(),
            opcode::READ_10
        );
        // One block past: needs 16.
        assert_eq!(
            Cdb::read(0xffff_fff9, 8, 512, false).unwrap().opcode(),
            opcode::READ_16
        );
        assert_eq!(
            Cdb::read(1 << 32, 1, 512, false).unwrap().opcode(),
            opcode::READ_16
        );
        // More blocks than 16 bits: needs 16.
        assert_eq!(
            Cdb::write(0, 0x1_0000, 512, false).unwrap().opcode(),
            opcode::WRITE_16
        );
        assert_eq!(
            Cdb::write(0, 0xffff, 512, false).unwrap().opcode(),
            opcode::WRITE_10
        );
        assert!(fits_10_byte_cdb(10, 10));
        assert!(!fits_10_byte_cdb(u64::MAX, 1));
    }

    #[test]
    fn transfer_overflow_and_zero_block_length_are_errors() {
        assert_eq!(
            Cdb::read_16(0, 0x0100_0000, 4096, false),
            Err(ScsiError::TransferTooLong {
                blocks: 0x0100_0000,
                block_length_bytes: 4096
            })
        );
        assert_eq!(
            Cdb::write_10(0, 1, 0, false),
            Err(ScsiError::ZeroBlockLength)
        );
        // The largest transfer that still fits 32 bits is fine.
        assert_eq!(
            Cdb::read_16(0, 0xffff_ffff, 1, false).unwrap().direction(),
            DataDirection::Read(u32::MAX)
        );
    }

    proptest! {
        #[test]
        fn read_picker_addresses_what_was_asked(lba in any::<u64>(), blocks in any::<u32>()) {
            if let Ok(cdb) = Cdb::read(lba, blocks, 1, false) {
                let bytes = cdb.as_bytes();
                let (got_lba, got_blocks) = if cdb.opcode() == opcode::READ_10 {
                    (
                        u64::from(u32::from_be_bytes(bytes[2..6].try_into().unwrap())),
                        u32::from(u16::from_be_bytes(bytes[7..9].try_into().unwrap())),
                    )
                } else {
                    prop_assert_eq!(cdb.opcode(), opcode::READ_16);
                    (
                        u64::from_be_bytes(bytes[2..10].try_into().unwrap()),
                        u32::from_be_bytes(bytes[10..14].try_into().unwrap()),
                    )
                };
                prop_assert_eq!(got_lba, lba);
                prop_assert_eq!(got_blocks, blocks);
                prop_assert_eq!(cdb.direction(), DataDirection::Read(blocks));
            }
        }
    }
}
