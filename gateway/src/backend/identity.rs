//! The identity a logical unit reports: its NAA designator (VPD 0x83, SPC-4 7.8.6.6) and
//! unit serial number (VPD 0x80). Multipath software (dm-multipath, MPIO) takes two paths
//! with the same designator for the same disk, so it must be unique to the disk and
//! stable across restarts:
//! - given by the user (`serial=`, `naa=` in the LUN spec), or
//! - for a regular file, made once at random and stored beside it in `PATH.identity`
//!   (written through a temporary file, synced and renamed, so a crash leaves the old or
//!   the new one), or
//! - for RAM and null LUNs (gone with the process anyway) and block devices without one
//!   given, random for this run.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::BackendError;

/// A logical unit's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuIdentity {
    pub naa_id: [u8; 8],
    pub serial: String,
}

/// Longest serial number accepted (VPD 0x80 allows more; hosts show it in one line).
const SERIAL_MAX_BYTES: usize = 64;

/// What the user set; the rest is filled in.
#[derive(Debug, Clone, Default)]
pub(super) struct ExplicitIdentity {
    pub(super) serial: Option<String>,
    pub(super) naa_id: Option<[u8; 8]>,
}

impl ExplicitIdentity {
    pub(super) fn is_partial(&self) -> bool {
        self.serial.is_none() || self.naa_id.is_none()
    }

    pub(super) fn over(&self, base: LuIdentity) -> LuIdentity {
        LuIdentity {
            naa_id: self.naa_id.unwrap_or(base.naa_id),
            serial: self.serial.clone().unwrap_or(base.serial),
        }
    }

    pub(super) fn or_random(&self) -> LuIdentity {
        self.over(LuIdentity::random())
    }

    /// The identity stored beside `path`, made and stored if there is none yet. The
    /// caller holds the file's lock, so two gateways never race to make it.
    pub(super) fn or_stored_beside(&self, path: &str) -> Result<LuIdentity, BackendError> {
        if !self.is_partial() {
            return Ok(self.or_random());
        }
        let sidecar = sidecar_path(path);
        let error = |reason: String| BackendError::Io {
            path: sidecar.display().to_string(),
            source: std::io::Error::other(reason),
        };
        let stored = match std::fs::read_to_string(&sidecar) {
            Ok(text) => parse_sidecar(&text).map_err(|reason| {
                error(format!(
                    "{reason}; fix it, or remove it to make a new identity"
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = self.or_random();
                let stored = write_sidecar(&sidecar, &made).map_err(|e| {
                    error(format!(
                        "storing the LU identity: {e}; give serial= and naa= to run without it"
                    ))
                })?;
                match stored {
                    Some(other) => other,
                    None => {
                        tracing::info!(path = %sidecar.display(), "new LU identity stored");
                        made
                    }
                }
            }
            Err(e) => return Err(error(e.to_string())),
        };
        Ok(self.over(stored))
    }
}

impl LuIdentity {
    /// NAA 3h (locally assigned) with 60 random bits; the serial number is the same bits
    /// in hex.
    pub fn random() -> LuIdentity {
        let mut naa_id = random_u64().to_be_bytes();
        naa_id[0] = 0x30 | (naa_id[0] & 0x0f);
        LuIdentity {
            naa_id,
            serial: hex(&naa_id),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live array.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // getrandom(2) on 8 bytes only fails before the pool is seeded at boot; the time
        // and pid still differ between gateways and runs.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return now ^ (u64::from(std::process::id()) << 40);
    }
    u64::from_ne_bytes(bytes)
}

/// `naa=`: 16 hex digits (an 8-byte designator: NAA 2h, 3h or 5h), `0x` allowed.
pub(super) fn parse_naa(text: &str) -> Result<[u8; 8], String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 16 hex digits (an 8-byte NAA designator)".into());
    }
    let value = u64::from_str_radix(digits, 16).map_err(|e| e.to_string())?;
    let naa_id = value.to_be_bytes();
    match naa_id[0] >> 4 {
        2 | 3 | 5 => Ok(naa_id),
        other => Err(format!(
            "NAA type {other:x}h: 8-byte designators are type 2h, 3h (locally assigned) or 5h"
        )),
    }
}

/// `serial=`: printable ASCII without spaces (SPC-4 4.4.1), at most 64 bytes.
pub(super) fn validate_serial(text: &str) -> Result<(), String> {
    if text.is_empty()
        || text.len() > SERIAL_MAX_BYTES
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "a serial number is 1 to {SERIAL_MAX_BYTES} bytes of printable ASCII without spaces"
        ));
    }
    Ok(())
}

fn sidecar_path(path: &str) -> PathBuf {
    PathBuf::from(format!("{path}.identity"))
}

fn parse_sidecar(text: &str) -> Result<LuIdentity, String> {
    let mut naa_id = None;
    let mut serial = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("naa", value)) => naa_id = Some(parse_naa(value)?),
            Some(("serial", value)) => {
                validate_serial(value)?;
                serial = Some(value.to_string());
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    match (naa_id, serial) {
        (Some(naa_id), Some(serial)) => Ok(LuIdentity { naa_id, serial }),
        _ => Err("needs both naa= and serial=".into()),
    }
}

/// Stores `identity` at `sidecar` unless another gateway sharing the file (`shared`)
/// stored one first: then returns that one. The temporary file is this process's own and
/// (a random name) is published with a hard link, which fails rather than replace what is there.
fn write_sidecar(sidecar: &Path, identity: &LuIdentity) -> std::io::Result<Option<LuIdentity>> {
    let temporary = sidecar.with_extension(format!("identity.{:016x}.tmp", random_u64()));
    let mut file = std::fs::File::create(&temporary)?;
    write!(
        file,
        "# The identity iscsi-gateway reports for the LUN in the file beside this one\n\
         # (VPD 0x83 and 0x80). Keep it with that file; a copy of the disk needs another.\n\
         naa={}\nserial={}\n",
        hex(&identity.naa_id),
        identity.serial
    )?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&temporary, sidecar);
    std::fs::remove_file(&temporary)?;
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(sidecar)?;
            return parse_sidecar(&text)
                .map(Some)
                .map_err(std::io::Error::other);
        }
        Err(e) => return Err(e),
    }
    if let Some(dir) = sidecar.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_keeps_the_identity_made_for_it_on_first_use() {
        let dir = std::env::temp_dir().join(format!("gateway-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img").display().to_string();
        let first = ExplicitIdentity::default().or_stored_beside(&path).unwrap();
        let again = ExplicitIdentity::default().or_stored_beside(&path).unwrap();
        assert_eq!(first, again);
        let other = ExplicitIdentity::default()
            .or_stored_beside(&dir.join("other.img").display().to_string())
            .unwrap();
        assert_ne!(first.naa_id, other.naa_id);
        // A serial given by the user wins over the stored one; the NAA stays.
        let given = ExplicitIdentity {
            serial: Some("MINE".into()),
            naa_id: None,
        }
        .or_stored_beside(&path)
        .unwrap();
        assert_eq!(
            (given.serial.as_str(), given.naa_id),
            ("MINE", first.naa_id)
        );
        std::fs::write(sidecar_path(&path), "naa=zz\n").unwrap();
        let error = ExplicitIdentity::default()
            .or_stored_beside(&path)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("remove it to make a new identity"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gateways_starting_together_on_one_shared_file_agree_on_its_identity() {
        let dir =
            std::env::temp_dir().join(format!("gateway-identity-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shared.img").display().to_string();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let starters: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    ExplicitIdentity::default().or_stored_beside(&path)
                })
            })
            .collect();
        let identities: Vec<LuIdentity> = starters
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert!(
            identities.windows(2).all(|w| w[0] == w[1]),
            "{identities:?}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
