//! CRC32C digests for iSCSI PDUs, RFC 7143 section 13.1 (HeaderDigest, DataDigest) and the
//! layout rules of section 11.1.
//!
//! The only digest iSCSI defines is CRC32C (Castagnoli, generator 0x11EDC6F41), with the
//! register preset to all ones and the result complemented: the same function the `crc32c`
//! crate computes. On the wire the 32-bit result travels least significant byte first
//! (RFC 3720 appendix B.4 shows 32 zero bytes giving 0x8a9136aa, sent as `aa 36 91 8a`),
//! unlike every other iSCSI field, which is big-endian.
//!
//! The header digest covers the BHS and all AHS; the data digest covers the data segment
//! and its padding (padding bytes are zero and included, section 13.1). A PDU with an empty
//! data segment carries no data digest.
#![forbid(unsafe_code)]

/// Length of a digest on the wire, in bytes.
pub const DIGEST_LEN: usize = 4;

/// Zero bytes used as data-segment padding (at most 3 are ever needed).
const ZERO_PAD: [u8; 3] = [0; 3];

/// CRC32C of `data` (iSCSI digest value, before byte-order conversion for the wire).
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Continues a CRC32C: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
/// Lets a receiver digest a data segment that arrives in several pieces.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, data)
}

/// The header digest over the BHS followed by all AHS (section 11.1: the header digest
/// follows the AHS and covers everything before it).
pub fn header_digest(bhs_and_ahs: &[u8]) -> u32 {
    crc32c(bhs_and_ahs)
}

/// Number of zero bytes that pad a data segment of `data_len` bytes to a 4-byte boundary.
pub fn pad_len(data_len: usize) -> usize {
    (4 - data_len % 4) % 4
}

/// The data digest over a data segment and its zero padding.
pub fn data_digest(data: &[u8]) -> u32 {
    data_digest_append(crc32c(data), data.len())
}

/// Finishes a data digest computed incrementally: `crc` is the CRC32C over the whole data
/// segment (`data_len` bytes, e.g. built with [`crc32c_append`]); this adds the padding.
pub fn data_digest_append(crc: u32, data_len: usize) -> u32 {
    let pad = pad_len(data_len);
    crc32c_append(crc, &ZERO_PAD[..pad])
}

/// A digest in its wire byte order (little-endian, RFC 3720 appendix B.4).
pub fn digest_to_wire(digest: u32) -> [u8; DIGEST_LEN] {
    digest.to_le_bytes()
}

/// A digest read from its wire byte order.
pub fn digest_from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720 appendix B.4: the published CRC32C examples.
    #[test]
    fn rfc3720_b4_examples() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113f_db5c);
    }

    /// RFC 3720 appendix B.4: the iSCSI read command PDU example (a SCSI Command BHS with
    /// a READ(10) CDB), used as a header digest.
    #[test]
    fn rfc3720_b4_iscsi_read_pdu() {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x01;
        bhs[1] = 0xc0;
        bhs[16] = 0x14;
        bhs[22] = 0x04;
        bhs[27] = 0x14;
        bhs[31] = 0x18;
        bhs[32] = 0x28;
        bhs[40] = 0x02;
        assert_eq!(header_digest(&bhs), 0xd996_3a56);
        // On the wire, least significant byte first, as the RFC's byte table shows.
        assert_eq!(digest_to_wire(0xd996_3a56), [0x56, 0x3a, 0x96, 0xd9]);
        assert_eq!(digest_from_wire([0xaa, 0x36, 0x91, 0x8a]), 0x8a91_36aa);
    }

    #[test]
    fn append_equals_whole() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let (a, b) = data.split_at(333);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
        assert_eq!(crc32c_append(crc32c(&[]), &data), crc32c(&data));
    }

    #[test]
    fn data_digest_covers_padding() {
        assert_eq!(pad_len(0), 0);
        assert_eq!(pad_len(1), 3);
        assert_eq!(pad_len(4), 0);
        assert_eq!(pad_len(7), 1);
        let data = [1u8, 2, 3, 4, 5];
        assert_eq!(data_digest(&data), crc32c(&[1, 2, 3, 4, 5, 0, 0, 0]));
        assert_ne!(data_digest(&data), crc32c(&data));
        let aligned = [9u8; 8];
        assert_eq!(data_digest(&aligned), crc32c(&aligned));
        let incremental = data_digest_append(crc32c_append(crc32c(&data[..2]), &data[2..]), 5);
        assert_eq!(incremental, data_digest(&data));
    }
}
