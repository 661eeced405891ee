//! Helpers for `iscsi-bench`'s cluster tests: one agent per network namespace (a site),
//! and agent processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{Netns, Veth};
use crate::process::{die_with_parent, send_signal, workspace_binary, TempDir};

/// The token the cluster tests share between controller and agents.
pub const TEST_TOKEN: &str = "system-tests cluster token";

/// One agent's network: a namespace ([`crate::netns`]) joined to this one by a veth pair,
/// its default route through it (so it reaches every address here, a target's portal
/// included).
pub struct Site {
    pub ns: Netns,
    pub veth: Veth,
}

impl Site {
    pub fn create() -> Result<Site, String> {
        let mut ns = Netns::create()?;
        let veth = ns.veth()?;
        ns.default_route(&veth)?;
        Ok(Site { ns, veth })
    }

    /// Where the agent inside listens.
    pub fn agent_ip(&self) -> String {
        self.veth.inner_ip.to_string()
    }

    /// Cuts the link silently (no reset, no FIN): a host cut off.
    pub fn cut(&self) {
        let _ = self.ns.cut(&self.veth);
    }
}

/// An `iscsi-bench --server` process, killed on drop.
pub struct AgentProcess {
    child: Child,
    pub address: String,
    pub port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl AgentProcess {
    /// Starts an agent on `address,port`, inside `netns` when given, with the test token,
    /// and waits until it listens.
    pub fn start(netns: Option<&str>, address: &str, port: u16) -> Result<AgentProcess, String> {
        let dir = TempDir::new("agent")?;
        let log = dir.join("agent.log");
        let binary = workspace_binary("bench", "iscsi-bench");
        let mut command = match netns {
            Some(ns) => {
                let mut command = Command::new(crate::tool_path("ip").ok_or("no ip tool")?);
                command.args(["netns", "exec", ns]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .arg(format!("--server={address},{port}"))
            .env("ISCSI_BENCH_TOKEN", TEST_TOKEN)
            // Its job directories go into ours, so an agent a test kills leaves none behind.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("starting the agent: {e}"))?;
        let mut agent = AgentProcess {
            child,
            address: address.to_string(),
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !agent.log().contains("agent listening on") {
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Err(format!("the agent exited ({status}): {}", agent.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent did not listen within 20 s: {}",
                    agent.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// `--client=` value for it.
    pub fn client(&self) -> String {
        format!("--client={},{}", self.address, self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (the agent's process, or `ip netns exec`'s image of it: exec replaces it).
    pub fn kill(&mut self) {
        send_signal(self.child.id() as i32, libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn signal(&self, signal: i32) {
        send_signal(self.child.id() as i32, signal);
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
