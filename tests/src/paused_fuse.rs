//! A backing store that hangs on demand: a file on a FUSE file system (`bindfs`, a
//! pass-through, run in the foreground as our child) whose daemon we stop with SIGSTOP.
//! Every read that misses the page cache and every write to the file then waits in the
//! kernel (`request_wait_answer`) until the daemon is continued: the "stopped FUSE fs"
//! of issue 11. This machine's kernel has no device-mapper (`dmsetup suspend` is not an
//! option here), and FUSE needs no kernel module beyond `/dev/fuse`.
//!
//! Dropping it continues the daemon, unmounts (lazily, so a process still holding the file
//! cannot keep the mount) and stops the daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::process::{
    create_sparse_file, log_tail, send_signal, spawn_daemon, stop_child, wait_for_path,
};
use crate::{run_tool, tool_path, TempDir};

/// The file system tools this needs: scripts/install-deps.sh installs them.
pub const FUSE_TOOLS: [&str; 2] = ["bindfs", "umount"];

/// The kernel side, which no package brings.
pub const FUSE_DEVICE: &str = "/dev/fuse";

const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// A bindfs mount with one sparse file on it.
pub struct PausedFuse {
    daemon: Child,
    mountpoint: PathBuf,
    file: PathBuf,
    paused: bool,
    scratch: TempDir,
}

impl PausedFuse {
    /// Mounts a pass-through of a scratch directory holding `lun.img` of `size_bytes`.
    pub fn mount(size_bytes: u64) -> Result<PausedFuse, String> {
        let scratch = TempDir::new("fuse")?;
        let backing = scratch.join("backing");
        let mountpoint = scratch.join("mnt");
        for dir in [&backing, &mountpoint] {
            std::fs::create_dir(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        create_sparse_file(&backing.join("lun.img"), size_bytes)?;
        let bindfs = tool_path("bindfs").ok_or("bindfs is not installed")?;
        let mut command = Command::new(bindfs);
        // -f: stay in the foreground, so the daemon is our child (its pid is the one to stop
        // and it dies with us).
        command.arg("-f").arg(&backing).arg(&mountpoint);
        let log = scratch.join("bindfs.log");
        let mut daemon = spawn_daemon(command, &log)?;
        let file = mountpoint.join("lun.img");
        if let Err(e) = wait_for_path(&mut daemon, &file, MOUNT_TIMEOUT) {
            stop_child(&mut daemon, Duration::from_millis(300));
            return Err(format!("bindfs mount: {e}; log: {}", log_tail(&log)));
        }
        Ok(PausedFuse {
            daemon,
            mountpoint,
            file,
            paused: false,
            scratch,
        })
    }

    /// The file on the FUSE mount (give it to the gateway as `file:PATH`).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Stops the daemon: I/O on the file hangs from now on.
    pub fn pause(&mut self) {
        send_signal(self.daemon.id() as i32, libc::SIGSTOP);
        self.paused = true;
    }

    /// Continues the daemon: the hung I/O completes.
    pub fn resume(&mut self) {
        send_signal(self.daemon.id() as i32, libc::SIGCONT);
        self.paused = false;
    }

    /// The scratch directory (for messages).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }
}

impl Drop for PausedFuse {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        let mountpoint = self.mountpoint.to_string_lossy().into_owned();
        let _ = run_tool("umount", &["-l", &mountpoint], Duration::from_secs(5));
        stop_child(&mut self.daemon, Duration::from_secs(1));
    }
}
