//! The gateway's durable configuration: one JSON file, `state.json`, in the state
//! directory. A change is written whole to `state.json.tmp`, synced, renamed over
//! `state.json` and the directory synced, before the control plane answers: after a crash
//! (kill -9, power cut) the file is the last acknowledged configuration or, for a change
//! still in flight, the one after it, never a mix (rename is atomic).
//!
//! The file keeps each LUN's identity (NAA, serial) as it was first found, so a RAM LUN
//! or a block device without `serial=`/`naa=` comes back after a restart as the same disk
//! to multipath software. It holds CHAP secrets, so it is created mode 0600 in a
//! directory made 0700.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rpc::Chap;

const STATE_FILE: &str = "state.json";
const TEMP_FILE: &str = "state.json.tmp";
/// Written into the file; a later format bumps it.
const FORMAT_VERSION: u32 = 1;

/// Why the state could not be read or written.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a state file this gateway understands: {reason}")]
    Format { path: String, reason: String },
}

/// The whole configuration that survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Counts committed changes: a restart shows which one it came back with.
    pub generation: u64,
    pub targets: Vec<TargetState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetState {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_initiators: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<Chap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap: Option<Chap>,
    pub luns: Vec<LunState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunState {
    pub lun: u64,
    /// The spec as given (`ram:1G`, `file:/path:10G,...`).
    pub backend: String,
    /// The identity found at first attach: 16 hex digits, and the serial number.
    pub naa: String,
    pub serial: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn io_error(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(dir, e))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The state last committed, or `None` in a directory that never had one.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| StateError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if state.version != FORMAT_VERSION {
            return Err(StateError::Format {
                path: path.display().to_string(),
                reason: format!(
                    "format version {}, this gateway reads {FORMAT_VERSION}",
                    state.version
                ),
            });
        }
        Ok(Some(state))
    }

    /// Writes `state` durably: temporary file, fsync, rename, directory fsync.
    pub fn commit(&self, state: &State) -> Result<(), StateError> {
        let mut state = state.clone();
        state.version = FORMAT_VERSION;
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| StateError::Format {
            path: self.path().display().to_string(),
            reason: e.to_string(),
        })?;
        let temp = self.dir.join(TEMP_FILE);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| io_error(&temp, e))?;
        file.write_all(&bytes).map_err(|e| io_error(&temp, e))?;
        // fdatasync: the file's size is metadata it syncs too; the rest (times) is not
        // needed to read the file back.
        file.sync_data().map_err(|e| io_error(&temp, e))?;
        drop(file);
        let path = self.path();
        std::fs::rename(&temp, &path).map_err(|e| io_error(&path, e))?;
        let dir = std::fs::File::open(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        dir.sync_all().map_err(|e| io_error(&self.dir, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_state_reads_back_and_a_leftover_temp_file_is_ignored() {
        let dir = std::env::temp_dir().join(format!("gateway-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = StateDir::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let state = State {
            version: FORMAT_VERSION,
            generation: 3,
            targets: vec![TargetState {
                name: "iqn.2026-01.t:a".into(),
                alias: None,
                allowed_initiators: None,
                chap: None,
                mutual_chap: None,
                luns: vec![LunState {
                    lun: 0,
                    backend: "ram:1M".into(),
                    naa: "3000000000000001".into(),
                    serial: "s1".into(),
                }],
            }],
        };
        store.commit(&state).unwrap();
        // A crash between writing the temporary file and the rename leaves it behind.
        std::fs::write(dir.join(TEMP_FILE), b"{half").unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(
            store.path(),
            b"{\"version\":9,\"generation\":0,\"targets\":[]}",
        )
        .unwrap();
        assert!(matches!(store.load(), Err(StateError::Format { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
