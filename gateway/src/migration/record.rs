//! The durable record of one migration (`migrations/TARGET-HEX.LUN.json` in the state
//! directory): where to, how, and how far. Written (temp file, fdatasync, rename,
//! directory fsync) when the migration starts, at each progress report of the copy, at the
//! switch, and removed once it is committed, cancelled or rolled back. A gateway started
//! again finds it and resumes the migration from the recorded cursor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::mirror::Mode;

/// The phase each record path was last written with, in this process (`Record::save`),
/// whose lock also makes saves one at a time.
static SAVED: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
const SWITCHED: &str = "switched";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub target: String,
    pub lun: u64,
    pub to: String,
    pub mode: Mode,
    #[serde(default)]
    pub rate_bytes_per_second: Option<u64>,
    #[serde(default)]
    pub stun_budget_ms: u64,
    /// Regions copied by the first pass (both modes: DBT resumes from it and copies again
    /// what its durable dirty log holds).
    pub cursor_regions: u64,
    /// "copying", "ready" or "switched"; "failed" once the destination failed and the
    /// LUN went back to its source (kept until the next migration of the LUN, so the
    /// reason survives a restart; never resumed).
    pub phase: String,
    /// Why the migration failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The directory of the records under a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("migrations")
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Record {
    pub fn path(&self, state_dir: &Path) -> PathBuf {
        dir(state_dir).join(format!("{}.{}.json", hex(&self.target), self.lun))
    }

    /// Writes the record durably. The copier's progress reports and an operator's switch
    /// (or a failure) save from different threads: saves go one at a time, and a late
    /// progress report never takes a switched migration's record back to "copying" or
    /// "ready" (a restart would then resume a copy whose LUN already reads from the
    /// destination).
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path(state_dir);
        let late_progress = matches!(self.phase.as_str(), "copying" | "ready");
        if late_progress && saved.get(&path).is_some_and(|p| p == SWITCHED) {
            tracing::debug!(phase = %self.phase, "migration record already switched: a late progress report is not written");
            return Ok(());
        }
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let temp = path.with_extension("json.tmp");
        {
            let mut file = File::create(&temp)?;
            file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
            file.sync_data()?;
        }
        std::fs::rename(&temp, &path)?;
        File::open(&dir)?.sync_all()?;
        saved.insert(path, self.phase.clone());
        Ok(())
    }

    /// The durable dirty log of a DBT migration, beside its record.
    pub fn dirty_log_path(&self, state_dir: &Path) -> PathBuf {
        self.path(state_dir).with_extension("dirty")
    }

    /// Removes the record durably (a missing one is fine), and its dirty log.
    pub fn remove(&self, state_dir: &Path) -> io::Result<()> {
        let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
        saved.remove(&self.path(state_dir));
        let _ = std::fs::remove_file(self.dirty_log_path(state_dir));
        match std::fs::remove_file(self.path(state_dir)) {
            Ok(()) => File::open(dir(state_dir))?.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every record in the state directory; unreadable ones are logged and skipped.
    pub fn load_all(state_dir: &Path) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "migration record unreadable; skipped")
                }
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_saved_is_loaded_and_removed() {
        let dir = std::env::temp_dir().join(format!("migration-record-{}", std::process::id()));
        let record = Record {
            target: "iqn.2026-12.x:y".into(),
            lun: 3,
            to: "file:/tmp/x:1M".into(),
            mode: Mode::Mirror,
            rate_bytes_per_second: Some(1 << 20),
            stun_budget_ms: 100,
            cursor_regions: 7,
            phase: "copying".into(),
            error: None,
        };
        record.save(&dir).unwrap();
        assert_eq!(Record::load_all(&dir), vec![record.clone()]);
        record.remove(&dir).unwrap();
        assert!(Record::load_all(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saves_race_without_losing_the_switch() {
        let dir = std::env::temp_dir().join(format!("migration-race-{}", std::process::id()));
        let record = |phase: &str, cursor: u64| Record {
            target: "iqn.2026-12.x:race".into(),
            lun: 1,
            to: "ram:1M".into(),
            mode: Mode::Mirror,
            rate_bytes_per_second: None,
            stun_budget_ms: 0,
            cursor_regions: cursor,
            phase: phase.into(),
            error: None,
        };
        // The copier's reports and the operator's switch, from several threads at once:
        // every save succeeds (they once shared a temp file, and a rename failed).
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let dir = &dir;
                scope.spawn(move || {
                    for i in 0..50 {
                        record("copying", thread * 100 + i).save(dir).unwrap();
                    }
                });
            }
        });
        record("switched", 64).save(&dir).unwrap();
        // A late report after the switch leaves the record switched; a failure still
        // writes; once removed, a new migration of the LUN starts its own record.
        record("ready", 64).save(&dir).unwrap();
        assert_eq!(Record::load_all(&dir)[0].phase, "switched");
        record("failed", 64).save(&dir).unwrap();
        assert_eq!(Record::load_all(&dir)[0].phase, "failed");
        record("failed", 64).remove(&dir).unwrap();
        record("copying", 0).save(&dir).unwrap();
        assert_eq!(Record::load_all(&dir)[0].phase, "copying");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
