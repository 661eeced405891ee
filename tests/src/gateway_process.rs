//! `iscsi-gateway` as an operator runs it: the workspace binary in its own process, its
//! stderr in a log file, for tests of what only a process shows (signals, restarts, exit
//! status, log lines).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::process::{log_tail, send_signal, spawn_daemon, wait_for_portal, workspace_binary};

/// How long a gateway may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `iscsi-gateway` binary of this workspace, built once per test process.
pub fn gateway_binary() -> PathBuf {
    workspace_binary("gateway", "iscsi-gateway")
}

/// What `iscsi-gateway` logs once every portal listens.
const READY_LINE: &str = "target ready";

/// Waits until `log` holds `line`, the process exits, or `timeout` passes.
fn wait_for_log_line(
    child: &mut Child,
    log: &Path,
    line: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|text| text.contains(line)) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("iscsi-gateway exited before \"{line}\": {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "iscsi-gateway did not log \"{line}\" within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `iscsi-gateway`; dropping it kills it.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    log: PathBuf,
    portal: SocketAddr,
}

impl GatewayProcess {
    /// Starts `iscsi-gateway --portal PORTAL ARGS...` with stderr into `log` and waits until
    /// it logs that it is ready and the portal accepts connections. (The log line first: a
    /// connection alone may reach the listener of a gateway killed a moment ago.)
    pub fn start(portal: SocketAddr, args: &[&str], log: &Path) -> Result<GatewayProcess, String> {
        let mut command = Command::new(gateway_binary());
        command.arg("--portal").arg(portal.to_string()).args(args);
        let mut child = spawn_daemon(command, log)?;
        let ready = wait_for_log_line(&mut child, log, READY_LINE, START_TIMEOUT)
            .and_then(|()| wait_for_portal(&mut child, portal, START_TIMEOUT));
        if let Err(error) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{error}\n{}", log_tail(log)));
        }
        Ok(GatewayProcess {
            child,
            log: log.to_path_buf(),
            portal,
        })
    }

    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// Sends `signal` to the gateway.
    pub fn signal(&self, signal: i32) {
        send_signal(self.child.id() as i32, signal);
    }

    /// The exit status if it has exited within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
