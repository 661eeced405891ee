//! EXTENDED COPY (LID1, SPC-4 6.4) as an initiator builds it: the parameter list that
//! copies ranges within one logical unit, and the request that carries it. Shared by
//! `iscsi-ctl copy` and `iscsi-bench copy-offload`.

use super::cdb::opcode;
use super::ScsiError;
use crate::session::{DataDirection, Request};

/// Blocks per block-to-block segment descriptor (its count is 16 bits; 32768 blocks of
/// 512 bytes is 16 MiB, whole 1 MiB pool chunks in one segment).
pub const SEGMENT_BLOCKS: u64 = 32768;
/// Segment descriptors per EXTENDED COPY.
pub const SEGMENTS_PER_COMMAND: usize = 32;

/// One segment: `blocks` blocks from `source` LBA to `dest` LBA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source: u64,
    pub dest: u64,
    pub blocks: u16,
}

/// The segments that copy `blocks` blocks from `source` to `dest`, cut into commands of
/// at most [`SEGMENTS_PER_COMMAND`] segments of at most [`SEGMENT_BLOCKS`] blocks.
pub fn plan(source: u64, dest: u64, blocks: u64) -> Vec<Vec<Segment>> {
    let mut commands = Vec::new();
    let mut done = 0;
    while done < blocks {
        let mut segments = Vec::new();
        while done < blocks && segments.len() < SEGMENTS_PER_COMMAND {
            let n = SEGMENT_BLOCKS.min(blocks - done);
            segments.push(Segment {
                source: source + done,
                dest: dest + done,
                blocks: n as u16,
            });
            done += n;
        }
        commands.push(segments);
    }
    commands
}

/// The parameter list: one identification target descriptor (0xE4) naming the logical
/// unit by its NAA designator, then block-to-block segment descriptors (0x02) from and to
/// it. LIST ID USAGE 11b: no list identifier, so the target holds no results.
pub fn parameter_list(naa: &[u8], block_length: u32, segments: &[Segment]) -> Vec<u8> {
    let naa = &naa[..naa.len().min(20)];
    let mut target = vec![0u8; 32];
    target[0] = 0xe4; // identification descriptor
    target[4] = 0x01; // code set: binary
    target[5] = 0x03; // association: logical unit; designator type: NAA
    target[7] = naa.len() as u8;
    target[8..8 + naa.len()].copy_from_slice(naa);
    target[29..32].copy_from_slice(&block_length.to_be_bytes()[1..]);
    let mut segment_bytes = Vec::with_capacity(28 * segments.len());
    for segment in segments {
        let mut s = [0u8; 28];
        s[0] = 0x02; // block device to block device
        s[2..4].copy_from_slice(&0x18u16.to_be_bytes());
        // Source and destination target descriptor index 0: the same LU.
        s[10..12].copy_from_slice(&segment.blocks.to_be_bytes());
        s[12..20].copy_from_slice(&segment.source.to_be_bytes());
        s[20..28].copy_from_slice(&segment.dest.to_be_bytes());
        segment_bytes.extend_from_slice(&s);
    }
    let mut list = vec![0u8; 16];
    list[1] = 0x18; // LIST ID USAGE 11b
    list[2..4].copy_from_slice(&(target.len() as u16).to_be_bytes());
    list[8..12].copy_from_slice(&(segment_bytes.len() as u32).to_be_bytes());
    list.extend_from_slice(&target);
    list.extend_from_slice(&segment_bytes);
    list
}

/// The EXTENDED COPY request for `lun` carrying `list`.
pub fn request(lun: u64, list: Vec<u8>) -> Result<Request, ScsiError> {
    let mut cdb = [0u8; 16];
    cdb[0] = opcode::EXTENDED_COPY;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    let direction = DataDirection::Write {
        len: list.len() as u32,
    };
    Request::raw(lun, &cdb, direction, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_cut_into_segments_and_commands_that_cover_it_exactly() {
        let commands = plan(10, 1_000_000, 40 * SEGMENT_BLOCKS + 5);
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].len(), SEGMENTS_PER_COMMAND);
        let all: Vec<Segment> = commands.concat();
        assert_eq!(
            all.iter().map(|s| u64::from(s.blocks)).sum::<u64>(),
            40 * SEGMENT_BLOCKS + 5
        );
        assert_eq!(all[1].source, 10 + SEGMENT_BLOCKS);
        assert_eq!(
            all.last().map(|s| (s.dest, s.blocks)),
            Some((1_000_000 + 40 * SEGMENT_BLOCKS, 5))
        );
        let list = parameter_list(&[0x60; 16], 512, &commands[1]);
        assert_eq!(list.len(), 16 + 32 + 28 * 9);
        assert_eq!(&list[16 + 8..16 + 24], &[0x60; 16]);
        assert_eq!(&list[16 + 29..16 + 32], &[0, 2, 0]);
    }
}
