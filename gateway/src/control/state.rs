//! The gateway's durable configuration, in the state directory:
//! - `state.json`, a snapshot of the whole configuration at a generation, replaced
//!   atomically (written to `state.json.tmp`, synced, renamed, the directory synced);
//! - `journal`, the changes since that snapshot, one record each, appended and synced
//!   (`fdatasync`) before the control plane answers. The file is made full size and
//!   zero-filled once, so an append changes no file metadata: one data flush per change
//!   rather than the two journal commits of a rename (measured in `scripts/bench-control.sh`).
//!
//! A record is `length (u32 LE) | CRC32C of generation and payload (u32 LE) | generation
//! (u64 LE) | payload`. Replay starts at the journal's first byte and takes records while
//! each is whole, its CRC matches and its generation is the next one after the snapshot's;
//! the first that is not ends the replay (a torn append, zeros, or records of an older
//! snapshot). So after a crash (kill -9, power cut) the configuration is the last
//! acknowledged one or, for a change in flight whose record landed, the one after it: never
//! a mix. When the journal is full the change is written as a new snapshot instead, and the
//! journal starts again from its first byte.
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
const JOURNAL_FILE: &str = "journal";
/// The journal's size: about 10,000 changes of a few hundred bytes between snapshots.
pub const JOURNAL_BYTES: u64 = 4 << 20;
const RECORD_HEADER_BYTES: usize = 16;
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
    /// The journal has no room for the record: write a snapshot instead.
    #[error("the journal is full")]
    JournalFull,
}

/// The whole configuration that survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Counts committed changes: a restart shows which one it came back with.
    pub generation: u64,
    /// The portals, once a control-plane change set them (then they replace the startup
    /// configuration's); `None` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portals: Option<Vec<std::net::SocketAddr>>,
    /// The volume pools open through the control plane (paths), opened again at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    pub targets: Vec<TargetState>,
    /// Volumes bound for hosts through protocol endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<BindingState>,
    /// Array settings set through the control plane (`array_state`).
    #[serde(
        default,
        skip_serializing_if = "super::array_state::ArraySettings::is_empty"
    )]
    pub array: super::array_state::ArraySettings,
}

/// One volume bound for one host through one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingState {
    pub target: String,
    pub host: String,
    pub endpoint: u64,
    pub secondary: u64,
    pub pool: String,
    pub volume: String,
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

/// The state directory, with its journal open.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// Shared with the group commit's leaders, which sync it outside the control lock.
    journal: std::sync::Arc<std::fs::File>,
    /// Where the next record goes.
    journal_end: u64,
    /// The pool volumes (pool path, volume) the journal's records attach: deleting one
    /// of them is recorded too (`volume_forget`), so a replay does not look for it.
    volumes_named: std::collections::HashSet<(String, String)>,
}

/// What the directory holds: the snapshot and the journal's records after it
/// (generation, payload), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub snapshot: State,
    pub changes: Vec<(u64, Vec<u8>)>,
}

fn io_error(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory and its journal (made full size and
    /// zero-filled the first time).
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(dir, e))?;
        let path = dir.join(JOURNAL_FILE);
        let journal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        // One gateway per directory: two writing one journal would interleave records.
        // SAFETY: flock(2) on a descriptor we own; the lock goes with the descriptor.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&journal),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if locked != 0 {
            return Err(io_error(
                &path,
                std::io::Error::other("in use by another gateway (locked)"),
            ));
        }
        let size = journal.metadata().map_err(|e| io_error(&path, e))?.len();
        if size < JOURNAL_BYTES {
            // Written, not fallocated: appends into unwritten extents would change
            // metadata (and need a file system journal commit) on every record.
            let zeros = vec![0u8; (JOURNAL_BYTES - size) as usize];
            use std::os::unix::fs::FileExt;
            journal
                .write_all_at(&zeros, size)
                .map_err(|e| io_error(&path, e))?;
            journal.sync_all().map_err(|e| io_error(&path, e))?;
            sync_dir(dir)?;
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            journal: std::sync::Arc::new(journal),
            journal_end: 0,
            volumes_named: Default::default(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The snapshot and the journal's changes after it, or `None` in a directory that
    /// never had a snapshot. New records go after the changes found.
    pub fn load(&mut self) -> Result<Option<Loaded>, StateError> {
        let Some(snapshot) = self.load_snapshot()? else {
            return Ok(None);
        };
        let path = self.dir.join(JOURNAL_FILE);
        let mut bytes = vec![0u8; JOURNAL_BYTES as usize];
        use std::os::unix::fs::FileExt;
        self.journal
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| io_error(&path, e))?;
        let mut changes = Vec::new();
        let mut at = 0usize;
        let mut expected = snapshot.generation + 1;
        while let Some((generation, payload, next)) = read_record(&bytes, at) {
            if generation != expected {
                break;
            }
            changes.push((generation, payload.to_vec()));
            expected += 1;
            at = next;
        }
        self.journal_end = at as u64;
        Ok(Some(Loaded { snapshot, changes }))
    }

    /// Appends one change and syncs it. [`StateError::JournalFull`] when it does not fit:
    /// the caller writes a snapshot instead.
    pub fn append(&mut self, generation: u64, payload: &[u8]) -> Result<(), StateError> {
        self.write(generation, payload)?;
        let path = self.dir.join(JOURNAL_FILE);
        self.journal.sync_data().map_err(|e| io_error(&path, e))
    }

    /// The journal, for a group commit to sync ([`Self::write`]'s records) without
    /// holding the directory.
    pub fn journal(&self) -> std::sync::Arc<std::fs::File> {
        std::sync::Arc::clone(&self.journal)
    }

    /// Appends one change without syncing it: durable once the journal is synced
    /// (`fdatasync`), which a group commit does for many records at once. Records are
    /// written in generation order, so a crash leaves a prefix of them for replay.
    /// [`StateError::JournalFull`] when it does not fit.
    pub fn write(&mut self, generation: u64, payload: &[u8]) -> Result<(), StateError> {
        let len = RECORD_HEADER_BYTES + payload.len();
        if self.journal_end + len as u64 > JOURNAL_BYTES {
            return Err(StateError::JournalFull);
        }
        let mut record = Vec::with_capacity(len);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&record_crc(generation, payload).to_le_bytes());
        record.extend_from_slice(&generation.to_le_bytes());
        record.extend_from_slice(payload);
        let path = self.dir.join(JOURNAL_FILE);
        use std::os::unix::fs::FileExt;
        self.journal
            .write_all_at(&record, self.journal_end)
            .map_err(|e| io_error(&path, e))?;
        self.journal_end += len as u64;
        Ok(())
    }

    /// The snapshot alone.
    fn load_snapshot(&self) -> Result<Option<State>, StateError> {
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

    /// Writes `state` as the new snapshot (temporary file, fsync, rename, directory
    /// fsync); the journal starts again from its first byte (its old records are of
    /// generations the snapshot holds, so replay skips them).
    pub fn snapshot(&mut self, state: &State) -> Result<(), StateError> {
        self.write_snapshot(state)?;
        self.journal_end = 0;
        self.volumes_named.clear();
        Ok(())
    }

    /// A record written since the last snapshot attaches volume `volume` of the pool at
    /// `pool` (its canonical path).
    pub fn name_volume(&mut self, pool: String, volume: String) {
        self.volumes_named.insert((pool, volume));
    }

    /// Whether a record since the last snapshot attaches that volume.
    pub fn names_volume(&self, pool: &str, volume: &str) -> bool {
        self.volumes_named
            .contains(&(pool.to_string(), volume.to_string()))
    }

    fn write_snapshot(&self, state: &State) -> Result<(), StateError> {
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
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    let handle = std::fs::File::open(dir).map_err(|e| io_error(dir, e))?;
    handle.sync_all().map_err(|e| io_error(dir, e))
}

fn record_crc(generation: u64, payload: &[u8]) -> u32 {
    let crc = datapath::pdu::digest::crc32c(&generation.to_le_bytes());
    datapath::pdu::digest::crc32c_append(crc, payload)
}

/// The record at `at`, if whole and intact: (generation, payload, where the next starts).
fn read_record(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len == 0 {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let generation = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let start = at + RECORD_HEADER_BYTES;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (record_crc(generation, payload) == crc).then_some((generation, payload, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_state_reads_back_and_a_leftover_temp_file_is_ignored() {
        let dir = std::env::temp_dir().join(format!("gateway-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = StateDir::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let state = State {
            array: Default::default(),
            version: FORMAT_VERSION,
            generation: 3,
            portals: None,
            pools: Vec::new(),
            bindings: Vec::new(),
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
        store.snapshot(&state).unwrap();
        // A crash between writing the temporary file and the rename leaves it behind.
        std::fs::write(dir.join(TEMP_FILE), b"{half").unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!((loaded.snapshot, loaded.changes.len()), (state.clone(), 0));
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

    #[test]
    fn the_journal_replays_whole_records_in_order_and_stops_at_a_torn_one() {
        let dir = std::env::temp_dir().join(format!("gateway-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = StateDir::open(&dir).unwrap();
        let mut state = State {
            array: Default::default(),
            version: FORMAT_VERSION,
            generation: 5,
            portals: None,
            pools: Vec::new(),
            targets: Vec::new(),
            bindings: Vec::new(),
        };
        store.snapshot(&state).unwrap();
        for generation in 6..=8 {
            store
                .append(generation, format!("change {generation}").as_bytes())
                .unwrap();
        }
        // The directory is locked while `store` holds it.
        assert!(StateDir::open(&dir).is_err());
        drop(store);
        let mut reopened = StateDir::open(&dir).unwrap();
        let loaded = reopened.load().unwrap().unwrap();
        let generations: Vec<u64> = loaded.changes.iter().map(|(g, _)| *g).collect();
        assert_eq!(generations, vec![6, 7, 8]);
        assert_eq!(loaded.changes[2].1, b"change 8");
        // A torn append (the CRC does not match) ends the replay before it.
        reopened.append(9, b"change 9").unwrap();
        let end = reopened.journal_end;
        use std::os::unix::fs::FileExt;
        reopened.journal.write_all_at(b"X", end - 1).unwrap();
        reopened.journal_end = 0;
        let loaded = reopened.load().unwrap().unwrap();
        assert_eq!(loaded.changes.len(), 3);
        // A new snapshot: the old records are of generations it holds and are skipped.
        state.generation = 9;
        reopened.snapshot(&state).unwrap();
        let loaded = reopened.load().unwrap().unwrap();
        assert_eq!((loaded.snapshot.generation, loaded.changes.len()), (9, 0));
        // A full journal asks for a snapshot.
        let big = vec![b'x'; JOURNAL_BYTES as usize];
        assert!(matches!(
            reopened.append(10, &big),
            Err(StateError::JournalFull)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Records written without a sync each (a group commit syncs once for many) and
        /// then cut by a crash that lost any window of the file (later pages may land
        /// while earlier ones do not): replay gives exactly the whole records before the
        /// window, a prefix in write order, never a record after a lost one.
        #[test]
        fn a_crash_that_loses_any_window_of_unsynced_records_replays_a_prefix(
            sizes in proptest::collection::vec(1usize..300, 1..40),
            start_permille in 0u64..1000,
            window in 1u64..2000,
        ) {
            let dir = std::env::temp_dir().join(format!(
                "gateway-journal-window-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let mut store = StateDir::open(&dir).unwrap();
            let state = State { version: FORMAT_VERSION, generation: 10, ..State::default() };
            store.snapshot(&state).unwrap();
            let mut ends = Vec::new();
            for (n, size) in sizes.iter().enumerate() {
                // No zero byte in a payload: a lost (zeroed) tail always breaks its record.
                let payload = vec![b'a' + (n % 26) as u8; *size];
                store.write(11 + n as u64, &payload).unwrap();
                ends.push(store.journal_end);
            }
            store.journal().sync_data().unwrap();
            let written = store.journal_end;
            let lost_from = written * start_permille / 1000;
            let lost_to = (lost_from + window).min(written);
            use std::os::unix::fs::FileExt;
            store
                .journal
                .write_all_at(&vec![0u8; (lost_to - lost_from) as usize], lost_from)
                .unwrap();
            let loaded = store.load().unwrap().unwrap();
            let whole = ends.iter().filter(|end| **end <= lost_from).count();
            proptest::prop_assert_eq!(loaded.changes.len(), whole);
            for (n, (generation, payload)) in loaded.changes.iter().enumerate() {
                proptest::prop_assert_eq!(*generation, 11 + n as u64);
                proptest::prop_assert_eq!(payload.len(), sizes[n]);
            }
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
