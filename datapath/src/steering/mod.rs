//! NIC queue steering for the software TCP path (DESIGN.md: "a shard pins to core N and, where
//! the NIC allows, to NIC queue N"): read the NIC's RSS setup, choose each connection's local
//! port so that the target's packets land on the receive queue of the shard's core, set XPS
//! where allowed, and read `SO_INCOMING_CPU` back to report whether steering held.
//!
//! Parts:
//! - [`toeplitz`]: the RSS hash (Microsoft's definition, checked against its verification key
//!   and published IPv4/IPv6 vectors). No I/O.
//! - [`rss`]: [`RssConfig`] (queues, key, indirection table) and the port choice. No I/O.
//! - [`ethtool`]: the `SIOCETHTOOL` reads (`ETHTOOL_GCHANNELS`, `ETHTOOL_GRXRINGS`,
//!   `ETHTOOL_GRSSH`), with the reply parsers kept apart from the ioctls.
//! - [`sysfs`]: XPS (`xps_cpus`) and RPS (`rps_cpus`) per queue, under a configurable root.
//! - [`route`]: which interface and source address reach a destination.
//! - here: [`plan`] ties them together into a [`SteeringPlan`]; [`connect_steered`] connects
//!   by it and returns a [`PathReport`] that says, per connection, what was asked for and what
//!   the kernel did.
//!
//! Direction: a NIC hashes the packets it *receives*, so the hash that decides our receive
//! queue is over (source = target address and port, destination = our address and port).
//!
//! Loopback and veth have no RSS (their drivers answer `EOPNOTSUPP`): the plan then lets the
//! kernel choose the port, and the report says "no RSS on lo (loopback and veth have no RSS)".
//! Nothing in this module fails a connection because steering is impossible.

pub mod ethtool;
pub mod route;
pub mod rss;
pub mod sysfs;
pub mod toeplitz;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

pub use ethtool::{read_rss, Channels, DeviceKind, NoRss, RssStatus};
pub use route::{route_to, Route};
pub use rss::RssConfig;
pub use sysfs::XpsOutcome;

use crate::transport::{RingConfig, TcpConnection, TransportError};

/// An error of NIC queue steering, naming the interface, file or address involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SteeringError {
    /// An ethtool (or interface) ioctl failed for a reason other than "not supported".
    #[error("{command} on {interface} failed: {source} (errno {errno})")]
    Ethtool {
        /// The interface.
        interface: String,
        /// The ethtool command or ioctl.
        command: &'static str,
        /// The errno the kernel answered.
        errno: i32,
        /// The same errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// The interface name is empty, too long for `IFNAMSIZ`, or contains a NUL.
    #[error("{interface:?} is not a valid interface name")]
    BadInterfaceName {
        /// The name given.
        interface: String,
    },
    /// The kernel's ethtool reply did not have the expected shape.
    #[error("{command} on {interface}: malformed reply: {detail}")]
    MalformedReply {
        /// The interface.
        interface: String,
        /// The ethtool command.
        command: &'static str,
        /// What was wrong.
        detail: &'static str,
    },
    /// An RSS configuration that cannot be used (empty table, entry beyond the queues...).
    #[error("bad RSS configuration: {what} {value}")]
    BadRssConfig {
        /// What is wrong.
        what: &'static str,
        /// The offending value.
        value: u64,
    },
    /// A socket call failed.
    #[error("{op} failed: {source}")]
    Socket {
        /// The call.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The route to a destination could not be resolved.
    #[error("no route to {destination}: {source}")]
    Route {
        /// The destination.
        destination: IpAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// No interface holds the source address the kernel chose.
    #[error("no interface holds {local_ip}, the source address towards {destination}")]
    NoInterface {
        /// The destination.
        destination: IpAddr,
        /// The source address the kernel chose.
        local_ip: IpAddr,
    },
    /// A sysfs file does not exist (for XPS: a single-queue device or no such queue).
    #[error("{} does not exist", path.display())]
    SysfsAbsent {
        /// The file.
        path: PathBuf,
    },
    /// A sysfs file may not be written (XPS needs root or `CAP_NET_ADMIN`).
    #[error("permission denied writing {} (needs root or CAP_NET_ADMIN)", path.display())]
    SysfsPermission {
        /// The file.
        path: PathBuf,
    },
    /// Any other sysfs failure.
    #[error("{}: {source}", path.display())]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A CPU mask that is not in the kernel's bitmap format or names too many CPUs.
    #[error("bad CPU mask {text:?}")]
    BadCpuMask {
        /// The text (or the problem).
        text: String,
    },
}

impl SteeringError {
    pub(crate) fn ethtool(interface: &str, command: &'static str, errno: i32) -> Self {
        SteeringError::Ethtool {
            interface: interface.to_string(),
            command,
            errno,
            source: io::Error::from_raw_os_error(errno),
        }
    }
}

/// The CPU on which the kernel last processed packets received on `socket`
/// (`SO_INCOMING_CPU`), or `None` if none has arrived yet (the kernel answers -1).
pub fn incoming_cpu(socket: BorrowedFd<'_>) -> Result<Option<u32>, SteeringError> {
    crate::transport::incoming_cpu(socket).map_err(|source| SteeringError::Socket {
        op: "getsockopt(SO_INCOMING_CPU)",
        source,
    })
}

/// Linux's default ephemeral port range (`net.ipv4.ip_local_port_range`), searched for a
/// steering port unless the caller gives another.
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 32768..=60999;

/// How many steering ports a plan keeps, so that a port taken meanwhile can be skipped.
pub const PORT_CANDIDATES_MAX: usize = 16;

/// What one connection should be steered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeringRequest {
    /// The target portal.
    pub target: SocketAddr,
    /// The receive queue the connection's packets should arrive on (the shard's queue).
    pub wanted_queue: u32,
    /// The CPU that queue's interrupt runs on, if the caller knows it (by convention the
    /// shard's core); compared with `SO_INCOMING_CPU` in the report.
    pub expected_cpu: Option<usize>,
    /// Local ports searched for one that lands on `wanted_queue`.
    pub ports: RangeInclusive<u16>,
    /// Bind transmit queue `wanted_queue` to `expected_cpu` with XPS (changes device-wide
    /// state, so off unless asked for).
    pub set_xps: bool,
    /// Where `/sys/class/net` is (a fixture tree in tests).
    pub sysfs_net: PathBuf,
}

impl SteeringRequest {
    /// A request for `wanted_queue` towards `target`, defaults elsewhere: CPU unknown, the
    /// default port range, no XPS, the real sysfs.
    pub fn new(target: SocketAddr, wanted_queue: u32) -> Self {
        SteeringRequest {
            target,
            wanted_queue,
            expected_cpu: None,
            ports: DEFAULT_PORT_RANGE,
            set_xps: false,
            sysfs_net: PathBuf::from(sysfs::SYSFS_NET),
        }
    }
}

/// How one connection will be steered: the route, the RSS found there, and the local ports
/// (if any) that land on the wanted queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeringPlan {
    /// The target portal.
    pub target: SocketAddr,
    /// The interface that carries the traffic.
    pub interface: String,
    /// The local source address.
    pub local_ip: IpAddr,
    /// The RSS found on the interface.
    pub rss: RssStatus,
    /// The receive queue asked for.
    pub wanted_queue: u32,
    /// The CPU expected to see the connection's packets.
    pub expected_cpu: Option<usize>,
    /// Local ports that land on `wanted_queue`, in order of preference (empty: let the
    /// kernel choose; steering is not possible).
    pub candidate_ports: Vec<u16>,
    /// What came of XPS, when asked for.
    pub xps: Option<XpsOutcome>,
}

/// Builds the plan from what was found (pure: route and RSS passed in).
pub fn plan_with(route: Route, rss: RssStatus, request: &SteeringRequest) -> SteeringPlan {
    let candidate_ports = match &rss {
        RssStatus::Present(config) => config
            .ports_for_queue(
                request.target,
                route.local_ip,
                request.wanted_queue,
                request.ports.clone(),
            )
            .take(PORT_CANDIDATES_MAX)
            .collect(),
        RssStatus::Absent(_) => Vec::new(),
    };
    SteeringPlan {
        target: request.target,
        interface: route.interface,
        local_ip: route.local_ip,
        rss,
        wanted_queue: request.wanted_queue,
        expected_cpu: request.expected_cpu,
        candidate_ports,
        xps: None,
    }
}

/// Resolves the route to the target, reads RSS on its interface, chooses candidate ports, and
/// sets XPS if asked (an XPS failure is recorded in the plan, never returned as an error).
pub fn plan(request: &SteeringRequest) -> Result<SteeringPlan, SteeringError> {
    let route = route_to(request.target)?;
    let rss = read_rss(&route.interface)?;
    let mut plan = plan_with(route, rss, request);
    if request.set_xps {
        plan.xps = Some(match request.expected_cpu {
            Some(cpu) => sysfs::try_set_xps(
                &request.sysfs_net,
                &plan.interface,
                request.wanted_queue,
                &[cpu],
            ),
            None => XpsOutcome::Failed("no expected CPU to bind the transmit queue to".into()),
        });
    }
    Ok(plan)
}

/// Connects by `plan`: tries its candidate ports in order (skipping ports in use), and falls
/// back to a kernel-chosen port when there are none or all are taken. Returns the connection
/// and its [`PathReport`] (whose `SO_INCOMING_CPU` is only meaningful once the target has sent
/// something: call [`PathReport::observe`] after the login response).
pub fn connect_steered(
    plan: &SteeringPlan,
    timeout: Duration,
    config: &RingConfig,
) -> Result<(TcpConnection, PathReport), TransportError> {
    for &port in &plan.candidate_ports {
        let local = SocketAddr::new(plan.local_ip, port);
        match TcpConnection::connect_from(plan.target, Some(local), timeout, config) {
            Ok(connection) => {
                let report = PathReport::new(plan, Some(port), true);
                return Ok((connection, report));
            }
            // The port (or this 4-tuple) is in use: the next candidate lands on the same queue.
            Err(TransportError::Bind { ref source, .. })
                if source.raw_os_error() == Some(libc::EADDRINUSE) => {}
            Err(TransportError::Io {
                op: "connect",
                ref source,
            }) if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(other) => return Err(other),
        }
    }
    let connection = TcpConnection::connect_from(plan.target, None, timeout, config)?;
    let port = connection.local_addr().ok().map(|a| a.port());
    let report = PathReport::new(plan, port, false);
    Ok((connection, report))
}

/// The RSS facts a report keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RssSummary {
    /// RSS is there.
    Present {
        /// Receive queues.
        queues: u32,
        /// Indirection table entries.
        table_entries: usize,
        /// Key length in bytes.
        key_bytes: usize,
        /// Whether the queue of a flow can be predicted (Toeplitz, no input transform).
        predictable: bool,
    },
    /// No RSS, and why.
    Absent(NoRss),
}

impl fmt::Display for RssSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RssSummary::Present {
                queues,
                table_entries,
                key_bytes,
                predictable,
            } => {
                write!(
                    f,
                    "RSS over {queues} queues (table {table_entries}, key {key_bytes} bytes)"
                )?;
                if !predictable {
                    write!(f, ", not Toeplitz: queue not predictable")?;
                }
                Ok(())
            }
            RssSummary::Absent(no_rss) => no_rss.fmt(f),
        }
    }
}

/// What steering did for one connection: asked for, chosen, and observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathReport {
    /// The target portal.
    pub target: SocketAddr,
    /// The interface that carries the traffic.
    pub interface: String,
    /// RSS on that interface, or why there is none.
    pub rss: RssSummary,
    /// The connection's local port.
    pub local_port: Option<u16>,
    /// Whether `local_port` was chosen to land on `wanted_queue` (false: the kernel chose).
    pub port_steered: bool,
    /// The receive queue asked for.
    pub wanted_queue: u32,
    /// The receive queue the hash predicts for the connection's local port.
    pub predicted_queue: Option<u32>,
    /// The CPU expected to see the connection's packets.
    pub expected_cpu: Option<usize>,
    /// `SO_INCOMING_CPU` as last observed (`None`: nothing received yet, or not observed).
    pub incoming_cpu: Option<u32>,
    /// What came of XPS, when asked for.
    pub xps: Option<XpsOutcome>,
}

impl PathReport {
    /// The report for a connection made by `plan` from `local_port`.
    pub fn new(plan: &SteeringPlan, local_port: Option<u16>, port_steered: bool) -> Self {
        let (rss, predicted_queue) = match &plan.rss {
            RssStatus::Present(config) => (
                RssSummary::Present {
                    queues: config.queues,
                    table_entries: config.indirection.len(),
                    key_bytes: config.key.len(),
                    predictable: config.is_predictable(),
                },
                local_port.and_then(|port| {
                    config.receive_queue(plan.target, SocketAddr::new(plan.local_ip, port))
                }),
            ),
            RssStatus::Absent(no_rss) => (RssSummary::Absent(no_rss.clone()), None),
        };
        PathReport {
            target: plan.target,
            interface: plan.interface.clone(),
            rss,
            local_port,
            port_steered,
            wanted_queue: plan.wanted_queue,
            predicted_queue,
            expected_cpu: plan.expected_cpu,
            incoming_cpu: None,
            xps: plan.xps.clone(),
        }
    }

    /// Reads `SO_INCOMING_CPU` from the connection into the report (call it after the target
    /// has sent something, e.g. the login response). A failed read leaves the field unknown.
    pub fn observe(&mut self, connection: &TcpConnection) {
        self.incoming_cpu = connection.incoming_cpu().ok().flatten();
    }

    /// Whether the connection's packets arrived on the expected CPU: `None` when that cannot
    /// be judged (no RSS, CPU not known, nothing observed yet).
    pub fn steering_held(&self) -> Option<bool> {
        if !matches!(self.rss, RssSummary::Present { .. }) || !self.port_steered {
            return None;
        }
        let expected = u32::try_from(self.expected_cpu?).ok()?;
        Some(self.incoming_cpu? == expected)
    }
}

impl fmt::Display for PathReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}: {}; ", self.target, self.interface, self.rss)?;
        match (self.local_port, self.port_steered) {
            (Some(port), true) => write!(
                f,
                "local port {port} chosen for rx queue {}",
                self.wanted_queue
            )?,
            (Some(port), false) => write!(
                f,
                "local port {port} (kernel's choice; wanted rx queue {} not steerable)",
                self.wanted_queue
            )?,
            (None, _) => write!(f, "local port unknown")?,
        }
        if let Some(predicted) = self.predicted_queue {
            write!(f, ", hash predicts rx queue {predicted}")?;
        }
        match self.expected_cpu {
            Some(cpu) => write!(f, "; expected CPU {cpu}")?,
            None => write!(f, "; expected CPU unknown")?,
        }
        match self.incoming_cpu {
            Some(cpu) => write!(f, "; SO_INCOMING_CPU {cpu}")?,
            None => write!(f, "; SO_INCOMING_CPU not yet known")?,
        }
        match self.steering_held() {
            Some(true) => write!(f, " (steering held)")?,
            Some(false) => write!(f, " (steering did not hold)")?,
            None => {}
        }
        if let Some(xps) = &self.xps {
            write!(f, "; {xps}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steering::toeplitz::MICROSOFT_VERIFICATION_KEY;

    fn four_queue_rss() -> RssStatus {
        RssStatus::Present(
            RssConfig::equal_spread(4, MICROSOFT_VERIFICATION_KEY.to_vec(), 128).unwrap(),
        )
    }

    fn route() -> Route {
        Route {
            interface: "eth1".into(),
            local_ip: "198.51.100.7".parse().unwrap(),
        }
    }

    #[test]
    fn plan_offers_ports_that_land_on_the_wanted_queue() {
        let mut request = SteeringRequest::new("192.0.2.10:3260".parse().unwrap(), 2);
        request.expected_cpu = Some(2);
        let plan = plan_with(route(), four_queue_rss(), &request);
        assert_eq!(plan.candidate_ports.len(), PORT_CANDIDATES_MAX);
        let RssStatus::Present(config) = &plan.rss else {
            unreachable!()
        };
        for &port in &plan.candidate_ports {
            assert!(DEFAULT_PORT_RANGE.contains(&port));
            let local = SocketAddr::new(plan.local_ip, port);
            assert_eq!(config.receive_queue(request.target, local), Some(2));
        }
        let mut report = PathReport::new(&plan, plan.candidate_ports.first().copied(), true);
        assert_eq!(report.predicted_queue, Some(2));
        assert_eq!(report.steering_held(), None);
        report.incoming_cpu = Some(2);
        assert_eq!(report.steering_held(), Some(true));
        let text = report.to_string();
        assert!(text.contains("RSS over 4 queues"), "{text}");
        assert!(text.contains("chosen for rx queue 2"), "{text}");
        assert!(text.contains("steering held"), "{text}");
        report.incoming_cpu = Some(0);
        assert_eq!(report.steering_held(), Some(false));
    }

    #[test]
    fn plan_without_rss_lets_the_kernel_choose_and_says_why() {
        let request = SteeringRequest::new("127.0.0.1:3260".parse().unwrap(), 1);
        let no_rss = RssStatus::Absent(NoRss {
            interface: "lo".into(),
            kind: DeviceKind::Loopback,
            channels: None,
            refused: Some(("ETHTOOL_GRSSH", libc::EOPNOTSUPP)),
        });
        let route = Route {
            interface: "lo".into(),
            local_ip: "127.0.0.1".parse().unwrap(),
        };
        let plan = plan_with(route, no_rss, &request);
        assert!(plan.candidate_ports.is_empty());
        let report = PathReport::new(&plan, Some(40000), false);
        assert_eq!(report.steering_held(), None);
        let text = report.to_string();
        assert!(
            text.contains("no RSS on lo (loopback and veth have no RSS)"),
            "{text}"
        );
        assert!(text.contains("kernel's choice"), "{text}");
    }
}
