//! Helpers for `iscsi-bench`'s cluster tests: network namespaces joined to this one by
//! veth pairs (one agent per namespace), and agent processes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{die_with_parent, run_tool, send_signal, workspace_binary, TempDir};

/// The token the cluster tests share between controller and agents.
pub const TEST_TOKEN: &str = "system-tests cluster token";

/// A network namespace with one veth pair to this one: `host_ip` on our side, `ns_ip`
/// inside, a /30 between them, the default route inside pointing at us (so the namespace
/// reaches every address of this namespace, a target's portal included). Deleted on drop.
pub struct NetNs {
    pub name: String,
    host_link: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

/// Whether this process may create namespaces (root, `ip` present, the kernel willing).
pub fn namespaces_available() -> bool {
    if !crate::tool_available("ip") {
        return false;
    }
    let probe = format!("st-probe-{}", std::process::id());
    let made = run_tool("ip", &["netns", "add", &probe], Duration::from_secs(10))
        .status
        .success();
    if made {
        let _ = run_tool("ip", &["netns", "del", &probe], Duration::from_secs(10));
    }
    made
}

impl NetNs {
    /// A new namespace; addresses from 10.(100 + pid % 100).(n).0/30, n counting up per
    /// process, so parallel test binaries do not collide.
    pub fn create() -> Result<NetNs, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n > 60 {
            return Err("too many namespaces in one test process".into());
        }
        let pid = std::process::id();
        let second = 100 + (pid % 100) as u8;
        let third = (n * 4) as u8;
        let host_ip = Ipv4Addr::new(10, second, third, 1);
        let ns_ip = Ipv4Addr::new(10, second, third, 2);
        let name = format!("st-{pid}-{n}");
        // Interface names: at most 15 bytes.
        let host_link = format!("sth{}{n}", pid % 100_000);
        let ns_link = format!("stn{}{n}", pid % 100_000);
        let ns = NetNs {
            name: name.clone(),
            host_link: host_link.clone(),
            host_ip,
            ns_ip,
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_link.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/30"),
                "dev".into(),
                host_link.clone(),
            ],
            vec!["link".into(), "set".into(), host_link.clone(), "up".into()],
            ns_cmd(
                &name,
                &["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_link],
            ),
            ns_cmd(&name, &["link", "set", &ns_link, "up"]),
            ns_cmd(&name, &["link", "set", "lo", "up"]),
            ns_cmd(
                &name,
                &["route", "add", "default", "via", &host_ip.to_string()],
            ),
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            let output = run_tool("ip", &args, Duration::from_secs(10));
            if !output.status.success() {
                return Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        Ok(ns)
    }

    /// Cuts the link (the agent's packets stop, no reset is sent): a host cut off.
    pub fn cut(&self) {
        let _ = run_tool(
            "ip",
            &["link", "set", &self.host_link, "down"],
            Duration::from_secs(10),
        );
    }
}

fn ns_cmd(name: &str, args: &[&str]) -> Vec<String> {
    let mut out = vec!["-n".to_string(), name.to_string()];
    out.extend(args.iter().map(|a| a.to_string()));
    out
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = run_tool("ip", &["netns", "del", &self.name], Duration::from_secs(10));
        let _ = run_tool(
            "ip",
            &["link", "del", &self.host_link],
            Duration::from_secs(10),
        );
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
