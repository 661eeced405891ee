//! The `io_uring` engine: one local file or block device through one io_uring (the kernel's
//! `io_uring_setup(2)`/`io_uring_enter(2)`), with fio's `io_uring` engine options:
//!
//! - `direct=1`: the file is opened with `O_DIRECT`. Offsets and lengths must be multiples
//!   of the file's direct-I/O offset alignment (`statx` `STATX_DIOALIGN`, Linux 6.1; the
//!   device's logical block size, or 512, when the file system does not say); an I/O that is
//!   not fails with a message naming the alignment. Memory must be aligned to the direct-I/O
//!   memory alignment: a buffer that is not goes through an aligned bounce buffer, and the
//!   copy is counted ([`EngineCounters::bytes_copied`]).
//! - `fixedbufs`: `iodepth` buffers of `max_block_bytes` are allocated at open and
//!   registered with the ring (`IORING_REGISTER_BUFFERS`); [`Engine::buffer`] hands them out
//!   and a unit that carries one back is issued as `READ_FIXED`/`WRITE_FIXED` on that very
//!   memory: no copy. The buffer is recognised by its address and capacity, so the runner
//!   must not grow it (a `Vec` that reallocates is simply no longer registered and goes
//!   through the plain opcodes) and should give spare ones back with [`Engine::recycle`]
//!   rather than drop them while the engine is open: a registered buffer dropped and then
//!   reallocated at the same address by `mmap` would be read through the pages the ring
//!   pinned at registration, not the new ones.
//! - `registerfiles`: the descriptor is registered (`IORING_REGISTER_FILES`) and named by
//!   index, sparing the kernel a file-table lookup per I/O.
//! - `sqthread_poll`: a kernel thread polls the submission queue (`IORING_SETUP_SQPOLL`);
//!   if the kernel refuses (old kernel, no privilege), the engine logs a warning and runs
//!   without it. `sqthread_poll_cpu` pins that thread to one CPU (`IORING_SETUP_SQ_AFF`);
//!   without `sqthread_poll` it does nothing, as in fio. A pinned thread the kernel
//!   refuses (a CPU the machine lacks) fails the open instead of falling back, as fio's job
//!   fails.
//! - `hipri`: the ring is `IORING_SETUP_IOPOLL`: completions are polled for, not signalled.
//!   Only files on a device with poll queues take polled I/O; on any other file each I/O
//!   fails with `EOPNOTSUPP` (95), as fio's do (the job then stops with that error).
//! - `nonvectored`: reads and writes are `IORING_OP_READ`/`WRITE` (fio's default, -1, picks
//!   them when the kernel has them, which the engine probes), or `READV`/`WRITEV` of one
//!   iovec with `nonvectored=0`. `fixedbufs` I/O is `READ_FIXED`/`WRITE_FIXED` either way.
//! - `uncached`: buffered reads and writes carry `RWF_DONTCACHE` (Linux 6.14): their pages
//!   leave the page cache once read or written back. Ignored with `direct=1`, as in fio.
//! - `nowait`: reads and writes carry `RWF_NOWAIT`: one that would block fails with `EAGAIN`
//!   instead, which is an I/O error like any other (fio does not issue it again; its
//!   documentation suggests `ignore_error=EAGAIN`).
//! - `force_async=N`: every Nth entry the engine prepares (flushes and trims counted) is
//!   `IOSQE_ASYNC`: the kernel hands it to an io_uring worker instead of trying it inline.
//! - Priorities: each read and write carries the job's `prio`/`prioclass` in its entry (fio
//!   does so, as a `sqthread_poll` thread does not inherit the job thread's), or, for the
//!   share `cmdprio_percentage` picks, the `cmdprio_class`/`cmdprio`/`cmdprio_hint` one
//!   (or, with `cmdprio_bssplit`, the share and priority of the I/O's length). fio's
//!   per-priority latency report is not made.
//!
//! Trim punches a hole in a regular file (`IORING_OP_FALLOCATE` with
//! `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`) and discards on a block device with the
//! `BLKDISCARD` ioctl, which is synchronous: that trim completes before `queue` returns.
//!
//! Sizes: a block device's from `BLKGETSIZE64`; a regular file's from its metadata. A
//! regular file shorter than the job's size is laid out first as [`LayoutPolicy`] says
//! (fio writes the file out before jobs that read, and only extends it for pure writes).
//!
//! The ring is `SINGLE_ISSUER | DEFER_TASKRUN`, as fio's io_uring engine asks: completions
//! that io_uring's workers finish are posted only when the job enters the kernel to wait,
//! and the waiting job is woken once enough of them are there, not once per completion. The
//! engine is opened on the main thread and driven on the job's, so the ring starts disabled
//! (files and buffers are registered meanwhile) and the job's thread enables it
//! ([`Engine::on_job_thread`], or the first submit or reap), which makes that thread the
//! ring's one issuer. With `sqthread_poll` the ring is `SQPOLL` instead.

use std::collections::VecDeque;

use datapath::shard::TagMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use datapath::sys::AlignedBuf;
use datapath::transport::{RingFlags, RingSetup};
use io_uring::{opcode, squeue, types, IoUring};

use super::file_setup::{self, FileSetup};
use super::sync_call;
use super::{take_buffer, Engine, EngineCounters, EngineError};
use crate::io::{Direction, IoDone, IoError, IoUnit};
use crate::job::spec::{Fallocate, SyncCall};
use crate::run::priority::CmdPrio;

/// What to do with a regular file shorter than the job's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutPolicy {
    /// Write the missing part out (with zeros, then `fsync`), so reads hit allocated blocks:
    /// what fio does before a job that reads (or verifies).
    WriteOut,
    /// Extend it with `ftruncate` (sparse): enough for a job that only writes.
    Extend,
    /// Leave the file alone; a file shorter than the size is an error.
    Refuse,
}

/// Set-up of an io_uring engine (fio's names in the field docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringOptions {
    /// `filename`: a regular file (created when missing and a size is given) or a block
    /// device.
    pub path: PathBuf,
    /// `size`: bytes the job uses. `None` takes the file's or device's size as it is.
    pub size_bytes: Option<u64>,
    pub layout: LayoutPolicy,
    /// `fallocate`: how the part the job lays out or extends is allocated first.
    pub fallocate: Fallocate,
    /// `direct`.
    pub direct: bool,
    /// `fixedbufs`.
    pub fixedbufs: bool,
    /// `registerfiles`.
    pub registerfiles: bool,
    /// `sqthread_poll`.
    pub sqthread_poll: bool,
    /// `sync`: extra open flags, `O_SYNC` (`sync=1`/`sync`) or `O_DSYNC` (`dsync`); 0 for
    /// none.
    pub sync_flags: i32,
    /// `sqthread_poll_cpu`.
    pub sqthread_poll_cpu: Option<u32>,
    /// fio's synchronous engines (`ioengine=psync` and the like): one I/O at a time, each
    /// carried out with its system call on the job's thread at [`Engine::submit`], not
    /// through the ring.
    pub sync_call: Option<SyncCall>,
    /// `hipri`: `IORING_SETUP_IOPOLL`.
    pub hipri: bool,
    /// `nonvectored`: `None` (fio's -1) probes for `IORING_OP_READ`/`WRITE`; `Some(true)`
    /// uses them; `Some(false)` uses `READV`/`WRITEV`.
    pub nonvectored: Option<bool>,
    /// `uncached`: `RWF_DONTCACHE` on buffered reads and writes.
    pub uncached: bool,
    /// `nowait`: `RWF_NOWAIT` on reads and writes.
    pub nowait: bool,
    /// `force_async`: `IOSQE_ASYNC` on every Nth entry (0: never).
    pub force_async: u64,
    /// The I/O priority every read and write carries (the job's `prio`/`prioclass`; 0:
    /// none).
    pub ioprio: u16,
    /// `cmdprio_percentage` and friends: which reads and writes carry another priority.
    pub cmdprio: Option<CmdPrio>,
    /// `iodepth`: units held at once; also the ring's size.
    pub iodepth: usize,
    /// The largest block size of the job: the size of each registered buffer.
    pub max_block_bytes: u32,
    /// fio's file options: checks before the open, cache calls after it, and what
    /// happens at the close.
    pub files: FileSetup,
    /// fio's `nrfiles` (and a job's further files): more regular files or devices, opened
    /// and laid out as `path` is, each to `size_bytes` (or its `more_size_bytes`); units
    /// name one by [`IoUnit::file`] (0 is `path`). All stay open for the whole job (fio's
    /// `openfiles` is not needed).
    pub more_paths: Vec<PathBuf>,
    /// fio's `filesize` over several files: when not empty, the size of each of
    /// `more_paths` in its place (one entry each; `None`: as the file or device is), instead
    /// of `size_bytes`.
    pub more_size_bytes: Vec<Option<u64>>,
}

impl UringOptions {
    /// Buffered I/O, no registration, no polling, file laid out when short.
    pub fn new(path: impl Into<PathBuf>, iodepth: usize, max_block_bytes: u32) -> UringOptions {
        UringOptions {
            path: path.into(),
            size_bytes: None,
            layout: LayoutPolicy::WriteOut,
            fallocate: Fallocate::Native,
            direct: false,
            fixedbufs: false,
            registerfiles: false,
            sqthread_poll: false,
            sync_flags: 0,
            sqthread_poll_cpu: None,
            sync_call: None,
            hipri: false,
            nonvectored: None,
            uncached: false,
            nowait: false,
            force_async: 0,
            ioprio: 0,
            cmdprio: None,
            iodepth,
            max_block_bytes,
            files: FileSetup::default(),
            more_paths: Vec::new(),
            more_size_bytes: Vec::new(),
        }
    }
}

/// `_IOR(0x12, 114, u64)`: the size of a block device in bytes (linux/fs.h).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 119)`: discard a byte range `[start, length]` of a block device.
const BLKDISCARD: libc::c_ulong = 0x1277;
/// Bytes written per step when a file is laid out.
const LAYOUT_CHUNK_BYTES: usize = 1 << 20;
/// The largest ring (the kernel's own limit is 32768 entries).
const RING_ENTRIES_MAX: usize = 4096;
/// How long `SQPOLL`'s kernel thread keeps polling after the last submission.
const SQPOLL_IDLE_MS: u32 = 10;

/// Direct-I/O alignment in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirectAlignment {
    memory: u32,
    offset: u32,
}

/// Which thread may enter the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Issuer {
    /// Any thread (`SQPOLL`, or a plain ring when the kernel refused `SINGLE_ISSUER`).
    Any,
    /// The ring is disabled until a thread enables it and so becomes its issuer.
    NotYet,
    /// Only this thread (`SINGLE_ISSUER`).
    Thread(ThreadId),
}

/// One unit the kernel holds, with the memory it reads into or writes from.
struct InFlight {
    unit: IoUnit,
    /// The aligned copy the kernel uses instead of `unit.buffer` (O_DIRECT, misaligned).
    bounce: Option<AlignedBuf>,
}

/// See the module docs.
pub struct UringEngine {
    /// Declared first: dropped (and so unregistered) before the file it names.
    ring: IoUring,
    issuer: Issuer,
    file: File,
    path: String,
    is_block_device: bool,
    size_bytes: u64,
    block_size_bytes: u32,
    direct: Option<DirectAlignment>,
    fixed_file: bool,
    sqpoll: bool,
    iodepth: usize,
    max_block_bytes: u32,
    /// Indexed by the operation's `user_data`.
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    /// Entries pushed to the submission queue and not yet submitted.
    unsubmitted: usize,
    /// Completions known without the ring (refused units, synchronous discards).
    ready: VecDeque<IoDone>,
    /// Spare buffers for [`Engine::buffer`].
    pool: Vec<Vec<u8>>,
    /// Registered buffers: address to (index, capacity).
    registered: TagMap<usize, (u16, usize)>,
    /// `harvest`'s list of (slot, result), kept between calls.
    harvested: Vec<(usize, i32)>,
    bounce_pool: Vec<AlignedBuf>,
    counters: EngineCounters,
    /// `fsync_on_close` (on a writing job) and `unlink`, done by [`Engine::close`].
    fsync_on_close: bool,
    /// The last unit queued was a flush: `fsync_on_close` has nothing left to flush (fio's
    /// `should_fsync` is false right after a sync, such as the job's closing one).
    last_was_flush: bool,
    unlink: bool,
    /// The job's files after the first (`UringOptions::more_paths`), in order.
    more_files: Vec<OpenFile>,
    /// `O_DIRECT` and the `sync` flags the files were opened with (to open them again).
    open_flags: i32,
    /// A synchronous engine's calls ([`UringOptions::sync_call`]), and the unit queued for
    /// its next [`Engine::submit`] (it holds one at a time).
    sync_call: Option<SyncCall>,
    sync_queued: Option<IoUnit>,
    /// `pvsync2`'s flags for `preadv2`/`pwritev2`: `RWF_HIPRI` (`hipri`), `RWF_DONTCACHE`
    /// (`uncached`), `RWF_NOWAIT` (`nowait`), as fio's engine sets them.
    sync_rw_flags: i32,
    /// Where each file's range starts and how far the job's `size` reaches into the first,
    /// when a file starting over drops its page cache again (`invalidate` on buffered I/O,
    /// fio's `loop_cache_invalidate`); `None` otherwise.
    restart_invalidate: Option<(u64, Option<u64>)>,
    /// `RWF_DONTCACHE` (`uncached`, buffered) and `RWF_NOWAIT` (`nowait`) of every read
    /// and write.
    rw_flags: i32,
    /// Reads and writes are `READV`/`WRITEV` (`nonvectored=0`, or no `IORING_OP_READ`).
    vectored: bool,
    /// One iovec per slot for the vectored opcodes; never resized, so the kernel may read
    /// an entry's until it completes.
    iovecs: Vec<IoVec>,
    /// `force_async`, and the entries prepared since the last `IOSQE_ASYNC` one.
    force_async: u64,
    prepared: u64,
    /// `hipri`: the ring is `IOPOLL`, and completions appear only when the job enters.
    iopoll: bool,
    ioprio: u16,
    cmdprio: Option<CmdPrio>,
}

/// One open file of the engine and what its units need to know of it.
struct OpenFile {
    file: File,
    path: String,
    is_block_device: bool,
    size_bytes: u64,
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("path", &self.path)
            .field("size_bytes", &self.size_bytes)
            .field("block_size_bytes", &self.block_size_bytes)
            .field("direct", &self.direct)
            .field("fixed_file", &self.fixed_file)
            .field("registered_buffers", &self.registered.len())
            .field("sqpoll", &self.sqpoll)
            .field("iopoll", &self.iopoll)
            .field("vectored", &self.vectored)
            .field("rw_flags", &self.rw_flags)
            .field("force_async", &self.force_async)
            .finish_non_exhaustive()
    }
}

impl UringEngine {
    pub fn open(options: &UringOptions) -> Result<UringEngine, EngineError> {
        if options.iodepth == 0 || options.iodepth > RING_ENTRIES_MAX {
            return Err(EngineError::InvalidOption(format!(
                "iodepth {} is outside 1..={RING_ENTRIES_MAX}",
                options.iodepth
            )));
        }
        if options.max_block_bytes == 0 {
            return Err(EngineError::InvalidOption(
                "the largest block size must be at least 1 byte".into(),
            ));
        }
        let (first, logical_block) = open_file(options, &options.path, options.size_bytes)?;
        let OpenFile {
            file,
            path,
            is_block_device,
            size_bytes,
        } = first;
        let more_files = options
            .more_paths
            .iter()
            .enumerate()
            .map(|(index, path)| {
                let size_bytes = match options.more_size_bytes.get(index) {
                    Some(size_bytes) => *size_bytes,
                    None if options.more_size_bytes.is_empty() => options.size_bytes,
                    None => None,
                };
                open_file(options, path, size_bytes).map(|(file, _)| file)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let direct = options.direct.then(|| {
            direct_io_alignment(&file).unwrap_or(DirectAlignment {
                memory: logical_block,
                offset: logical_block,
            })
        });
        let block_size_bytes = match direct {
            Some(alignment) => alignment.offset,
            None if is_block_device => logical_block,
            None => 1,
        };

        let (ring, sqpoll, issuer) = build_ring(options)?;
        let mut engine = UringEngine {
            ring,
            issuer,
            file,
            path,
            is_block_device,
            size_bytes,
            block_size_bytes,
            direct,
            fixed_file: false,
            sqpoll,
            iodepth: options.iodepth,
            max_block_bytes: options.max_block_bytes,
            slots: (0..options.iodepth).map(|_| None).collect(),
            free_slots: (0..options.iodepth).rev().collect(),
            unsubmitted: 0,
            ready: VecDeque::new(),
            pool: Vec::new(),
            registered: TagMap::default(),
            harvested: Vec::new(),
            bounce_pool: Vec::new(),
            counters: EngineCounters::default(),
            fsync_on_close: options.files.fsync_on_close,
            last_was_flush: false,
            unlink: options.files.unlink,
            more_files,
            open_flags: if options.direct { libc::O_DIRECT } else { 0 } | options.sync_flags,
            sync_call: options.sync_call,
            sync_queued: None,
            sync_rw_flags: if options.sync_call == Some(SyncCall::Pvsync2) {
                pvsync2_flags(options)
            } else {
                0
            },
            restart_invalidate: (options.files.invalidate
                && !options.direct
                && options.files.pre_read_block_bytes.is_none())
            .then_some((options.files.range_offset_bytes, options.size_bytes)),
            rw_flags: rw_flags(options),
            vectored: false,
            iovecs: vec![IoVec::default(); options.iodepth],
            force_async: options.force_async,
            prepared: 0,
            iopoll: options.hipri && options.sync_call.is_none(),
            ioprio: options.ioprio,
            cmdprio: options.cmdprio.clone(),
        };
        engine.vectored = match options.nonvectored {
            Some(nonvectored) => !nonvectored,
            // fio's -1: probe, and stay vectored (always safe) when the probe fails.
            None => {
                let mut probe = io_uring::Probe::new();
                let probed = engine.ring.submitter().register_probe(&mut probe).is_ok();
                !(probed
                    && probe.is_supported(opcode::Read::CODE)
                    && probe.is_supported(opcode::Write::CODE))
            }
        };
        if options.registerfiles {
            engine
                .ring
                .submitter()
                .register_files(&engine.raw_fds())
                .map_err(|source| EngineError::Ring {
                    what: "registering the file",
                    source,
                })?;
            engine.fixed_file = true;
        }
        if options.fixedbufs {
            engine.register_buffers()?;
        }
        tracing::debug!(engine = ?engine, "io_uring engine open");
        Ok(engine)
    }

    /// Allocates `iodepth` buffers of `max_block_bytes` and registers them with the ring.
    fn register_buffers(&mut self) -> Result<(), EngineError> {
        let len = self.max_block_bytes as usize;
        let buffers: Vec<Vec<u8>> = (0..self.iodepth).map(|_| vec![0u8; len]).collect();
        let iovecs: Vec<libc::iovec> = buffers
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.capacity(),
            })
            .collect();
        // SAFETY: every iovec describes the whole allocation of a live `Vec` that this
        // engine keeps in its pool; the ring pins those pages. Operations name a registered
        // buffer only for a unit whose buffer is that same allocation (same address and
        // capacity, checked in `queue`), which the unit owns while the kernel uses it.
        unsafe { self.ring.submitter().register_buffers(&iovecs) }.map_err(|source| {
            EngineError::Ring {
                what: "registering buffers (fixedbufs; RLIMIT_MEMLOCK may be too low)",
                source,
            }
        })?;
        for (index, buffer) in buffers.iter().enumerate() {
            let index = u16::try_from(index).map_err(|_| {
                EngineError::InvalidOption("more than 65536 registered buffers".into())
            })?;
            self.registered
                .insert(buffer.as_ptr() as usize, (index, buffer.capacity()));
        }
        self.pool = buffers;
        Ok(())
    }

    /// True when the kernel polls the submission queue (`sqthread_poll` was granted).
    pub fn sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// The direct-I/O alignment `(memory, offset)` in bytes, with `direct=1`.
    pub fn direct_alignment(&self) -> Option<(u32, u32)> {
        self.direct.map(|a| (a.memory, a.offset))
    }

    /// Buffers registered with the ring (0 without `fixedbufs`).
    pub fn registered_buffers(&self) -> usize {
        self.registered.len()
    }

    /// Makes this thread the ring's issuer if it has none yet (enabling the ring); an
    /// error when another thread is.
    fn take_issuer(&mut self) -> Result<(), EngineError> {
        let here = std::thread::current().id();
        match self.issuer {
            Issuer::Any => Ok(()),
            Issuer::Thread(thread) if thread == here => Ok(()),
            Issuer::Thread(_) => Err(EngineError::Ring {
                what: "entering the ring from a thread other than the job's (SINGLE_ISSUER)",
                source: io::Error::from_raw_os_error(libc::EEXIST),
            }),
            Issuer::NotYet => {
                self.ring
                    .submitter()
                    .register_enable_rings()
                    .map_err(|source| EngineError::Ring {
                        what: "enabling the ring on the job's thread",
                        source,
                    })?;
                self.issuer = Issuer::Thread(here);
                Ok(())
            }
        }
    }

    fn slots_in_use(&self) -> usize {
        self.iodepth - self.free_slots.len()
    }

    /// Completes `unit` at once with `error`.
    fn refuse(&mut self, unit: IoUnit, error: IoError) {
        self.ready.push_back(IoDone {
            unit,
            result: Err(error),
        });
    }

    fn alignment_error(&self, unit: &IoUnit) -> Option<IoError> {
        let alignment = self.direct?;
        let align = u64::from(alignment.offset);
        (!unit.offset.is_multiple_of(align) || !u64::from(unit.len).is_multiple_of(align)).then(
            || {
                IoError::Transport(format!(
                    "O_DIRECT (direct=1) needs offsets and lengths in multiples of {align} bytes \
                 (the direct-I/O alignment of {}); got offset {} length {}",
                    self.path, unit.offset, unit.len
                ))
            },
        )
    }

    /// The submission entry for `unit`, whose slot is `slot`; records the unit there.
    fn prepare(&mut self, mut unit: IoUnit, slot: usize) -> squeue::Entry {
        let len = unit.len;
        let fd = self.fd_target(unit.file);
        let mut bounce = None;
        let entry = match unit.direction {
            // A flush unit: fsync(2) of the file (fio's fsync, end_fsync), or
            // fdatasync(2) (fio's fdatasync).
            Direction::Write if unit.synced_range().is_some() => {
                let range = unit.synced_range().unwrap_or(crate::io::SyncRange {
                    offset: 0,
                    len: 0,
                    flags: 0,
                });
                // The ring's length is 32 bits (fio's io_uring engine truncates it too).
                let len = u32::try_from(range.len).unwrap_or(u32::MAX);
                match fd {
                    Target::Fixed(f) => opcode::SyncFileRange::new(f, len),
                    Target::Fd(f) => opcode::SyncFileRange::new(f, len),
                }
                .offset(range.offset)
                .flags(range.flags)
                .build()
            }
            Direction::Write if unit.is_flush() => {
                let flags = if unit.is_datasync() {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                match fd {
                    Target::Fixed(f) => opcode::Fsync::new(f).flags(flags).build(),
                    Target::Fd(f) => opcode::Fsync::new(f).flags(flags).build(),
                }
            }
            Direction::Trim => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                match fd {
                    Target::Fixed(f) => opcode::Fallocate::new(f, u64::from(len)),
                    Target::Fd(f) => opcode::Fallocate::new(f, u64::from(len)),
                }
                .offset(unit.offset)
                .mode(mode)
                .build()
            }
            direction => {
                let fixed = self
                    .registered
                    .get(&(unit.buffer.as_ptr() as usize))
                    .filter(|(_, capacity)| *capacity == unit.buffer.capacity())
                    .map(|(index, _)| *index);
                let ptr;
                (ptr, bounce) = self.io_memory(&mut unit);
                let fixed = if bounce.is_some() { None } else { fixed };
                if fixed.is_some() {
                    self.counters.ios_fixed_buffers += 1;
                }
                let ioprio = self
                    .cmdprio
                    .as_mut()
                    .and_then(|cmdprio| cmdprio.pick(direction, u64::from(len)))
                    .unwrap_or(self.ioprio);
                let iovec = (self.vectored && fixed.is_none()).then(|| {
                    self.iovecs[slot] = IoVec {
                        base: ptr as usize,
                        len: len as usize,
                    };
                    &self.iovecs[slot] as *const IoVec as *const libc::iovec
                });
                let extra = RwExtra {
                    rw_flags: self.rw_flags,
                    ioprio,
                    iovec,
                };
                build_rw(direction, fd, ptr, len, unit.offset, fixed, extra)
            }
        };
        self.slots[slot] = Some(InFlight { unit, bounce });
        let entry = if self.force_async > 0 {
            self.prepared += 1;
            if self.prepared == self.force_async {
                self.prepared = 0;
                entry.flags(squeue::Flags::ASYNC)
            } else {
                entry
            }
        } else {
            entry
        };
        entry.user_data(slot as u64)
    }

    /// The memory the kernel reads `unit`'s data into or writes it from: its buffer, or an
    /// aligned copy when `O_DIRECT` needs one (a write's data copied in; a read's is
    /// copied out by [`UringEngine::finish`]).
    fn io_memory(&mut self, unit: &mut IoUnit) -> (*mut u8, Option<AlignedBuf>) {
        let misaligned = self
            .direct
            .is_some_and(|a| !(unit.buffer.as_ptr() as usize).is_multiple_of(a.memory as usize));
        if !misaligned {
            return (unit.buffer.as_mut_ptr(), None);
        }
        let len = unit.len as usize;
        let mut aligned = self.bounce_buffer(len);
        if unit.direction == Direction::Write {
            aligned.as_mut_slice()[..len].copy_from_slice(&unit.buffer[..len]);
            self.counters.bytes_copied += u64::from(unit.len);
        }
        (aligned.as_mut_ptr(), Some(aligned))
    }

    /// A synchronous engine's I/O: `unit` carried out now with `call`'s system call (a
    /// flush, range sync or trim with its own), finished as a ring completion would be.
    fn carry_out(&mut self, call: SyncCall, mut unit: IoUnit) -> IoDone {
        let (fd, _, _) = self.file_info(unit.file);
        let mut bounce = None;
        let result = if let Some(range) = unit.synced_range() {
            sync_call::sync_range(fd, range)
        } else if unit.is_flush() {
            sync_call::flush(fd, unit.is_datasync())
        } else if unit.direction == Direction::Trim {
            sync_call::punch_hole(fd, unit.offset, unit.len)
        } else {
            let ptr;
            (ptr, bounce) = self.io_memory(&mut unit);
            // SAFETY: `ptr` is `unit`'s buffer (at least `len` bytes: `queue` refused
            // shorter ones) or the bounce buffer of at least `len` bytes, both owned here
            // until the call returns; the file stays open as long as the engine.
            unsafe {
                sync_call::transfer(
                    call,
                    fd,
                    unit.direction,
                    ptr,
                    unit.len,
                    unit.offset,
                    self.sync_rw_flags,
                )
            }
        };
        self.counters.ios_submitted += 1;
        self.counters.kernel_entries += 1;
        self.finish(InFlight { unit, bounce }, result)
    }

    /// The descriptor of file `file` (0: the first), or its index among the registered
    /// ones. A unit naming a file the engine has not opened is refused before this.
    fn fd_target(&self, file: u32) -> Target {
        if self.fixed_file {
            Target::Fixed(types::Fixed(file))
        } else {
            let (fd, _, _) = self.file_info(file);
            Target::Fd(types::Fd(fd))
        }
    }

    /// Descriptor, path and whether it is a block device, of file `file` (0: the first;
    /// past the last: the first, which `queue` never lets through).
    fn file_info(&self, file: u32) -> (i32, &str, bool) {
        match (file as usize)
            .checked_sub(1)
            .and_then(|i| self.more_files.get(i))
        {
            Some(more) => (more.file.as_raw_fd(), &more.path, more.is_block_device),
            None => (self.file.as_raw_fd(), &self.path, self.is_block_device),
        }
    }

    /// Every open file's descriptor, in the order units name them.
    fn raw_fds(&self) -> Vec<i32> {
        std::iter::once(self.file.as_raw_fd())
            .chain(self.more_files.iter().map(|more| more.file.as_raw_fd()))
            .collect()
    }

    fn bounce_buffer(&mut self, len: usize) -> AlignedBuf {
        let memory = self.direct.map_or(4096, |a| a.memory as usize).max(4096);
        let size = len.max(self.max_block_bytes as usize);
        match self.bounce_pool.iter().position(|b| b.len() >= len) {
            Some(i) => self.bounce_pool.swap_remove(i),
            // One I/O's size (at least 1 byte) at a power-of-two alignment: always a layout.
            None => AlignedBuf::zeroed(size.max(1), memory)
                .expect("a bounce buffer the size of one I/O"),
        }
    }

    /// Discards a range of a block device now (the ioctl is synchronous).
    fn discard(&mut self, unit: IoUnit) {
        let range: [u64; 2] = [unit.offset, u64::from(unit.len)];
        // SAFETY: BLKDISCARD reads two u64 (start, length) from the pointer, which points
        // to `range`, alive for the call; the descriptor is open.
        let (fd, path, _) = self.file_info(unit.file);
        let path = path.to_string();
        let rc = unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) };
        self.counters.kernel_entries += 1;
        self.counters.ios_submitted += 1;
        let result = if rc == 0 {
            Ok(())
        } else {
            let error = io::Error::last_os_error();
            Err(IoError::Os {
                errno: error.raw_os_error().unwrap_or(libc::EIO),
                detail: format!(
                    "BLKDISCARD of {} bytes at offset {} on {path}: {error}",
                    unit.len, unit.offset
                ),
            })
        };
        self.ready.push_back(IoDone { unit, result });
    }

    /// Moves every completion the ring holds into `out`.
    fn harvest(&mut self, out: &mut Vec<IoDone>) -> usize {
        // Taken out and put back: the completions are read off the ring before `finish`
        // borrows the engine, without an allocation per reap.
        let mut finished = std::mem::take(&mut self.harvested);
        finished.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data() as usize, cqe.result())),
        );
        let count = finished.len();
        for (slot, result) in finished.drain(..) {
            let Some(in_flight) = self.slots.get_mut(slot).and_then(Option::take) else {
                tracing::error!(slot, "io_uring completion for an empty slot");
                continue;
            };
            self.free_slots.push(slot);
            out.push(self.finish(in_flight, result));
        }
        self.harvested = finished;
        count
    }

    fn finish(&mut self, in_flight: InFlight, result: i32) -> IoDone {
        let InFlight { mut unit, bounce } = in_flight;
        let what = match unit.direction {
            Direction::Write if unit.is_flush() => "fsync",
            Direction::Read => "read",
            Direction::Write => "write",
            Direction::Trim => "trim (punch hole)",
        };
        let result = if result < 0 {
            Err(IoError::Os {
                errno: -result,
                detail: format!(
                    "{what} of {} bytes at offset {} in {}: {}",
                    unit.len,
                    unit.offset,
                    self.path,
                    io::Error::from_raw_os_error(-result)
                ),
            })
        } else if unit.direction != Direction::Trim && (result as u32) < unit.len {
            Err(IoError::Short {
                wanted: unit.len,
                done: result as u32,
            })
        } else {
            Ok(())
        };
        if let Some(bounce) = bounce {
            if unit.direction == Direction::Read && result.is_ok() {
                let len = unit.len as usize;
                unit.buffer[..len].copy_from_slice(&bounce.as_slice()[..len]);
                self.counters.bytes_copied += u64::from(unit.len);
            }
            self.bounce_pool.push(bounce);
        }
        self.counters.ios_completed += 1;
        IoDone { unit, result }
    }

    /// Submits what is queued and waits for at least `want` completions, or `timeout`.
    /// Returns false when the time ran out.
    fn enter_and_wait(&mut self, want: usize, timeout: Duration) -> Result<bool, EngineError> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        self.counters.kernel_entries += 1;
        let submitted = self.unsubmitted;
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {
                self.note_submitted(submitted);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                self.note_submitted(submitted);
                Ok(false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(true),
            Err(source) => Err(EngineError::Ring {
                what: "waiting for completions",
                source,
            }),
        }
    }

    /// Enters the kernel without waiting when the ring says completion work is deferred
    /// (`IORING_SQ_TASKRUN`): with `DEFER_TASKRUN` only an entry with GETEVENTS posts the
    /// completions io_uring's workers finished, and a reap that does not wait would
    /// otherwise never see them.
    fn post_deferred(&mut self) -> Result<(), EngineError> {
        if !self.ring.submission().taskrun() {
            return Ok(());
        }
        self.enter_without_waiting("posting completions")?;
        Ok(())
    }

    /// Submits what is queued and enters with GETEVENTS but no minimum: the kernel posts
    /// the completions that are ready (deferred task work) while it is here, so the next
    /// reap finds them without a wait. Returns how many units went in.
    fn enter_without_waiting(&mut self, what: &'static str) -> Result<usize, EngineError> {
        self.counters.kernel_entries += 1;
        let submitted = self.unsubmitted;
        loop {
            match self.ring.submitter().submit_and_wait(0) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(source) => return Err(EngineError::Ring { what, source }),
            }
        }
        self.note_submitted(submitted);
        Ok(submitted)
    }

    fn note_submitted(&mut self, count: usize) {
        self.counters.ios_submitted += count as u64;
        self.unsubmitted -= count;
    }

    /// Waits for every unit in flight (their completions are dropped).
    fn drain(&mut self) {
        if self.slots_in_use() > 0 {
            if let Err(e) = self.take_issuer() {
                // Only the issuer may wait, and the kernel still owns memory of these
                // units: leak them rather than free memory it may write to.
                tracing::error!(
                    in_flight = self.slots_in_use(),
                    path = %self.path,
                    error = %e,
                    "io_uring engine closed off its job's thread; leaking the buffers in flight"
                );
                self.forget_in_flight();
                return;
            }
        }
        // Completions dropped here were never handed to the runner.
        let completed = self.counters.ios_completed;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sink = Vec::new();
        while self.slots_in_use() > 0 {
            if Instant::now() >= deadline {
                // The kernel still owns memory of these units: leak them rather than free
                // memory it may write to.
                tracing::error!(
                    in_flight = self.slots_in_use(),
                    path = %self.path,
                    "io_uring I/O did not complete within 60 s at close; leaking its buffers"
                );
                self.forget_in_flight();
                break;
            }
            if let Err(e) = self.enter_and_wait(1, Duration::from_millis(100)) {
                tracing::warn!(error = %e, "draining the io_uring engine");
            }
            self.harvest(&mut sink);
            sink.clear();
        }
        self.ready.clear();
        self.counters.ios_completed = completed;
    }
}

impl UringEngine {
    /// Leaks every unit in flight (their memory may still be written by the kernel).
    fn forget_in_flight(&mut self) {
        for slot in self.slots.iter_mut() {
            if let Some(in_flight) = slot.take() {
                std::mem::forget(in_flight);
            }
        }
        self.free_slots = (0..self.iodepth).collect();
    }
}

/// What a read or write entry carries besides its buffer: `RWF_*` flags, its I/O priority,
/// and, for `READV`/`WRITEV`, the iovec it names.
#[derive(Clone, Copy)]
struct RwExtra {
    rw_flags: i32,
    ioprio: u16,
    iovec: Option<*const libc::iovec>,
}

/// One `struct iovec` (the same layout), kept as integers so that the engine stays `Send`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct IoVec {
    base: usize,
    len: usize,
}

/// The file as an operation names it.
#[derive(Clone, Copy)]
enum Target {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

/// `RWF_DONTCACHE` (`uncached`, buffered I/O only) and `RWF_NOWAIT` (`nowait`) for every
/// read and write.
fn rw_flags(options: &UringOptions) -> i32 {
    let uncached = if options.uncached && !options.direct {
        libc::RWF_DONTCACHE
    } else {
        0
    };
    uncached | if options.nowait { libc::RWF_NOWAIT } else { 0 }
}

/// fio's pvsync2 flags: the ring's ([`rw_flags`]) and `RWF_HIPRI` for `hipri`.
fn pvsync2_flags(options: &UringOptions) -> i32 {
    rw_flags(options) | if options.hipri { libc::RWF_HIPRI } else { 0 }
}

fn build_rw(
    direction: Direction,
    fd: Target,
    ptr: *mut u8,
    len: u32,
    offset: u64,
    fixed: Option<u16>,
    extra: RwExtra,
) -> squeue::Entry {
    let RwExtra {
        rw_flags,
        ioprio,
        iovec,
    } = extra;
    macro_rules! op {
        ($fd:expr) => {
            match (direction, fixed, iovec) {
                (Direction::Write, Some(index), _) => opcode::WriteFixed::new($fd, ptr, len, index)
                    .offset(offset)
                    .ioprio(ioprio)
                    .rw_flags(rw_flags)
                    .build(),
                (Direction::Write, None, Some(iovec)) => opcode::Writev::new($fd, iovec, 1)
                    .offset(offset)
                    .ioprio(ioprio)
                    .rw_flags(rw_flags)
                    .build(),
                (Direction::Write, None, None) => opcode::Write::new($fd, ptr, len)
                    .offset(offset)
                    .ioprio(ioprio)
                    .rw_flags(rw_flags)
                    .build(),
                (_, Some(index), _) => opcode::ReadFixed::new($fd, ptr, len, index)
                    .offset(offset)
                    .ioprio(ioprio)
                    .rw_flags(rw_flags)
                    .build(),
                (_, None, Some(iovec)) => opcode::Readv::new($fd, iovec, 1)
                    .offset(offset)
                    .ioprio(ioprio)
                    .rw_flags(rw_flags)
                    .build(),
                (_, None, None) => opcode::Read::new($fd, ptr, len)
                    .offset(offset)
                    .ioprio(ioprio)
                    .rw_flags(rw_flags)
                    .build(),
            }
        };
    }
    match fd {
        Target::Fd(f) => op!(f),
        Target::Fixed(f) => op!(f),
    }
}

impl Engine for UringEngine {
    fn name(&self) -> &'static str {
        self.sync_call.map_or("io_uring", SyncCall::name)
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn block_size_bytes(&self) -> u32 {
        self.block_size_bytes
    }

    fn file_count(&self) -> usize {
        1 + self.more_files.len()
    }

    fn recreate_files(&mut self) -> Result<(), EngineError> {
        if self.slots_in_use() + self.ready.len() > 0 {
            return Err(EngineError::InvalidOption(
                "unlink_each_loop: the files were to be unlinked with I/O in flight".into(),
            ));
        }
        let flags = self.open_flags;
        // fio: unlink, then the next loop's open creates the file (O_CREAT, mode 0600)
        // and it grows with the writes. A block device is left alone.
        let reopen = |path: &str| -> Result<File, EngineError> {
            let error = |what: &'static str| {
                let path = path.to_string();
                move |source: io::Error| EngineError::File { path, what, source }
            };
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(error("unlinking (unlink_each_loop)")(e));
                }
                _ => {}
            }
            let mut open = OpenOptions::new();
            open.read(true).write(true).create(true).mode(0o600);
            if flags != 0 {
                open.custom_flags(flags);
            }
            open.open(path)
                .map_err(error("creating again (unlink_each_loop)"))
        };
        if !self.is_block_device {
            self.file = reopen(&self.path)?;
        }
        for more in &mut self.more_files {
            if !more.is_block_device {
                more.file = reopen(&more.path)?;
            }
        }
        if self.fixed_file {
            let fds = self.raw_fds();
            let submitter = self.ring.submitter();
            let ring_error = |what| move |source| EngineError::Ring { what, source };
            submitter
                .unregister_files()
                .map_err(ring_error("unregistering the files"))?;
            submitter
                .register_files(&fds)
                .map_err(ring_error("registering the files again"))?;
        }
        Ok(())
    }

    fn file_restarted(&mut self, file: usize) {
        let Some((offset, job_size)) = self.restart_invalidate else {
            return;
        };
        let (fd_file, path, is_block_device, size) = match file.checked_sub(1) {
            None => (
                &self.file,
                self.path.as_str(),
                self.is_block_device,
                job_size.unwrap_or(self.size_bytes).min(self.size_bytes),
            ),
            Some(i) => match self.more_files.get(i) {
                Some(more) => (
                    &more.file,
                    more.path.as_str(),
                    more.is_block_device,
                    more.size_bytes,
                ),
                None => return,
            },
        };
        file_setup::invalidate(
            fd_file,
            path,
            is_block_device,
            offset,
            size.saturating_sub(offset),
        );
    }

    fn file_geometry(&self, file: usize) -> Option<(u64, u32)> {
        match file.checked_sub(1) {
            None => Some((self.size_bytes, self.block_size_bytes)),
            Some(i) => self
                .more_files
                .get(i)
                .map(|more| (more.size_bytes, self.block_size_bytes)),
        }
    }

    fn queue_depth(&self) -> usize {
        // fio caps a synchronous engine's depth at 1 ("queue depth will be capped at 1").
        if self.sync_call.is_some() {
            1
        } else {
            self.iodepth
        }
    }

    fn in_flight(&self) -> usize {
        self.slots_in_use() + self.ready.len() + usize::from(self.sync_queued.is_some())
    }

    fn buffer(&mut self, len_bytes: u32) -> Vec<u8> {
        take_buffer(&mut self.pool, len_bytes)
    }

    fn recycle(&mut self, buffer: Vec<u8>) {
        // Keep registered buffers always, and a bounded number of others.
        let registered = self.registered.contains_key(&(buffer.as_ptr() as usize));
        if registered || self.pool.len() < 2 * self.iodepth {
            self.pool.push(buffer);
        }
    }

    fn supports_flush(&self) -> bool {
        true
    }

    fn queue(&mut self, unit: IoUnit) -> Result<(), IoUnit> {
        if self.in_flight() >= self.queue_depth() {
            return Err(unit);
        }
        if unit.direction != Direction::Trim && unit.buffer.len() < unit.len as usize {
            let error = IoError::Transport(format!(
                "buffer of {} bytes is shorter than the {}-byte I/O",
                unit.buffer.len(),
                unit.len
            ));
            self.refuse(unit, error);
            return Ok(());
        }
        if let Some(error) = (!unit.is_flush())
            .then(|| self.alignment_error(&unit))
            .flatten()
        {
            self.refuse(unit, error);
            return Ok(());
        }
        if unit.file as usize > self.more_files.len() {
            let error = IoError::Transport(format!(
                "the unit names file {} and the engine opened {}",
                unit.file,
                1 + self.more_files.len()
            ));
            self.refuse(unit, error);
            return Ok(());
        }
        if unit.direction == Direction::Trim && self.file_info(unit.file).2 {
            self.last_was_flush = false;
            self.discard(unit);
            return Ok(());
        }
        if self.sync_call.is_some() {
            self.last_was_flush = unit.is_flush();
            self.sync_queued = Some(unit);
            return Ok(());
        }
        let Some(slot) = self.free_slots.pop() else {
            return Err(unit);
        };
        self.last_was_flush = unit.is_flush();
        let entry = self.prepare(unit, slot);
        // SAFETY: the entry points into memory owned by the unit (or its bounce buffer)
        // now held in `self.slots[slot]`, which is not touched, moved out or freed until
        // its completion is harvested (`drain` waits for every slot before the engine is
        // dropped). The file (or registered index 0) stays open as long as the ring.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The ring has at least `iodepth` entries and holds at most `iodepth` units, so
            // it is never full; should it be, fail the unit rather than lose it.
            if let Some(in_flight) = self.slots[slot].take() {
                self.free_slots.push(slot);
                let done = self.finish(in_flight, -libc::EBUSY);
                self.ready.push_back(done);
            }
            return Ok(());
        }
        self.unsubmitted += 1;
        Ok(())
    }

    fn on_job_thread(&mut self) -> Result<(), EngineError> {
        self.take_issuer()
    }

    fn issues_when_submit_starts(&self) -> bool {
        // A synchronous engine's I/O happens inside `submit`: it is issued when that starts.
        self.sync_call.is_some()
    }

    fn submit(&mut self) -> Result<usize, EngineError> {
        if let (Some(call), Some(unit)) = (self.sync_call, self.sync_queued.take()) {
            let done = self.carry_out(call, unit);
            self.ready.push_back(done);
            return Ok(1);
        }
        if self.unsubmitted == 0 {
            return Ok(0);
        }
        self.take_issuer()?;
        self.enter_without_waiting("submitting")
    }

    fn reap(
        &mut self,
        min: usize,
        timeout: Duration,
        out: &mut Vec<IoDone>,
    ) -> Result<usize, EngineError> {
        let start = out.len();
        let wanted = min.min(self.in_flight());
        out.extend(self.ready.drain(..));
        if self.slots_in_use() > 0 {
            self.take_issuer()?;
            if self.iopoll {
                // IOPOLL: completions are found only by entering the kernel to poll.
                self.enter_without_waiting("polling for completions (hipri)")?;
            } else {
                self.post_deferred()?;
            }
        }
        self.harvest(out);
        if out.len() - start >= wanted {
            return Ok(out.len() - start);
        }
        let mut now = Instant::now();
        let deadline = now + timeout;
        // Bounded by the deadline: each round waits in the kernel until it or completions.
        while out.len() - start < wanted && now < deadline {
            let want = wanted - (out.len() - start);
            let in_time = self.enter_and_wait(want, deadline - now)?;
            self.harvest(out);
            if !in_time {
                break;
            }
            now = Instant::now();
        }
        Ok(out.len() - start)
    }

    fn counters(&self) -> EngineCounters {
        self.counters
    }

    fn close(mut self: Box<Self>) -> Result<EngineCounters, EngineError> {
        self.drain();
        let file_error = |what: &'static str| {
            let path = self.path.clone();
            move |source: io::Error| EngineError::File { path, what, source }
        };
        // fio: fsync_on_close flushes before the close, unlink removes the file after it.
        if self.fsync_on_close && !self.last_was_flush {
            self.file
                .sync_all()
                .map_err(file_error("fsync (fsync_on_close)"))?;
        }
        for more in &self.more_files {
            if self.fsync_on_close && !self.last_was_flush {
                more.file.sync_all().map_err(|source| EngineError::File {
                    path: more.path.clone(),
                    what: "fsync (fsync_on_close)",
                    source,
                })?;
            }
        }
        if self.unlink {
            let first = (self.path.as_str(), self.is_block_device);
            let more = self
                .more_files
                .iter()
                .map(|f| (f.path.as_str(), f.is_block_device));
            for (path, is_block_device) in std::iter::once(first).chain(more) {
                if is_block_device {
                    continue;
                }
                match std::fs::remove_file(path) {
                    Err(source) if source.kind() != io::ErrorKind::NotFound => {
                        return Err(EngineError::File {
                            path: path.to_string(),
                            what: "unlinking (unlink)",
                            source,
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(self.counters)
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.drain();
    }
}

/// Opens one file of the job (checked, laid out to `wanted_bytes` and its cache prepared as
/// its options say): the file and its logical block size.
fn open_file(
    options: &UringOptions,
    path_ref: &Path,
    wanted_bytes: Option<u64>,
) -> Result<(OpenFile, u32), EngineError> {
    let path = path_ref.display().to_string();
    let file_error = |what: &'static str| {
        let path = path.clone();
        move |source: io::Error| EngineError::File { path, what, source }
    };
    let existing = std::fs::metadata(path_ref).ok();
    let is_block_device = existing
        .as_ref()
        .is_some_and(|m| m.file_type().is_block_device());
    if let Some(m) = &existing {
        if !m.is_file() && !is_block_device {
            return Err(EngineError::Target {
                path,
                reason: "not a regular file or a block device".into(),
            });
        }
    }
    if existing.is_none() && !options.files.allow_create {
        return Err(EngineError::Target {
            path,
            reason: "the file does not exist and allow_file_create=0 forbids creating it".into(),
        });
    }
    if is_block_device && options.files.refuse_mounted && file_setup::is_mounted(path_ref) {
        return Err(EngineError::Target {
            path,
            reason: "the device appears mounted and this job writes: set \
                         allow_mounted_write=1 to write to it anyway"
                .into(),
        });
    }
    let create_on_open = options.files.create_on_open && !is_block_device;
    if !is_block_device && !create_on_open {
        lay_out(options, wanted_bytes, path_ref, &path)?;
    }
    let mut open = OpenOptions::new();
    open.read(true).write(true);
    if create_on_open {
        // fio's open flags for it: O_CREAT, mode 0600.
        use std::os::unix::fs::OpenOptionsExt as _;
        open.create(true).mode(0o600);
    }
    let direct = if options.direct { libc::O_DIRECT } else { 0 };
    if direct | options.sync_flags != 0 {
        open.custom_flags(direct | options.sync_flags);
    }
    let file = open.open(path_ref).map_err(|source| {
        if options.direct && source.raw_os_error() == Some(libc::EINVAL) {
            EngineError::Target {
                path: path.clone(),
                reason: "the file system does not support O_DIRECT (direct=1)".into(),
            }
        } else {
            file_error("opening")(source)
        }
    })?;
    let size_bytes = if is_block_device {
        block_device_size(&file).map_err(file_error("BLKGETSIZE64"))?
    } else {
        let len = file
            .metadata()
            .map_err(file_error("reading metadata"))?
            .len();
        // create_on_open: the file is as long as the job's writes make it.
        match wanted_bytes {
            Some(wanted) if create_on_open => len.max(wanted),
            _ => len,
        }
    };
    if let Some(wanted) = wanted_bytes {
        if wanted > size_bytes {
            return Err(EngineError::Target {
                path,
                reason: format!("the job's size {wanted} is larger than its {size_bytes} bytes"),
            });
        }
    }
    let logical_block = if is_block_device {
        logical_block_size(&file).map_err(file_error("BLKSSZGET"))?
    } else {
        512
    };
    let range_end = wanted_bytes.unwrap_or(size_bytes).min(size_bytes);
    prepare_cache(&file, options, &path, is_block_device, range_end)?;
    Ok((
        OpenFile {
            file,
            path,
            is_block_device,
            size_bytes,
        },
        logical_block,
    ))
}

/// Creates the ring (`datapath::transport::build_ring`): `SQPOLL` when asked and granted,
/// otherwise `SINGLE_ISSUER | DEFER_TASKRUN` started disabled (see the module docs), or a
/// plain ring when the kernel refuses either; whether `SQPOLL` runs, and who may enter.
fn build_ring(options: &UringOptions) -> Result<(IoUring, bool, Issuer), EngineError> {
    let entries = options.iodepth.next_power_of_two().max(4) as u32;
    let preferred = if options.sqthread_poll {
        RingFlags::Sqpoll {
            idle_ms: SQPOLL_IDLE_MS,
            cpu: options.sqthread_poll_cpu,
        }
    } else {
        // The task-run flag tells a submit that completion work waits, so it enters with
        // GETEVENTS and posts it.
        RingFlags::SingleIssuer {
            taskrun_flag: true,
            issuer_enables: true,
        }
    };
    // COOP_TASKRUN on the fallback plain ring: completions wait for the job's next kernel
    // entry instead of interrupting it.
    let built = datapath::transport::build_ring(&RingSetup {
        entries,
        cq_entries: entries * 2,
        preferred,
        coop_taskrun: true,
        // A synchronous engine's hipri is pvsync2's RWF_HIPRI, not a polled ring.
        iopoll: options.hipri && options.sync_call.is_none(),
    })
    .map_err(|source| EngineError::Ring {
        what: "creating the ring",
        source,
    })?;
    // A pinned SQ thread the kernel refuses (a CPU it does not have) fails the job, as in
    // fio; an unpinned one falls back to a plain ring (see the module docs).
    if let (true, Some(cpu), false) = (
        options.sqthread_poll,
        options.sqthread_poll_cpu,
        built.preferred_granted,
    ) {
        return Err(EngineError::InvalidOption(format!(
            "sqthread_poll_cpu={cpu}: the kernel refused the SQ thread on that CPU ({})",
            built.description
        )));
    }
    let sqpoll = options.sqthread_poll && built.preferred_granted;
    let issuer = if !options.sqthread_poll && built.preferred_granted {
        Issuer::NotYet
    } else {
        Issuer::Any
    };
    Ok((built.ring, sqpoll, issuer))
}

/// Allocates `len` bytes of `file` from its start as fio's `fallocate=` does before it lays
/// a file out (filesetup.c `fallocate_file`): `native` falls back to nothing where the file
/// system cannot allocate; `posix` logs its failure and goes on, as fio does;
/// `keep` and `truncate` fail the job. The size is set afterwards in any case (the engine
/// needs the whole region), so `keep` differs from `native` only in fio, where the file
/// then grows with the writes.
fn preallocate(file: &std::fs::File, mode: Fallocate, len: u64) -> io::Result<()> {
    let len = len as libc::off_t;
    let fd = file.as_raw_fd();
    match mode {
        Fallocate::None => Ok(()),
        Fallocate::Native => {
            // SAFETY: plain system call on an open descriptor.
            if unsafe { libc::fallocate(fd, 0, 0, len) } != 0 {
                tracing::debug!(error = %io::Error::last_os_error(), "fallocate=native: not allocated");
            }
            Ok(())
        }
        Fallocate::Posix => {
            // SAFETY: as above; posix_fallocate returns the error instead of setting errno.
            let rc = unsafe { libc::posix_fallocate(fd, 0, len) };
            if rc != 0 {
                tracing::warn!(error = %io::Error::from_raw_os_error(rc), "posix_fallocate failed");
            }
            Ok(())
        }
        Fallocate::Keep => {
            // SAFETY: as above.
            match unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, len) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        }
        Fallocate::Truncate => file.set_len(len as u64),
    }
}

/// Creates or grows a regular file to the job's size for it (`wanted_bytes`), as
/// `options.layout` says.
fn lay_out(
    options: &UringOptions,
    wanted_bytes: Option<u64>,
    file_path: &Path,
    path: &str,
) -> Result<(), EngineError> {
    let Some(wanted) = wanted_bytes else {
        return Ok(());
    };
    if wanted == 0 {
        return Err(EngineError::InvalidOption(
            "size must be greater than 0".into(),
        ));
    }
    let current = std::fs::metadata(file_path).map(|m| m.len()).ok();
    if current.is_some_and(|len| len >= wanted) {
        return Ok(());
    }
    let file_error = |what: &'static str| {
        let path = path.to_string();
        move |source: io::Error| EngineError::File { path, what, source }
    };
    if options.layout == LayoutPolicy::Refuse {
        return Err(EngineError::Target {
            path: path.to_string(),
            reason: format!(
                "the file has {} bytes, fewer than the job's size {wanted}",
                current.unwrap_or(0)
            ),
        });
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(file_path)
        .map_err(file_error("creating"))?;
    let from = current.unwrap_or(0);
    preallocate(&file, options.fallocate, wanted).map_err(file_error("allocating (fallocate)"))?;
    match options.layout {
        LayoutPolicy::Extend | LayoutPolicy::Refuse => {
            file.set_len(wanted).map_err(file_error("extending"))?;
        }
        LayoutPolicy::WriteOut => {
            tracing::info!(path, from, to = wanted, "laying out the file");
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(from))
                .map_err(file_error("laying out"))?;
            let zeros = vec![0u8; LAYOUT_CHUNK_BYTES];
            let mut left = wanted - from;
            while left > 0 {
                let step = left.min(LAYOUT_CHUNK_BYTES as u64) as usize;
                file.write_all(&zeros[..step])
                    .map_err(file_error("laying out"))?;
                left -= step as u64;
            }
            if options.files.create_fsync {
                file.sync_all().map_err(file_error("syncing the layout"))?;
            }
        }
    }
    // fio drops what the layout left in the cache whatever `invalidate` says.
    file_setup::invalidate(&file, path, false, from, wanted - from);
    Ok(())
}

/// fio's `td_io_open_file` and `pre_read`: the job's range (from `range_offset_bytes` to
/// `range_end_bytes`: the job's size for the file, or the file's end) is read once (`pre_read`) or dropped from the cache
/// (`invalidate`), then advised (`fadvise_hint`).
fn prepare_cache(
    file: &File,
    options: &UringOptions,
    path: &str,
    is_block_device: bool,
    range_end_bytes: u64,
) -> Result<(), EngineError> {
    let files = &options.files;
    let offset = files.range_offset_bytes;
    let len = range_end_bytes.saturating_sub(offset);
    if let Some(block) = files.pre_read_block_bytes {
        file_setup::pre_read(file, offset, len, block).map_err(|source| EngineError::File {
            path: path.to_string(),
            what: "reading the job's range first (pre_read)",
            source,
        })?;
    } else if files.invalidate {
        file_setup::invalidate(file, path, is_block_device, offset, len);
    }
    if let Some(advice) = files.advice {
        if let Err(error) = file_setup::advise(file, offset, len, advice) {
            tracing::warn!(path, %error, "fadvise_hint: posix_fadvise failed");
        }
    }
    Ok(())
}

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to `size`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to `size`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size as *mut _) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| io::Error::other(format!("logical block size {size}")))
}

/// `statx` with `STATX_DIOALIGN` (Linux 6.1); `None` when the file system does not say.
fn direct_io_alignment(file: &File) -> Option<DirectAlignment> {
    // SAFETY: statx is plain old data; all zeros is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH names the open descriptor itself; `stx` is
    // a live, writable statx the kernel fills in.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let (memory, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    (memory != 0 && offset != 0).then_some(DirectAlignment { memory, offset })
}
