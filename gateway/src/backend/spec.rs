//! The text form of a LUN: `ram:SIZE`, `null:SIZE`, `file:PATH`, `file:PATH:SIZE`,
//! `pool:PATH,volume=NAME` or `iscsi://HOST[:PORT]/IQN/LUN` (another array's LUN), then
//! options separated by commas:
//!
//! - `serial=TEXT`: the unit serial number (VPD 0x80), printable ASCII without spaces.
//! - `naa=HEX`: the NAA designator (VPD 0x83), 16 hex digits of NAA type 2, 3 or 5.
//! - `grow` (file): grow an existing file that is shorter than SIZE.
//! - `shared` (file): export a file another LUN or gateway exports too (both must say so).
//! - `volume=NAME` (pool, required) and `size=SIZE` (pool): the volume of the pool to
//!   export, created at SIZE when missing (grown to SIZE when smaller).
//! - `readonly`: the LUN is write protected (MODE SENSE WP; writes fail with DATA PROTECT).
//!
//! `file:/srv/disk0.img:10G,serial=DISK0,grow`. The same text goes on the command line
//! (`--lun`) and in the configuration file (`backend = "..."`), so there is one syntax.
//! Parsing checks what needs no machine (syntax, whole blocks); [`LunSpec::open`] checks
//! the rest (memory, the file's size, its lock) and finds the LU's identity.

use super::identity::{parse_naa, validate_serial, ExplicitIdentity};
use super::{
    parse_size, Backend, BackendError, FileBackend, FileOptions, IscsiBackend, LuIdentity,
    NullBackend, Pool, RamBackend,
};

/// Every LUN the gateway builds from a spec has this logical block size.
pub const LOGICAL_BLOCK_BYTES: u64 = 512;

/// Where a LUN's blocks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A protocol endpoint (`endpoint`): the administrative LU of a conglomerate, with no
    /// medium; volumes are bound through it (`crate::conglomerate`).
    Endpoint,
    Ram {
        size_bytes: u64,
    },
    Null {
        size_bytes: u64,
    },
    /// `size_bytes` is `None` for "the file's size as found".
    File {
        path: String,
        size_bytes: Option<u64>,
    },
    /// A volume of a pool (`pool:PATH,volume=NAME[,size=SIZE]`).
    Pool {
        path: String,
        volume: String,
        size_bytes: Option<u64>,
    },
    /// A LUN of another array (`iscsi://HOST[:PORT]/IQN/LUN`), through our initiator.
    Iscsi {
        url: String,
    },
}

/// The options after the storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LunOptions {
    pub serial: Option<String>,
    pub naa_id: Option<[u8; 8]>,
    pub grow: bool,
    pub shared: bool,
    /// `buffered` (file LUNs): through the page cache, never `O_DIRECT`.
    pub buffered: bool,
    /// `sanitize_rate=SIZE`: SANITIZE moves at most this many bytes a second.
    pub sanitize_bytes_per_second: Option<u64>,
    /// Write protected.
    pub readonly: bool,
    /// `volume=` (pool LUNs).
    pub volume: Option<String>,
    /// `size=` (pool LUNs).
    pub size_bytes: Option<u64>,
}

/// A parsed LUN spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    pub storage: Storage,
    pub options: LunOptions,
}

impl LunSpec {
    pub fn parse(spec: &str) -> Result<LunSpec, BackendError> {
        let invalid = || BackendError::InvalidSpec {
            spec: spec.chars().take(200).collect(),
        };
        let (base, options) = split_options(spec)?;
        if base == "endpoint" {
            if options.grow
                || options.shared
                || options.volume.is_some()
                || options.size_bytes.is_some()
            {
                return Err(BackendError::InvalidOption {
                    option: spec.chars().take(80).collect(),
                    reason: "an endpoint has no storage: only serial=, naa= and readonly apply"
                        .into(),
                });
            }
            return Ok(LunSpec {
                storage: Storage::Endpoint,
                options,
            });
        }
        let (kind, rest) = base.split_once(':').ok_or_else(invalid)?;
        let storage = match kind {
            "ram" => Storage::Ram {
                size_bytes: block_size_multiple(parse_size(rest)?)?,
            },
            "null" => Storage::Null {
                size_bytes: block_size_multiple(parse_size(rest)?)?,
            },
            "file" => {
                if rest.is_empty() {
                    return Err(invalid());
                }
                // A trailing ":SIZE" is a size only when it parses as one, so paths that
                // contain a colon still work without a size.
                let (path, size_bytes) = match rest.rsplit_once(':') {
                    Some((path, size_text)) if !path.is_empty() => match parse_size(size_text) {
                        Ok(size) => (path, Some(block_size_multiple(size)?)),
                        Err(_) => (rest, None),
                    },
                    _ => (rest, None),
                };
                Storage::File {
                    path: path.to_string(),
                    size_bytes,
                }
            }
            "iscsi" => {
                super::iscsi::parse_url(base)?;
                Storage::Iscsi {
                    url: base.to_string(),
                }
            }
            "pool" if !rest.is_empty() => Storage::Pool {
                path: rest.to_string(),
                volume: options
                    .volume
                    .clone()
                    .ok_or_else(|| BackendError::InvalidOption {
                        option: "volume".into(),
                        reason: "a pool LUN names its volume: pool:PATH,volume=NAME[,size=SIZE]"
                            .into(),
                    })?,
                size_bytes: options.size_bytes.map(block_size_multiple).transpose()?,
            },
            _ => return Err(invalid()),
        };
        if !matches!(storage, Storage::Pool { .. })
            && (options.volume.is_some() || options.size_bytes.is_some())
        {
            return Err(BackendError::InvalidOption {
                option: if options.volume.is_some() {
                    "volume"
                } else {
                    "size"
                }
                .into(),
                reason: "only pool LUNs have it".into(),
            });
        }
        if !matches!(storage, Storage::File { .. })
            && (options.grow || options.shared || options.buffered)
        {
            return Err(BackendError::InvalidOption {
                option: if options.grow {
                    "grow"
                } else if options.shared {
                    "shared"
                } else {
                    "buffered"
                }
                .into(),
                reason: "only file LUNs have it".into(),
            });
        }
        Ok(LunSpec { storage, options })
    }

    /// The LU's place in a conglomerate.
    pub fn role(&self) -> crate::disk::conglomerate::Role {
        match self.storage {
            Storage::Endpoint => crate::disk::conglomerate::Role::Endpoint,
            _ => crate::disk::conglomerate::Role::Plain,
        }
    }

    /// Opens (or creates) the storage and finds the LU's identity: the one given in the
    /// options, else for a regular file the one stored beside it (made and stored on first
    /// use), else a random one for this run.
    pub fn open(&self) -> Result<(Box<dyn Backend>, LuIdentity), BackendError> {
        let explicit = ExplicitIdentity {
            serial: self.options.serial.clone(),
            naa_id: self.options.naa_id,
        };
        match &self.storage {
            Storage::Endpoint => Ok((Box::new(NullBackend::new(0)), explicit.or_random())),
            Storage::Ram { size_bytes } => {
                check_memory(*size_bytes)?;
                Ok((Box::new(RamBackend::new(*size_bytes)), explicit.or_random()))
            }
            Storage::Null { size_bytes } => Ok((
                Box::new(NullBackend::new(*size_bytes)),
                explicit.or_random(),
            )),
            Storage::File { path, size_bytes } => {
                let options = FileOptions {
                    grow: self.options.grow,
                    shared: self.options.shared,
                    buffered: self.options.buffered,
                };
                let file =
                    FileBackend::open_with(path, *size_bytes, LOGICAL_BLOCK_BYTES as u32, options)?;
                block_size_multiple(file.size_bytes())?;
                let identity = if file.kind() == "file" {
                    explicit.or_stored_beside(path)?
                } else {
                    if explicit.is_partial() {
                        tracing::warn!(
                            path,
                            "block device without serial= and naa=: its identity is random \
                             for this run; set both so initiators see the same disk after a \
                             restart"
                        );
                    }
                    explicit.or_random()
                };
                Ok((Box::new(file), identity))
            }
            Storage::Pool {
                path,
                volume,
                size_bytes,
            } => {
                let pool = Pool::open(std::path::Path::new(path))?;
                let volume = pool.open_volume(volume, *size_bytes)?;
                let identity = explicit.over(volume.identity());
                Ok((Box::new(volume), identity))
            }
            Storage::Iscsi { url } => {
                let backend = IscsiBackend::open(url, None)?;
                // The far LUN's own identity is the far array's; ours is given or random
                // (the control plane keeps the one it found in its state directory).
                Ok((Box::new(backend), explicit.or_random()))
            }
        }
    }
}

/// Splits `base,opt,opt` into the base and its options. Options are peeled from the end
/// while they are known ones, so a path with a comma still works.
fn split_options(spec: &str) -> Result<(&str, LunOptions), BackendError> {
    let mut options = LunOptions::default();
    let mut base = spec;
    while let Some((head, tail)) = base.rsplit_once(',') {
        let (key, value) = match tail.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (tail, None),
        };
        let bad = |reason: String| BackendError::InvalidOption {
            option: tail.chars().take(80).collect(),
            reason,
        };
        match (key, value) {
            ("serial", Some(value)) => {
                validate_serial(value).map_err(bad)?;
                options.serial = Some(value.to_string());
            }
            ("naa", Some(value)) => options.naa_id = Some(parse_naa(value).map_err(bad)?),
            ("grow", None) => options.grow = true,
            ("shared", None) => options.shared = true,
            ("buffered", None) => options.buffered = true,
            ("sanitize_rate", Some(value)) => {
                let rate = parse_size(value)?;
                if rate == 0 {
                    return Err(bad("sanitize_rate: more than 0 bytes a second".into()));
                }
                options.sanitize_bytes_per_second = Some(rate);
            }
            ("readonly", None) => options.readonly = true,
            ("volume", Some(value)) => options.volume = Some(value.to_string()),
            ("size", Some(value)) => options.size_bytes = Some(parse_size(value)?),
            _ if head.starts_with("file:") || head.starts_with("pool:") => break, // a comma in a path
            _ => {
                return Err(bad(
                    "expected serial=, naa=, grow, shared, buffered, readonly, sanitize_rate=, volume= or size=".into(),
                ))
            }
        }
        base = head;
    }
    Ok((base, options))
}

fn block_size_multiple(size_bytes: u64) -> Result<u64, BackendError> {
    if size_bytes == 0 {
        return Err(BackendError::ZeroSize);
    }
    if !size_bytes.is_multiple_of(LOGICAL_BLOCK_BYTES) {
        return Err(BackendError::NotWholeBlocks {
            size_bytes,
            block_bytes: LOGICAL_BLOCK_BYTES,
        });
    }
    Ok(size_bytes)
}

/// Refuses a RAM LUN larger than physical memory: allocated as it is written, it would
/// let one initiator exhaust the machine.
fn check_memory(size_bytes: u64) -> Result<(), BackendError> {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let (pages, page_bytes) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page_bytes <= 0 {
        return Ok(()); // Unknown: nothing to compare with.
    }
    let memory_bytes = (pages as u64).saturating_mul(page_bytes as u64);
    if size_bytes > memory_bytes {
        return Err(BackendError::LargerThanMemory {
            size_bytes,
            memory_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_storage_and_paths_may_hold_commas() {
        let spec = LunSpec::parse("file:/a,b/disk.img:1M,serial=DISK-0,naa=3123456789abcdef,grow")
            .unwrap();
        assert_eq!(
            spec.storage,
            Storage::File {
                path: "/a,b/disk.img".into(),
                size_bytes: Some(1 << 20)
            }
        );
        assert_eq!(spec.options.serial.as_deref(), Some("DISK-0"));
        assert_eq!(
            spec.options.naa_id,
            Some([0x31, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef])
        );
        assert!(spec.options.grow && !spec.options.shared);
        assert_eq!(
            LunSpec::parse("file:/x,y").unwrap().storage,
            Storage::File {
                path: "/x,y".into(),
                size_bytes: None
            }
        );
    }

    #[test]
    fn bad_sizes_and_options_are_refused_with_the_reason() {
        let error = |spec: &str| LunSpec::parse(spec).unwrap_err().to_string();
        assert!(
            error("ram:1000").contains("not a multiple of the 512-byte block: give 512 or 1024")
        );
        assert!(error("null:0").contains("greater than zero"));
        assert!(error("ram:1M,grow").contains("only file LUNs"));
        assert!(error("ram:1M,color=red").contains("expected serial=, naa=, grow, shared"));
        assert!(error("ram:1M,naa=12").contains("16 hex digits"));
        assert!(error("ram:1M,serial=has space").contains("printable ASCII"));
        assert!(error("file:/x:1000").contains("not a multiple"));
    }

    #[test]
    fn a_ram_lun_larger_than_memory_is_refused() {
        let error = LunSpec::parse("ram:1024T").unwrap().open().err().unwrap();
        assert!(
            matches!(error, BackendError::LargerThanMemory { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("use a file LUN"));
    }

    #[test]
    fn ram_and_null_luns_get_a_fresh_identity_unless_one_is_given() {
        let (_, a) = LunSpec::parse("ram:1M").unwrap().open().unwrap();
        let (_, b) = LunSpec::parse("ram:1M").unwrap().open().unwrap();
        assert_ne!(a.naa_id, b.naa_id);
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.naa_id[0] >> 4, 3, "NAA 3h, locally assigned");
        let (_, given) = LunSpec::parse("null:1M,serial=S1,naa=3000000000000001")
            .unwrap()
            .open()
            .unwrap();
        assert_eq!(given.serial, "S1");
        assert_eq!(given.naa_id, [0x30, 0, 0, 0, 0, 0, 0, 1]);
    }
}
