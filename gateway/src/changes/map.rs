//! The changed-block map of one LUN, in memory and with no I/O: which chunks (64 KiB by
//! default) were written since a change ID, the shape of a storage array's "changed
//! areas" query (VMware's QueryChangedDiskAreas takes a change ID and answers extents).
//!
//! Sparse, and full regions cost nothing: a chunk's bit lives in a *block* of
//! [`BLOCK_CHUNKS`] bits (4 KiB; 2 GiB of LUN at 64 KiB chunks), allocated on the first
//! write into its span, and a block whose every chunk is changed is replaced by a shared
//! "all changed" marker. The index is one pointer per block (4 KiB per TiB at 64 KiB
//! chunks): untouched data costs that, a fully written LUN that too (every block a
//! marker), and no pattern of writes costs more than a flat bitmap plus the index and the
//! blocks' headers (2 MiB + 12 KiB per TiB when every block is partly written).
//!
//! Generations: the bits written now go to the *live* layer, atomics set with no lock. A
//! query freezes the live layer as generation `g` (its blocks unlinked, so a write racing
//! the query lands in `g` or in `g + 1`, never in neither) and answers the union of the
//! frozen layers from the asked generation on. Layers beyond [`LAYERS_MAX`] are merged,
//! the older into the newer's generation, which can only make an answer larger
//! (over-report), never miss a change. A change ID names an epoch (the tracking's
//! identity: a new tracking of the same LUN is another epoch, and an ID of another epoch
//! is refused, because the map cannot answer it) and a generation.
//!
//! The live layer's write path ([`ChangeMap::mark`]) takes no lock: a block found full is
//! skipped with one load; otherwise the writer enters a read-side section ([`Grace`]: one
//! `fetch_add` and one `fetch_sub` on a counter of its own thread's stripe), then one load
//! and, for a bit not yet set, one `fetch_or` per word. A live block leaves the index in
//! two ways: the query unlinks it (freeze), or the writer that sets its last chunk (or
//! that covers it whole) swaps it for the marker and puts it on a retired list. A
//! block is freed only after a grace period that started after it was unlinked
//! ([`Grace::synchronize`], run by the query and [`ChangeMap::reclaim`] under the map's
//! mutex, never by a writer): no writer can still hold it (quiescent-state reclamation
//! with a two-phase counter, as in userspace RCU; the writer re-checks the phase after
//! announcing itself, so one phase flip is a full grace period).

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Chunks per block: 32,768 bits, 512 words (4 KiB).
pub const BLOCK_CHUNKS: u64 = 32768;
const BLOCK_WORDS: usize = (BLOCK_CHUNKS / 64) as usize;
/// Frozen layers kept; past this the two oldest merge.
pub const LAYERS_MAX: usize = 16;
/// Chunks of one map at most (an index of 2 MiB): 512 TiB at 64 KiB chunks. A larger LUN
/// takes larger chunks; a checkpoint that claims more is refused.
pub const CHUNKS_MAX: u64 = 1 << 33;
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

/// Chunks of block `index` that lie in a LUN of `chunks` chunks (the last block may be
/// short).
fn block_cap(chunks: u64, index: u64) -> u64 {
    chunks
        .saturating_sub(index * BLOCK_CHUNKS)
        .min(BLOCK_CHUNKS)
}

/// Sets bits `from..=to` (block-relative) in `words`; returns how many were not set.
fn set_bits(words: &mut [u64; BLOCK_WORDS], from: u64, to: u64) -> u64 {
    let mut newly = 0;
    for_each_word(from, to, |word, mask| {
        newly += u64::from((mask & !words[word]).count_ones());
        words[word] |= mask;
    });
    newly
}

/// Calls `f(word, mask)` for the words holding bits `from..=to` (block-relative).
fn for_each_word(from: u64, to: u64, mut f: impl FnMut(usize, u64)) {
    let (first_word, last_word) = (from / 64, to / 64);
    for word in first_word..=last_word {
        let low = if word == first_word { from % 64 } else { 0 };
        let high = if word == last_word { to % 64 } else { 63 };
        let mask = (u64::MAX >> (63 - high)) & (u64::MAX << low);
        f(word as usize, mask);
    }
}

/// One block of a frozen layer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    /// Every chunk of the block (within the LUN) changed: no bits kept.
    Full,
    Bits(Box<[u64; BLOCK_WORDS]>),
}

/// A plain sparse bitmap of chunks (a frozen layer, an answer): blocks in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseBits {
    /// Chunks of the LUN: the last block's capacity, and what "full" means.
    chunks: u64,
    blocks: Vec<(u64, Block)>,
}

impl SparseBits {
    pub fn new(chunks: u64) -> SparseBits {
        SparseBits {
            chunks,
            blocks: Vec::new(),
        }
    }

    fn cap(&self, index: u64) -> u64 {
        block_cap(self.chunks, index)
    }

    /// Appends block `index` (above every block held) from its words, bits beyond the LUN
    /// dropped: nothing when no bit is set, the marker when every chunk is.
    fn push_words(&mut self, index: u64, mut words: Box<[u64; BLOCK_WORDS]>) {
        debug_assert!(self.blocks.last().is_none_or(|(i, _)| *i < index));
        let cap = self.cap(index);
        if cap == 0 {
            return;
        }
        let mut set = 0u64;
        for (at, word) in words.iter_mut().enumerate() {
            let first = at as u64 * 64;
            if first >= cap {
                *word = 0;
            } else if cap - first < 64 {
                *word &= u64::MAX >> (64 - (cap - first));
            }
            set += u64::from(word.count_ones());
        }
        if set == cap {
            self.blocks.push((index, Block::Full));
        } else if set > 0 {
            self.blocks.push((index, Block::Bits(words)));
        }
    }

    fn push_full(&mut self, index: u64) {
        debug_assert!(self.blocks.last().is_none_or(|(i, _)| *i < index));
        if self.cap(index) > 0 {
            self.blocks.push((index, Block::Full));
        }
    }

    fn find(&self, index: u64) -> Result<usize, usize> {
        self.blocks.binary_search_by_key(&index, |(i, _)| *i)
    }

    pub fn set(&mut self, chunk: u64) {
        if chunk >= self.chunks {
            return;
        }
        let index = chunk / BLOCK_CHUNKS;
        let bit = chunk % BLOCK_CHUNKS;
        let cap = self.cap(index);
        let at = match self.find(index) {
            Ok(at) => at,
            Err(at) => {
                let block = Block::Bits(Box::new([0; BLOCK_WORDS]));
                self.blocks.insert(at, (index, block));
                at
            }
        };
        if let Block::Bits(words) = &mut self.blocks[at].1 {
            set_bits(words, bit, bit);
            if words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>() == cap {
                self.blocks[at].1 = Block::Full;
            }
        }
    }

    pub fn get(&self, chunk: u64) -> bool {
        if chunk >= self.chunks {
            return false;
        }
        let bit = chunk % BLOCK_CHUNKS;
        match self.find(chunk / BLOCK_CHUNKS) {
            Ok(at) => match &self.blocks[at].1 {
                Block::Full => true,
                Block::Bits(words) => words[(bit / 64) as usize] & (1 << (bit % 64)) != 0,
            },
            Err(_) => false,
        }
    }

    /// Adds every bit of `other` (a map of the same LUN).
    pub fn merge(&mut self, other: &SparseBits) {
        debug_assert_eq!(self.chunks, other.chunks);
        let mine = std::mem::take(&mut self.blocks);
        let mut merged = Vec::with_capacity(mine.len().max(other.blocks.len()));
        let mut theirs = other.blocks.iter().peekable();
        for (index, block) in mine {
            while let Some((i, b)) = theirs.next_if(|(i, _)| *i < index) {
                merged.push((*i, b.clone()));
            }
            match theirs.next_if(|(i, _)| *i == index) {
                None => merged.push((index, block)),
                Some((_, Block::Full)) => merged.push((index, Block::Full)),
                Some((_, Block::Bits(other_words))) => match block {
                    Block::Full => merged.push((index, Block::Full)),
                    Block::Bits(mut words) => {
                        for (w, o) in words.iter_mut().zip(other_words.iter()) {
                            *w |= o;
                        }
                        let set: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
                        let block = if set == self.cap(index) {
                            Block::Full
                        } else {
                            Block::Bits(words)
                        };
                        merged.push((index, block));
                    }
                },
            }
        }
        merged.extend(theirs.cloned());
        merged.shrink_to_fit();
        self.blocks = merged;
    }

    /// Chunks set.
    pub fn count(&self) -> u64 {
        self.blocks
            .iter()
            .map(|(index, block)| match block {
                Block::Full => self.cap(*index),
                Block::Bits(words) => words.iter().map(|w| u64::from(w.count_ones())).sum(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Runs of set chunks, ascending: (first chunk, count).
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut extend = |chunk: u64, count: u64| match runs.last_mut() {
            Some((start, n)) if *start + *n == chunk => *n += count,
            _ => runs.push((chunk, count)),
        };
        for (index, block) in &self.blocks {
            let base = index * BLOCK_CHUNKS;
            match block {
                Block::Full => extend(base, self.cap(*index)),
                Block::Bits(words) => {
                    for (word_index, word) in words.iter().enumerate() {
                        let mut bits = *word;
                        while bits != 0 {
                            let bit = u64::from(bits.trailing_zeros());
                            // The run of ones from `bit` within this word.
                            let ones = u64::from((bits >> bit).trailing_ones());
                            bits &= if bit + ones >= 64 {
                                0
                            } else {
                                u64::MAX << (bit + ones)
                            };
                            extend(base + word_index as u64 * 64 + bit, ones);
                        }
                    }
                }
            }
        }
        runs
    }

    /// Heap bytes held (the block list and the blocks with bits), for the memory goal.
    pub fn memory_bytes(&self) -> u64 {
        let bits = self
            .blocks
            .iter()
            .filter(|(_, b)| matches!(b, Block::Bits(_)))
            .count() as u64;
        self.blocks.capacity() as u64 * std::mem::size_of::<(u64, Block)>() as u64
            + bits * std::mem::size_of::<[u64; BLOCK_WORDS]>() as u64
    }
}

/// Stripes of [`Grace`]'s counters: writers on different threads mostly touch different
/// cache lines.
const GRACE_STRIPES: usize = 8;

/// One stripe: the counts of writers inside, per phase parity, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct GraceStripe([AtomicU64; 2]);

/// The read-side sections of the live layer's writers, and the wait for them: a block
/// unlinked before [`Grace::synchronize`] starts is held by no writer once it returns.
#[derive(Debug, Default)]
struct Grace {
    /// Flipped (its parity) by each `synchronize`.
    phase: AtomicUsize,
    stripes: [GraceStripe; GRACE_STRIPES],
}

/// A writer inside the live layer; leaving is the drop.
struct GraceGuard<'a>(&'a AtomicU64);

impl Drop for GraceGuard<'_> {
    fn drop(&mut self) {
        // Release: the writer's bits are seen by the `synchronize` that reads the count.
        self.0.fetch_sub(1, Ordering::Release);
    }
}

fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % GRACE_STRIPES);
        }
        stripe.get()
    })
}

impl Grace {
    fn enter(&self) -> GraceGuard<'_> {
        let stripe = &self.stripes[thread_stripe()];
        loop {
            let parity = self.phase.load(Ordering::SeqCst) & 1;
            stripe.0[parity].fetch_add(1, Ordering::SeqCst);
            // Announced, then the phase checked again (SeqCst both, as `synchronize`'s
            // flip and its read of the counts): either the flip comes after the
            // announcement, so `synchronize` waits for this writer, or this writer sees
            // the flip and announces itself in the new phase, after every unlink that
            // preceded the flip.
            if self.phase.load(Ordering::SeqCst) & 1 == parity {
                return GraceGuard(&stripe.0[parity]);
            }
            stripe.0[parity].fetch_sub(1, Ordering::Release);
        }
    }

    /// Waits until every writer that entered before the call has left. One caller at a
    /// time (the map's mutex). Writers stay nanoseconds inside (a 4 KiB allocation at
    /// most), so the wait spins, then yields, then sleeps while one is preempted.
    fn synchronize(&self) {
        let old = self.phase.fetch_add(1, Ordering::SeqCst) & 1;
        for stripe in &self.stripes {
            let mut spins = 0u32;
            while stripe.0[old].load(Ordering::SeqCst) != 0 {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else if spins < 1024 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
        }
    }
}

/// A live block: its bits, how many are set, and the link of the retired list.
#[derive(Debug)]
struct LiveBlock {
    words: [AtomicU64; BLOCK_WORDS],
    set: AtomicU64,
    next_retired: AtomicPtr<LiveBlock>,
}

/// The shared "all changed" marker's address: never allocated, never dereferenced.
static FULL_MARKER: u8 = 0;

fn full() -> *mut LiveBlock {
    std::ptr::addr_of!(FULL_MARKER).cast_mut().cast()
}

fn is_block(pointer: *mut LiveBlock) -> bool {
    !pointer.is_null() && pointer != full()
}

/// The live layer: an index of block pointers (null, the full marker, or a block of
/// atomics), set without a lock.
#[derive(Debug)]
struct LiveBits {
    chunks: u64,
    slots: Box<[AtomicPtr<LiveBlock>]>,
    /// Blocks swapped for the marker by writers, freed after the next grace period.
    retired: AtomicPtr<LiveBlock>,
    grace: Grace,
}

impl LiveBits {
    fn new(chunks: u64) -> LiveBits {
        let count = chunks.div_ceil(BLOCK_CHUNKS) as usize;
        LiveBits {
            chunks,
            slots: (0..count)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            retired: AtomicPtr::new(std::ptr::null_mut()),
            grace: Grace::default(),
        }
    }

    /// Pushes a block its caller unlinked (so no one else can) on the retired list.
    fn retire(&self, block: *mut LiveBlock) {
        // SAFETY: `block` was unlinked by this caller's swap or exchange, which only one
        // thread can win; it is freed only after being taken off this list and a grace
        // period, so it is alive here.
        let link = unsafe { &(*block).next_retired };
        let mut head = self.retired.load(Ordering::Relaxed);
        loop {
            link.store(head, Ordering::Relaxed);
            match self.retired.compare_exchange_weak(
                head,
                block,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Sets chunks `first..=last` (within the LUN). No lock.
    fn set_range(&self, first: u64, last: u64) {
        let mut guard: Option<GraceGuard<'_>> = None;
        let mut chunk = first;
        while chunk <= last {
            let index = chunk / BLOCK_CHUNKS;
            let base = index * BLOCK_CHUNKS;
            let cap = block_cap(self.chunks, index);
            let Some(slot) = self.slots.get(index as usize) else {
                return;
            };
            if cap == 0 {
                return;
            }
            let end = last.min(base + cap - 1);
            let (from, to) = (chunk - base, end - base);
            chunk = end + 1;
            if slot.load(Ordering::Acquire) == full() {
                continue; // no section needed: the marker is never dereferenced
            }
            if guard.is_none() {
                guard = Some(self.grace.enter());
            }
            if from == 0 && to == cap - 1 {
                // The whole block: the marker, whatever was there.
                let old = slot.swap(full(), Ordering::AcqRel);
                if is_block(old) {
                    self.retire(old);
                }
                continue;
            }
            // Loaded inside the section (again): only now may it be dereferenced.
            let mut pointer = slot.load(Ordering::Acquire);
            if pointer.is_null() {
                let fresh = Box::into_raw(Box::new(LiveBlock {
                    words: std::array::from_fn(|_| AtomicU64::new(0)),
                    set: AtomicU64::new(0),
                    next_retired: AtomicPtr::new(std::ptr::null_mut()),
                }));
                pointer = match slot.compare_exchange(
                    std::ptr::null_mut(),
                    fresh,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => fresh,
                    Err(now) => {
                        // SAFETY: `fresh` was never published: this thread owns it.
                        drop(unsafe { Box::from_raw(fresh) });
                        now
                    }
                };
            }
            if !is_block(pointer) {
                continue; // the marker meanwhile
            }
            // SAFETY: loaded inside this thread's read-side section: a block unlinked
            // now is freed only after a grace period, which waits for this section.
            let block = unsafe { &*pointer };
            let mut newly = 0u64;
            for_each_word(from, to, |word, mask| {
                let word = &block.words[word];
                // A load first: a chunk written again and again costs no shared write.
                if word.load(Ordering::Relaxed) & mask != mask {
                    let before = word.fetch_or(mask, Ordering::Relaxed);
                    newly += u64::from((mask & !before).count_ones());
                }
            });
            if newly > 0 && block.set.fetch_add(newly, Ordering::AcqRel) + newly == cap {
                // Full: the marker instead, unless the query unlinked it meanwhile (then
                // the query owns it, and finds it full).
                if slot
                    .compare_exchange(pointer, full(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.retire(pointer);
                }
            }
        }
    }

    /// Unlinks every block, waits out the writers, and returns them as a frozen layer
    /// (the generation that ends now); frees what writers retired. Under the map's mutex.
    fn take(&self) -> SparseBits {
        let mut taken = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            if !slot.load(Ordering::Relaxed).is_null() {
                let pointer = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
                if !pointer.is_null() {
                    taken.push((index as u64, pointer));
                }
            }
        }
        let retired = self.retired.swap(std::ptr::null_mut(), Ordering::Acquire);
        self.grace.synchronize();
        let mut bits = SparseBits::new(self.chunks);
        for (index, pointer) in taken {
            if pointer == full() {
                bits.push_full(index);
                continue;
            }
            // SAFETY: unlinked by this thread before the grace period: no writer holds
            // it any more and no one else can take it; this thread owns it now.
            let block = unsafe { Box::from_raw(pointer) };
            let words = Box::new(std::array::from_fn(|i| {
                block.words[i].load(Ordering::Acquire)
            }));
            bits.push_words(index, words);
        }
        bits.blocks.shrink_to_fit();
        // SAFETY: taken off the list before the grace period; see `free_retired`.
        unsafe { free_retired(retired) };
        bits
    }

    /// Frees what writers retired, after a grace period. Under the map's mutex.
    fn reclaim(&self) {
        let retired = self.retired.swap(std::ptr::null_mut(), Ordering::Acquire);
        if retired.is_null() {
            return;
        }
        self.grace.synchronize();
        // SAFETY: taken off the list before the grace period.
        unsafe { free_retired(retired) };
    }

    /// The bits without clearing them (a checkpoint). Under the map's mutex, so no block
    /// is freed meanwhile.
    fn peek(&self) -> SparseBits {
        let _guard = self.grace.enter();
        let mut bits = SparseBits::new(self.chunks);
        for (index, slot) in self.slots.iter().enumerate() {
            let pointer = slot.load(Ordering::Acquire);
            if pointer == full() {
                bits.push_full(index as u64);
            } else if !pointer.is_null() {
                // SAFETY: loaded inside a read-side section.
                let block = unsafe { &*pointer };
                let words = Box::new(std::array::from_fn(|i| {
                    block.words[i].load(Ordering::Acquire)
                }));
                bits.push_words(index as u64, words);
            }
        }
        bits
    }

    /// Heap bytes: the index, the blocks linked, and those retired and not yet freed.
    /// Under the map's mutex (the retired list is walked).
    fn memory_bytes(&self) -> u64 {
        let block = std::mem::size_of::<LiveBlock>() as u64;
        let linked = self
            .slots
            .iter()
            .filter(|s| is_block(s.load(Ordering::Relaxed)))
            .count() as u64;
        let mut retired = 0u64;
        let mut at = self.retired.load(Ordering::Acquire);
        while !at.is_null() {
            retired += 1;
            // SAFETY: retired blocks are freed only under the map's mutex, held here.
            at = unsafe { (*at).next_retired.load(Ordering::Relaxed) };
        }
        self.slots.len() as u64 * 8 + (linked + retired) * block
    }
}

/// Frees a retired list.
///
/// # Safety
/// `head` was taken off [`LiveBits::retired`] before a grace period that has ended, so no
/// writer holds any block of it and no one else has the list.
unsafe fn free_retired(mut head: *mut LiveBlock) {
    while !head.is_null() {
        // SAFETY: the caller's promise; each block is on the list once.
        let block = unsafe { Box::from_raw(head) };
        head = block.next_retired.load(Ordering::Relaxed);
    }
}

impl Drop for LiveBits {
    fn drop(&mut self) {
        for slot in self.slots.iter_mut() {
            let pointer = *slot.get_mut();
            if is_block(pointer) {
                // SAFETY: `&mut self`: no writer, and the index owns its blocks.
                drop(unsafe { Box::from_raw(pointer) });
            }
        }
        // SAFETY: `&mut self`: no writer holds a retired block.
        unsafe { free_retired(*self.retired.get_mut()) };
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
    /// The frozen layers; also serializes whatever frees live blocks (the query,
    /// [`ChangeMap::reclaim`]) and what walks them (the checkpoint, the memory count).
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
    /// [`CHUNKS_MAX`].
    pub fn fits(size_bytes: u64, chunk_bytes: u64) -> bool {
        chunk_bytes > 0 && size_bytes.div_ceil(chunk_bytes) <= CHUNKS_MAX
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn chunks(&self) -> u64 {
        self.live.chunks
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
    /// Freezes the live layer: the next ID's answer starts after this one's. Waits for the
    /// writers inside the live layer at the time (nanoseconds each).
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
        let live = self.live.take();
        let generation = frozen.current;
        frozen.layers.push((generation, live));
        frozen.current += 1;
        while frozen.layers.len() > LAYERS_MAX {
            // The older merges into the newer's generation: queries between them answer more.
            let (_, oldest) = frozen.layers.remove(0);
            frozen.layers[0].1.merge(&oldest);
        }
        let from = since.map_or(0, |id| id.generation);
        let mut union = SparseBits::new(self.chunks());
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

    /// Frees the live blocks that writers replaced by the "all changed" marker since the
    /// last query (a query does this itself), after waiting for the writers inside.
    pub fn reclaim(&self) {
        let _frozen = self.frozen();
        self.live.reclaim();
    }

    /// Heap bytes: the live layer's index, its blocks (linked, and retired but not yet
    /// freed: see [`ChangeMap::reclaim`]), and the frozen layers.
    pub fn memory_bytes(&self) -> u64 {
        let frozen = self.frozen();
        let layers: u64 = frozen.layers.iter().map(|(_, b)| b.memory_bytes()).sum();
        let list = frozen.layers.capacity() * std::mem::size_of::<(u64, SparseBits)>();
        self.live.memory_bytes() + layers + list as u64
    }

    /// The whole map as bytes (the live layer read, not cleared), for a checkpoint:
    /// format 2 ([`MAGIC`]); [`ChangeMap::decode`] reads format 1 too.
    pub fn encode(&self) -> Vec<u8> {
        let (frozen, live) = {
            let frozen = self.frozen();
            (frozen.clone(), self.live.peek())
        };
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
        let mut put = |value: u64| out.extend_from_slice(&value.to_le_bytes());
        for (generation, bits) in layers {
            put(generation);
            put(bits.blocks.len() as u64);
            for (index, block) in &bits.blocks {
                put(*index);
                match block {
                    Block::Full => put(FORM_FULL),
                    Block::Bits(words) => {
                        let used = words.iter().filter(|w| **w != 0).count();
                        if used * 2 < BLOCK_WORDS {
                            put(FORM_SPARSE);
                            put(used as u64);
                            for (at, word) in words.iter().enumerate().filter(|(_, w)| **w != 0) {
                                put(at as u64);
                                put(*word);
                            }
                        } else {
                            put(FORM_DENSE);
                            words.iter().for_each(|w| put(*w));
                        }
                    }
                }
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A map from [`ChangeMap::encode`]'s bytes (format 2, or format 1 of the maps before
    /// it: 512-bit leaves); every field checked against the others and the CRC, so a torn
    /// or foreign file is refused, never half-read.
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
        let magic = reader.take(MAGIC.len())?;
        let leaves = if magic == MAGIC_V1 {
            true
        } else if magic == MAGIC {
            false
        } else {
            return Err("not a change map".into());
        };
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
        let map = ChangeMap::new(size_bytes, chunk_bytes, epoch);
        let mut layers = Vec::new();
        let mut last_generation = 0;
        for layer in 0..layer_count {
            let generation = reader.u64()?;
            if generation < last_generation || generation > current {
                return Err("bad layer header".into());
            }
            last_generation = generation;
            let bits = if leaves {
                read_leaves_v1(&mut reader, chunks)?
            } else {
                read_blocks(&mut reader, chunks)?
            };
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

/// Format 2: per layer, blocks in ascending order, each full, dense or sparse.
const MAGIC: &[u8; 8] = b"CBTMAP02";
/// Format 1: per layer, 512-bit leaves (index, eight words).
const MAGIC_V1: &[u8; 8] = b"CBTMAP01";
const FORM_FULL: u64 = 0;
const FORM_DENSE: u64 = 1;
/// A count, then (word index, word) pairs, ascending, each word non-zero.
const FORM_SPARSE: u64 = 2;
/// Format 1's leaf: 512 chunks.
const LEAF_CHUNKS_V1: u64 = 512;

/// One layer of format 2.
fn read_blocks(reader: &mut Reader<'_>, chunks: u64) -> Result<SparseBits, String> {
    let block_limit = chunks.div_ceil(BLOCK_CHUNKS);
    let count = reader.u64()?;
    if count > block_limit {
        return Err("bad layer header".into());
    }
    let mut bits = SparseBits::new(chunks);
    let mut next_index = 0;
    for _ in 0..count {
        let index = reader.u64()?;
        if index >= block_limit || index < next_index {
            return Err("block beyond the LUN or out of order".into());
        }
        next_index = index + 1;
        let cap = block_cap(chunks, index);
        let mut words = Box::new([0u64; BLOCK_WORDS]);
        match reader.u64()? {
            FORM_FULL => {
                bits.push_full(index);
                continue;
            }
            FORM_DENSE => {
                for word in words.iter_mut() {
                    *word = reader.u64()?;
                }
            }
            FORM_SPARSE => {
                let used = reader.u64()?;
                if used > BLOCK_WORDS as u64 {
                    return Err("bad sparse block".into());
                }
                let mut next_word = 0;
                for _ in 0..used {
                    let at = reader.u64()?;
                    let word = reader.u64()?;
                    if at < next_word || at >= BLOCK_WORDS as u64 || word == 0 {
                        return Err("bad sparse block".into());
                    }
                    next_word = at + 1;
                    words[at as usize] = word;
                }
            }
            _ => return Err("unknown block form".into()),
        }
        let mut in_lun = 0u64;
        for (at, word) in words.iter().enumerate() {
            let first = at as u64 * 64;
            let valid = if first >= cap {
                0
            } else if cap - first < 64 {
                u64::MAX >> (64 - (cap - first))
            } else {
                u64::MAX
            };
            if word & !valid != 0 {
                return Err("bits beyond the LUN".into());
            }
            in_lun += u64::from(word.count_ones());
        }
        if in_lun == 0 {
            return Err("empty block".into());
        }
        bits.push_words(index, words);
    }
    Ok(bits)
}

/// One layer of format 1 (its leaves gathered into blocks; bits beyond the LUN dropped).
fn read_leaves_v1(reader: &mut Reader<'_>, chunks: u64) -> Result<SparseBits, String> {
    let leaf_limit = chunks.div_ceil(LEAF_CHUNKS_V1);
    let count = reader.u64()?;
    if count > leaf_limit {
        return Err("bad layer header".into());
    }
    let words_per_leaf = (LEAF_CHUNKS_V1 / 64) as usize;
    let mut blocks: std::collections::BTreeMap<u64, Box<[u64; BLOCK_WORDS]>> =
        std::collections::BTreeMap::new();
    for _ in 0..count {
        let index = reader.u64()?;
        if index >= leaf_limit {
            return Err("leaf beyond the LUN".into());
        }
        let first_chunk = index * LEAF_CHUNKS_V1;
        let block = blocks
            .entry(first_chunk / BLOCK_CHUNKS)
            .or_insert_with(|| Box::new([0; BLOCK_WORDS]));
        let at = ((first_chunk % BLOCK_CHUNKS) / 64) as usize;
        for word in &mut block[at..at + words_per_leaf] {
            *word |= reader.u64()?;
        }
    }
    let mut bits = SparseBits::new(chunks);
    for (index, words) in blocks {
        bits.push_words(index, words);
    }
    Ok(bits)
}

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
    const TIB: u64 = 1 << 40;

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

    /// The goal: at most 2 MiB per fully written TiB at 64 KiB chunks, about zero for
    /// untouched data. Measured as `changes_query` reports it (`map_memory_bytes`, right
    /// after the query that froze the writes), and in the live layer before any query
    /// once [`ChangeMap::reclaim`] has freed what writers retired.
    #[test]
    fn a_fully_written_tib_costs_its_index_and_untouched_data_about_nothing() {
        let map = ChangeMap::new(TIB, DEFAULT_CHUNK_BYTES, 1);
        let untouched = map.memory_bytes();
        assert!(untouched <= 8 * 1024, "untouched: {untouched}");
        let start = map.current_id();
        // Every chunk written, 1 MiB at a time (no write covers a block whole: each block
        // fills bit by bit and its last writer swaps it for the marker).
        for offset in (0..TIB).step_by(MIB as usize) {
            map.mark(offset, MIB);
        }
        let before_reclaim = map.memory_bytes();
        assert!(before_reclaim <= 2 * MIB + 64 * 1024, "{before_reclaim}");
        map.reclaim();
        let live = map.memory_bytes();
        assert!(live <= 8 * 1024, "live after reclaim: {live}");
        let answer = map.changed_since(Some(start)).unwrap();
        assert_eq!(answer.extents, vec![(0, TIB)]);
        let queried = map.memory_bytes();
        eprintln!(
            "1 TiB at 64 KiB chunks: untouched {untouched} B, written {before_reclaim} B, \
             reclaimed {live} B, after the query {queried} B, checkpoint {} B",
            map.encode().len()
        );
        assert!(queried <= 2 * MIB, "after the query: {queried}");
        assert!(queried <= 32 * 1024, "after the query: {queried}");
        // The checkpoint is as small: a marker per block.
        assert!(map.encode().len() <= 32 * 1024);
    }

    /// No pattern costs more than a flat bitmap and the index: every other chunk of a
    /// 64 GiB LUN (every block partly written), scaled to a TiB.
    #[test]
    fn the_worst_pattern_costs_a_flat_bitmap_and_the_index() {
        let size = 64 << 30;
        let map = ChangeMap::new(size, DEFAULT_CHUNK_BYTES, 1);
        for chunk in (0..size / DEFAULT_CHUNK_BYTES).step_by(2) {
            map.mark(chunk * DEFAULT_CHUNK_BYTES, 512);
        }
        let per_tib = map.memory_bytes() * (TIB / size);
        eprintln!("every other chunk, per TiB: live {per_tib} B");
        assert!(per_tib <= 2 * MIB + 24 * 1024, "live: {per_tib}");
        let _ = map.changed_since(None).unwrap();
        let per_tib = map.memory_bytes() * (TIB / size);
        eprintln!("every other chunk, per TiB: after the query {per_tib} B");
        assert!(per_tib <= 2 * MIB + 24 * 1024, "frozen: {per_tib}");
    }

    /// Format 1 (512-bit leaves), as the maps before format 2 wrote it.
    fn encode_v1(
        size: u64,
        chunk: u64,
        epoch: u32,
        current: u64,
        layers: &[(u64, Vec<u64>)],
    ) -> Vec<u8> {
        let mut out = MAGIC_V1.to_vec();
        let mut put = |v: u64| out.extend_from_slice(&v.to_le_bytes());
        for v in [size, chunk, u64::from(epoch), current, layers.len() as u64] {
            put(v);
        }
        for (generation, chunks) in layers {
            let mut leaves: std::collections::BTreeMap<u64, [u64; 8]> = Default::default();
            for c in chunks {
                let bit = c % LEAF_CHUNKS_V1;
                leaves.entry(c / LEAF_CHUNKS_V1).or_default()[(bit / 64) as usize] |=
                    1 << (bit % 64);
            }
            put(*generation);
            put(leaves.len() as u64);
            for (index, words) in leaves {
                put(index);
                words.iter().for_each(|w| put(*w));
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn a_format_1_checkpoint_reads_as_it_did() {
        let size = 5 * BLOCK_CHUNKS * 4096 / 2; // 2.5 blocks of 4 KiB chunks
        let bytes = encode_v1(
            size,
            4096,
            9,
            3,
            &[
                (1, vec![0, 1, 2, 40_000]),
                (2, vec![70_000]),
                (3, vec![5, 80_000]),
            ],
        );
        let map = ChangeMap::decode(&bytes).unwrap();
        let id = |generation| ChangeId {
            epoch: 9,
            generation,
        };
        assert_eq!(map.current_id(), id(3));
        let answer = map.changed_since(Some(id(2))).unwrap();
        let k = 4096;
        assert_eq!(
            answer.extents,
            vec![(5 * k, k), (70_000 * k, k), (80_000 * k, k)]
        );
        let all = map.changed_since(Some(id(1))).unwrap();
        assert_eq!(all.extents.len(), 5); // 0..3, 5, 40000, 70000, 80000
                                          // Written back in format 2, read again the same.
        let copy = ChangeMap::decode(&map.encode()).unwrap();
        assert_eq!(
            copy.changed_since(Some(id(1))).unwrap().extents,
            all.extents
        );
    }

    /// Writers on several threads racing queries and whole-block markers: every chunk
    /// written is in exactly the answers' union (each query asked since the previous
    /// one's ID), never missed, never one not written.
    #[test]
    fn writers_racing_queries_lose_no_chunk() {
        let chunk = 4096;
        let chunks = 4 * BLOCK_CHUNKS + 1000;
        let map = std::sync::Arc::new(ChangeMap::new(chunks * chunk, chunk, 5));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                let map = std::sync::Arc::clone(&map);
                std::thread::spawn(move || {
                    let mut written = vec![false; chunks as usize];
                    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                    let mut next = || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed
                    };
                    for round in 0..20_000u64 {
                        let (first, count) = match next() % 8 {
                            // A whole block now and then.
                            0 => ((next() % 5) * BLOCK_CHUNKS, BLOCK_CHUNKS),
                            // A block filled piece by piece, in order.
                            1 | 2 => (
                                (round % 4) * BLOCK_CHUNKS + (round * 512) % BLOCK_CHUNKS,
                                512,
                            ),
                            _ => (next() % chunks, 1 + next() % 100),
                        };
                        let first = first.min(chunks - 1);
                        let last = (first + count - 1).min(chunks - 1);
                        map.mark(first * chunk, (last - first + 1) * chunk);
                        written[first as usize..=last as usize].fill(true);
                    }
                    written
                })
            })
            .collect();
        let querier = {
            let map = std::sync::Arc::clone(&map);
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = vec![false; chunks as usize];
                let mut since = map.current_id();
                loop {
                    let done = stop.load(Ordering::Acquire);
                    let answer = map.changed_since(Some(since)).unwrap();
                    for (offset, len) in answer.extents {
                        seen[(offset / chunk) as usize..((offset + len) / chunk) as usize]
                            .fill(true);
                    }
                    since = answer.next;
                    if done {
                        return seen;
                    }
                    if since.generation.is_multiple_of(3) {
                        map.reclaim();
                    }
                }
            })
        };
        let mut written = vec![false; chunks as usize];
        for writer in writers {
            for (all, one) in written.iter_mut().zip(writer.join().unwrap()) {
                *all |= one;
            }
        }
        stop.store(true, Ordering::Release);
        let seen = querier.join().unwrap();
        let missed = (0..chunks as usize)
            .filter(|c| written[*c] && !seen[*c])
            .count();
        let extra = (0..chunks as usize)
            .filter(|c| !written[*c] && seen[*c])
            .count();
        assert_eq!((missed, extra), (0, 0));
    }

    /// The model's answer: the chunks whose last write was in generation `since` or later.
    fn model_extents(last_write: &[u64], since: u64, chunk: u64, size: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (c, g) in last_write.iter().enumerate() {
            if *g == 0 || *g < since {
                continue;
            }
            let c = c as u64;
            let (offset, end) = (c * chunk, ((c + 1) * chunk).min(size));
            match out.last_mut() {
                Some((o, l)) if *o + *l == offset => *l = end - *o,
                _ => out.push((offset, end - offset)),
            }
        }
        out
    }

    fn op() -> impl Strategy<Value = (u8, u64, u64)> {
        let size = 5 * BLOCK_CHUNKS * 4096 / 2;
        (
            0u8..5,
            0u64..size,
            prop_oneof![1u64..300_000, 1u64..(size / 2)],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Against a model that remembers, per chunk, the generation of its last write, on
        /// a LUN of two and a half blocks (4 KiB chunks): a query since any ID still held
        /// answers at least the model's chunks, and exactly them while no layers were
        /// merged. Large writes cover blocks whole, others fill them piecewise.
        #[test]
        fn queries_match_a_model(ops in proptest::collection::vec(op(), 1..120)) {
            let size = 5 * BLOCK_CHUNKS * 4096 / 2;
            let chunk = 4096;
            let map = ChangeMap::new(size, chunk, 7);
            let mut ids = vec![map.current_id()];
            let mut last_write = vec![0u64; size.div_ceil(chunk) as usize];
            let mut generation = 1;
            let mut queries = 0usize;
            for (kind, offset, len) in ops {
                if kind == 0 {
                    let since = ids[(offset as usize) % ids.len()];
                    let answer = map.changed_since(Some(since)).unwrap();
                    queries += 1;
                    let expected = model_extents(&last_write, since.generation, chunk, size);
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
                    if kind == 1 {
                        map.reclaim();
                    }
                    let offset = offset.min(size - 1);
                    let len = len.min(size - offset);
                    map.mark(offset, len);
                    let last = (offset + len - 1).min(size - 1);
                    last_write[(offset / chunk) as usize..=(last / chunk) as usize].fill(generation);
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
