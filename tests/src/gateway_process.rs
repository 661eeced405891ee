//! Our target as users run it: the `iscsi-gateway` binary as a child process, its stderr
//! in a log file, for tests of what only a process shows (signals, restarts, exit status,
//! log lines) and what the hostile-client tests read about it from `/proc` (resident
//! memory, its peak, CPU time), so a test can judge the process and not only its answers.
//!
//! Stopped (SIGTERM, then SIGKILL) and its scratch directory removed on drop; like every
//! daemon of this harness it dies with the thread that started it.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::process::{log_tail, send_signal, spawn_daemon, stop_child, wait_for_portal};
use crate::{free_port, workspace_binary, TempDir};

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
        if fs::read_to_string(log).is_ok_and(|text| text.contains(line)) {
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

/// Spawns `command` with stderr into `log` and waits until it logs that it is ready and
/// `portal` accepts connections. (The log line first: a connection alone may reach the
/// listener of a gateway killed a moment ago.)
fn launch(command: Command, portal: SocketAddr, log: &Path) -> Result<Child, String> {
    let mut child = spawn_daemon(command, log)?;
    let ready = wait_for_log_line(&mut child, log, READY_LINE, START_TIMEOUT)
        .and_then(|()| wait_for_portal(&mut child, portal, START_TIMEOUT));
    match ready {
        Ok(()) => Ok(child),
        Err(error) => {
            stop_child(&mut child, STOP_GRACE);
            Err(format!("{error}; log:\n{}", log_tail(log)))
        }
    }
}

/// The target name every gateway started here announces.
pub const GATEWAY_IQN: &str = "iqn.2026-11.invalid.system-tests:hostile";

/// How long the gateway may take to listen (a debug build on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long SIGTERM gets before SIGKILL: a gateway with I/O stuck in the kernel may not
/// finish its shutdown at all.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// One running `iscsi-gateway`.
pub struct GatewayProcess {
    child: Child,
    portal: SocketAddr,
    log: PathBuf,
    // Held for its drop: the log lives in it (when the harness chose where).
    _scratch: Option<TempDir>,
}

/// How to start it.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The binary (debug or release build).
    pub binary: PathBuf,
    /// `--lun` values in LUN order (`ram:64M`, `null:1G`, `file:/path`).
    pub luns: Vec<String>,
    /// `--threads`; `Some(1)` puts every connection on one event loop.
    pub threads: Option<usize>,
    /// More options, after the others.
    pub args: Vec<String>,
}

impl GatewaySpec {
    /// The gateway of this test build's profile with these LUNs.
    pub fn new(luns: &[&str]) -> GatewaySpec {
        GatewaySpec {
            binary: gateway_binary(),
            luns: luns.iter().map(|lun| lun.to_string()).collect(),
            threads: None,
            args: Vec::new(),
        }
    }

    /// The same with one more option (`--backend-timeout`, `2`...).
    pub fn arg(mut self, arg: &str) -> GatewaySpec {
        self.args.push(arg.to_owned());
        self
    }

    /// The same with `threads` event loops.
    pub fn threads(mut self, threads: usize) -> GatewaySpec {
        self.threads = Some(threads);
        self
    }
}

impl GatewayProcess {
    /// Starts the gateway on a free 127.0.0.1 port and waits until it accepts connections.
    /// A port taken between choosing and binding is retried once with another.
    pub fn start(spec: &GatewaySpec) -> Result<GatewayProcess, String> {
        let scratch = TempDir::new("gateway")?;
        let log = scratch.join("gateway.log");
        let mut last_error = String::new();
        for _attempt in 0..2 {
            let portal = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut command = Command::new(&spec.binary);
            command
                .args(["--portal", &portal.to_string(), "--iqn", GATEWAY_IQN])
                .env("RUST_LOG", "warn,iscsi_gateway=info");
            for lun in &spec.luns {
                command.args(["--lun", lun]);
            }
            if let Some(threads) = spec.threads {
                command.args(["--threads", &threads.to_string()]);
            }
            command.args(&spec.args);
            match launch(command, portal, &log) {
                Ok(child) => {
                    return Ok(GatewayProcess {
                        child,
                        portal,
                        log,
                        _scratch: Some(scratch),
                    })
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Starts `iscsi-gateway --portal PORTAL ARGS...` with stderr into `log`, as an
    /// operator would, and waits until it is ready.
    pub fn start_with_args(
        portal: SocketAddr,
        args: &[&str],
        log: &Path,
    ) -> Result<GatewayProcess, String> {
        let mut command = Command::new(gateway_binary());
        command.arg("--portal").arg(portal.to_string()).args(args);
        let child = launch(command, portal, log)?;
        Ok(GatewayProcess {
            child,
            portal,
            log: log.to_path_buf(),
            _scratch: None,
        })
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
    pub fn full_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The portal it listens on.
    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// The process id, for `/proc` and for the benchmark's own readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `None` while it runs; how it ended otherwise.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of its log.
    pub fn log(&self) -> String {
        log_tail(&self.log)
    }

    /// Its memory now (`VmRSS`) and at its peak (`VmHWM`), in KiB; `None` once it is gone.
    pub fn memory(&self) -> Option<Memory> {
        read_memory(self.pid())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most it was ever resident.
    pub peak_rss_kib: u64,
}

/// [`Memory`] of process `pid`; `None` when it is gone or the file has no such lines.
pub fn read_memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory(&status)
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
    })
}

/// User plus system CPU time process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    // SAFETY: sysconf(3) reads a constant and touches no memory of ours.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_second,
    ))
}

/// utime + stime (fields 14 and 15 of proc(5)); the command name in field 2 may hold
/// spaces and parentheses, so the fields are counted from its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpu_are_read_from_proc_formats() {
        let status = "Name:\tx\nVmHWM:\t  9000 kB\nVmRSS:\t  4000 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss_kib: 4000,
                peak_rss_kib: 9000
            })
        );
        assert_eq!(parse_memory("Name:\tx\n"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert!(cpu_time(std::process::id()).is_some());
        assert!(read_memory(std::process::id()).unwrap().rss_kib > 0);
    }
}
