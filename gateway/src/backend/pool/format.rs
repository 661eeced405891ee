//! The on-disk format of a volume pool, as bytes in and values out (no I/O).
//!
//! ```text
//!  0        4 KiB    8 KiB        1 MiB            +slot           +slot          +journal
//!  | super A | super B | (unused)  | checkpoint 0   | checkpoint 1  | journal       | chunks ...
//! ```
//! - Two superblocks, written alternately: the valid one (magic, CRC) with the higher
//!   generation names the current checkpoint slot, its length and CRC.
//! - A checkpoint is the whole map: the volume table, then one 12-byte row per mapped chunk
//!   (volume, virtual chunk, physical chunk), then a 32-byte sub-chunk bitmap for each
//!   chunk that is only partly written. Reference counts are not stored: they are the
//!   number of rows naming a physical chunk, counted at open. So the steady state (chunks
//!   fully written) costs 12 bytes per mapped chunk.
//! - The journal holds batches appended after the checkpoint, each with the checkpoint's
//!   generation, a sequence number and a CRC. Replay stops at the first batch that does
//!   not check out: a batch torn by a crash was never acknowledged.
//!
//! Shadow paging for the checkpoint (the slot not named by the current superblock is
//! written, synced, then named by a new superblock) and a write-ahead journal in between:
//! a crash at any point leaves the last committed state readable.
#![forbid(unsafe_code)]

use datapath::pdu::digest::crc32c;

/// A chunk: the unit of allocation, copy on write and reference counting (VMFS-6's file
/// block and ESXi's UNMAP granularity).
pub const CHUNK_BYTES: u64 = 1 << 20;
/// A sub-chunk: the unit of the "written" bitmap, so a 4 KiB write into a new chunk
/// writes 4 KiB, not 1 MiB of zeros.
pub const SUB_BYTES: u64 = 4096;
/// Sub-chunks per chunk: 256, a bitmap of four 64-bit words.
pub const SUBS_PER_CHUNK: usize = (CHUNK_BYTES / SUB_BYTES) as usize;
/// Bytes of one superblock slot.
pub const SUPERBLOCK_BYTES: u64 = 4096;
/// Where the first checkpoint slot starts.
pub const METADATA_OFFSET: u64 = CHUNK_BYTES;
/// Map entries per chunk the metadata has room for.
pub const ENTRIES_PER_CHUNK: u64 = 16;
/// A map entry in a checkpoint at worst: its row and a bitmap with its index.
const ENTRY_WORST_BYTES: u64 = 12 + 4 + 32;
/// Room for the volume table in a checkpoint.
const VOLUME_TABLE_BYTES: u64 = 8 << 20;
/// Longest volume name.
pub const NAME_MAX_BYTES: usize = 128;

const SUPER_MAGIC: &[u8; 8] = b"IOUPOOL1";
const CHECKPOINT_MAGIC: &[u8; 8] = b"IOUPCKP1";
const BATCH_MAGIC: u32 = 0x504a_524e; // "PJRN"
/// Batch header: magic, length, generation, sequence, CRC.
pub const BATCH_HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 4;

/// The sub-chunk bitmap of one chunk; bit `i` set: sub-chunk `i` holds written data.
pub type Bitmap = [u64; 4];
/// Every sub-chunk written.
pub const FULL: Bitmap = [u64::MAX; 4];

/// Errors reading the format.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("no valid superblock (not a pool, or both copies damaged)")]
    NoSuperblock,
    #[error("checkpoint damaged: {0}")]
    Checkpoint(&'static str),
    #[error("pool geometry in the superblock is inconsistent: {0}")]
    Geometry(&'static str),
}

/// Where things are in a pool file, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Chunks of data.
    pub chunks: u32,
    /// Bytes reserved for each of the two checkpoint slots.
    pub slot_bytes: u64,
    /// Bytes reserved for the journal.
    pub journal_bytes: u64,
}

impl Layout {
    /// The layout for `chunks` data chunks: each slot holds the worst case for
    /// [`ENTRIES_PER_CHUNK`] map entries per chunk (clones and copies share chunks), each
    /// partly written (12 + 4 + 32 bytes), plus a volume table of 8 MiB. Files are sparse:
    /// only what a checkpoint writes takes space.
    pub fn for_chunks(chunks: u32) -> Layout {
        let slot = u64::from(chunks) * ENTRIES_PER_CHUNK * ENTRY_WORST_BYTES + VOLUME_TABLE_BYTES;
        Layout {
            chunks,
            slot_bytes: slot.div_ceil(CHUNK_BYTES) * CHUNK_BYTES,
            journal_bytes: 32 << 20,
        }
    }

    /// Map entries a checkpoint slot has room for.
    pub fn max_entries(&self) -> u64 {
        self.slot_bytes.saturating_sub(VOLUME_TABLE_BYTES) / ENTRY_WORST_BYTES
    }

    pub fn slot_offset(&self, slot: u8) -> u64 {
        METADATA_OFFSET + u64::from(slot) * self.slot_bytes
    }

    pub fn journal_offset(&self) -> u64 {
        METADATA_OFFSET + 2 * self.slot_bytes
    }

    pub fn data_offset(&self) -> u64 {
        self.journal_offset() + self.journal_bytes
    }

    pub fn chunk_offset(&self, chunk: u32) -> u64 {
        self.data_offset() + u64::from(chunk) * CHUNK_BYTES
    }

    pub fn file_bytes(&self) -> u64 {
        self.chunk_offset(self.chunks)
    }
}

/// One superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub layout: Layout,
    /// Random at creation; volume identities derive from it.
    pub pool_id: u64,
    /// Raised by each checkpoint; superblock slot and checkpoint slot are `generation % 2`.
    pub generation: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_crc: u32,
}

impl Superblock {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SUPERBLOCK_BYTES as usize);
        out.extend_from_slice(SUPER_MAGIC);
        out.extend_from_slice(&CHUNK_BYTES.to_le_bytes());
        out.extend_from_slice(&self.layout.chunks.to_le_bytes());
        out.extend_from_slice(&self.layout.slot_bytes.to_le_bytes());
        out.extend_from_slice(&self.layout.journal_bytes.to_le_bytes());
        out.extend_from_slice(&self.pool_id.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.checkpoint_bytes.to_le_bytes());
        out.extend_from_slice(&self.checkpoint_crc.to_le_bytes());
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.resize(SUPERBLOCK_BYTES as usize, 0);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Superblock> {
        let mut r = Reader::new(bytes);
        if r.bytes(8)? != SUPER_MAGIC || r.u64()? != CHUNK_BYTES {
            return None;
        }
        let layout = Layout {
            chunks: r.u32()?,
            slot_bytes: r.u64()?,
            journal_bytes: r.u64()?,
        };
        let sb = Superblock {
            layout,
            pool_id: r.u64()?,
            generation: r.u64()?,
            checkpoint_bytes: r.u64()?,
            checkpoint_crc: r.u32()?,
        };
        let body = r.at;
        (r.u32()? == crc32c(&bytes[..body])).then_some(sb)
    }

    /// The newer of two superblock copies that check out.
    pub fn pick(a: &[u8], b: &[u8]) -> Result<Superblock, FormatError> {
        match (Superblock::decode(a), Superblock::decode(b)) {
            (Some(a), Some(b)) => Ok(if a.generation >= b.generation { a } else { b }),
            (Some(one), None) | (None, Some(one)) => Ok(one),
            (None, None) => Err(FormatError::NoSuperblock),
        }
    }

    pub fn check_geometry(&self) -> Result<(), FormatError> {
        let l = self.layout;
        if l.chunks == 0 {
            return Err(FormatError::Geometry("no chunks"));
        }
        if l.slot_bytes < Layout::for_chunks(l.chunks).slot_bytes {
            return Err(FormatError::Geometry("checkpoint slot too small"));
        }
        if self.checkpoint_bytes > l.slot_bytes || l.journal_bytes < 64 << 10 {
            return Err(FormatError::Geometry("checkpoint or journal size"));
        }
        Ok(())
    }
}

/// A volume as the format stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: u32,
    pub size_bytes: u64,
    pub name: String,
}

/// One mapped chunk: `(volume, virtual chunk) -> physical chunk`, with its bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRow {
    pub volume: u32,
    pub vchunk: u32,
    pub pchunk: u32,
    pub bitmap: Bitmap,
}

/// The state a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub next_volume_id: u32,
    pub volumes: Vec<VolumeRecord>,
    pub rows: Vec<MapRow>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.rows.len() * 12);
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&self.next_volume_id.to_le_bytes());
        out.extend_from_slice(&(self.volumes.len() as u32).to_le_bytes());
        for v in &self.volumes {
            encode_volume(&mut out, v);
        }
        out.extend_from_slice(&(self.rows.len() as u32).to_le_bytes());
        for row in &self.rows {
            out.extend_from_slice(&row.volume.to_le_bytes());
            out.extend_from_slice(&row.vchunk.to_le_bytes());
            out.extend_from_slice(&row.pchunk.to_le_bytes());
        }
        let partial: Vec<(u32, &Bitmap)> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.bitmap != FULL)
            .map(|(i, row)| (i as u32, &row.bitmap))
            .collect();
        out.extend_from_slice(&(partial.len() as u32).to_le_bytes());
        for (index, bitmap) in partial {
            out.extend_from_slice(&index.to_le_bytes());
            for word in bitmap {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8], chunks: u32) -> Result<Checkpoint, FormatError> {
        let damaged = FormatError::Checkpoint;
        let mut r = Reader::new(bytes);
        if r.bytes(8) != Some(CHECKPOINT_MAGIC) {
            return Err(damaged("magic"));
        }
        let next_volume_id = r.u32().ok_or(damaged("header"))?;
        let count = r.u32().ok_or(damaged("header"))?;
        let mut volumes = Vec::new();
        for _ in 0..count {
            volumes.push(decode_volume(&mut r).ok_or(damaged("volume table"))?);
        }
        let count = r.u32().ok_or(damaged("rows"))? as usize;
        if count > bytes.len() / 12 {
            return Err(damaged("row count"));
        }
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            let (volume, vchunk, pchunk) = (r.u32(), r.u32(), r.u32());
            let (Some(volume), Some(vchunk), Some(pchunk)) = (volume, vchunk, pchunk) else {
                return Err(damaged("rows"));
            };
            if pchunk >= chunks {
                return Err(damaged("physical chunk beyond the pool"));
            }
            rows.push(MapRow {
                volume,
                vchunk,
                pchunk,
                bitmap: FULL,
            });
        }
        let partial = r.u32().ok_or(damaged("bitmaps"))?;
        for _ in 0..partial {
            let index = r.u32().ok_or(damaged("bitmaps"))? as usize;
            let bitmap = r.bitmap().ok_or(damaged("bitmaps"))?;
            rows.get_mut(index).ok_or(damaged("bitmap index"))?.bitmap = bitmap;
        }
        Ok(Checkpoint {
            next_volume_id,
            volumes,
            rows,
        })
    }
}

fn encode_volume(out: &mut Vec<u8>, v: &VolumeRecord) {
    out.extend_from_slice(&v.id.to_le_bytes());
    out.extend_from_slice(&v.size_bytes.to_le_bytes());
    let name = &v.name.as_bytes()[..v.name.len().min(NAME_MAX_BYTES)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

fn decode_volume(r: &mut Reader) -> Option<VolumeRecord> {
    let id = r.u32()?;
    let size_bytes = r.u64()?;
    let len = usize::from(r.u8()?);
    let name = String::from_utf8(r.bytes(len)?.to_vec()).ok()?;
    Some(VolumeRecord {
        id,
        size_bytes,
        name,
    })
}

/// One change in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `(volume, vchunk)` now maps to `pchunk` with `bitmap`.
    Map(MapRow),
    /// `(volume, vchunk)` maps to nothing.
    Unmap {
        volume: u32,
        vchunk: u32,
    },
    CreateVolume(VolumeRecord),
    GrowVolume {
        id: u32,
        size_bytes: u64,
    },
    /// A new volume `record` whose map is a copy of `source`'s at this point.
    CloneVolume {
        source: u32,
        record: VolumeRecord,
    },
    DeleteVolume {
        id: u32,
    },
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Map(row) => {
                let full = row.bitmap == FULL;
                out.push(if full { 1 } else { 2 });
                out.extend_from_slice(&row.volume.to_le_bytes());
                out.extend_from_slice(&row.vchunk.to_le_bytes());
                out.extend_from_slice(&row.pchunk.to_le_bytes());
                if !full {
                    for word in row.bitmap {
                        out.extend_from_slice(&word.to_le_bytes());
                    }
                }
            }
            Record::Unmap { volume, vchunk } => {
                out.push(3);
                out.extend_from_slice(&volume.to_le_bytes());
                out.extend_from_slice(&vchunk.to_le_bytes());
            }
            Record::CreateVolume(v) => {
                out.push(4);
                encode_volume(out, v);
            }
            Record::GrowVolume { id, size_bytes } => {
                out.push(5);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&size_bytes.to_le_bytes());
            }
            Record::CloneVolume { source, record } => {
                out.push(6);
                out.extend_from_slice(&source.to_le_bytes());
                encode_volume(out, record);
            }
            Record::DeleteVolume { id } => {
                out.push(7);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }

    fn decode(r: &mut Reader) -> Option<Record> {
        Some(match r.u8()? {
            kind @ (1 | 2) => {
                let (volume, vchunk, pchunk) = (r.u32()?, r.u32()?, r.u32()?);
                let bitmap = if kind == 1 { FULL } else { r.bitmap()? };
                Record::Map(MapRow {
                    volume,
                    vchunk,
                    pchunk,
                    bitmap,
                })
            }
            3 => Record::Unmap {
                volume: r.u32()?,
                vchunk: r.u32()?,
            },
            4 => Record::CreateVolume(decode_volume(r)?),
            5 => Record::GrowVolume {
                id: r.u32()?,
                size_bytes: r.u64()?,
            },
            6 => Record::CloneVolume {
                source: r.u32()?,
                record: decode_volume(r)?,
            },
            7 => Record::DeleteVolume { id: r.u32()? },
            _ => return None,
        })
    }
}

/// Frames records as one journal batch, padded to 4 KiB so the next batch starts on its
/// own page (a torn write of one batch never damages an acknowledged one).
pub fn encode_batch(generation: u64, sequence: u64, records: &[Record]) -> Vec<u8> {
    let mut body = Vec::new();
    for record in records {
        record.encode(&mut body);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    let mut crc_input = out.clone();
    crc_input.extend_from_slice(&body);
    out.extend_from_slice(&crc32c(&crc_input).to_le_bytes());
    out.extend_from_slice(&body);
    let padded = out.len().div_ceil(SUPERBLOCK_BYTES as usize) * SUPERBLOCK_BYTES as usize;
    out.resize(padded, 0);
    out
}

/// The header of a batch: its body length, if the header is one of `generation` and
/// `sequence`.
pub fn batch_body_len(header: &[u8], generation: u64, sequence: u64) -> Option<usize> {
    let mut r = Reader::new(header);
    if r.u32()? != BATCH_MAGIC {
        return None;
    }
    let len = r.u32()? as usize;
    (r.u64()? == generation && r.u64()? == sequence).then_some(len)
}

/// Checks a whole batch (header and body) and returns its records.
pub fn decode_batch(batch: &[u8]) -> Option<Vec<Record>> {
    let header = batch.get(..BATCH_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let body = batch.get(BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + len)?;
    let crc = u32::from_le_bytes(header[24..28].try_into().ok()?);
    let mut crc_input = header[..24].to_vec();
    crc_input.extend_from_slice(body);
    if crc32c(&crc_input) != crc {
        return None;
    }
    let mut r = Reader::new(body);
    let mut records = Vec::new();
    while r.at < body.len() {
        records.push(Record::decode(&mut r)?);
    }
    Some(records)
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn bitmap(&mut self) -> Option<Bitmap> {
        Some([self.u64()?, self.u64()?, self.u64()?, self.u64()?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_checkpoint_and_batches_round_trip_and_damage_is_seen() {
        let sb = Superblock {
            layout: Layout::for_chunks(100),
            pool_id: 7,
            generation: 3,
            checkpoint_bytes: 99,
            checkpoint_crc: 5,
        };
        let bytes = sb.encode();
        assert_eq!(Superblock::decode(&bytes), Some(sb));
        let mut torn = bytes.clone();
        torn[20] ^= 1;
        assert_eq!(Superblock::decode(&torn), None);
        let older = Superblock {
            generation: 2,
            ..sb
        }
        .encode();
        assert_eq!(Superblock::pick(&older, &bytes).unwrap().generation, 3);
        assert_eq!(Superblock::pick(&torn, &older).unwrap().generation, 2);

        let mut partial = FULL;
        partial[1] = 5;
        let checkpoint = Checkpoint {
            next_volume_id: 3,
            volumes: vec![VolumeRecord {
                id: 1,
                size_bytes: 1 << 40,
                name: "vm1".into(),
            }],
            rows: vec![
                MapRow {
                    volume: 1,
                    vchunk: 9,
                    pchunk: 4,
                    bitmap: FULL,
                },
                MapRow {
                    volume: 1,
                    vchunk: 10,
                    pchunk: 5,
                    bitmap: partial,
                },
            ],
        };
        let encoded = checkpoint.encode();
        // 12 bytes per full row: the steady-state cost.
        assert_eq!(
            Checkpoint::decode(&encoded, 100).unwrap(),
            checkpoint,
            "round trip"
        );
        assert!(
            Checkpoint::decode(&encoded, 5).is_err(),
            "chunk beyond pool"
        );

        let records = vec![
            Record::Map(checkpoint.rows[1]),
            Record::Unmap {
                volume: 1,
                vchunk: 9,
            },
            Record::CloneVolume {
                source: 1,
                record: VolumeRecord {
                    id: 2,
                    size_bytes: 1 << 20,
                    name: "c".into(),
                },
            },
            Record::DeleteVolume { id: 1 },
        ];
        let batch = encode_batch(3, 1, &records);
        assert_eq!(batch.len() % 4096, 0);
        assert!(batch_body_len(&batch, 3, 1).is_some());
        assert!(batch_body_len(&batch, 4, 1).is_none());
        assert!(batch_body_len(&batch, 3, 2).is_none());
        assert_eq!(decode_batch(&batch), Some(records));
        let mut torn = batch.clone();
        torn[BATCH_HEADER_BYTES + 3] ^= 0x40;
        assert_eq!(decode_batch(&torn), None);
    }
}
