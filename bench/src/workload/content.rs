//! What a write carries when it is not verifying: fio's buffer contents (fio(1), "Buffers
//! and memory"; fio's `fill_io_buffer` and `small_content_scramble`, by their documented
//! meaning).
//!
//! Arrays that skip zero blocks, deduplicate or compress turn a buffer of zeros into a
//! no-op, so the default is fio's: random data. To keep the hot path cheap a buffer is filled
//! once, when the runner first takes it, and reused; each reuse only stamps its offset and a
//! time into every 512 bytes (`scramble_buffers`, 3 stores per 512 bytes), which is enough to
//! make every written block unique. Per-write random generation happens only when asked for:
//! `refill_buffers`, or `buffer_compress_percentage`/`dedupe_percentage`, which need it (as in
//! fio, they turn `refill_buffers` on).
//!
//! A buffer's content, in fio's order of precedence:
//! 1. `buffer_compress_percentage` (1..=99) or `dedupe_percentage`: each chunk of
//!    `buffer_compress_chunk` bytes is `100 - N` percent random data followed by `N` percent
//!    zeros (or `buffer_pattern`). With `dedupe_percentage=D`, a buffer repeats the last
//!    unique buffer with probability D percent (fio's `dedupe_mode=repeat`).
//! 2. `buffer_pattern`, repeated; `buffer_compress_percentage=100` is zeros or the pattern.
//! 3. `zero_buffers`: zeros.
//! 4. random data.

use super::rng::{mix64, stream_seed, streams, SplitMix64};
use crate::io::BufferOptions;

/// The smallest block fio scrambles, and the grain of the stamps.
const SCRAMBLE_BLOCK_BYTES: usize = 512;

/// A buffer option the content cannot follow.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("{option}={value}: must be 0 to 100")]
    PercentOutOfRange { option: &'static str, value: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Random and compressible parts per chunk, possibly repeated buffers.
    Mixed {
        compress_percentage: u32,
    },
    Pattern,
    Zeros,
    Random,
}

/// The content of one job's write buffers; see the module docs.
#[derive(Debug, Clone)]
pub struct ContentGenerator {
    fill: Fill,
    refill: bool,
    scramble: bool,
    pattern: Vec<u8>,
    chunk_bytes: usize,
    dedupe_percentage: u32,
    seeds: SplitMix64,
    dedupe_draws: SplitMix64,
    /// The seed of the last buffer that was not a repeat.
    last_unique_seed: u64,
    /// `dedupe_mode=working_set`: the seeds a repeat draws from.
    working_set: Vec<u64>,
}

impl ContentGenerator {
    pub fn new(options: &BufferOptions, job_seed: u64) -> Result<Self, ContentError> {
        for (option, value) in [
            ("buffer_compress_percentage", options.compress_percentage),
            ("dedupe_percentage", options.dedupe_percentage),
        ] {
            if value > 100 {
                return Err(ContentError::PercentOutOfRange { option, value });
            }
        }
        let compress = options.compress_percentage;
        let fill = if (compress > 0 && compress < 100) || options.dedupe_percentage > 0 {
            Fill::Mixed {
                compress_percentage: compress,
            }
        } else if !options.pattern.is_empty() {
            Fill::Pattern
        } else if options.zero_buffers || compress == 100 {
            Fill::Zeros
        } else {
            Fill::Random
        };
        let mixed = matches!(fill, Fill::Mixed { .. });
        let mut seeds = SplitMix64::new(stream_seed(job_seed, streams::BUFFER_CONTENT, 0));
        let last_unique_seed = seeds.next_u64();
        Ok(ContentGenerator {
            fill,
            refill: options.refill_buffers || mixed,
            // fio scrambles only what it reuses, and never compressible or deduplicated
            // content (a stamp would change the ratio asked for), nor buffers the job
            // asked to be zeros.
            scramble: options.scramble_buffers && !mixed && !options.zero_buffers,
            pattern: options.pattern.clone(),
            chunk_bytes: options.compress_chunk_bytes as usize,
            dedupe_percentage: options.dedupe_percentage,
            seeds,
            dedupe_draws: SplitMix64::new(stream_seed(job_seed, streams::BUFFER_CONTENT, 1)),
            last_unique_seed,
            working_set: Vec::new(),
        })
    }

    /// fio's `dedupe_mode=working_set`: repeats copy one of `blocks` buffers (at most
    /// 2^20), the first unique ones of the stream seeded by `set_seed`. With the job's own
    /// seed these are the job's first unique buffers, so repeats duplicate blocks the job
    /// also writes once, as fio's working set does; under `dedupe_global` the run's seed
    /// gives every job the same set.
    pub fn with_working_set(mut self, blocks: u64, set_seed: u64) -> Self {
        let mut seeds = SplitMix64::new(stream_seed(set_seed, streams::BUFFER_CONTENT, 0));
        let _ = seeds.next_u64();
        self.working_set = (0..blocks.clamp(1, 1 << 20))
            .map(|_| seeds.next_u64())
            .collect();
        self
    }

    /// Whether every write gets a freshly filled buffer.
    pub fn refills(&self) -> bool {
        self.refill
    }

    /// Whether a reused buffer is stamped before each write.
    pub fn scrambles(&self) -> bool {
        self.scramble && !self.refill
    }

    /// Fills a whole buffer: the content of one write.
    pub fn fill(&mut self, buffer: &mut [u8]) {
        match self.fill {
            Fill::Mixed {
                compress_percentage,
            } => {
                let seed = self.buffer_seed();
                let chunk = if self.chunk_bytes == 0 {
                    buffer.len()
                } else {
                    self.chunk_bytes
                };
                for (index, piece) in buffer.chunks_mut(chunk.max(1)).enumerate() {
                    let random_len = piece.len() * (100 - compress_percentage) as usize / 100;
                    let (random, compressible) = piece.split_at_mut(random_len);
                    fill_random(random, mix64(seed ^ index as u64));
                    fill_pattern(compressible, &self.pattern);
                }
            }
            Fill::Pattern => fill_pattern(buffer, &self.pattern),
            Fill::Zeros => buffer.fill(0),
            Fill::Random => fill_random(buffer, self.seeds.next_u64()),
        }
    }

    /// Fills the tail of a buffer that grew from `filled` bytes (reused buffers only).
    pub fn fill_tail(&mut self, buffer: &mut [u8], filled: usize) {
        if let Some(tail) = buffer.get_mut(filled..) {
            self.fill(tail);
        }
    }

    /// The seed of the next buffer: a repeat of the last unique one `dedupe_percentage`
    /// percent of the time, else a new one.
    fn buffer_seed(&mut self) -> u64 {
        let repeat = self.dedupe_percentage > 0
            && self.dedupe_draws.below(100) < u64::from(self.dedupe_percentage);
        if !repeat {
            self.last_unique_seed = self.seeds.next_u64();
            return self.last_unique_seed;
        }
        if self.working_set.is_empty() {
            return self.last_unique_seed;
        }
        let index = self.dedupe_draws.below(self.working_set.len() as u64) as usize;
        self.working_set[index]
    }
}

/// Random bytes from `seed`: SplitMix64 words, not compressible.
fn fill_random(buffer: &mut [u8], seed: u64) {
    let mut words = SplitMix64::new(seed);
    let mut chunks = buffer.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&words.next_u64().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = words.next_u64().to_le_bytes();
    rest.copy_from_slice(&last[..rest.len()]);
}

/// `pattern` repeated, or zeros when it is empty.
fn fill_pattern(buffer: &mut [u8], pattern: &[u8]) {
    if pattern.is_empty() {
        buffer.fill(0);
        return;
    }
    for (byte, value) in buffer.iter_mut().zip(pattern.iter().cycle()) {
        *byte = *value;
    }
}

/// fio's `scramble_buffers`: the offset of each 512-byte block at one of its eight
/// 64-byte lines (chosen by `stamp` and the offset), and `stamp` at the end of its first
/// line. A buffer reused for many writes then never writes the same block twice.
pub fn scramble(buffer: &mut [u8], offset: u64, stamp: u64) {
    let line = ((stamp ^ offset) & 7) as usize * 64;
    for (index, block) in buffer.chunks_exact_mut(SCRAMBLE_BLOCK_BYTES).enumerate() {
        let block_offset = offset.wrapping_add((index * SCRAMBLE_BLOCK_BYTES) as u64);
        block[line..line + 8].copy_from_slice(&block_offset.to_le_bytes());
        block[48..56].copy_from_slice(&stamp.to_le_bytes());
        block[56..64].copy_from_slice(&(stamp >> 32 ^ block_offset).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Bytes inside runs of 32 or more equal bytes: what any compressor removes, and what
    /// random data almost never has.
    fn compressible_share(data: &[u8]) -> f64 {
        let mut compressible = 0usize;
        let mut run = 1usize;
        for i in 1..=data.len() {
            if i < data.len() && data[i] == data[i - 1] {
                run += 1;
                continue;
            }
            if run >= 32 {
                compressible += run;
            }
            run = 1;
        }
        compressible as f64 / data.len() as f64
    }

    fn generator(options: BufferOptions) -> ContentGenerator {
        ContentGenerator::new(&options, 7).expect("valid options")
    }

    fn blocks(generator: &mut ContentGenerator, count: usize, len: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                let mut buffer = vec![0u8; len];
                generator.fill(&mut buffer);
                buffer
            })
            .collect()
    }

    #[test]
    fn default_is_random_filled_once_and_scrambled() {
        let mut content = generator(BufferOptions::default());
        assert!(!content.refills());
        assert!(content.scrambles());
        let data = blocks(&mut content, 4, 4096).concat();
        assert!(compressible_share(&data) < 0.01);
        assert!(data.iter().filter(|&&b| b == 0).count() < data.len() / 100);
    }

    #[test]
    fn scrambling_makes_every_block_of_a_reused_buffer_unique() {
        let mut buffer = vec![0u8; 4096];
        generator(BufferOptions::default()).fill(&mut buffer);
        let mut seen = HashSet::new();
        for write in 0..64u64 {
            scramble(&mut buffer, write * 4096, 1_000 + write);
            for block in buffer.chunks(512) {
                assert!(
                    seen.insert(block.to_vec()),
                    "write {write}: a repeated block"
                );
            }
        }
    }

    #[test]
    fn compress_percentage_makes_that_share_compressible() {
        for percent in [25u32, 50, 75] {
            let mut content = generator(BufferOptions {
                compress_percentage: percent,
                ..BufferOptions::default()
            });
            assert!(content.refills() && !content.scrambles());
            let data = blocks(&mut content, 64, 4096).concat();
            let share = compressible_share(&data);
            assert!(
                (share - f64::from(percent) / 100.0).abs() < 0.02,
                "{percent}%: {share}"
            );
        }
    }

    #[test]
    fn compress_chunk_zero_is_one_region_per_buffer() {
        let mut content = generator(BufferOptions {
            compress_percentage: 50,
            compress_chunk_bytes: 0,
            ..BufferOptions::default()
        });
        let mut buffer = vec![0xffu8; 8192];
        content.fill(&mut buffer);
        assert!(buffer[4096..].iter().all(|&b| b == 0));
        assert!(compressible_share(&buffer[..4096]) < 0.01);
    }

    #[test]
    fn dedupe_percentage_repeats_that_share_of_buffers() {
        let mut content = generator(BufferOptions {
            dedupe_percentage: 50,
            ..BufferOptions::default()
        });
        let data = blocks(&mut content, 2000, 4096);
        let unique: HashSet<&Vec<u8>> = data.iter().collect();
        let duplicate_share = 1.0 - unique.len() as f64 / data.len() as f64;
        assert!((duplicate_share - 0.5).abs() < 0.05, "{duplicate_share}");
        // The unique ones are random, not compressible.
        assert!(compressible_share(&data.concat()) < 0.01);
    }

    #[test]
    fn pattern_zeros_and_full_compression() {
        let mut content = generator(BufferOptions {
            pattern: vec![0xde, 0xad],
            ..BufferOptions::default()
        });
        let mut buffer = vec![0u8; 7];
        content.fill(&mut buffer);
        assert_eq!(buffer, [0xde, 0xad, 0xde, 0xad, 0xde, 0xad, 0xde]);
        for options in [
            BufferOptions {
                zero_buffers: true,
                ..BufferOptions::default()
            },
            BufferOptions {
                compress_percentage: 100,
                ..BufferOptions::default()
            },
        ] {
            let mut buffer = vec![1u8; 4096];
            generator(options).fill(&mut buffer);
            assert!(buffer.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn same_seed_same_content_and_bad_percentages_refused() {
        let a = blocks(&mut generator(BufferOptions::default()), 3, 1000);
        let b = blocks(&mut generator(BufferOptions::default()), 3, 1000);
        assert_eq!(a, b);
        assert_eq!(
            ContentGenerator::new(
                &BufferOptions {
                    dedupe_percentage: 101,
                    ..BufferOptions::default()
                },
                1
            )
            .err(),
            Some(ContentError::PercentOutOfRange {
                option: "dedupe_percentage",
                value: 101
            })
        );
    }
}
