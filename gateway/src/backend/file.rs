//! The file backend: a regular file or a block device. The server reads, writes and
//! flushes it through its own io_uring ([`Backend::ring_file`]); the synchronous methods
//! (`pread`/`pwrite` via `std::os::unix::fs::FileExt`) serve the commands that stay
//! synchronous (COMPARE AND WRITE, WRITE SAME, VERIFY...).
//!
//! Direct I/O: the ring descriptor is a second open of the same file with `O_DIRECT` when
//! the file allows it and the logical block size is a multiple of its direct I/O offset
//! alignment (`statx` `STATX_DIOALIGN`), so every LBA-derived offset and length is
//! aligned; otherwise the ring uses the buffered descriptor. Linux keeps the two coherent
//! (a direct write invalidates the cached pages of its range, a direct read first writes
//! back dirty ones), and fsync on either descriptor syncs the file.
//!
//! Exclusive use: the backend holds `flock(LOCK_EX)` on the file (or device node) while it
//! is open, so a second LUN or a second gateway on this machine cannot export the same
//! blocks behind its back (two caches, torn writes, reservations that do not see each
//! other); `shared` takes `LOCK_SH` instead, for deliberate sharing by every party.
//!
//! Sizes: an existing file is exported at its size. A spec size that differs is refused,
//! unless it is larger and `grow` says to grow the file: growing silently, or exporting
//! a prefix, turned a typo into a different disk.
//!
//! Unmap punches a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), so the range reads back as
//! zeros and its blocks return to the file system; where the file system or device refuses,
//! it writes zeros instead, which keeps the LBPRZ promise at the cost of the space.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{check_range, Backend, BackendError, RingFile, DIRECT_IO_BUFFER_ALIGN};

/// Zero-fill fallback writes at most this much per write call.
const ZERO_FILL_BYTES: usize = 1024 * 1024;

/// A regular file or block device.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    path: String,
    size_bytes: u64,
    block_device: bool,
    /// Cleared after the first refused hole punch, so later unmaps go straight to zeros.
    punch_hole_works: AtomicBool,
    /// The same file opened `O_DIRECT`, when direct I/O fits (see the module docs).
    direct: Option<File>,
    /// See [`RingFile::submit_may_block`].
    submit_may_block: bool,
}

/// Whether issuing I/O on this file may block the thread that submits it: io_uring
/// first tries an operation without blocking, and on FUSE and network file systems that
/// attempt itself can wait on the daemon or server (seen with a stopped FUSE daemon:
/// the submitting thread hung in `fuse_file_poll`). Local file systems and block devices
/// answer "would block" instead, and io_uring hands the operation to a worker.
fn submission_may_block(file: &File) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    const NFS_SUPER_MAGIC: i64 = 0x6969;
    const SMB2_SUPER_MAGIC: i64 = 0xfe53_4d42;
    const CIFS_SUPER_MAGIC: i64 = 0xff53_4d42;
    const V9FS_MAGIC: i64 = 0x0102_1997;
    const CEPH_SUPER_MAGIC: i64 = 0x00c3_6400;
    // SAFETY: statfs is plain old data; all zeros is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs fills the live struct we pass for a descriptor `file` keeps open.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        // Unknown: the safe side.
        return true;
    }
    let block_device = file
        .metadata()
        .is_ok_and(|m| m.file_type().is_block_device());
    !block_device
        && matches!(
            fs.f_type as i64,
            FUSE_SUPER_MAGIC
                | NFS_SUPER_MAGIC
                | SMB2_SUPER_MAGIC
                | CIFS_SUPER_MAGIC
                | V9FS_MAGIC
                | CEPH_SUPER_MAGIC
        )
}

/// Direct I/O alignment of an open file (`statx` with `STATX_DIOALIGN`, Linux 6.1):
/// `(memory, offset)` in bytes, `None` when the file system does not say or does not
/// support direct I/O on this file.
fn direct_io_alignment(file: &File) -> Option<(u32, u32)> {
    // SAFETY: statx is plain old data; all zeros is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH names the descriptor itself, which `file`
    // keeps open; `stx` is a live, writable statx the kernel fills in.
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
    (memory != 0 && offset != 0).then_some((memory, offset))
}

/// How [`FileBackend::open_with`] may treat an existing file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Grow a regular file shorter than the size asked for (never shrink).
    pub grow: bool,
    /// Share the file with other LUNs or gateways that say `shared` too.
    pub shared: bool,
    /// Never `O_DIRECT`: ring I/O goes through the page cache, made durable by
    /// SYNCHRONIZE CACHE (fdatasync), as the volume pool's is (`buffered`).
    pub buffered: bool,
}

impl FileBackend {
    /// Opens `path` read-write for 512-byte blocks: [`FileBackend::open_with`] without
    /// options.
    pub fn open(path: &str, size: Option<u64>) -> Result<FileBackend, BackendError> {
        FileBackend::open_with(path, size, 512, FileOptions::default())
    }

    /// [`FileBackend::open_with`] without options.
    pub fn open_for_block_size(
        path: &str,
        size: Option<u64>,
        block_size: u32,
    ) -> Result<FileBackend, BackendError> {
        FileBackend::open_with(path, size, block_size, FileOptions::default())
    }

    /// Opens `path` read-write and locks it (see the module docs). With `size`, a missing
    /// file is created at that size; an existing one must have it (or be shorter, with
    /// `grow`). Without `size` the file or device must exist and its size is exported.
    /// `block_size` decides whether ring I/O can be direct: only when it is a multiple of
    /// the file's direct I/O offset alignment.
    pub fn open_with(
        path: &str,
        size: Option<u64>,
        block_size: u32,
        options: FileOptions,
    ) -> Result<FileBackend, BackendError> {
        let io_error = |source| BackendError::Io {
            path: path.to_string(),
            source,
        };
        let exists = std::path::Path::new(path).exists();
        if !exists && size.is_none() {
            return Err(BackendError::MissingSize {
                path: path.to_string(),
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(size.is_some())
            .truncate(false)
            .open(path)
            .map_err(io_error)?;
        lock(&file, options.shared).map_err(|error| {
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                BackendError::InUse {
                    path: path.to_string(),
                }
            } else {
                io_error(error)
            }
        })?;
        let metadata = file.metadata().map_err(io_error)?;
        let block_device = metadata.file_type().is_block_device();
        // A block device reports length 0 in its metadata; its end is its size.
        let current = file.seek(SeekFrom::End(0)).map_err(io_error)?;
        let mismatch = |wanted| BackendError::SizeMismatch {
            path: path.to_string(),
            found_bytes: current,
            wanted_bytes: wanted,
        };
        let size_bytes = match size {
            None => current,
            Some(wanted) if wanted == current => wanted,
            // Made just now by `create`.
            Some(wanted) if !exists => {
                file.set_len(wanted).map_err(io_error)?;
                wanted
            }
            Some(wanted) if wanted > current && options.grow && !block_device => {
                tracing::info!(path, from = current, to = wanted, "growing the file (grow)");
                file.set_len(wanted).map_err(io_error)?;
                wanted
            }
            Some(wanted) => return Err(mismatch(wanted)),
        };
        if size_bytes == 0 {
            return Err(BackendError::ZeroSize);
        }
        let direct = if options.buffered {
            tracing::info!(path, "buffered I/O: asked for (buffered)");
            None
        } else {
            open_direct(path, &file, block_size)
        };
        let submit_may_block = submission_may_block(&file);
        if submit_may_block {
            tracing::info!(
                path,
                "file system may block io_uring submissions (FUSE or network): its I/O goes \
                 straight to io_uring's worker threads"
            );
        }
        Ok(FileBackend {
            file,
            path: path.to_string(),
            size_bytes,
            block_device,
            punch_hole_works: AtomicBool::new(!block_device),
            direct,
            submit_may_block,
        })
    }

    /// Whether ring I/O on this file is direct (`O_DIRECT`), bypassing the page cache.
    pub fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    /// The path this backend was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate takes a file descriptor that `self.file` keeps open for the
        // duration of the call, plus plain integers; it touches no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_FILL_BYTES.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let piece = (len - done).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..piece], offset + done)?;
            done += piece as u64;
        }
        Ok(())
    }
}

/// `flock(2)`, without waiting: `EWOULDBLOCK` when another open file holds a conflicting
/// lock. The lock goes with the descriptor (closed with the backend).
fn lock(file: &File, shared: bool) -> io::Result<()> {
    let operation = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock takes a descriptor `file` keeps open and plain integers.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `O_DIRECT` descriptor when direct I/O fits `block_size`, logging the choice.
fn open_direct(path: &str, file: &File, block_size: u32) -> Option<File> {
    let Some((memory_align, offset_align)) = direct_io_alignment(file) else {
        tracing::info!(
            path,
            "buffered I/O: the file system reports no direct I/O alignment"
        );
        return None;
    };
    if !block_size.is_multiple_of(offset_align) || memory_align as usize > DIRECT_IO_BUFFER_ALIGN {
        tracing::info!(
            path,
            block_size,
            offset_align,
            memory_align,
            "buffered I/O: the block size or buffers cannot meet the direct I/O alignment"
        );
        return None;
    }
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(direct) => {
            tracing::info!(path, block_size, offset_align, "direct I/O (O_DIRECT)");
            Some(direct)
        }
        Err(error) => {
            tracing::info!(path, %error, "buffered I/O: opening with O_DIRECT failed");
            None
        }
    }
}

impl Backend for FileBackend {
    fn ring_file(&self) -> Option<RingFile<'_>> {
        Some(match &self.direct {
            Some(direct) => RingFile {
                fd: direct.as_fd(),
                direct: true,
                memory_align_bytes: DIRECT_IO_BUFFER_ALIGN,
                submit_may_block: self.submit_may_block,
            },
            None => RingFile {
                fd: self.file.as_fd(),
                direct: false,
                memory_align_bytes: 1,
                submit_may_block: self.submit_may_block,
            },
        })
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size_bytes, offset, data.len() as u64)?;
        self.file.write_all_at(data, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if self.punch_hole_works.load(Ordering::Relaxed) {
            match self.punch_hole(offset, len) {
                Ok(()) => return Ok(()),
                Err(error)
                    if matches!(error.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) =>
                {
                    self.punch_hole_works.store(false, Ordering::Relaxed);
                }
                Err(error) => return Err(error),
            }
        }
        self.write_zeros(offset, len)
    }

    fn kind(&self) -> &'static str {
        if self.block_device {
            "block"
        } else {
            "file"
        }
    }

    /// Regular files deallocate through hole punching; block devices are written with
    /// zeros, which is not thin provisioning.
    fn thin(&self) -> bool {
        !self.block_device
    }
}
