//! What fio does to a local file around a job's I/O (filesetup.c, ioengines.c
//! `td_io_open_file`, backend.c), for the io_uring engine: the checks before it is opened
//! (`allow_file_create`, `allow_mounted_write`), the page-cache calls once it is open
//! (`invalidate`, `fadvise_hint`, `pre_read`) and what happens when it is closed
//! (`fsync_on_close`, `unlink`). See `job::file_options` for the options themselves.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `_IO(0x12, 97)`: write a block device's dirty buffers and drop its cache (linux/fs.h).
const BLKFLSBUF: libc::c_ulong = 0x1261;
/// Where mounted file systems are listed (fio reads `/etc/mtab`, a link to it).
const MOUNTS: &str = "/proc/self/mounts";

/// The file options the engine carries out, with fio's defaults in [`FileSetup::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetup {
    /// `invalidate`: drop the cache of the job's range once the file is open.
    pub invalidate: bool,
    /// `fadvise_hint`: the advice given over the job's range once the file is open.
    pub advice: Option<libc::c_int>,
    /// `pre_read`: the job's range is read once (in blocks of this many bytes) once open.
    pub pre_read_block_bytes: Option<u32>,
    /// Where the job's range starts (fio's `file_offset`): the page-cache calls start here.
    pub range_offset_bytes: u64,
    /// `fsync_on_close` on a job that writes: `fsync` before the file is closed.
    pub fsync_on_close: bool,
    /// `unlink`: remove a regular file once it is closed.
    pub unlink: bool,
    /// `create_fsync`: `fsync` a file once it is laid out.
    pub create_fsync: bool,
    /// `allow_file_create`.
    pub allow_create: bool,
    /// `create_on_open`: the file is not laid out; it is created (empty) when opened and
    /// grows with the job's writes.
    pub create_on_open: bool,
    /// A writing job without `allow_mounted_write`: a mounted block device is refused.
    pub refuse_mounted: bool,
}

impl Default for FileSetup {
    fn default() -> FileSetup {
        FileSetup {
            invalidate: true,
            advice: None,
            pre_read_block_bytes: None,
            range_offset_bytes: 0,
            fsync_on_close: false,
            unlink: false,
            create_fsync: true,
            allow_create: true,
            create_on_open: false,
            refuse_mounted: false,
        }
    }
}

/// Drops the page cache of `len` bytes from `offset`: `POSIX_FADV_DONTNEED` on a regular
/// file, `BLKFLSBUF` on a block device. As in fio, a failure (only root may flush a block
/// device) is worth a message, not the job.
pub fn invalidate(file: &File, path: &str, block_device: bool, offset: u64, len: u64) {
    let fd = file.as_raw_fd();
    let failed = if block_device {
        // SAFETY: BLKFLSBUF takes no argument; `fd` is open.
        (unsafe { libc::ioctl(fd, BLKFLSBUF, 0) } != 0).then(io::Error::last_os_error)
    } else {
        advise(file, offset, len, libc::POSIX_FADV_DONTNEED).err()
    };
    if let Some(error) = failed {
        eprintln!("iscsi-bench: cache invalidation of {path} failed: {error}");
    }
}

/// `posix_fadvise(2)` over `len` bytes from `offset`.
pub fn advise(file: &File, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: plain system call on an open descriptor; it returns the error number.
    match unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, advice) } {
        0 => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// Reads `len` bytes from `offset` in blocks of `block_bytes` (fio's `pre_read`), so the
/// job starts with its range in the page cache. A short read is an error, as in fio.
pub fn pre_read(file: &File, offset: u64, len: u64, block_bytes: u32) -> io::Result<()> {
    let mut buffer = vec![0u8; block_bytes.max(1) as usize];
    let mut done = 0u64;
    while done < len {
        let step = (len - done).min(buffer.len() as u64) as usize;
        let got = file.read_at(&mut buffer[..step], offset + done)?;
        if got != step {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {got} of {step} bytes at offset {}", offset + done),
            ));
        }
        done += step as u64;
    }
    Ok(())
}

/// Whether `device` is the source of a mounted file system (fio's `device_is_mounted`
/// compares the names as written, and so does this).
pub fn is_mounted(device: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string(MOUNTS) else {
        return false;
    };
    mounts_name(&mounts, device)
}

fn mounts_name(mounts: &str, device: &Path) -> bool {
    let Some(device) = device.to_str() else {
        return false;
    };
    mounts
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|source| source == device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_mounted_when_a_line_starts_with_its_name() {
        let mounts = "/dev/sda1 / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        assert!(mounts_name(mounts, Path::new("/dev/sda1")));
        assert!(!mounts_name(mounts, Path::new("/dev/sda")));
        assert!(!mounts_name(mounts, Path::new("/tmp")));
    }

    #[test]
    fn pre_read_reads_the_range_and_refuses_a_short_file() {
        let dir = std::env::temp_dir().join(format!("pre-read-{}", std::process::id()));
        std::fs::write(&dir, vec![7u8; 10_000]).unwrap();
        let file = File::open(&dir).unwrap();
        pre_read(&file, 1000, 9000, 4096).unwrap();
        assert!(pre_read(&file, 1000, 9001, 4096).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
