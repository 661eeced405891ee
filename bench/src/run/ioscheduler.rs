//! fio's `ioscheduler` (backend.c `switch_ioscheduler`/`set_ioscheduler`): before a job's
//! I/O, the disk under each of its local files is switched to the named I/O scheduler by
//! writing `queue/scheduler` in sysfs, and the switch is checked by reading the file back.
//! As in fio: a kernel without the file is warned about and the job goes on; a disk whose
//! file reads `none` alone has no scheduler to choose ("not tunable", warned, goes on); a
//! name the kernel refuses, or one that is not selected afterwards, fails the job. Files on
//! no block device (tmpfs) and LUNs are left alone, as fio's diskless engines. The old
//! scheduler is not put back, as fio does not.

use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::stats::disk_util::disk_sysfs_dir;

/// What reading `queue/scheduler` back after the write says.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadBack {
    /// `[name]` is the one in use.
    Selected,
    /// The disk has no scheduler to choose (the file is `none` alone).
    NotTunable,
    /// Another scheduler is in use.
    NotSelected,
}

/// Judges the first line of `queue/scheduler` read back after writing `name` (a list such
/// as `none [mq-deadline] kyber`, the one in use in brackets).
pub fn judge_read_back(content: &str, name: &str) -> ReadBack {
    let first = content.lines().next().unwrap_or("").trim();
    if first == "none" {
        ReadBack::NotTunable
    } else if first
        .split_whitespace()
        .any(|entry| entry == format!("[{name}]"))
    {
        ReadBack::Selected
    } else {
        ReadBack::NotSelected
    }
}

/// Switches the disk under `path` to `scheduler`. `Ok(Some(warning))` when fio warns and
/// goes on, `Ok(None)` when switched or when no block device holds `path`; `Err` names
/// what failed.
pub fn switch(path: &Path, scheduler: &str) -> Result<Option<String>, String> {
    let Some(disk) = disk_sysfs_dir(path) else {
        return Ok(None);
    };
    let sched_path = disk.join("queue/scheduler");
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sched_path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(
                "os or kernel doesn't support IO scheduler switching".to_string(),
            ))
        }
        Err(e) => {
            return Err(format!(
                "ioscheduler: opening {}: {e}",
                sched_path.display()
            ))
        }
    };
    file.write_all(scheduler.as_bytes()).map_err(|e| {
        format!(
            "ioscheduler={scheduler}: writing {}: {e}",
            sched_path.display()
        )
    })?;
    let mut content = String::new();
    file.rewind()
        .and_then(|_| file.read_to_string(&mut content))
        .map_err(|e| format!("ioscheduler: reading {} back: {e}", sched_path.display()))?;
    match judge_read_back(&content, scheduler) {
        ReadBack::Selected => Ok(None),
        ReadBack::NotTunable => Ok(Some("io scheduler is not tunable".to_string())),
        ReadBack::NotSelected => Err(format!(
            "unable to set io scheduler to {scheduler} ({} reads {:?})",
            sched_path.display(),
            content.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bracketed_entry_is_the_one_in_use() {
        assert_eq!(
            judge_read_back("none [mq-deadline] kyber\n", "mq-deadline"),
            ReadBack::Selected
        );
        assert_eq!(
            judge_read_back("[none] mq-deadline kyber\n", "mq-deadline"),
            ReadBack::NotSelected
        );
        // A name inside another's brackets is not a match.
        assert_eq!(
            judge_read_back("none [mq-deadline] kyber\n", "deadline"),
            ReadBack::NotSelected
        );
    }

    #[test]
    fn none_alone_is_not_tunable_but_bracketed_none_is_selected() {
        assert_eq!(judge_read_back("none\n", "kyber"), ReadBack::NotTunable);
        assert_eq!(
            judge_read_back("[none] mq-deadline\n", "none"),
            ReadBack::Selected
        );
    }

    #[test]
    fn a_path_on_no_block_device_is_left_alone() {
        assert_eq!(switch(Path::new("/proc/self/status"), "none"), Ok(None));
    }
}
