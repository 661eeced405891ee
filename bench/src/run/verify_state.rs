//! fio's `verify_state_save` and `verify_state_load` on disk: a write job with verify saves
//! where it stopped in `local-<job>-<index>-verify.state` in the working directory (fio's
//! name for a local run; `<index>` counts the run's jobs from 0, clones included), and a
//! `verify_only` run of the same job with `verify_state_load=1` reads it back and checks
//! only what was written (`workload::WriteState`). The content is ours (JSON), not fio's
//! binary layout: fio cannot read it, nor we fio's.

use std::path::{Path, PathBuf};

use crate::workload::WriteState;

/// Marks the file as ours, and its layout's version.
const FORMAT: &str = "iscsi-bench verify state";
const VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    job: String,
    #[serde(flatten)]
    state: WriteState,
}

/// The state file of job `name`, the run's `job_number`-th (1-based) job.
pub fn state_path(name: &str, job_number: u32) -> PathBuf {
    PathBuf::from(format!(
        "local-{name}-{}-verify.state",
        job_number.saturating_sub(1)
    ))
}

/// Writes the state (to a temporary name, then renamed, so a reader never sees half).
pub fn save(path: &Path, job: &str, state: WriteState) -> Result<(), String> {
    let file = StateFile {
        format: FORMAT.into(),
        version: VERSION,
        job: job.into(),
        state,
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    // Unique per process and call: two runs (or jobs) saving the same name do not share
    // a temporary file; the last rename wins, as the last save does in fio.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = path.with_extension(format!("state.tmp.{}.{n}", std::process::id()));
    std::fs::write(&temp, text + "\n")
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| format!("saving the verify state to {}: {e}", path.display()))
}

/// Reads the state job `job` saved at `path`; the error names the file and what is wrong.
pub fn load(path: &Path, job: &str) -> Result<WriteState, String> {
    let what = |why: String| format!("verify_state_load: {}: {why}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| {
        what(if e.kind() == std::io::ErrorKind::NotFound {
            "no such file (the writing run saves it with verify_state_save=1, in its working \
             directory)"
                .into()
        } else {
            e.to_string()
        })
    })?;
    let file: StateFile = serde_json::from_str(&text)
        .map_err(|e| what(format!("not a verify state file of iscsi-bench ({e})")))?;
    if file.format != FORMAT {
        return Err(what(format!(
            "format {:?}, expected {FORMAT:?}",
            file.format
        )));
    }
    if file.version != VERSION {
        return Err(what(format!(
            "version {} of the layout; this iscsi-bench reads version {VERSION}",
            file.version
        )));
    }
    if file.job != job {
        return Err(what(format!("saved by job {:?}, not {job:?}", file.job)));
    }
    Ok(file.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{PlanFingerprint, UnknownCause, UnknownRun};

    fn state() -> WriteState {
        WriteState {
            ios: 1234,
            plan: PlanFingerprint {
                seed: 7,
                rw: "randwrite".into(),
                offset_bytes: 0,
                size_bytes: 1 << 20,
                digest: 99,
            },
            unknown: vec![UnknownRun {
                file: 0,
                offset: 8192,
                len: 4096,
                cause: UnknownCause::WriteNotSent,
            }],
        }
    }

    #[test]
    fn a_saved_state_loads_back_and_a_wrong_one_is_named() {
        let dir = std::env::temp_dir().join(format!("verify-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(state_path("w", 1));
        assert!(path.ends_with("local-w-0-verify.state"));
        save(&path, "w", state()).unwrap();
        assert_eq!(load(&path, "w").unwrap(), state());
        let other = load(&path, "x").unwrap_err();
        assert!(other.contains("saved by job \"w\""), "{other}");
        let missing = load(&dir.join("none"), "w").unwrap_err();
        assert!(missing.contains("no such file"), "{missing}");
        std::fs::write(&path, "{\"format\": 3}").unwrap();
        let garbage = load(&path, "w").unwrap_err();
        assert!(garbage.contains("not a verify state file"), "{garbage}");
        let text = serde_json::to_string(&StateFile {
            format: FORMAT.into(),
            version: 9,
            job: "w".into(),
            state: state(),
        })
        .unwrap();
        std::fs::write(&path, text).unwrap();
        assert!(load(&path, "w").unwrap_err().contains("version 9"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
