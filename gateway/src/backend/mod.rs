//! LUN storage behind one trait: [`RamBackend`], [`NullBackend`], [`FileBackend`].
//!
//! A backend is a flat byte array of fixed size. The SCSI layer ([`crate::disk`]) checks
//! every LBA range against [`Backend::size_bytes`] before it calls a backend, so a backend
//! may treat an out-of-range request as a programming error and return an
//! `io::ErrorKind::InvalidInput` error (never a panic).
//!
//! Thin provisioning (SBC-3 4.7): a backend whose [`Backend::thin`] is true supports
//! [`Backend::unmap`], after which the unmapped bytes read back as zeros (the disk layer
//! advertises LBPRZ from this), and may report which extents are deallocated through
//! [`Backend::mapped_extent`] for GET LBA STATUS.
//!
//! Asynchronous I/O: a backend with a [`Backend::ring_file`] (the file backend) has its
//! READ, WRITE and SYNCHRONIZE CACHE issued by the server on the event loop's own io_uring
//! (see `crate::server`), directly (`O_DIRECT`) when the file's alignment allows; RAM and
//! null backends answer synchronously through `read_at`/`write_at`.

mod file;
mod identity;
pub mod iscsi;
mod iscsi_session;
mod null;
pub mod pool;
mod queued;
mod ram;
mod shared_word;
mod spec;

use std::io;
use std::os::fd::BorrowedFd;

pub use file::{FileBackend, FileOptions};
pub use identity::LuIdentity;
pub use iscsi::IscsiBackend;
pub use null::NullBackend;
pub use pool::{Pool, PoolError, PoolVolume};
pub use queued::{QueuedDone, QueuedIo, QueuedKind, QueuedRequest};
pub use ram::RamBackend;
pub use shared_word::SharedWord;
pub use spec::{LunOptions, LunSpec, Storage, LOGICAL_BLOCK_BYTES};

/// Storage for one logical unit. Every method takes `&self`: the disk layer calls a backend
/// from several connections at once, and each backend does its own locking.
pub trait Backend: Send + Sync {
    /// The usable size; the disk layer exports `size_bytes / block_size` blocks.
    fn size_bytes(&self) -> u64;
    /// Reads the size again from where it is kept (a pool volume grows while exported)
    /// and returns it; [`Backend::size_bytes`] answers it from then on.
    fn refresh_size(&self) -> u64 {
        self.size_bytes()
    }
    /// Fills `buf` from `offset`. Bytes never written read as zeros.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (SYNCHRONIZE CACHE, FUA).
    fn flush(&self) -> io::Result<()>;
    /// Deallocates `len` bytes at `offset`; afterwards they read as zeros.
    fn unmap(&self, offset: u64, len: u64) -> io::Result<()>;
    /// A short name for logs and configuration listings: "ram", "null", "file".
    fn kind(&self) -> &'static str;
    /// Whether the backend deallocates on [`Backend::unmap`] (thin provisioning).
    fn thin(&self) -> bool;
    /// Whether the bytes at `offset` are mapped (backed by storage), and for how many
    /// bytes from `offset` (at most `max_len`, at least 1 when `max_len > 0`) that answer
    /// holds. Backends that do not track allocation report everything mapped, which SBC-3
    /// permits (an unmap request may leave blocks mapped).
    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        let _ = offset;
        Ok((true, max_len))
    }
    /// A descriptor on which the server may issue reads, writes and fsyncs through its own
    /// io_uring instead of calling [`Backend::read_at`] and [`Backend::write_at`]. `None`
    /// (the default) for backends without one: they run synchronously.
    fn ring_file(&self) -> Option<RingFile<'_>> {
        None
    }
    /// A queue that takes planned READ, WRITE and SYNCHRONIZE CACHE and calls back when
    /// each is done (`iscsi:`): the server hands them to it from the event loop, with no
    /// thread waiting per command. `None` (the default) for the others.
    fn queued_io(&self) -> Option<&dyn QueuedIo> {
        None
    }
    /// The pool volume behind this backend, if it is one (EXTENDED COPY between volumes
    /// of one pool remaps chunks instead of copying bytes).
    fn pool_volume(&self) -> Option<&PoolVolume> {
        None
    }
    /// Whether [`Backend::flush`] may wait on storage (an fsync): SYNCHRONIZE CACHE then
    /// runs on a thread that may wait, not on an event loop. Backends with a ring file
    /// flush on the ring instead.
    fn flush_may_block(&self) -> bool {
        false
    }
    /// Whether every call that touches the medium may wait (a LUN on another array: a
    /// network round trip): the server then runs every such command on its blocking
    /// pool, never on an event loop.
    fn io_may_block(&self) -> bool {
        false
    }
    /// The logical block length the backend needs (a far array's), when it has one;
    /// `None` takes the gateway's default (512).
    fn logical_block_bytes(&self) -> Option<u32> {
        None
    }
    /// Whether a write of `offset..offset+len` must first be recorded durably (the change
    /// tracker's first write into a region since the start: one fsync), which an event
    /// loop must not wait for: the server then runs that command on its blocking pool.
    fn write_needs_record(&self, offset: u64, len: u64) -> bool {
        let _ = (offset, len);
        false
    }
    /// Called when the server plans a write of `offset..offset+len` on the ring file
    /// instead of calling [`Backend::write_at`]: a tracking backend marks its change map
    /// here (over-reporting only, should the write then fail).
    fn before_ring_write(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
    /// A backend without a ring file of its own whose planned READ, WRITE or SYNCHRONIZE
    /// CACHE can still run on the event loop's ring, over files of the backends it joins
    /// (a migrating LUN with a file side, `crate::migration::Mirror`): the legs, with what
    /// they hold taken now (a write's stripes); a side that answers on the event loop is
    /// written here. `data` is a write's data (empty otherwise). `None` sends the command
    /// to [`Backend::queued_io`] instead. Never waits.
    fn ring_legs(
        &self,
        kind: crate::disk::IoKind,
        offset: u64,
        data: &[u8],
    ) -> Option<RingLegs<'_>> {
        let _ = (kind, offset, data);
        None
    }
    /// The changed-block tracker fed by this backend's writes, when it is one that
    /// tracks (`crate::changes::Tracked`).
    fn change_tracker(&self) -> Option<&std::sync::Arc<crate::changes::ChangeTracker>> {
        None
    }
    /// Gives back the memory the backend holds when the control plane retires it
    /// (`control::retire`, on a thread of its own). `&mut`: only its last owner can, so no
    /// command is left to read what was given back. A wrapper passes it on to what it
    /// wraps when it holds that alone.
    fn release_memory(&mut self) {}
    /// Whether the backend holds the LUN's data in memory (a RAM LUN): a detached one is
    /// then retired (`control::retire`) rather than dropped by whichever event loop ends
    /// its last command, which would give GiBs back on that loop.
    fn holds_memory(&self) -> bool {
        false
    }
}

/// A backend's descriptor for ring I/O ([`Backend::ring_file`]).
#[derive(Debug, Clone, Copy)]
pub struct RingFile<'a> {
    pub fd: BorrowedFd<'a>,
    /// Opened with `O_DIRECT`: buffer addresses must be aligned to `memory_align_bytes`,
    /// and offsets and lengths are multiples of the logical block size, which the backend
    /// checked is a multiple of the file's direct I/O offset alignment.
    pub direct: bool,
    pub memory_align_bytes: usize,
    /// Submitting I/O on this descriptor may block the submitting thread (FUSE, network
    /// file systems): the server then submits with `IOSQE_ASYNC`, straight to io_uring's
    /// workers, so its event loop never waits on the file system.
    pub submit_may_block: bool,
}

/// The ring I/O of one planned command over two files ([`Backend::ring_legs`]): the
/// source's file takes the whole command; the destination's, if any, the command's first
/// `destination_len` bytes (a write; a flush syncs it). A side without a file was written
/// on the loop already. A failed destination leg fails the migration
/// (`hold.destination_failed`), not the command.
pub struct RingLegs<'a> {
    /// `None`: a write whose source answered on the event loop (and succeeded). After a
    /// migration's switch, a read's file is the destination's, with `fallback`.
    pub source: Option<RingFile<'a>>,
    pub destination: Option<RingFile<'a>>,
    pub destination_len: u64,
    /// A read that fails on `source` (the destination, after a switch) is read again from
    /// this file (the migration's source), and the migration fails (`hold`).
    pub fallback: Option<RingFile<'a>>,
    /// Kept until the last leg is done: a write's stripes; how a failure is told.
    pub hold: Option<crate::migration::HeldStripes>,
}

/// The error inside an `io::Error` (kind `StorageFull`) from a thin backend that has no
/// space left to allocate: the disk answers SPACE ALLOCATION FAILED WRITE PROTECT (SBC-4
/// 4.7.3.7) instead of a medium error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpaceExhausted(pub &'static str);

/// Buffers for `O_DIRECT` I/O are aligned to this (a page: at least any direct I/O
/// memory alignment a file system or device asks for).
pub const DIRECT_IO_BUFFER_ALIGN: usize = 4096;

/// Errors building a backend from its specification.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The text is not `ram:SIZE`, `null:SIZE`, `file:PATH`, `file:PATH:SIZE`,
    /// `pool:PATH,volume=NAME` or `iscsi://HOST:PORT/IQN/LUN`.
    #[error(
        "backend spec {spec:?}: expected ram:SIZE, null:SIZE, file:PATH, file:PATH:SIZE, \
         pool:PATH,volume=NAME[,size=SIZE] or iscsi://HOST[:PORT]/IQN/LUN, then options (,serial=S ,naa=HEX16 ,grow ,shared \
         ,readonly)"
    )]
    InvalidSpec { spec: String },
    /// An option after the spec that is not one of the known ones, or a bad value.
    #[error("backend option {option:?}: {reason}")]
    InvalidOption { option: String, reason: String },
    /// A size that is not a number with an optional K/M/G/T suffix, or that overflows.
    #[error("size {text:?}: expected a byte count with an optional K, M, G or T suffix (binary)")]
    InvalidSize { text: String },
    /// A size of zero bytes, which would export a LUN without blocks.
    #[error("size must be greater than zero")]
    ZeroSize,
    /// A size that is not a whole number of logical blocks (it would be cut silently).
    #[error(
        "size of {size_bytes} bytes is not a multiple of the {block_bytes}-byte block: \
         give {} or {}",
        size_bytes / block_bytes * block_bytes,
        size_bytes.div_ceil(*block_bytes) * block_bytes
    )]
    NotWholeBlocks { size_bytes: u64, block_bytes: u64 },
    /// A RAM LUN larger than this machine's memory: written in full, it would take the
    /// gateway down.
    #[error(
        "ram LUN of {size_bytes} bytes is larger than this machine's {memory_bytes} bytes of \
         memory; use a file LUN for that size"
    )]
    LargerThanMemory { size_bytes: u64, memory_bytes: u64 },
    /// An existing file whose size differs from the size the spec names.
    #[error(
        "{path} has {found_bytes} bytes, the spec asks for {wanted_bytes}: give file:{path} \
         to export it at its size{}",
        if wanted_bytes > found_bytes { ", or add ,grow to grow it to the size asked for" }
        else { " (a LUN never exports part of a file)" }
    )]
    SizeMismatch {
        path: String,
        found_bytes: u64,
        wanted_bytes: u64,
    },
    /// Another LUN or gateway has the file open.
    #[error(
        "{path} is in use by another LUN or gateway (it holds the file's lock); export a \
         file once, or add ,shared to every LUN that exports it (all of them must agree)"
    )]
    InUse { path: String },
    /// Opening, creating, sizing or measuring a file or device failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A file that does not exist and no size to create it with.
    #[error("{path} does not exist; give a size (file:{path}:SIZE) to create it")]
    MissingSize { path: String },
    /// A pool or pool volume that cannot be opened.
    #[error("{0}")]
    Pool(#[from] PoolError),
}

/// Parses a byte count with an optional binary suffix: `4096`, `64K`, `1G`, `2T`
/// (case-insensitive, an optional trailing `B` or `iB` is accepted: `1GiB`, `512MB`).
pub fn parse_size(text: &str) -> Result<u64, BackendError> {
    let invalid = || BackendError::InvalidSize {
        text: text.chars().take(40).collect(),
    };
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 10),
        Some('M') => (&without_b[..without_b.len() - 1], 20),
        Some('G') => (&without_b[..without_b.len() - 1], 30),
        Some('T') => (&without_b[..without_b.len() - 1], 40),
        _ => (without_b, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    number.checked_mul(1u64 << shift).ok_or_else(invalid)
}

/// Builds a backend from its text form ([`LunSpec`]); its identity is left out.
pub fn backend_from_spec(spec: &str) -> Result<Box<dyn Backend>, BackendError> {
    Ok(LunSpec::parse(spec)?.open()?.0)
}

/// The range check every backend applies before touching storage.
fn check_range(size_bytes: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size_bytes => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} is outside the backend's {size_bytes} bytes"),
        )),
    }
}

#[cfg(test)]
mod tests;
