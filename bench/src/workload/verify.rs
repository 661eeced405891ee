//! Data verification in the manner of fio's `verify` (fio(1), "Verification"): every
//! `verify_interval` bytes of a write start with a header that says what the block is, and a
//! read proves it got that block back.
//!
//! Header (little-endian; 40 bytes and the digest):
//! ```text
//!  0  magic "iSBv"            4  header length (u16)   6  checksum kind   7  version (1)
//!  8  offset in the target (u64)                      16  generation (u64)
//! 24  job seed (u64)                                  32  block length (u32)  36  zero
//! 40  digest over bytes 0..40 and the data: its kind's length (`checksum`: 1 byte for
//!     crc7 to 64 for sha512 and sha3-512); none for meta
//! ```
//! The data after the header is seeded from (job seed, offset, generation) (or is
//! `verify_pattern` repeated, when one is given, as fio fills it), so a check can rebuild the
//! exact block it expects and name the first byte that differs, not just the block. The
//! header is ours, not fio's binary layout: fio's tools cannot read it, and need not.
//!
//! `verify=pattern` is fio's strict pattern check: no header at all, every byte must be
//! `verify_pattern` repeated. Here the pattern's phase is taken from the byte's offset in the
//! target (fio restarts it at each buffer), so a block reads back the same whatever the I/O
//! size; with a pattern length that divides the block size (1, 2 or 4 bytes, fio's usual
//! widths) the two agree. A pattern check cannot see a block from another offset or an older
//! write: use a checksum kind for that. fio's `%o` (offset) pattern tokens are not supported.
//!
//! Generations: a block's generation grows each time the job rewrites it, so an old copy
//! (a lost write, a stale cache) is caught even though its checksum is fine. Which generation
//! each block must hold is `generation`'s business.

use std::fmt;

use super::checksum::ChecksumKind;
use super::rng::{mix64, SplitMix64};
use super::WorkloadError;

pub const HEADER_MAGIC: [u8; 4] = *b"iSBv";
pub const HEADER_VERSION: u8 = 1;
/// Header bytes before the digest.
pub const HEADER_FIXED_LEN: usize = 40;
/// How many bytes each side of a pattern mismatch the error shows.
const WINDOW_LEN: usize = 16;

/// fio's `verify=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyKind {
    /// A header and a digest of this kind over the header and the data.
    Checksum(ChecksumKind),
    Pattern,
    /// fio's `meta`: the header alone (offset, generation, seed, length) is checked; the
    /// data carry no digest.
    Meta,
}

impl VerifyKind {
    pub fn fio_name(self) -> &'static str {
        match self {
            VerifyKind::Checksum(kind) => kind.fio_name(),
            VerifyKind::Pattern => "pattern",
            VerifyKind::Meta => "meta",
        }
    }

    /// The kind byte of the header. Codes 1 to 5 are the ones blocks were written with
    /// before the other checksums came; those take the next numbers, so no block already
    /// written changes meaning.
    fn code(self) -> u8 {
        match self {
            VerifyKind::Checksum(ChecksumKind::Crc32c) => 1,
            VerifyKind::Checksum(ChecksumKind::Md5) => 2,
            VerifyKind::Checksum(ChecksumKind::Sha256) => 3,
            VerifyKind::Pattern => 4,
            VerifyKind::Meta => 5,
            VerifyKind::Checksum(ChecksumKind::Crc64) => 6,
            VerifyKind::Checksum(ChecksumKind::Crc32) => 7,
            VerifyKind::Checksum(ChecksumKind::Crc16) => 8,
            VerifyKind::Checksum(ChecksumKind::Crc7) => 9,
            VerifyKind::Checksum(ChecksumKind::Sha1) => 10,
            VerifyKind::Checksum(ChecksumKind::Sha512) => 11,
            VerifyKind::Checksum(ChecksumKind::Sha3_224) => 12,
            VerifyKind::Checksum(ChecksumKind::Sha3_256) => 13,
            VerifyKind::Checksum(ChecksumKind::Sha3_384) => 14,
            VerifyKind::Checksum(ChecksumKind::Sha3_512) => 15,
            VerifyKind::Checksum(ChecksumKind::Xxhash) => 16,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        ChecksumKind::ALL
            .into_iter()
            .map(VerifyKind::Checksum)
            .chain([VerifyKind::Pattern, VerifyKind::Meta])
            .find(|kind| kind.code() == code)
    }

    fn digest_len(self) -> usize {
        match self {
            VerifyKind::Checksum(kind) => kind.digest_len(),
            VerifyKind::Pattern | VerifyKind::Meta => 0,
        }
    }

    /// Bytes of header at the start of each verify interval (0 for `pattern`).
    pub fn header_len(self) -> usize {
        match self {
            VerifyKind::Pattern => 0,
            kind => HEADER_FIXED_LEN + kind.digest_len(),
        }
    }
}

/// fio's `verify`, `verify_interval`, `verify_pattern`, `verify_fatal`, `do_verify`, and what
/// the report needs to name LBAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    pub kind: VerifyKind,
    /// `verify_offset`: the header sits this many bytes into each interval (fio swaps it
    /// with the data there before writing and back before checking); 0 for the start.
    pub header_offset: u32,
    /// `verify_interval`; `None` for fio's default, the block size (the smallest write size,
    /// or read size in a read-only job).
    pub interval_bytes: Option<u32>,
    /// `verify_pattern` as bytes; empty for seeded data. Required by `verify=pattern`.
    pub pattern: Vec<u8>,
    /// `verify_fatal`: the runner stops the job at the first failure.
    pub fatal: bool,
    /// `do_verify` (fio's default true): a write job reads back what it wrote.
    pub do_verify: bool,
    /// The target's logical block length, to name the LBA in errors.
    pub lba_size_bytes: u32,
    /// Memory bound for workloads whose generations need a table (4 bytes per verify
    /// interval of the region); see `generation`.
    pub max_tracked_blocks: u64,
    /// `verify_backlog`: after this many verified writes the job stops writing and reads
    /// them back (`Next::VerifyBacklog`), instead of (only) at the end of a pass.
    pub backlog: Option<u64>,
    /// `verify_backlog_batch`: how many blocks each backlog check reads (fio's default:
    /// `backlog`); the rest wait in the backlog for a later check or the verify phase.
    pub backlog_batch: Option<u64>,
    /// fio's `verify_header_seed` (default true): a block's header must carry the job's
    /// seed; false skips that check (the digest is still checked).
    pub check_seed: bool,
    /// fio's `verify_write_sequence` (default true): a block's header must carry the
    /// generation (fio's write sequence number) the job last wrote there; false skips
    /// that check (the digest is still checked).
    pub check_generation: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            kind: VerifyKind::Checksum(ChecksumKind::Crc32c),
            interval_bytes: None,
            header_offset: 0,
            pattern: Vec::new(),
            fatal: false,
            do_verify: true,
            lba_size_bytes: 512,
            max_tracked_blocks: super::GENERATION_TABLE_BLOCKS_DEFAULT,
            backlog: None,
            backlog_batch: None,
            check_seed: true,
            check_generation: true,
        }
    }
}

/// A verify header as read from (or expected on) the medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyHeader {
    pub magic: [u8; 4],
    pub header_len: u16,
    pub kind_code: u8,
    pub version: u8,
    pub offset: u64,
    pub generation: u64,
    pub seed: u64,
    pub block_len: u32,
    pub digest: Vec<u8>,
}

impl VerifyHeader {
    fn encode_fixed(&self) -> [u8; HEADER_FIXED_LEN] {
        let mut bytes = [0u8; HEADER_FIXED_LEN];
        bytes[0..4].copy_from_slice(&self.magic);
        bytes[4..6].copy_from_slice(&self.header_len.to_le_bytes());
        bytes[6] = self.kind_code;
        bytes[7] = self.version;
        bytes[8..16].copy_from_slice(&self.offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.generation.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.seed.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.block_len.to_le_bytes());
        bytes
    }

    /// Reads the fixed part and up to `digest_len` digest bytes; `None` if `bytes` is shorter
    /// than the fixed part.
    fn decode(bytes: &[u8], digest_len: usize) -> Option<Self> {
        let fixed = bytes.get(..HEADER_FIXED_LEN)?;
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&fixed[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let digest_end = (HEADER_FIXED_LEN + digest_len).min(bytes.len());
        Some(VerifyHeader {
            magic: [fixed[0], fixed[1], fixed[2], fixed[3]],
            header_len: u16::from_le_bytes([fixed[4], fixed[5]]),
            kind_code: fixed[6],
            version: fixed[7],
            offset: u64_at(8),
            generation: u64_at(16),
            seed: u64_at(24),
            block_len: u32::from_le_bytes([fixed[32], fixed[33], fixed[34], fixed[35]]),
            digest: bytes
                .get(HEADER_FIXED_LEN..digest_end)
                .unwrap_or_default()
                .to_vec(),
        })
    }
}

impl fmt::Display for VerifyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = VerifyKind::from_code(self.kind_code).map_or("unknown", VerifyKind::fio_name);
        write!(
            f,
            "magic {} v{}, header {} bytes, {} ({}), offset {:#x}, generation {}, seed {:#018x}, block {} bytes, digest ",
            self.magic.escape_ascii(),
            self.version,
            self.header_len,
            kind,
            self.kind_code,
            self.offset,
            self.generation,
            self.seed,
            self.block_len,
        )?;
        write_hex(f, &self.digest)
    }
}

/// A few bytes of a block and where they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteWindow {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl fmt::Display for ByteWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes at {:#x}: ", self.offset)?;
        write_hex(f, &self.bytes)
    }
}

/// What a block should hold or holds, as the error shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockImage {
    Header(VerifyHeader),
    Bytes(ByteWindow),
}

impl fmt::Display for BlockImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockImage::Header(header) => header.fmt(f),
            BlockImage::Bytes(window) => window.fmt(f),
        }
    }
}

/// Which check failed first.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// No header of ours: never written, overwritten by something else, or a torn write.
    Magic,
    HeaderLength,
    ChecksumKind,
    BlockLength,
    /// The block belongs at another offset (misdirected write or read).
    Offset,
    /// Another job's (or run's) block.
    Seed,
    /// An older (or newer) copy of the block: `found < expected` is a lost write.
    Generation {
        expected: u64,
        found: u64,
    },
    /// The header is right but the bytes are not.
    Checksum,
    /// `verify=pattern`: a byte is not the pattern's.
    Pattern,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Magic => f.write_str("bad magic (not a verify header)"),
            Mismatch::HeaderLength => f.write_str("bad header length"),
            Mismatch::ChecksumKind => f.write_str("other checksum kind"),
            Mismatch::BlockLength => f.write_str("other block length"),
            Mismatch::Offset => f.write_str("block from another offset"),
            Mismatch::Seed => f.write_str("block from another job (seed)"),
            Mismatch::Generation { expected, found } if found < expected => {
                write!(f, "stale block: generation {found}, expected {expected}")
            }
            Mismatch::Generation { expected, found } => {
                write!(
                    f,
                    "block from the future: generation {found}, expected {expected}"
                )
            }
            Mismatch::Checksum => f.write_str("checksum mismatch"),
            Mismatch::Pattern => f.write_str("pattern mismatch"),
        }
    }
}

/// A checksum mismatch's two digests: the one the header carries (computed when the block
/// was written) and the one computed over the data read (fio's "Expected CRC" and
/// "Received CRC").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestMismatch {
    pub kind: VerifyKind,
    pub in_header: Vec<u8>,
    pub of_data_read: Vec<u8>,
}

impl fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in the header ", self.kind.fio_name())?;
        write_hex(f, &self.in_header)?;
        f.write_str(", computed over the data read ")?;
        write_hex(f, &self.of_data_read)
    }
}

/// One block that failed verification.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verify: {mismatch} in the block at offset {block_offset:#x} ({block_len} bytes); first bad byte at {bad_byte_offset:#x}, LBA {lba}; expected [{expected}]; found [{found}]{}", .digests.as_ref().map(|d| format!("; {d}")).unwrap_or_default())]
pub struct VerifyError {
    pub mismatch: Mismatch,
    /// Where the verify block (one interval) starts in the target.
    pub block_offset: u64,
    pub block_len: u32,
    /// The first byte that differs from what was written.
    pub bad_byte_offset: u64,
    /// The logical block holding that byte (`bad_byte_offset / lba_size`).
    pub lba: u64,
    /// Boxed to keep the `Result` of a good check small.
    pub expected: Box<BlockImage>,
    pub found: Box<BlockImage>,
    /// For a checksum mismatch, the digest stored and the one of the data read.
    pub digests: Option<Box<DigestMismatch>>,
}

impl VerifyError {
    /// One line for the job's error and the report: what and where, without the bytes
    /// (printed once, in full, when the block is found bad).
    pub fn summary(&self) -> String {
        format!(
            "{} in the block at offset {:#x}, LBA {}",
            self.mismatch, self.block_offset, self.lba
        )
    }
}

/// Why [`Verifier::check_with`] refused a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JudgedFailure<E> {
    /// The block is not a sound block of ours for its offset (torn, misplaced, never
    /// written, foreign).
    Block(Box<VerifyError>),
    /// A sound block, but the judge refused the write it holds.
    Judged(E),
}

/// Fills write buffers and checks read buffers for one job.
#[derive(Debug, Clone)]
pub struct Verifier {
    kind: VerifyKind,
    interval_bytes: u32,
    /// `verify_offset`: where in each interval the header is written (swapped with the
    /// data there, and back before the check), 0 at the start.
    header_offset: u32,
    pattern: Vec<u8>,
    seed: u64,
    lba_size_bytes: u32,
    check_seed: bool,
    check_generation: bool,
}

impl Verifier {
    /// `default_interval_bytes` is used when the config leaves `verify_interval` unset.
    pub fn new(
        config: &VerifyConfig,
        seed: u64,
        default_interval_bytes: u32,
    ) -> Result<Self, WorkloadError> {
        if config.kind == VerifyKind::Pattern && config.pattern.is_empty() {
            return Err(WorkloadError::VerifyPatternEmpty);
        }
        if config.lba_size_bytes == 0 {
            return Err(WorkloadError::ZeroLbaSize);
        }
        let interval_bytes = config.interval_bytes.unwrap_or(default_interval_bytes);
        let header_len = config.kind.header_len() as u32;
        if interval_bytes == 0 || interval_bytes < header_len {
            return Err(WorkloadError::VerifyIntervalTooShort {
                interval_bytes,
                header_len,
            });
        }
        if config.header_offset > 0
            && (config.header_offset < header_len
                || u64::from(config.header_offset) + u64::from(header_len)
                    > u64::from(interval_bytes))
        {
            return Err(WorkloadError::VerifyOffsetTooLarge {
                offset_bytes: config.header_offset,
                header_len,
                interval_bytes,
            });
        }
        Ok(Verifier {
            kind: config.kind,
            interval_bytes,
            header_offset: config.header_offset,
            pattern: config.pattern.clone(),
            seed,
            lba_size_bytes: config.lba_size_bytes,
            check_seed: config.check_seed,
            check_generation: config.check_generation,
        })
    }

    pub fn kind(&self) -> VerifyKind {
        self.kind
    }

    pub fn interval_bytes(&self) -> u32 {
        self.interval_bytes
    }

    pub fn lba_size_bytes(&self) -> u32 {
        self.lba_size_bytes
    }

    pub fn header_len(&self) -> usize {
        self.kind.header_len()
    }

    /// Fills a write buffer that goes to `offset` with the blocks of `generation`.
    pub fn fill(&self, buffer: &mut [u8], offset: u64, generation: u64) {
        let interval = self.interval_bytes as usize;
        for (index, chunk) in buffer.chunks_mut(interval).enumerate() {
            self.fill_chunk(
                chunk,
                offset + (index * interval) as u64,
                self.seed,
                generation,
            );
            self.swap_header(chunk);
        }
    }

    /// fio's `verify_offset`: swaps the header with the bytes `header_offset` into the
    /// chunk (its own inverse). Nothing to do without a header or an offset.
    fn swap_header(&self, chunk: &mut [u8]) {
        let header_len = self.kind.header_len();
        let at = self.header_offset as usize;
        if at == 0 || header_len == 0 || at + header_len > chunk.len() {
            return;
        }
        if at < header_len {
            return; // refused by Verifier::new: the two ranges would overlap
        }
        let (head, rest) = chunk.split_at_mut(at);
        head[..header_len].swap_with_slice(&mut rest[..header_len]);
    }

    /// Checks a read buffer from `offset`, block by block; the first bad block is the error.
    /// `expected_generation` `None` accepts any generation and seed (data an earlier run wrote).
    pub fn check(
        &self,
        buffer: &[u8],
        offset: u64,
        expected_generation: Option<u64>,
    ) -> Result<(), VerifyError> {
        let interval = self.interval_bytes as usize;
        for (index, chunk) in buffer.chunks(interval).enumerate() {
            let chunk_offset = offset + (index * interval) as u64;
            if self.header_offset > 0 {
                let mut swapped = chunk.to_vec();
                self.swap_header(&mut swapped);
                self.check_chunk(&swapped, chunk_offset, expected_generation)?;
            } else {
                self.check_chunk(chunk, chunk_offset, expected_generation)?;
            }
        }
        Ok(())
    }

    /// `verify_shared`'s check: each block must be a sound block of ours for its offset
    /// (magic, lengths, kind, offset, digest; any generation and seed), and then `judge`
    /// decides whether the write its header names (generation, seed) may be there. The
    /// first bad block is the error. Only kinds with a header and digest can do this.
    pub fn check_with<E>(
        &self,
        buffer: &[u8],
        offset: u64,
        mut judge: impl FnMut(u64, u64, u64) -> Result<(), E>,
    ) -> Result<(), JudgedFailure<E>> {
        let interval = self.interval_bytes as usize;
        for (index, chunk) in buffer.chunks(interval).enumerate() {
            let chunk_offset = offset + (index * interval) as u64;
            let swapped;
            let chunk = if self.header_offset > 0 {
                let mut copy = chunk.to_vec();
                self.swap_header(&mut copy);
                swapped = copy;
                &swapped[..]
            } else {
                chunk
            };
            self.check_chunk(chunk, chunk_offset, None)
                .map_err(|e| JudgedFailure::Block(Box::new(e)))?;
            // Sound, so the header is there (the check refuses a chunk too short for one).
            if let Some(header) = VerifyHeader::decode(chunk, self.kind.digest_len()) {
                judge(chunk_offset, header.generation, header.seed)
                    .map_err(JudgedFailure::Judged)?;
            }
        }
        Ok(())
    }

    fn fill_chunk(&self, chunk: &mut [u8], chunk_offset: u64, seed: u64, generation: u64) {
        let header_len = self.kind.header_len();
        if self.kind == VerifyKind::Pattern || chunk.len() < header_len {
            self.fill_data(chunk, chunk_offset, 0, seed, generation);
            return;
        }
        let block_len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let (head, data) = chunk.split_at_mut(header_len);
        self.fill_data(data, chunk_offset, header_len as u64, seed, generation);
        let header = VerifyHeader {
            magic: HEADER_MAGIC,
            header_len: header_len as u16,
            kind_code: self.kind.code(),
            version: HEADER_VERSION,
            offset: chunk_offset,
            generation,
            seed,
            block_len,
            digest: Vec::new(),
        };
        let fixed = header.encode_fixed();
        let digest = self.digest(&fixed, data);
        head[..HEADER_FIXED_LEN].copy_from_slice(&fixed);
        head[HEADER_FIXED_LEN..].copy_from_slice(&digest);
    }

    /// The data part: the pattern (phase from the target offset) or seeded bytes.
    /// `skip` is where `data` starts within its chunk.
    fn fill_data(&self, data: &mut [u8], chunk_offset: u64, skip: u64, seed: u64, generation: u64) {
        if !self.pattern.is_empty() {
            let len = self.pattern.len() as u64;
            let start = chunk_offset.wrapping_add(skip);
            for (index, byte) in data.iter_mut().enumerate() {
                let phase = start.wrapping_add(index as u64) % len;
                *byte = self.pattern.get(phase as usize).copied().unwrap_or(0);
            }
            return;
        }
        let mut rng = SplitMix64::new(mix64(
            seed ^ mix64(chunk_offset ^ mix64(generation ^ 0x5eed_da7a)),
        ));
        for word in data.chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }

    fn digest(&self, fixed: &[u8], data: &[u8]) -> Vec<u8> {
        match self.kind {
            VerifyKind::Checksum(kind) => kind.digest(&[fixed, data]),
            VerifyKind::Pattern | VerifyKind::Meta => Vec::new(),
        }
    }

    fn check_chunk(
        &self,
        chunk: &[u8],
        chunk_offset: u64,
        expected_generation: Option<u64>,
    ) -> Result<(), VerifyError> {
        let header_len = self.kind.header_len();
        if self.kind == VerifyKind::Pattern || chunk.len() < header_len {
            // No header: only the bytes can be compared, and seeded data only when the
            // generation is known.
            if self.pattern.is_empty() && self.kind != VerifyKind::Pattern {
                let Some(generation) = expected_generation else {
                    return Ok(());
                };
                return self.compare_whole(
                    chunk,
                    chunk_offset,
                    self.seed,
                    generation,
                    Mismatch::Checksum,
                );
            }
            return self.compare_whole(chunk, chunk_offset, self.seed, 0, Mismatch::Pattern);
        }
        let Some(found) = VerifyHeader::decode(chunk, self.kind.digest_len()) else {
            return Ok(()); // unreachable: chunk.len() >= header_len > HEADER_FIXED_LEN
        };
        let block_len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let any_generation = expected_generation.is_none();
        let mut digests = None;
        let mismatch = if found.magic != HEADER_MAGIC || found.version != HEADER_VERSION {
            Some(Mismatch::Magic)
        } else if usize::from(found.header_len) != header_len {
            Some(Mismatch::HeaderLength)
        } else if found.kind_code != self.kind.code() {
            Some(Mismatch::ChecksumKind)
        } else if found.block_len != block_len {
            Some(Mismatch::BlockLength)
        } else if found.offset != chunk_offset {
            Some(Mismatch::Offset)
        } else if self.check_seed && !any_generation && found.seed != self.seed {
            Some(Mismatch::Seed)
        } else if let Some(expected) =
            expected_generation.filter(|&g| self.check_generation && g != found.generation)
        {
            Some(Mismatch::Generation {
                expected,
                found: found.generation,
            })
        } else {
            let (head, data) = chunk.split_at(header_len);
            let computed = self.digest(&head[..HEADER_FIXED_LEN], data);
            (computed != found.digest).then(|| {
                digests = Some(Box::new(DigestMismatch {
                    kind: self.kind,
                    in_header: found.digest.clone(),
                    of_data_read: computed,
                }));
                Mismatch::Checksum
            })
        };
        let Some(mismatch) = mismatch else {
            return Ok(());
        };
        // Rebuild the block that should be there, to name the first bad byte and show the
        // header that was expected. With any generation accepted, the found header's
        // generation and seed are taken as the intended ones.
        let (seed, generation) = match expected_generation {
            Some(generation) => (self.seed, generation),
            None => (found.seed, found.generation),
        };
        let mut expected_block = vec![0u8; chunk.len()];
        self.fill_chunk(&mut expected_block, chunk_offset, seed, generation);
        let bad_index = first_difference(&expected_block, chunk).unwrap_or(0);
        let expected_header = VerifyHeader::decode(&expected_block, self.kind.digest_len());
        let bad_byte_offset = chunk_offset + bad_index as u64;
        // A checksum mismatch has the header it should have: the bytes around the first bad
        // one say more than two equal headers.
        let (expected, found) = match (mismatch, expected_header) {
            (Mismatch::Checksum, _) | (_, None) => (
                BlockImage::Bytes(window(&expected_block, chunk_offset, bad_index)),
                BlockImage::Bytes(window(chunk, chunk_offset, bad_index)),
            ),
            (_, Some(expected_header)) => (
                BlockImage::Header(expected_header),
                BlockImage::Header(found),
            ),
        };
        Err(VerifyError {
            mismatch,
            block_offset: chunk_offset,
            block_len,
            bad_byte_offset,
            lba: bad_byte_offset / u64::from(self.lba_size_bytes),
            expected: Box::new(expected),
            found: Box::new(found),
            digests,
        })
    }

    /// Compares a block without a header against its rebuilt contents.
    fn compare_whole(
        &self,
        chunk: &[u8],
        chunk_offset: u64,
        seed: u64,
        generation: u64,
        mismatch: Mismatch,
    ) -> Result<(), VerifyError> {
        let mut expected_block = vec![0u8; chunk.len()];
        self.fill_data(&mut expected_block, chunk_offset, 0, seed, generation);
        let Some(bad_index) = first_difference(&expected_block, chunk) else {
            return Ok(());
        };
        let bad_byte_offset = chunk_offset + bad_index as u64;
        Err(VerifyError {
            mismatch,
            block_offset: chunk_offset,
            block_len: u32::try_from(chunk.len()).unwrap_or(u32::MAX),
            bad_byte_offset,
            lba: bad_byte_offset / u64::from(self.lba_size_bytes),
            expected: Box::new(BlockImage::Bytes(window(
                &expected_block,
                chunk_offset,
                bad_index,
            ))),
            found: Box::new(BlockImage::Bytes(window(chunk, chunk_offset, bad_index))),
            digests: None,
        })
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Up to [`WINDOW_LEN`] bytes of `block` starting at `index`.
fn window(block: &[u8], block_offset: u64, index: usize) -> ByteWindow {
    let end = index.saturating_add(WINDOW_LEN).min(block.len());
    ByteWindow {
        offset: block_offset + index as u64,
        bytes: block.get(index..end).unwrap_or_default().to_vec(),
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn verifier(kind: VerifyKind, interval_bytes: u32, seed: u64) -> Verifier {
        let config = VerifyConfig {
            kind,
            interval_bytes: Some(interval_bytes),
            pattern: if kind == VerifyKind::Pattern {
                vec![0xa5, 0x5a, 0x0f]
            } else {
                Vec::new()
            },
            ..VerifyConfig::default()
        };
        Verifier::new(&config, seed, 4096).expect("valid config")
    }

    #[test]
    fn verify_header_seed_and_write_sequence_off_skip_those_checks_not_the_digest() {
        let kind = VerifyKind::Checksum(ChecksumKind::Crc32c);
        let with = |check_seed, check_generation| {
            let config = VerifyConfig {
                kind,
                interval_bytes: Some(4096),
                check_seed,
                check_generation,
                ..VerifyConfig::default()
            };
            Verifier::new(&config, 7, 4096).expect("valid config")
        };
        // Another job's block (seed 9), generation 3, where this job expects generation 2.
        let mut block = vec![0u8; 4096];
        let other_job = VerifyConfig {
            kind,
            interval_bytes: Some(4096),
            ..VerifyConfig::default()
        };
        Verifier::new(&other_job, 9, 4096)
            .expect("valid config")
            .fill(&mut block, 0, 3);
        let mismatch =
            |v: &Verifier, block: &[u8]| v.check(block, 0, Some(2)).map_err(|e| e.mismatch);
        assert_eq!(mismatch(&with(true, true), &block), Err(Mismatch::Seed));
        assert!(matches!(
            mismatch(&with(false, true), &block),
            Err(Mismatch::Generation {
                expected: 2,
                found: 3
            })
        ));
        assert_eq!(mismatch(&with(true, false), &block), Err(Mismatch::Seed));
        assert_eq!(mismatch(&with(false, false), &block), Ok(()));
        // The digest is still checked.
        block[100] ^= 1;
        assert_eq!(
            mismatch(&with(false, false), &block),
            Err(Mismatch::Checksum)
        );
    }

    /// Every kind whose check sees the data: each checksum, and the strict pattern.
    fn kinds() -> Vec<VerifyKind> {
        ChecksumKind::ALL
            .into_iter()
            .map(VerifyKind::Checksum)
            .chain([VerifyKind::Pattern])
            .collect()
    }

    const CRC32C: VerifyKind = VerifyKind::Checksum(ChecksumKind::Crc32c);
    const MD5: VerifyKind = VerifyKind::Checksum(ChecksumKind::Md5);
    const SHA256: VerifyKind = VerifyKind::Checksum(ChecksumKind::Sha256);

    #[test]
    fn fill_then_check_round_trips() {
        for kind in kinds() {
            let verifier = verifier(kind, 512, 77);
            for (offset, generation, len) in [
                (0u64, 0u64, 512usize),
                (1 << 20, 5, 4096),
                ((u64::MAX / 2) & !511, 99, 1536),
            ] {
                let mut buffer = vec![0u8; len];
                verifier.fill(&mut buffer, offset, generation);
                assert_eq!(
                    verifier.check(&buffer, offset, Some(generation)),
                    Ok(()),
                    "{kind:?}"
                );
                assert_eq!(verifier.check(&buffer, offset, None), Ok(()), "{kind:?}");
            }
        }
    }

    /// The header's kind byte: one code per kind, and the first five as blocks written
    /// before the other checksums came carry them.
    #[test]
    fn kind_codes_are_distinct_and_keep_their_old_values() {
        let all: Vec<VerifyKind> = kinds().into_iter().chain([VerifyKind::Meta]).collect();
        for kind in &all {
            assert_eq!(VerifyKind::from_code(kind.code()), Some(*kind));
        }
        let mut codes: Vec<u8> = all.iter().map(|kind| kind.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(
            [CRC32C, MD5, SHA256, VerifyKind::Pattern, VerifyKind::Meta].map(VerifyKind::code),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn headers_are_where_the_layout_says() {
        let verifier = verifier(SHA256, 4096, 0x1234);
        let mut buffer = vec![0u8; 8192];
        verifier.fill(&mut buffer, 0x10_0000, 7);
        for (index, chunk) in buffer.chunks(4096).enumerate() {
            assert_eq!(&chunk[0..4], b"iSBv");
            assert_eq!(u16::from_le_bytes([chunk[4], chunk[5]]), 72);
            assert_eq!(chunk[6], 3);
            let offset = u64::from_le_bytes(chunk[8..16].try_into().expect("8 bytes"));
            assert_eq!(offset, 0x10_0000 + 4096 * index as u64);
            assert_eq!(
                u64::from_le_bytes(chunk[16..24].try_into().expect("8 bytes")),
                7
            );
            assert_eq!(
                u64::from_le_bytes(chunk[24..32].try_into().expect("8 bytes")),
                0x1234
            );
            assert_eq!(
                u32::from_le_bytes(chunk[32..36].try_into().expect("4 bytes")),
                4096
            );
        }
        // Different blocks carry different data.
        assert_ne!(buffer[100..200], buffer[4196..4296]);
    }

    #[test]
    fn block_from_another_offset_is_caught() {
        let verifier = verifier(CRC32C, 4096, 1);
        let mut buffer = vec![0u8; 4096];
        verifier.fill(&mut buffer, 8192, 3);
        let error = verifier
            .check(&buffer, 16384, Some(3))
            .expect_err("misplaced block");
        assert_eq!(error.mismatch, Mismatch::Offset);
        assert_eq!(error.block_offset, 16384);
        // The first differing byte is in the header's offset field (bytes 8 to 15).
        assert!(
            (16384 + 8..16384 + 16).contains(&error.bad_byte_offset),
            "{error}"
        );
        assert_eq!(error.lba, 32);
        let BlockImage::Header(found) = &*error.found else {
            panic!("header expected: {error}");
        };
        assert_eq!(found.offset, 8192);
        let BlockImage::Header(expected) = &*error.expected else {
            panic!("header expected: {error}");
        };
        assert_eq!(expected.offset, 16384);
        let text = error.to_string();
        assert!(
            text.contains("another offset") && text.contains("LBA 32"),
            "{text}"
        );
        assert!(
            text.contains("offset 0x2000") && text.contains("offset 0x4000"),
            "{text}"
        );
        // Even accepting any generation, the offset must match.
        assert_eq!(
            verifier.check(&buffer, 16384, None).map_err(|e| e.mismatch),
            Err(Mismatch::Offset)
        );
    }

    #[test]
    fn older_generation_is_caught_as_stale() {
        let verifier = verifier(MD5, 4096, 1);
        let mut buffer = vec![0u8; 4096];
        verifier.fill(&mut buffer, 0, 3);
        let error = verifier
            .check(&buffer, 0, Some(4))
            .expect_err("stale block");
        assert_eq!(
            error.mismatch,
            Mismatch::Generation {
                expected: 4,
                found: 3
            }
        );
        assert_eq!(error.bad_byte_offset, 16);
        assert!(
            error
                .to_string()
                .contains("stale block: generation 3, expected 4"),
            "{error}"
        );
        let newer = verifier
            .check(&buffer, 0, Some(2))
            .expect_err("newer block");
        assert!(newer.to_string().contains("future"), "{newer}");
        // Accepting any generation, the old block is a good block.
        assert_eq!(verifier.check(&buffer, 0, None), Ok(()));
    }

    #[test]
    fn another_jobs_block_is_caught() {
        let mut buffer = vec![0u8; 4096];
        verifier(CRC32C, 4096, 1).fill(&mut buffer, 0, 0);
        let other = verifier(CRC32C, 4096, 2);
        assert_eq!(
            other.check(&buffer, 0, Some(0)).map_err(|e| e.mismatch),
            Err(Mismatch::Seed)
        );
        assert_eq!(other.check(&buffer, 0, None), Ok(()));
        let md5 = verifier(MD5, 4096, 1);
        assert_eq!(
            md5.check(&buffer, 0, Some(0)).map_err(|e| e.mismatch),
            Err(Mismatch::HeaderLength)
        );
    }

    #[test]
    fn unwritten_block_has_no_magic() {
        let verifier = verifier(CRC32C, 512, 1);
        let buffer = vec![0u8; 2048];
        let error = verifier.check(&buffer, 4096, Some(0)).expect_err("zeros");
        assert_eq!(error.mismatch, Mismatch::Magic);
        assert_eq!(
            (error.block_offset, error.bad_byte_offset, error.lba),
            (4096, 4096, 8)
        );
    }

    #[test]
    fn pattern_fills_the_data_of_header_kinds() {
        let config = VerifyConfig {
            kind: CRC32C,
            pattern: vec![0xde, 0xad],
            ..VerifyConfig::default()
        };
        let verifier = Verifier::new(&config, 1, 512).expect("valid");
        let mut buffer = vec![0u8; 512];
        verifier.fill(&mut buffer, 0, 0);
        assert!(buffer[44..].chunks(2).all(|pair| pair == [0xde, 0xad]));
        buffer[300] ^= 1;
        let error = verifier.check(&buffer, 0, Some(0)).expect_err("changed");
        assert_eq!(
            (error.mismatch, error.bad_byte_offset),
            (Mismatch::Checksum, 300)
        );
    }

    #[test]
    fn strict_pattern_has_no_header_and_names_the_byte() {
        let verifier = verifier(VerifyKind::Pattern, 512, 1);
        let mut buffer = vec![0u8; 1024];
        verifier.fill(&mut buffer, 3, 0);
        // Phase from the target offset: byte at offset 3 is pattern[0].
        assert_eq!(&buffer[..3], &[0xa5, 0x5a, 0x0f]);
        buffer[700] = 0;
        let error = verifier.check(&buffer, 3, Some(0)).expect_err("changed");
        assert_eq!(error.mismatch, Mismatch::Pattern);
        assert_eq!(error.bad_byte_offset, 703);
        assert_eq!(error.block_offset, 515);
        let BlockImage::Bytes(found) = &*error.found else {
            panic!("bytes expected");
        };
        assert_eq!(found.offset, 703);
        assert_eq!(found.bytes[0], 0);
    }

    #[test]
    fn config_errors() {
        let short = VerifyConfig {
            interval_bytes: Some(64),
            kind: SHA256,
            ..VerifyConfig::default()
        };
        assert!(matches!(
            Verifier::new(&short, 0, 4096),
            Err(WorkloadError::VerifyIntervalTooShort {
                interval_bytes: 64,
                header_len: 72
            })
        ));
        let no_pattern = VerifyConfig {
            kind: VerifyKind::Pattern,
            ..VerifyConfig::default()
        };
        assert_eq!(
            Verifier::new(&no_pattern, 0, 4096).err(),
            Some(WorkloadError::VerifyPatternEmpty)
        );
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_caught_with_its_offset(
            kind_index in 0usize..15,
            position in 0usize..8192,
            flip in 1u8..=255,
            block in 0u64..1_000_000,
            generation in 0u64..1000,
        ) {
            let kind = kinds()[kind_index];
            // A CRC of degree 7 sees every error of up to 7 bits in a row, but not an 8-bit
            // one equal to its polynomial (x^7 + x^3 + 1: a byte xor-ed with 0x89), in fio
            // as here.
            prop_assume!(!(kind == VerifyKind::Checksum(ChecksumKind::Crc7) && flip == 0x89));
            let verifier = verifier(kind, 2048, 0xfeed);
            let offset = block * 512;
            let mut buffer = vec![0u8; 8192];
            verifier.fill(&mut buffer, offset, generation);
            buffer[position] ^= flip;
            let result = verifier.check(&buffer, offset, Some(generation));
            prop_assert!(result.is_err(), "{:?} byte {} not caught", kind, position);
            let error = result.expect_err("checked");
            prop_assert_eq!(error.bad_byte_offset, offset + position as u64);
            prop_assert_eq!(error.lba, (offset + position as u64) / 512);
            prop_assert_eq!(error.block_offset, offset + (position / 2048 * 2048) as u64);
            prop_assert_eq!(error.block_len, 2048);
        }
    }
}
