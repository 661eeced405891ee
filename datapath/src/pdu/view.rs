//! A checked, zero-copy view over the 48-byte Basic Header Segment, RFC 7143 section 11.2.1.
//!
//! The view reads and writes header fields in place. Its length is checked once, in
//! [`BhsView::new_checked`]; field accessors take their offset as a const generic whose
//! bounds are checked at compile time, so no accessor can panic afterwards.
//!
//! Fields common to every opcode (section 11.2.1):
//! byte 0: `.|I|opcode(6)`; byte 1: `F|opcode-specific(7)`; bytes 2-3: opcode-specific;
//! byte 4: TotalAHSLength (4-byte words); bytes 5-7: DataSegmentLength (bytes);
//! bytes 8-15: LUN or opcode-specific; bytes 16-19: Initiator Task Tag; 20-47: opcode-specific.
#![forbid(unsafe_code)]

use super::codec::{PduError, BHS_LEN};
use super::types::{LunField, Opcode, Tag};

/// A BHS of zeroes, read in place of a buffer whose `AsRef` stopped returning what
/// [`BhsView::new_checked`] saw (a broken `AsRef` impl; never the case for slices or `Vec`).
static ZERO_BHS: [u8; BHS_LEN] = [0; BHS_LEN];

/// Byte offsets of the fields every BHS shares (section 11.2.1).
pub mod offset {
    pub const OPCODE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const TOTAL_AHS_LENGTH: usize = 4;
    pub const DATA_SEGMENT_LENGTH: usize = 5;
    pub const LUN: usize = 8;
    pub const INITIATOR_TASK_TAG: usize = 16;
}

const IMMEDIATE_BIT: u8 = 0x40;
const OPCODE_MASK: u8 = 0x3f;
const FINAL_BIT: u8 = 0x80;

/// A view over at least 48 bytes holding a BHS. Bytes past the 48th are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BhsView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> BhsView<T> {
    /// Wraps `buffer`, checking that it holds a whole BHS.
    pub fn new_checked(buffer: T) -> Result<Self, PduError> {
        let got = buffer.as_ref().len();
        if got < BHS_LEN {
            return Err(PduError::Truncated {
                needed: BHS_LEN,
                got,
            });
        }
        Ok(BhsView { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 48 BHS bytes.
    pub fn bhs(&self) -> &[u8; BHS_LEN] {
        self.buffer
            .as_ref()
            .first_chunk::<BHS_LEN>()
            .unwrap_or(&ZERO_BHS)
    }

    /// The byte at `OFFSET`.
    pub fn u8_at<const OFFSET: usize>(&self) -> u8 {
        const { assert!(OFFSET < BHS_LEN) };
        self.bhs()[OFFSET]
    }

    /// The big-endian 16-bit field at `OFFSET`.
    pub fn u16_at<const OFFSET: usize>(&self) -> u16 {
        u16::from_be_bytes(self.bytes_at::<OFFSET, 2>())
    }

    /// The big-endian 32-bit field at `OFFSET`.
    pub fn u32_at<const OFFSET: usize>(&self) -> u32 {
        u32::from_be_bytes(self.bytes_at::<OFFSET, 4>())
    }

    /// `N` raw bytes starting at `OFFSET`.
    pub fn bytes_at<const OFFSET: usize, const N: usize>(&self) -> [u8; N] {
        const { assert!(OFFSET + N <= BHS_LEN) };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bhs()[OFFSET..OFFSET + N]);
        out
    }

    /// The 6-bit opcode field, whether or not RFC 7143 defines it.
    pub fn opcode_raw(&self) -> u8 {
        self.u8_at::<{ offset::OPCODE }>() & OPCODE_MASK
    }

    /// The opcode, if RFC 7143 defines it.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode_raw())
    }

    /// The I (immediate delivery) bit. Meaningful on initiator PDUs only.
    pub fn immediate(&self) -> bool {
        self.u8_at::<{ offset::OPCODE }>() & IMMEDIATE_BIT != 0
    }

    /// The F (final) bit, bit 7 of byte 1 (the T bit on Login PDUs).
    pub fn final_bit(&self) -> bool {
        self.u8_at::<{ offset::FLAGS }>() & FINAL_BIT != 0
    }

    /// The opcode-specific flags byte (byte 1) whole.
    pub fn flags(&self) -> u8 {
        self.u8_at::<{ offset::FLAGS }>()
    }

    /// TotalAHSLength converted from 4-byte words to bytes (0 to 1020).
    pub fn total_ahs_length_bytes(&self) -> usize {
        usize::from(self.u8_at::<{ offset::TOTAL_AHS_LENGTH }>()) * 4
    }

    /// DataSegmentLength in bytes, without padding (24 bits).
    pub fn data_segment_length(&self) -> u32 {
        let [a, b, c] = self.bytes_at::<{ offset::DATA_SEGMENT_LENGTH }, 3>();
        u32::from_be_bytes([0, a, b, c])
    }

    /// Bytes 8-15: the LUN on PDUs that carry one, opcode-specific on the others.
    pub fn lun(&self) -> LunField {
        self.bytes_at::<{ offset::LUN }, 8>()
    }

    /// Bytes 16-19: the Initiator Task Tag (0xffffffff on PDUs without a task).
    pub fn initiator_task_tag(&self) -> Tag {
        self.u32_at::<{ offset::INITIATOR_TASK_TAG }>()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> BhsView<T> {
    /// The 48 BHS bytes, writable. `None` only for a broken `AsMut` impl.
    fn bhs_mut(&mut self) -> Option<&mut [u8; BHS_LEN]> {
        self.buffer.as_mut().first_chunk_mut::<BHS_LEN>()
    }

    /// Writes the byte at `OFFSET`.
    pub fn set_u8<const OFFSET: usize>(&mut self, value: u8) {
        self.set_bytes::<OFFSET, 1>([value]);
    }

    /// Writes a big-endian 16-bit field at `OFFSET`.
    pub fn set_u16<const OFFSET: usize>(&mut self, value: u16) {
        self.set_bytes::<OFFSET, 2>(value.to_be_bytes());
    }

    /// Writes a big-endian 32-bit field at `OFFSET`.
    pub fn set_u32<const OFFSET: usize>(&mut self, value: u32) {
        self.set_bytes::<OFFSET, 4>(value.to_be_bytes());
    }

    /// Writes `N` raw bytes at `OFFSET`.
    pub fn set_bytes<const OFFSET: usize, const N: usize>(&mut self, value: [u8; N]) {
        const { assert!(OFFSET + N <= BHS_LEN) };
        if let Some(bhs) = self.bhs_mut() {
            bhs[OFFSET..OFFSET + N].copy_from_slice(&value);
        }
    }

    /// Zeroes the whole BHS (reserved fields must be sent as zero).
    pub fn clear(&mut self) {
        if let Some(bhs) = self.bhs_mut() {
            bhs.fill(0);
        }
    }

    /// Writes byte 0: the opcode and the I bit (the reserved top bit is cleared).
    pub fn set_opcode(&mut self, opcode: Opcode, immediate: bool) {
        let i = if immediate { IMMEDIATE_BIT } else { 0 };
        self.set_u8::<{ offset::OPCODE }>(opcode as u8 | i);
    }

    /// Writes the flags byte (byte 1).
    pub fn set_flags(&mut self, flags: u8) {
        self.set_u8::<{ offset::FLAGS }>(flags);
    }

    /// Writes TotalAHSLength, in 4-byte words.
    pub fn set_total_ahs_length_words(&mut self, words: u8) {
        self.set_u8::<{ offset::TOTAL_AHS_LENGTH }>(words);
    }

    /// Writes DataSegmentLength. Only the low 24 bits fit; the codec checks the length
    /// before it gets here.
    pub fn set_data_segment_length(&mut self, length: u32) {
        let [_, a, b, c] = length.to_be_bytes();
        self.set_bytes::<{ offset::DATA_SEGMENT_LENGTH }, 3>([a, b, c]);
    }

    /// Writes bytes 8-15 (the LUN).
    pub fn set_lun(&mut self, lun: LunField) {
        self.set_bytes::<{ offset::LUN }, 8>(lun);
    }

    /// Writes bytes 16-19 (the Initiator Task Tag).
    pub fn set_initiator_task_tag(&mut self, tag: Tag) {
        self.set_u32::<{ offset::INITIATOR_TASK_TAG }>(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_buffers() {
        assert_eq!(
            BhsView::new_checked(&[0u8; 47][..]),
            Err(PduError::Truncated {
                needed: 48,
                got: 47
            })
        );
        assert!(BhsView::new_checked(&[0u8; 48][..]).is_ok());
        assert!(BhsView::new_checked(vec![0u8; 100]).is_ok());
    }

    #[test]
    fn reads_common_fields() {
        let mut b = [0u8; 48];
        b[0] = 0xc1; // reserved bit, I bit, SCSI Command
        b[1] = 0x80;
        b[4] = 3;
        b[5..8].copy_from_slice(&[0x01, 0x02, 0x03]);
        b[8..16].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        b[16..20].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let v = BhsView::new_checked(&b[..]).unwrap();
        assert_eq!(v.opcode_raw(), 0x01);
        assert_eq!(v.opcode(), Some(Opcode::ScsiCommand));
        assert!(v.immediate());
        assert!(v.final_bit());
        assert_eq!(v.total_ahs_length_bytes(), 12);
        assert_eq!(v.data_segment_length(), 0x010203);
        assert_eq!(v.lun(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(v.initiator_task_tag(), 0xdead_beef);
        assert_eq!(v.u16_at::<18>(), 0xbeef);
        assert_eq!(v.u8_at::<47>(), 0);
    }

    #[test]
    fn unknown_opcode_is_none() {
        let mut b = [0u8; 48];
        b[0] = 0x1c; // vendor-specific initiator opcode
        let v = BhsView::new_checked(&b[..]).unwrap();
        assert_eq!(v.opcode_raw(), 0x1c);
        assert_eq!(v.opcode(), None);
    }

    #[test]
    fn setters_write_big_endian_in_place() {
        let mut b = [0xffu8; 48];
        let mut v = BhsView::new_checked(&mut b[..]).unwrap();
        v.clear();
        v.set_opcode(Opcode::NopOut, true);
        v.set_flags(0x80);
        v.set_total_ahs_length_words(2);
        v.set_data_segment_length(0x00ab_cdef);
        v.set_lun([9; 8]);
        v.set_initiator_task_tag(0x0102_0304);
        v.set_u16::<20>(0xa1b2);
        v.set_u32::<44>(0x0506_0708);
        assert_eq!(b[0], 0x40);
        assert_eq!(b[1], 0x80);
        assert_eq!(b[4], 2);
        assert_eq!(&b[5..8], &[0xab, 0xcd, 0xef]);
        assert_eq!(&b[8..16], &[9; 8]);
        assert_eq!(&b[16..20], &[1, 2, 3, 4]);
        assert_eq!(&b[20..22], &[0xa1, 0xb2]);
        assert_eq!(&b[44..48], &[5, 6, 7, 8]);
        assert!(b[22..44].iter().all(|&x| x == 0));
    }
}
