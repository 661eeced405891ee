//! fio's `ioscheduler` beside fio itself: the same small io_uring job on a file under the
//! target directory (a block device backs it) through fio and through ours, each asked to
//! switch the disk to a scheduler other than the one in use. Both must leave the disk on
//! it; both must fail on a name the kernel does not have and leave the disk as it was; and
//! a file on tmpfs (no disk) runs with no switch in both. The disk's scheduler is put back
//! after every step (also when the test fails). One test, so no two steps race on the
//! disk. Skipped (loudly) without fio, without a block device under the file, or when the
//! disk offers a single scheduler.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iscsi-bench"))
}

fn run(program: &Path, args: &[String]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .output()
        .expect("run")
}

/// `queue/scheduler` of the disk holding `path` (a partition's disk), if it has one.
fn scheduler_file(path: &Path) -> Option<PathBuf> {
    let dir = common::block_device_dir(path)?;
    [dir.join("queue/scheduler"), dir.join("../queue/scheduler")]
        .into_iter()
        .find(|f| f.exists())
}

/// The scheduler in use (the bracketed entry) and every one offered.
fn schedulers(file: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(file).expect("read scheduler");
    let entries: Vec<&str> = text.split_whitespace().collect();
    let current = entries
        .iter()
        .find(|e| e.starts_with('['))
        .map(|e| e.trim_matches(|c| c == '[' || c == ']').to_string())
        .unwrap_or_default();
    let all = entries
        .iter()
        .map(|e| e.trim_matches(|c| c == '[' || c == ']').to_string())
        .collect();
    (current, all)
}

/// Puts the disk's scheduler back when dropped.
struct Restore {
    file: PathBuf,
    scheduler: String,
}

impl Restore {
    fn now(&self) {
        std::fs::write(&self.file, &self.scheduler).expect("put the scheduler back");
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.file, &self.scheduler);
    }
}

fn job(file: &Path, scheduler: &str) -> Vec<String> {
    vec![
        "--name=sched".to_string(),
        format!("--filename={}", file.display()),
        "--ioengine=io_uring".to_string(),
        "--direct=1".to_string(),
        "--rw=read".to_string(),
        "--bs=64k".to_string(),
        "--size=4m".to_string(),
        format!("--ioscheduler={scheduler}"),
    ]
}

#[test]
fn ioscheduler_switches_the_disk_as_fio_does() {
    let Some(fio) = common::fio() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fio-ioscheduler");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let Some(sched) = scheduler_file(&dir) else {
        eprintln!(
            "SKIPPED: no block device with a scheduler backs {}",
            dir.display()
        );
        return;
    };
    let (current, offered) = schedulers(&sched);
    let Some(other) = offered.iter().find(|s| **s != current).cloned() else {
        eprintln!("SKIPPED: {} offers only {current}", sched.display());
        return;
    };
    let restore = Restore {
        file: sched.clone(),
        scheduler: current.clone(),
    };
    let file = dir.join("data");

    for (who, program) in [("fio", fio.as_path()), ("ours", ours().as_path())] {
        // A scheduler the disk offers: the job runs and leaves the disk on it.
        let out = run(program, &job(&file, &other));
        assert!(
            out.status.success(),
            "{who} ioscheduler={other}\n{}",
            common::describe(&out)
        );
        assert_eq!(
            schedulers(&sched).0,
            other,
            "{who}: ioscheduler={other} left {} so",
            sched.display()
        );
        restore.now();

        // A name the kernel does not have: the job fails and the disk is as it was.
        let out = run(program, &job(&file, "no-such-scheduler"));
        assert!(
            !out.status.success(),
            "{who} took ioscheduler=no-such-scheduler\n{}",
            common::describe(&out)
        );
        assert_eq!(schedulers(&sched).0, current, "{who}: bad name changed it");

        // No disk under a tmpfs file: nothing to switch, the job runs.
        if Path::new("/dev/shm").is_dir() {
            let shm_file = PathBuf::from(format!("/dev/shm/ioscheduler-{}", std::process::id()));
            let out = run(program, &job(&shm_file, "no-such-scheduler"));
            let _ = std::fs::remove_file(&shm_file);
            assert!(
                out.status.success(),
                "{who} on tmpfs\n{}",
                common::describe(&out)
            );
        }
    }
    // Ours names the option and the name in its error.
    let out = run(&ours(), &job(&file, "no-such-scheduler"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ioscheduler=no-such-scheduler"),
        "ours' error does not name the option: {stderr}"
    );
    assert_eq!(schedulers(&sched).0, current);
    let _ = std::fs::remove_dir_all(&dir);
}
