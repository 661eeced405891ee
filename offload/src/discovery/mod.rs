//! Discovery of real iSCSI offload adapters on Linux, from sysfs, the way open-iscsi finds them.
//!
//! What the kernel exports (`drivers/scsi/scsi_transport_iscsi.c`):
//! - `/sys/class/iscsi_host/host<N>/`: one per iSCSI SCSI host, with the host attributes
//!   `netdev`, `hwaddress`, `ipaddress`, `initiatorname`, `port_state` and `port_speed`
//!   (each only if the driver supports it: `attr_is_visible`).
//! - `/sys/class/iscsi_iface/ipv4-iface-<N>-<i>/` and `ipv6-iface-<N>-<i>/`: the network
//!   interfaces an offload adapter configures in its own firmware (`enabled`, `ipaddress`,
//!   `subnet`, `gateway`, `bootproto`, `vlan_id`, `vlan_enabled`, `mtu`, `port`,
//!   `initiator_name`, ...). `<N>` is the host number.
//! - The driver: open-iscsi (`iscsi_sysfs_get_transport_by_hba`) reads `proc_name` of
//!   `/sys/class/scsi_host/host<N>/`. This reader does the same, then falls back to a plain
//!   `driver` file in the host directory (not a kernel attribute: fixture trees use it where a
//!   symlink would be awkward), then to the `device/../driver` symlink (the PCI function's
//!   driver; for dependent adapters that is the NIC driver, e.g. `cxgb4` for `cxgb4i`).
//!
//! Classification ([`OffloadKind`]) follows the capabilities each kernel driver declares in
//! its `struct iscsi_transport`: only `qla4xxx` sets `CAP_LOGIN_OFFLOAD` (the adapter logs in
//! and runs the session: independent); `bnx2i`, `qedi`, `cxgb3i`, `cxgb4i` and `be2iscsi` set
//! `CAP_DATA_PATH_OFFLOAD | CAP_TEXT_NEGO` (the host's open-iscsi runs login and the session
//! through libiscsi, the adapter carries TCP and the data path: dependent). `be2iscsi` is the
//! odd one: dependent in session terms, but its firmware owns the IP address and TCP stack,
//! configured through `iscsi_iface` rather than a host netdev; [`classify`] says so in a note.
//!
//! The sysfs root is a parameter so that tests read fixture trees. A missing class directory
//! (no iSCSI transport loaded, the normal case) gives an empty list, not an error. Attribute
//! values are trimmed; empty, `(null)` and `<NULL>` mean "not set". Every directory walk and
//! read is bounded.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use datapath::transport::TransportKind;

/// The real sysfs mount point.
pub const SYSFS_ROOT: &str = "/sys";

/// The most iSCSI hosts (and, separately, ifaces) one discovery looks at.
pub const ENTRIES_MAX: usize = 4096;

/// The longest attribute read, in bytes (a sysfs attribute is at most one page).
const ATTRIBUTE_BYTES_MAX: u64 = 4096;

/// How much of the iSCSI work an adapter takes from the host: one of the data path's
/// transports, or a driver the table does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OffloadKind {
    /// A known driver. [`TransportKind::Dependent`]: the host runs the iSCSI session, the
    /// adapter offloads TCP, digests and data placement (`bnx2i`, `qedi`, `cxgb3i`,
    /// `cxgb4i`, `be2iscsi`). [`TransportKind::Independent`]: the adapter runs the whole
    /// initiator, configured through its own interface (`qla4xxx`).
    /// [`TransportKind::Software`]: not an adapter but a software transport host
    /// (`iscsi_tcp`, `ib_iser`) that also appears in the `iscsi_host` class, one host per
    /// session.
    Transport(TransportKind),
    /// A driver this table does not know, by name.
    Unknown(String),
}

impl std::fmt::Display for OffloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffloadKind::Transport(kind) => write!(f, "{kind}"),
            OffloadKind::Unknown(driver) => write!(f, "unknown ({driver})"),
        }
    }
}

/// What [`classify`] knows about a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverClass {
    /// The kind.
    pub kind: OffloadKind,
    /// The hardware, in a few words.
    pub hardware: &'static str,
    /// Anything a user should know beyond the kind.
    pub note: Option<&'static str>,
}

/// Classifies an iSCSI host driver by name (as `proc_name` gives it).
pub fn classify(driver: &str) -> DriverClass {
    let known = |kind, hardware, note| DriverClass {
        kind,
        hardware,
        note,
    };
    match driver {
        "bnx2i" => known(
            OffloadKind::Transport(TransportKind::Dependent),
            "Broadcom/QLogic NetXtreme II (57xx) iSCSI offload",
            Some("network setup through iscsiuio (its own uIP stack), not the host netdev"),
        ),
        "qedi" => known(
            OffloadKind::Transport(TransportKind::Dependent),
            "QLogic/Marvell FastLinQ 41000/45000 iSCSI offload",
            Some("network setup through iscsiuio, like bnx2i"),
        ),
        "cxgb3i" => known(
            OffloadKind::Transport(TransportKind::Dependent),
            "Chelsio T3 iSCSI offload",
            None,
        ),
        "cxgb4i" => known(
            OffloadKind::Transport(TransportKind::Dependent),
            "Chelsio T4/T5/T6 iSCSI offload",
            Some("shares the IP address of the host's cxgb4 netdev"),
        ),
        "qla4xxx" => known(
            OffloadKind::Transport(TransportKind::Independent),
            "QLogic 4xxx/8xxx iSCSI HBA",
            Some("full offload: the firmware logs in and runs sessions (CAP_LOGIN_OFFLOAD)"),
        ),
        "be2iscsi" => known(
            OffloadKind::Transport(TransportKind::Dependent),
            "Emulex OneConnect (Broadcom) iSCSI",
            Some(
                "hybrid: the host's open-iscsi runs login and the session (no \
                 CAP_LOGIN_OFFLOAD), but the firmware owns the IP address and TCP stack, \
                 configured through iscsi_iface like an independent HBA",
            ),
        ),
        "iscsi_tcp" | "tcp" | "ib_iser" | "iser" => known(
            OffloadKind::Transport(TransportKind::Software),
            "software iSCSI transport",
            None,
        ),
        other => known(OffloadKind::Unknown(other.to_string()), "unknown", None),
    }
}

/// The iSCSI driver behind a PCI function whose own driver is `pci_driver` (what the
/// `device/../driver` symlink names): dependent adapters hang off the NIC's function.
fn iscsi_driver_for_pci_driver(pci_driver: &str) -> &str {
    match pci_driver {
        "bnx2" | "bnx2x" => "bnx2i",
        "cxgb3" => "cxgb3i",
        "cxgb4" => "cxgb4i",
        "qede" | "qed" => "qedi",
        other => other,
    }
}

/// Where the driver name came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverSource {
    /// `/sys/class/scsi_host/host<N>/proc_name` (what open-iscsi reads).
    ProcName,
    /// A plain `driver` file in the `iscsi_host` directory (fixture fallback).
    DriverFile,
    /// The `device/../driver` symlink, naming this PCI driver.
    PciDriver(String),
}

/// One `iscsi_iface` of an adapter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveredIface {
    /// The directory name, e.g. `ipv4-iface-5-0`.
    pub name: String,
    /// 4 or 6, from the name.
    pub ip_version: Option<u8>,
    /// The iface number within the host, from the name.
    pub iface_number: Option<u32>,
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `ipaddress`.
    pub ipaddress: Option<String>,
    /// `subnet` (IPv4).
    pub subnet: Option<String>,
    /// `gateway` (IPv4).
    pub gateway: Option<String>,
    /// `bootproto` (`static`, `dhcp`).
    pub bootproto: Option<String>,
    /// `vlan_id`.
    pub vlan_id: Option<u16>,
    /// `vlan_enabled`.
    pub vlan_enabled: Option<bool>,
    /// `mtu`.
    pub mtu: Option<u32>,
    /// `port` (the local TCP port).
    pub port: Option<u16>,
    /// `initiator_name`.
    pub initiator_name: Option<String>,
}

/// One iSCSI host found in sysfs, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredAdapter {
    /// The host directory name, e.g. `host5`.
    pub host: String,
    /// The SCSI host number.
    pub host_number: Option<u32>,
    /// The iSCSI driver, if found.
    pub driver: Option<String>,
    /// Where the driver name came from.
    pub driver_source: Option<DriverSource>,
    /// The kind (unknown with an empty name when no driver was found).
    pub kind: OffloadKind,
    /// The hardware, from the classification table.
    pub hardware: &'static str,
    /// A note from the classification table.
    pub note: Option<&'static str>,
    /// `netdev`: the host network device the adapter is tied to.
    pub netdev: Option<String>,
    /// `hwaddress`: the adapter's MAC address.
    pub hwaddress: Option<String>,
    /// `ipaddress`.
    pub ipaddress: Option<String>,
    /// `initiatorname`.
    pub initiator_name: Option<String>,
    /// `port_state` (`LINK_UP`, `LINK_DOWN`).
    pub port_state: Option<String>,
    /// `port_speed` (e.g. `10 Gbps`).
    pub port_speed: Option<String>,
    /// The adapter's `iscsi_iface` entries.
    pub ifaces: Vec<DiscoveredIface>,
    /// Attributes that exist but could not be read (drivers may fail a read), with the error.
    pub unreadable: Vec<(String, String)>,
}

impl DiscoveredAdapter {
    /// Whether this is an offload adapter (dependent or independent), not a software host.
    pub fn is_offload(&self) -> bool {
        matches!(self.kind, OffloadKind::Transport(kind) if kind.is_adapter())
    }
}

/// An error of discovery: a directory that exists but cannot be listed, or too many entries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A class directory exists but could not be read.
    #[error("cannot list {}: {source}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// More entries than [`ENTRIES_MAX`] in a class directory.
    #[error("{} holds more than {limit} entries", path.display())]
    TooManyEntries {
        /// The directory.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
}

/// Discovers the iSCSI hosts under the sysfs tree at `sysfs_root` (`/sys` on a real system),
/// sorted by host number. No `iscsi_host` class directory: an empty list.
pub fn discover(sysfs_root: &Path) -> Result<Vec<DiscoveredAdapter>, DiscoveryError> {
    let hosts_dir = sysfs_root.join("class/iscsi_host");
    let host_names = list_dir(&hosts_dir)?;
    let iface_names = list_dir(&sysfs_root.join("class/iscsi_iface"))?;
    let mut adapters: Vec<DiscoveredAdapter> = host_names
        .iter()
        .map(|host| read_host(sysfs_root, host, &iface_names))
        .collect();
    adapters.sort_by_key(|a| (a.host_number.unwrap_or(u32::MAX), a.host.clone()));
    Ok(adapters)
}

/// [`discover`] on the real `/sys`.
pub fn discover_system() -> Result<Vec<DiscoveredAdapter>, DiscoveryError> {
    discover(Path::new(SYSFS_ROOT))
}

/// The entry names of `dir`, sorted; a missing directory is empty.
fn list_dir(dir: &Path) -> Result<Vec<String>, DiscoveryError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DiscoveryError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DiscoveryError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if names.len() == ENTRIES_MAX {
            return Err(DiscoveryError::TooManyEntries {
                path: dir.to_path_buf(),
                limit: ENTRIES_MAX,
            });
        }
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads attributes of one directory, remembering those that exist but fail to read.
struct AttributeReader<'a> {
    dir: PathBuf,
    unreadable: &'a mut Vec<(String, String)>,
}

impl AttributeReader<'_> {
    /// The trimmed value of attribute `name`, or `None` if it is absent, unset, or unreadable.
    fn text(&mut self, name: &str) -> Option<String> {
        let path = self.dir.join(name);
        let mut text = String::new();
        let read = fs::File::open(&path)
            .and_then(|file| file.take(ATTRIBUTE_BYTES_MAX).read_to_string(&mut text));
        match read {
            Ok(_) => normalize(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.unreadable
                    .push((path.display().to_string(), e.to_string()));
                None
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        self.text(name)?.parse().ok()
    }

    fn flag(&mut self, name: &str) -> Option<bool> {
        parse_flag(&self.text(name)?)
    }
}

/// Trims an attribute value; empty, `(null)` (a NULL string printed by the kernel) and
/// `<NULL>` mean "not set".
fn normalize(raw: &str) -> Option<String> {
    let value = raw.trim();
    match value {
        "" | "(null)" | "<NULL>" => None,
        _ => Some(value.to_string()),
    }
}

/// Reads the kernel's ways of printing a boolean (`enabled`/`disabled` from the offload
/// drivers' iface attributes, or `1`/`0`).
fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "enabled" | "enable" | "1" | "yes" | "true" | "on" => Some(true),
        "disabled" | "disable" | "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// `host5` -> 5.
fn host_number(host: &str) -> Option<u32> {
    host.strip_prefix("host")?.parse().ok()
}

/// `ipv4-iface-5-0` -> (4, host 5, iface 0).
fn parse_iface_name(name: &str) -> Option<(u8, u32, u32)> {
    let (version, rest) = if let Some(rest) = name.strip_prefix("ipv4-iface-") {
        (4, rest)
    } else {
        (6, name.strip_prefix("ipv6-iface-")?)
    };
    let (host, iface) = rest.split_once('-')?;
    Some((version, host.parse().ok()?, iface.parse().ok()?))
}

fn read_driver(
    sysfs_root: &Path,
    host: &str,
    reader: &mut AttributeReader<'_>,
) -> Option<(String, DriverSource)> {
    let mut scsi_host = AttributeReader {
        dir: sysfs_root.join("class/scsi_host").join(host),
        unreadable: reader.unreadable,
    };
    if let Some(name) = scsi_host.text("proc_name") {
        return Some((name, DriverSource::ProcName));
    }
    if let Some(name) = reader.text("driver") {
        return Some((name, DriverSource::DriverFile));
    }
    // `device` is the SCSI host device; its parent is the PCI function with the driver.
    let link = fs::read_link(reader.dir.join("device/../driver")).ok()?;
    let pci_driver = link.file_name()?.to_str()?.to_string();
    Some((
        iscsi_driver_for_pci_driver(&pci_driver).to_string(),
        DriverSource::PciDriver(pci_driver),
    ))
}

fn read_iface(
    sysfs_root: &Path,
    name: &str,
    unreadable: &mut Vec<(String, String)>,
) -> DiscoveredIface {
    let parsed = parse_iface_name(name);
    let mut r = AttributeReader {
        dir: sysfs_root.join("class/iscsi_iface").join(name),
        unreadable,
    };
    DiscoveredIface {
        name: name.to_string(),
        ip_version: parsed.map(|(v, _, _)| v),
        iface_number: parsed.map(|(_, _, i)| i),
        enabled: r.flag("enabled"),
        ipaddress: r.text("ipaddress"),
        subnet: r.text("subnet"),
        gateway: r.text("gateway"),
        bootproto: r.text("bootproto"),
        vlan_id: r.number("vlan_id"),
        vlan_enabled: r.flag("vlan_enabled"),
        mtu: r.number("mtu"),
        port: r.number("port"),
        initiator_name: r.text("initiator_name"),
    }
}

fn read_host(sysfs_root: &Path, host: &str, iface_names: &[String]) -> DiscoveredAdapter {
    let mut unreadable = Vec::new();
    let number = host_number(host);
    let mut r = AttributeReader {
        dir: sysfs_root.join("class/iscsi_host").join(host),
        unreadable: &mut unreadable,
    };
    let driver = read_driver(sysfs_root, host, &mut r);
    let netdev = r.text("netdev");
    let hwaddress = r.text("hwaddress");
    let ipaddress = r.text("ipaddress");
    let initiator_name = r.text("initiatorname");
    let port_state = r.text("port_state");
    let port_speed = r.text("port_speed");
    let ifaces = iface_names
        .iter()
        .filter(|name| number.is_some() && parse_iface_name(name).map(|(_, h, _)| h) == number)
        .map(|name| read_iface(sysfs_root, name, &mut unreadable))
        .collect();
    let class = match &driver {
        Some((name, _)) => classify(name),
        None => classify(""),
    };
    let (driver, driver_source) = match driver {
        Some((name, source)) => (Some(name), Some(source)),
        None => (None, None),
    };
    DiscoveredAdapter {
        host: host.to_string(),
        host_number: number,
        driver,
        driver_source,
        kind: class.kind,
        hardware: class.hardware,
        note: class.note,
        netdev,
        hwaddress,
        ipaddress,
        initiator_name,
        port_state,
        port_speed,
        ifaces,
        unreadable,
    }
}

#[cfg(test)]
mod tests;
