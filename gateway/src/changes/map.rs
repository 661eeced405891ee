//! The changed-block map of one LUN, in memory and with no I/O: which chunks (64 KiB by
//! default) were written since a change ID, the shape of a storage array's "changed
//! areas" query (VMware's QueryChangedDiskAreas takes a change ID and answers extents).
//!
//! Sparse: a chunk's bit lives in a leaf of [`LEAF_CHUNKS`] bits (64 bytes), allocated on
//! the first write into its span; untouched data costs a null pointer per leaf (8 bytes
//! per 32 MiB at 64 KiB chunks: 256 KiB per TiB), a fully written LUN 2 MiB per TiB more.
//!
//! Generations: the bits written now go to the *live* layer, atomics set with no lock (the
//! write path's cost is one `fetch_or` on a word, after the leaf exists). A query freezes
//! the live layer as generation `g` (its words swapped to zero, so a write racing the
//! query lands in `g` or in `g + 1`, never in neither) and answers the union of the frozen
//! layers from the asked generation on. Layers beyond [`LAYERS_MAX`] are merged, the older
//! into the newer's generation, which can only make an answer larger (over-report), never
//! miss a change. A change ID names an epoch (the tracking's identity: a new tracking of the
//! same LUN is another epoch, and an ID of another epoch is refused, because the map cannot
//! answer it) and a generation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Chunks per leaf: 512 bits, eight words (one cache line).
pub const LEAF_CHUNKS: u64 = 512;
const LEAF_WORDS: usize = (LEAF_CHUNKS / 64) as usize;
/// Frozen layers kept; past this the two oldest merge.
pub const LAYERS_MAX: usize = 16;
/// Leaves of one map at most (a 128 MiB leaf table): 8 PiB at 64 KiB chunks. A larger LUN
/// takes larger chunks; a checkpoint that claims more is refused.
pub const LEAVES_MAX: u64 = 1 << 24;
/// The default chunk: 64 KiB.
pub const DEFAULT_CHUNK_BYTES: u64 = 64 * 1024;

/// A change ID: `EPOCH-GENERATION` (epoch in hex), e.g. `5f3a9c01-7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeId {
    pub epoch: u32,
    pub generation: u64,
}

impl std::fmt::Display for ChangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}-{}", self.epoch, self.generation)
    }
}

/// Why a change ID or a query was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("change ID {0:?}: expected EPOCH-GENERATION (8 hex digits, a dash, a number)")]
    Syntax(String),
    #[error(
        "change ID {asked}: of another tracking epoch than this LUN's ({epoch:08x}); the map \
         cannot answer it: take a full copy and start from the ID it gives"
    )]
    OtherEpoch { asked: ChangeId, epoch: u32 },
    #[error("change ID {asked}: this LUN's map has only reached generation {current}")]
    Future { asked: ChangeId, current: u64 },
}

impl std::str::FromStr for ChangeId {
    type Err = ChangeError;
    fn from_str(text: &str) -> Result<ChangeId, ChangeError> {
        let bad = || ChangeError::Syntax(text.chars().take(40).collect());
        let (epoch, generation) = text.trim().split_once('-').ok_or_else(bad)?;
        if epoch.len() != 8 {
            return Err(bad());
        }
        Ok(ChangeId {
            epoch: u32::from_str_radix(epoch, 16).map_err(|_| bad())?,
            generation: generation.parse().map_err(|_| bad())?,
        })
    }
}

/// A plain sparse bitmap of chunks (a frozen layer, an answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseBits {
    leaves: BTreeMap<u64, Box<[u64; LEAF_WORDS]>>,
}

impl SparseBits {
    pub fn set(&mut self, chunk: u64) {
        let leaf = self
            .leaves
            .entry(chunk / LEAF_CHUNKS)
            .or_insert_with(|| Box::new([0; LEAF_WORDS]));
        let bit = chunk % LEAF_CHUNKS;
        leaf[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    pub fn get(&self, chunk: u64) -> bool {
        self.leaves.get(&(chunk / LEAF_CHUNKS)).is_some_and(|leaf| {
            let bit = chunk % LEAF_CHUNKS;
            leaf[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// Adds every bit of `other`.
    pub fn merge(&mut self, other: &SparseBits) {
        for (index, words) in &other.leaves {
            let leaf = self
                .leaves
                .entry(*index)
                .or_insert_with(|| Box::new([0; LEAF_WORDS]));
            for (mine, theirs) in leaf.iter_mut().zip(words.iter()) {
                *mine |= theirs;
            }
        }
    }

    /// Chunks set.
    pub fn count(&self) -> u64 {
        self.leaves
            .values()
            .flat_map(|leaf| leaf.iter())
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Runs of set chunks, ascending: (first chunk, count).
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (index, leaf) in &self.leaves {
            for (word_index, word) in leaf.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let bit = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let chunk = index * LEAF_CHUNKS + word_index as u64 * 64 + bit;
                    match runs.last_mut() {
                        Some((start, count)) if *start + *count == chunk => *count += 1,
                        _ => runs.push((chunk, 1)),
                    }
                }
            }
        }
        runs
    }

    /// Heap bytes held (leaves and their keys), for the memory goal.
    pub fn memory_bytes(&self) -> u64 {
        self.leaves.len() as u64 * (LEAF_WORDS as u64 * 8 + 16)
    }

    fn leaves(&self) -> impl Iterator<Item = (u64, &[u64; LEAF_WORDS])> {
        self.leaves.iter().map(|(i, l)| (*i, &**l))
    }

    fn insert_leaf(&mut self, index: u64, words: [u64; LEAF_WORDS]) {
        if words.iter().any(|w| *w != 0) {
            self.leaves.insert(index, Box::new(words));
        }
    }
}

/// The live layer: leaves of atomics, allocated on first write, set without a lock.
#[derive(Debug)]
struct LiveBits {
    leaves: Box<[OnceLock<Box<[AtomicU64; LEAF_WORDS]>>]>,
}

impl LiveBits {
    fn new(chunks: u64) -> LiveBits {
        let count = chunks.div_ceil(LEAF_CHUNKS) as usize;
        LiveBits {
            leaves: (0..count).map(|_| OnceLock::new()).collect(),
        }
    }

    fn set_range(&self, first: u64, last: u64) {
        for chunk in first..=last {
            let Some(slot) = self.leaves.get((chunk / LEAF_CHUNKS) as usize) else {
                return;
            };
            let leaf = slot.get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
            let bit = chunk % LEAF_CHUNKS;
            let word = &leaf[(bit / 64) as usize];
            let mask = 1u64 << (bit % 64);
            // A load first: a chunk written again and again costs no shared write.
            if word.load(Ordering::Relaxed) & mask == 0 {
                word.fetch_or(mask, Ordering::Relaxed);
            }
        }
    }

    /// The bits, cleared (`take`) or left (`peek`).
    fn collect(&self, take: bool) -> SparseBits {
        let mut bits = SparseBits::default();
        for (index, slot) in self.leaves.iter().enumerate() {
            if let Some(leaf) = slot.get() {
                let words: [u64; LEAF_WORDS] = std::array::from_fn(|i| {
                    if take {
                        leaf[i].swap(0, Ordering::AcqRel)
                    } else {
                        leaf[i].load(Ordering::Acquire)
                    }
                });
                bits.insert_leaf(index as u64, words);
            }
        }
        bits
    }

    fn memory_bytes(&self) -> u64 {
        let allocated = self.leaves.iter().filter(|s| s.get().is_some()).count() as u64;
        self.leaves.len() as u64 * 8 + allocated * LEAF_WORDS as u64 * 8
    }
}

#[derive(Debug, Clone)]
struct Frozen {
    /// The generation the live layer belongs to.
    current: u64,
    /// (generation, its bits), ascending generations, each below `current`.
    layers: Vec<(u64, SparseBits)>,
}

/// The changed-block map of one LUN.
#[derive(Debug)]
pub struct ChangeMap {
    size_bytes: u64,
    chunk_bytes: u64,
    epoch: u32,
    live: LiveBits,
    frozen: Mutex<Frozen>,
}

/// What a query answers: the changed byte extents (offset, length), ascending and
/// merged, and the ID to ask with next time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub extents: Vec<(u64, u64)>,
    pub next: ChangeId,
}

impl ChangeMap {
    /// An empty map of a LUN of `size_bytes`, chunks of `chunk_bytes` (a power of two of at
    /// least 4 KiB), tracking epoch `epoch`, starting at generation 1.
    pub fn new(size_bytes: u64, chunk_bytes: u64, epoch: u32) -> ChangeMap {
        let chunk_bytes = chunk_bytes.max(4096).next_power_of_two();
        ChangeMap {
            size_bytes,
            chunk_bytes,
            epoch,
            live: LiveBits::new(size_bytes.div_ceil(chunk_bytes)),
            frozen: Mutex::new(Frozen {
                current: 1,
                layers: Vec::new(),
            }),
        }
    }

    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// Whether a map of a LUN of `size_bytes` in chunks of `chunk_bytes` stays within
    /// [`LEAVES_MAX`].
    pub fn fits(size_bytes: u64, chunk_bytes: u64) -> bool {
        chunk_bytes > 0 && size_bytes.div_ceil(chunk_bytes).div_ceil(LEAF_CHUNKS) <= LEAVES_MAX
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn frozen(&self) -> std::sync::MutexGuard<'_, Frozen> {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ID whose query would answer the changes from now on.
    pub fn current_id(&self) -> ChangeId {
        ChangeId {
            epoch: self.epoch,
            generation: self.frozen().current,
        }
    }

    /// Records a write (or unmap) of `len` bytes at `offset`. No lock.
    pub fn mark(&self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size_bytes {
            return;
        }
        let last = (offset + len - 1).min(self.size_bytes - 1);
        self.live
            .set_range(offset / self.chunk_bytes, last / self.chunk_bytes);
    }

    /// The changes since `since` (every change of this epoch when `None`), and the next ID.
    /// Freezes the live layer: the next ID's answer starts after this one's.
    pub fn changed_since(&self, since: Option<ChangeId>) -> Result<Changed, ChangeError> {
        let mut frozen = self.frozen();
        if let Some(asked) = since {
            if asked.epoch != self.epoch {
                return Err(ChangeError::OtherEpoch {
                    asked,
                    epoch: self.epoch,
                });
            }
            if asked.generation > frozen.current {
                return Err(ChangeError::Future {
                    asked,
                    current: frozen.current,
                });
            }
        }
        let live = self.live.collect(true);
        let generation = frozen.current;
        frozen.layers.push((generation, live));
        frozen.current += 1;
        while frozen.layers.len() > LAYERS_MAX {
            // The older merges into the newer's generation: queries between them answer more.
            let (_, oldest) = frozen.layers.remove(0);
            frozen.layers[0].1.merge(&oldest);
        }
        let from = since.map_or(0, |id| id.generation);
        let mut union = SparseBits::default();
        for (_, bits) in frozen.layers.iter().filter(|(g, _)| *g >= from) {
            union.merge(bits);
        }
        Ok(Changed {
            extents: self.extents(&union),
            next: ChangeId {
                epoch: self.epoch,
                generation: frozen.current,
            },
        })
    }

    fn extents(&self, bits: &SparseBits) -> Vec<(u64, u64)> {
        bits.runs()
            .into_iter()
            .map(|(first, count)| {
                let offset = first * self.chunk_bytes;
                let end = ((first + count) * self.chunk_bytes).min(self.size_bytes);
                (offset, end - offset)
            })
            .collect()
    }

    /// Marks whole byte regions as changed in the live layer (a crash's over-report).
    pub fn mark_regions(&self, regions: &[(u64, u64)]) {
        for (offset, len) in regions {
            self.mark(*offset, *len);
        }
    }

    /// Heap bytes: the live layer's leaf table and leaves, and the frozen layers.
    pub fn memory_bytes(&self) -> u64 {
        let frozen: u64 = self
            .frozen()
            .layers
            .iter()
            .map(|(_, b)| b.memory_bytes())
            .sum();
        self.live.memory_bytes() + frozen
    }

    /// The whole map as bytes (the live layer read, not cleared), for a checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let frozen = self.frozen().clone();
        let live = self.live.collect(false);
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        for value in [
            self.size_bytes,
            self.chunk_bytes,
            u64::from(self.epoch),
            frozen.current,
            frozen.layers.len() as u64 + 1,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        let layers = frozen
            .layers
            .iter()
            .map(|(g, b)| (*g, b))
            .chain(std::iter::once((frozen.current, &live)));
        for (generation, bits) in layers {
            out.extend_from_slice(&generation.to_le_bytes());
            out.extend_from_slice(&(bits.leaves.len() as u64).to_le_bytes());
            for (index, words) in bits.leaves() {
                out.extend_from_slice(&index.to_le_bytes());
                for word in words {
                    out.extend_from_slice(&word.to_le_bytes());
                }
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A map from [`ChangeMap::encode`]'s bytes; every field checked against the others
    /// and the CRC, so a torn or foreign file is refused, never half-read.
    pub fn decode(bytes: &[u8]) -> Result<ChangeMap, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or("shorter than its checksum")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        let mut reader = Reader { bytes: body, at: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err("not a change map".into());
        }
        let size_bytes = reader.u64()?;
        let chunk_bytes = reader.u64()?;
        let epoch = u32::try_from(reader.u64()?).map_err(|_| "epoch out of range")?;
        let current = reader.u64()?;
        let layer_count = reader.u64()?;
        if !chunk_bytes.is_power_of_two() || chunk_bytes < 4096 || size_bytes == 0 {
            return Err("bad chunk size or LUN size".into());
        }
        if !ChangeMap::fits(size_bytes, chunk_bytes) {
            return Err("LUN too large for its chunk size".into());
        }
        if layer_count == 0 || layer_count > LAYERS_MAX as u64 + 1 {
            return Err("bad layer count".into());
        }
        let chunks = size_bytes.div_ceil(chunk_bytes);
        let leaf_limit = chunks.div_ceil(LEAF_CHUNKS);
        let map = ChangeMap::new(size_bytes, chunk_bytes, epoch);
        let mut layers = Vec::new();
        let mut last_generation = 0;
        for layer in 0..layer_count {
            let generation = reader.u64()?;
            let leaves = reader.u64()?;
            if leaves > leaf_limit || generation < last_generation || generation > current {
                return Err("bad layer header".into());
            }
            last_generation = generation;
            let mut bits = SparseBits::default();
            for _ in 0..leaves {
                let index = reader.u64()?;
                if index >= leaf_limit {
                    return Err("leaf beyond the LUN".into());
                }
                let mut words = [0u64; LEAF_WORDS];
                for word in &mut words {
                    *word = reader.u64()?;
                }
                bits.insert_leaf(index, words);
            }
            if layer + 1 == layer_count {
                for (first, count) in bits.runs() {
                    map.live.set_range(first, first + count - 1);
                }
            } else {
                layers.push((generation, bits));
            }
        }
        if reader.at != body.len() {
            return Err("trailing bytes".into());
        }
        *map.frozen() = Frozen { current, layers };
        Ok(map)
    }
}

const MAGIC: &[u8; 8] = b"CBTMAP01";

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).ok_or("length overflow")?;
        let slice = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| "truncated")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_query_answers_the_chunks_written_since_its_id_and_no_others() {
        let map = ChangeMap::new(64 * MIB, DEFAULT_CHUNK_BYTES, 0xabcd);
        let start = map.current_id();
        map.mark(0, 512);
        map.mark(200_000, 70_000); // chunks 3 and 4
        let first = map.changed_since(Some(start)).unwrap();
        assert_eq!(first.extents, vec![(0, 65536), (3 * 65536, 2 * 65536)]);
        map.mark(10 * MIB, 4096);
        let second = map.changed_since(Some(first.next)).unwrap();
        assert_eq!(second.extents, vec![(10 * MIB, 65536)]);
        // The older ID still answers everything since it.
        let again = map.changed_since(Some(start)).unwrap();
        assert_eq!(again.extents.len(), 3);
        // Nothing since the newest.
        assert!(map.changed_since(Some(second.next)).unwrap().extents.len() <= 1);
    }

    #[test]
    fn ids_of_another_epoch_or_from_the_future_are_refused_with_the_reason() {
        let map = ChangeMap::new(MIB, DEFAULT_CHUNK_BYTES, 1);
        let other = ChangeId {
            epoch: 2,
            generation: 1,
        };
        assert!(matches!(
            map.changed_since(Some(other)),
            Err(ChangeError::OtherEpoch { .. })
        ));
        let future = ChangeId {
            epoch: 1,
            generation: 99,
        };
        let error = map.changed_since(Some(future)).unwrap_err().to_string();
        assert!(error.contains("only reached generation"), "{error}");
        assert!("zz-1".parse::<ChangeId>().is_err());
        assert!("0000000z-1".parse::<ChangeId>().is_err());
        let id: ChangeId = "0000abcd-42".parse().unwrap();
        assert_eq!(id.to_string(), "0000abcd-42");
    }

    #[test]
    fn memory_is_a_pointer_per_leaf_until_written_and_at_most_2_mib_more_per_tib() {
        let tib = 1u64 << 40;
        let map = ChangeMap::new(tib, DEFAULT_CHUNK_BYTES, 1);
        let untouched = map.memory_bytes();
        assert!(untouched <= 256 * 1024, "{untouched}");
        // One write per leaf span: every leaf allocated.
        let span = LEAF_CHUNKS * DEFAULT_CHUNK_BYTES;
        for leaf in 0..tib / span {
            map.mark(leaf * span, 512);
        }
        let full = map.memory_bytes();
        assert!(full - untouched <= 2 * MIB, "{}", full - untouched);
    }

    fn model_extents(
        chunks: &std::collections::BTreeSet<u64>,
        chunk: u64,
        size: u64,
    ) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for c in chunks {
            let (offset, end) = (c * chunk, ((c + 1) * chunk).min(size));
            match out.last_mut() {
                Some((o, l)) if *o + *l == offset => *l = end - *o,
                _ => out.push((offset, end - offset)),
            }
        }
        out
    }

    proptest! {
        /// Against a model that remembers, per chunk, the generation of its last write: a
        /// query since any ID still held answers at least the model's chunks, and exactly
        /// them while no layers were merged.
        #[test]
        fn queries_match_a_model(
            ops in proptest::collection::vec((0u8..4, 0u64..(8 << 20), 1u64..300_000), 1..120),
        ) {
            let size = 8u64 << 20;
            let chunk = DEFAULT_CHUNK_BYTES;
            let map = ChangeMap::new(size, chunk, 7);
            let mut ids = vec![map.current_id()];
            let mut writes: Vec<(u64, u64, u64)> = Vec::new(); // (generation, offset, len)
            let mut generation = 1;
            let mut queries = 0usize;
            for (kind, offset, len) in ops {
                if kind == 0 {
                    let since = ids[(offset as usize) % ids.len()];
                    let answer = map.changed_since(Some(since)).unwrap();
                    queries += 1;
                    let mut model = std::collections::BTreeSet::new();
                    for (g, o, l) in &writes {
                        if *g >= since.generation {
                            let last = (o + l - 1).min(size - 1);
                            model.extend(o / chunk..=last / chunk);
                        }
                    }
                    let expected = model_extents(&model, chunk, size);
                    if queries <= LAYERS_MAX {
                        prop_assert_eq!(&answer.extents, &expected);
                    } else {
                        for (o, l) in &expected {
                            prop_assert!(answer.extents.iter().any(|(ao, al)| ao <= o && o + l <= ao + al));
                        }
                    }
                    generation += 1;
                    prop_assert_eq!(answer.next.generation, generation);
                    ids.push(answer.next);
                } else {
                    let offset = offset.min(size - 1);
                    let len = len.min(size - offset);
                    map.mark(offset, len);
                    writes.push((generation, offset, len));
                }
            }
            // The encoded map answers as the map does.
            let copy = ChangeMap::decode(&map.encode()).unwrap();
            let since = ids[0];
            prop_assert_eq!(copy.changed_since(Some(since)).unwrap(), map.changed_since(Some(since)).unwrap());
        }

        /// Damaged checkpoints are refused, never a panic.
        #[test]
        fn damaged_checkpoints_are_refused(flip in 0usize..4000, cut in 0usize..4000) {
            let map = ChangeMap::new(4 << 20, DEFAULT_CHUNK_BYTES, 3);
            map.mark(100_000, 5000);
            let _ = map.changed_since(None).unwrap();
            map.mark(3_000_000, 1);
            let mut bytes = map.encode();
            let at = flip % bytes.len();
            bytes[at] ^= 0x10;
            prop_assert!(ChangeMap::decode(&bytes).is_err());
            let cut = cut % bytes.len();
            prop_assert!(ChangeMap::decode(&map.encode()[..cut]).is_err());
        }
    }
}
