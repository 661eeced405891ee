//! Network namespaces and veth pairs a test creates for itself (and removes when dropped):
//! links that can be cut silently (`ip link set ... down` on the far end drops packets with
//! no reset and no FIN), which loopback cannot do.
//!
//! A [`Netns`] is one namespace; [`Netns::veth`] adds a pair with one end in the root
//! namespace and the other inside, each with an IPv4 address of a /30 of 10.213.0.0/16
//! chosen from the process id and a counter, so tests running at once do not collide.
//! Programs run inside with [`Netns::command`] (`ip netns exec`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{run_tool, tool_available};

const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespaces and pairs made by this process so far (their names and subnets).
static MADE: AtomicU32 = AtomicU32::new(0);

/// Whether this machine lets the tests create namespaces (root, `ip` installed).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    tool_available("ip") && unsafe { libc::geteuid() } == 0
}

/// One veth pair: `host` in the root namespace, `inner` in the test's namespace.
#[derive(Debug, Clone)]
pub struct Veth {
    pub host: String,
    pub host_ip: Ipv4Addr,
    pub inner: String,
    pub inner_ip: Ipv4Addr,
}

/// A network namespace that is deleted, with its pairs, when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    pairs: Vec<Veth>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = run_tool("ip", args, IP_TIMEOUT);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn next_id() -> u32 {
    // Interface names are at most 15 bytes: a 5-digit process tag and a counter fit.
    (std::process::id() % 100_000) * 100 + MADE.fetch_add(1, Ordering::Relaxed) % 100
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn create() -> Result<Netns, String> {
        let name = format!("it{}", next_id());
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            pairs: Vec::new(),
        };
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A new pair, both ends up, with addresses `.1` (root side) and `.2` (inside) of a
    /// /30 of its own.
    pub fn veth(&mut self) -> Result<Veth, String> {
        let id = next_id();
        // 16,384 /30s in 10.213.0.0/16.
        let subnet = (id.wrapping_mul(2_654_435_761) % 16_384) * 4;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + subnet;
        let veth = Veth {
            host: format!("vh{id}"),
            host_ip: Ipv4Addr::from(base + 1),
            inner: format!("vn{id}"),
            inner_ip: Ipv4Addr::from(base + 2),
        };
        ip(&[
            "link",
            "add",
            &veth.host,
            "type",
            "veth",
            "peer",
            "name",
            &veth.inner,
        ])?;
        self.pairs.push(veth.clone());
        ip(&["link", "set", &veth.inner, "netns", &self.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", veth.host_ip),
            "dev",
            &veth.host,
        ])?;
        ip(&["link", "set", &veth.host, "up"])?;
        self.exec_ip(&[
            "addr",
            "add",
            &format!("{}/30", veth.inner_ip),
            "dev",
            &veth.inner,
        ])?;
        self.exec_ip(&["link", "set", &veth.inner, "up"])?;
        Ok(veth)
    }

    /// Routes everything the namespace sends through `veth`'s root-side address, so it
    /// reaches every address of the root namespace (a target's portal on another pair).
    pub fn default_route(&self, veth: &Veth) -> Result<(), String> {
        self.exec_ip(&["route", "add", "default", "via", &veth.host_ip.to_string()])
    }

    /// Cuts `veth` silently: its root-side end goes down, so what the inside sends is
    /// dropped with no reset, and the root side sends nothing.
    pub fn cut(&self, veth: &Veth) -> Result<(), String> {
        ip(&["link", "set", &veth.host, "down"])
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new(crate::tool_path("ip").unwrap_or_else(|| "ip".into()));
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pair in &self.pairs {
            let _ = ip(&["link", "del", &pair.host]);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}
