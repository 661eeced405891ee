//! The volume pool (`pool:` backend): many thin volumes on one backing file or block
//! device, in 1 MiB chunks shared by clones until written (copy on write), with a 4 KiB
//! sub-chunk bitmap, a journal and shadow-paged checkpoints so that what a flush
//! acknowledged survives a crash or a power cut (see [`engine`] for the rules, [`format`]
//! for the bytes).
//!
//! The library API ([`Pool`]) creates, grows, clones, deletes and lists volumes and checks
//! the pool; the control plane calls it, and so do `iscsi-gateway pool ...` and the LUN
//! spec `pool:PATH,volume=NAME[,size=SIZE]`, which exports one volume ([`PoolVolume`]).
//! A pool file is open once per process ([`Pool::open`] hands out the same pool to every
//! LUN of it) and locked against other processes.

pub mod cli;
pub mod engine;
pub mod format;
pub mod store;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use engine::Engine;
pub use engine::{CheckReport, VolumeInfo};
use format::{Layout, CHUNK_BYTES};
use store::{FileStore, Store};

use super::{check_range, Backend};

/// Errors of pool and volume operations.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pool I/O: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Format(#[from] format::FormatError),
    #[error("{path}: {source}")]
    Path {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is in use by another gateway (it holds the pool's lock)")]
    Locked { path: String },
    #[error("{path} already exists; a pool is created on a new file or an empty device")]
    Exists { path: String },
    #[error("pool size {0} bytes is too small: it needs room for metadata and one chunk")]
    TooSmall(u64),
    #[error("no volume {0:?} in the pool")]
    NoVolume(String),
    #[error("a volume {0:?} already exists in the pool")]
    VolumeExists(String),
    #[error("volume {0:?} is exported (or open); detach it first")]
    VolumeInUse(String),
    #[error("volume {0:?} is being created (its commit is not done yet); retry")]
    VolumeCreating(String),
    #[error("volume name {0:?}: 1 to 128 characters of letters, digits, '-', '_', '.'")]
    BadName(String),
    #[error("volume size {0} bytes: must be more than zero and below 4 PiB")]
    BadSize(u64),
    #[error("volume {name:?} has {size_bytes} bytes; volumes grow, never shrink")]
    Shrink { name: String, size_bytes: u64 },
}

/// An open pool.
#[derive(Debug)]
pub struct Pool {
    engine: Engine,
    path: PathBuf,
}

/// Pools open in this process, by canonical path: every LUN of one pool shares it.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Pool>>> {
    static OPEN: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Pool>>>> =
        std::sync::OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Path strings resolved at most this many at once (the memo is emptied when full).
const RESOLVED_PATHS_MAX: usize = 4096;

/// `path` made absolute with its symbolic links resolved (`realpath`), remembered per
/// path string for the life of the process: a pool path is resolved by every control call
/// that names it (the registry here, the control plane's keys), and `realpath` costs a
/// `readlink` per component, about 25 system calls per volume created and attached. A
/// symbolic link re-pointed while the gateway runs is therefore not followed for a path
/// already resolved; a path that does not resolve is not remembered.
pub fn resolved_path(path: &Path) -> io::Result<PathBuf> {
    static RESOLVED: std::sync::OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> =
        std::sync::OnceLock::new();
    let memo = RESOLVED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(found) = memo.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        return Ok(found.clone());
    }
    let resolved = std::fs::canonicalize(path)?;
    let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
    if memo.len() >= RESOLVED_PATHS_MAX {
        memo.clear();
    }
    memo.insert(path.to_path_buf(), resolved.clone());
    Ok(resolved)
}

fn path_error(path: &Path) -> impl Fn(io::Error) -> PoolError + '_ {
    move |source| PoolError::Path {
        path: path.display().to_string(),
        source,
    }
}

impl Pool {
    /// Creates a pool of `size_bytes` (metadata included) at `path`: a new file, or a block
    /// device (formatted over; `size_bytes` is then at most the device's size).
    pub fn create(path: &Path, size_bytes: u64) -> Result<Arc<Pool>, PoolError> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileTypeExt;
        let device = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(!device)
            .open(path)
            .map_err(|error| {
                if error.kind() == io::ErrorKind::AlreadyExists {
                    PoolError::Exists {
                        path: path.display().to_string(),
                    }
                } else {
                    path_error(path)(error)
                }
            })?;
        let size_bytes = if device {
            size_bytes.min(file.seek(SeekFrom::End(0)).map_err(path_error(path))?)
        } else {
            size_bytes
        };
        let layout = match layout_for(size_bytes) {
            Some(layout) => layout,
            None => {
                if !device {
                    let _ = std::fs::remove_file(path);
                }
                return Err(PoolError::TooSmall(size_bytes));
            }
        };
        if !device {
            file.set_len(layout.file_bytes())
                .map_err(path_error(path))?;
        }
        let store = FileStore::new(file);
        Engine::format(&store, layout, random_u64()).map_err(path_error(path))?;
        drop(store);
        Pool::open(path)
    }

    /// Opens the pool at `path`, or returns the one this process has open already.
    pub fn open(path: &Path) -> Result<Arc<Pool>, PoolError> {
        let canonical = resolved_path(path).map_err(path_error(path))?;
        let mut open = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = open.get(&canonical).and_then(Weak::upgrade) {
            return Ok(pool);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&canonical)
            .map_err(path_error(path))?;
        // SAFETY: flock takes a descriptor `file` keeps open and plain integers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(PoolError::Locked {
                path: path.display().to_string(),
            });
        }
        let pool = Arc::new(Pool::with_store(
            Box::new(FileStore::new(file)),
            canonical.clone(),
        )?);
        // Once per pool file (a pool made before this, or on a file system that dropped
        // the zeros, gets them at its next open): see `Engine::allocate_journal`.
        pool.engine.allocate_journal().map_err(path_error(path))?;
        open.insert(canonical, Arc::downgrade(&pool));
        Ok(pool)
    }

    /// A pool on any store (the tests use a simulated disk).
    pub fn with_store(store: Box<dyn Store>, path: PathBuf) -> Result<Pool, PoolError> {
        Ok(Pool {
            engine: Engine::open(store)?,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine, for what the API below does not cover (tests, EXTENDED COPY).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn create_volume(&self, name: &str, size_bytes: u64) -> Result<(), PoolError> {
        self.engine.create_volume(name, size_bytes).map(drop)
    }

    pub fn grow_volume(&self, name: &str, size_bytes: u64) -> Result<(), PoolError> {
        self.engine.grow_volume(name, size_bytes)
    }

    pub fn clone_volume(&self, source: &str, name: &str) -> Result<(), PoolError> {
        self.engine.clone_volume(source, name).map(drop)
    }

    pub fn delete_volume(&self, name: &str) -> Result<(), PoolError> {
        self.engine.delete_volume(name)
    }

    pub fn list_volumes(&self) -> Vec<VolumeInfo> {
        self.engine.list_volumes()
    }

    pub fn check(&self) -> CheckReport {
        self.engine.check()
    }

    /// Exports volume `name`: a backend for one LUN. `size_bytes`, when given, creates a
    /// missing volume of that size, and must match an existing one.
    pub fn open_volume(
        self: &Arc<Pool>,
        name: &str,
        size_bytes: Option<u64>,
    ) -> Result<PoolVolume, PoolError> {
        // Without a size, only the open's own lookup: a bind opens a volume per name,
        // and a second lookup with copies of the record showed in a storm's profile.
        if let Some(size) = size_bytes {
            match self.engine.volume(name) {
                None => self.create_volume(name, size)?,
                Some(v) if v.size_bytes < size => self.grow_volume(name, size)?,
                _ => {}
            }
        }
        let (id, size_bytes) = self.engine.open_volume(name)?;
        Ok(PoolVolume {
            pool: Arc::clone(self),
            id,
            size_bytes: AtomicU64::new(size_bytes),
        })
    }
}

/// The largest layout that fits in `size_bytes` (the metadata grows with the chunks).
fn layout_for(size_bytes: u64) -> Option<Layout> {
    let metadata = Layout::for_chunks(1).data_offset();
    let mut chunks = (size_bytes.saturating_sub(metadata) / CHUNK_BYTES).min(u64::from(u32::MAX));
    while chunks > 0 && Layout::for_chunks(chunks as u32).file_bytes() > size_bytes {
        chunks -= 1;
    }
    (chunks > 0 && chunks <= u64::from(u32::MAX)).then(|| Layout::for_chunks(chunks as u32))
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live array.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(bytes)
}

/// One exported volume of a pool.
#[derive(Debug)]
pub struct PoolVolume {
    pool: Arc<Pool>,
    id: u32,
    /// Grows when the volume grows while exported ([`Backend::refresh_size`]); read
    /// without a lock on the I/O path.
    size_bytes: AtomicU64,
}

impl PoolVolume {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// A stable identity: NAA 3h (locally assigned) and a serial from the pool's id and
    /// the volume's, so hosts see the same disk after a restart.
    pub fn identity(&self) -> super::LuIdentity {
        let pool_id = self.pool.engine.pool_id();
        let mixed = (pool_id ^ u64::from(self.id).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_mul(0xff51_afd7_ed55_8ccd);
        let mut naa_id = (mixed & 0x0fff_ffff_ffff_ffff).to_be_bytes();
        naa_id[0] |= 0x30;
        super::LuIdentity {
            naa_id,
            serial: format!("POOL{:08x}V{:06}", pool_id as u32, self.id),
        }
    }
}

impl Drop for PoolVolume {
    fn drop(&mut self) {
        self.pool.engine.close_volume(self.id);
    }
}

impl Backend for PoolVolume {
    fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    fn refresh_size(&self) -> u64 {
        if let Some(size) = self.pool.engine.volume_size(self.id) {
            // Volumes never shrink.
            self.size_bytes.fetch_max(size, Ordering::Relaxed);
        }
        self.size_bytes()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.size_bytes(), offset, buf.len() as u64)?;
        self.pool.engine.read(self.id, offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size_bytes(), offset, data.len() as u64)?;
        self.pool.engine.write(self.id, offset, data)
    }

    fn flush(&self) -> io::Result<()> {
        self.pool.engine.flush()
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes(), offset, len)?;
        self.pool.engine.unmap(self.id, offset, len)
    }

    fn kind(&self) -> &'static str {
        "pool"
    }

    fn thin(&self) -> bool {
        true
    }

    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        let max_len = max_len.min(self.size_bytes().saturating_sub(offset));
        let (mapped, len) = self.pool.engine.mapped_extent(self.id, offset, max_len);
        Ok((mapped, len.max(u64::from(max_len > 0))))
    }

    fn pool_volume(&self) -> Option<&PoolVolume> {
        Some(self)
    }

    fn flush_may_block(&self) -> bool {
        true
    }
}
