//! Reading a NIC's queues and RSS setup through the `SIOCETHTOOL` ioctl
//! (`include/uapi/linux/ethtool.h`): `ETHTOOL_GCHANNELS`, `ETHTOOL_GRXRINGS`, `ETHTOOL_GRSSH`,
//! `ETHTOOL_GDRVINFO`, and `SIOCGIFFLAGS` to tell loopback apart.
//!
//! The ioctl calls (I/O) are kept apart from the parsers of the reply buffers (pure functions
//! over bytes, tested with fixtures). `ETHTOOL_GRSSH` is used in two steps, as the kernel
//! documents: first with zero sizes, to which the kernel answers with the indirection table
//! size and key size; then with a buffer of those sizes, which it fills.
//!
//! Loopback and veth do not implement the RSS ioctls and answer `EOPNOTSUPP`; that is reported
//! as [`RssStatus::Absent`], not as an error.

use std::ffi::c_char;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::rss::{RssConfig, INDIRECTION_ENTRIES_MAX, KEY_BYTES_MAX};
use super::SteeringError;

/// `ETHTOOL_GDRVINFO`: driver name and bus information.
pub const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
/// `ETHTOOL_GRXRINGS`: the number of receive rings RSS spreads over.
pub const ETHTOOL_GRXRINGS: u32 = 0x0000_002d;
/// `ETHTOOL_GCHANNELS`: the channel (queue) counts.
pub const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;
/// `ETHTOOL_GRSSH`: the RSS hash key, indirection table and hash function.
pub const ETHTOOL_GRSSH: u32 = 0x0000_0046;

/// `sizeof(struct ethtool_channels)`: nine `__u32`.
pub const CHANNELS_BYTES: usize = 9 * 4;
/// `sizeof(struct ethtool_rxfh)` without its flexible array: cmd, rss_context, indir_size,
/// key_size (4 x `__u32`), hfunc, input_xfrm, 2 reserved bytes, one reserved `__u32`.
pub const RXFH_HEADER_BYTES: usize = 24;
/// `sizeof(struct ethtool_rxnfc)` on 64-bit Linux (192 bytes); only `cmd` (offset 0) and
/// `data` (offset 8) matter for `ETHTOOL_GRXRINGS`.
pub const RXNFC_BYTES: usize = 192;
/// `sizeof(struct ethtool_drvinfo)`: cmd, five 32-byte strings, 12 reserved bytes, five
/// `__u32` counts.
pub const DRVINFO_BYTES: usize = 4 + 5 * 32 + 12 + 5 * 4;

/// A NIC's channel counts (`struct ethtool_channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Channels {
    /// Most receive-only channels the device supports.
    pub max_rx: u32,
    /// Most transmit-only channels.
    pub max_tx: u32,
    /// Most "other" (link, management) channels.
    pub max_other: u32,
    /// Most combined receive+transmit channels.
    pub max_combined: u32,
    /// Receive-only channels in use.
    pub rx: u32,
    /// Transmit-only channels in use.
    pub tx: u32,
    /// Other channels in use.
    pub other: u32,
    /// Combined channels in use.
    pub combined: u32,
}

impl Channels {
    /// Receive queues in use: receive-only plus combined channels.
    pub fn rx_queues(&self) -> u32 {
        self.rx.saturating_add(self.combined)
    }
}

/// The sizes and hash function from an `ETHTOOL_GRSSH` reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxfhHeader {
    /// Indirection table entries.
    pub indirection_entries: u32,
    /// Key bytes.
    pub key_bytes: u32,
    /// `ETH_RSS_HASH_*` bits.
    pub hash_function: u8,
    /// `RXH_XFRM_*` bits (0 on kernels before 6.8, where the byte was reserved).
    pub input_transform: u8,
}

fn u32_at(buf: &[u8], offset: usize) -> Option<u32> {
    let bytes = buf.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    if let Some(slot) = buf.get_mut(offset..offset + 4) {
        slot.copy_from_slice(&value.to_ne_bytes());
    }
}

/// Parses a `struct ethtool_channels` reply.
pub fn parse_channels(reply: &[u8]) -> Option<Channels> {
    if reply.len() < CHANNELS_BYTES {
        return None;
    }
    let field = |index: usize| u32_at(reply, 4 + 4 * index);
    Some(Channels {
        max_rx: field(0)?,
        max_tx: field(1)?,
        max_other: field(2)?,
        max_combined: field(3)?,
        rx: field(4)?,
        tx: field(5)?,
        other: field(6)?,
        combined: field(7)?,
    })
}

/// Parses the `data` field of a `struct ethtool_rxnfc` reply to `ETHTOOL_GRXRINGS`.
pub fn parse_rx_rings(reply: &[u8]) -> Option<u64> {
    let bytes = reply.get(8..16)?;
    let mut data = [0u8; 8];
    data.copy_from_slice(bytes);
    Some(u64::from_ne_bytes(data))
}

/// Parses the header of a `struct ethtool_rxfh` reply.
pub fn parse_rxfh_header(reply: &[u8]) -> Option<RxfhHeader> {
    Some(RxfhHeader {
        indirection_entries: u32_at(reply, 8)?,
        key_bytes: u32_at(reply, 12)?,
        hash_function: *reply.get(16)?,
        input_transform: *reply.get(17)?,
    })
}

/// A `struct ethtool_rxfh` request for `ETHTOOL_GRSSH` with room for the given sizes (zero
/// sizes: the first, size-asking step).
pub fn rxfh_request(indirection_entries: u32, key_bytes: u32) -> Vec<u8> {
    let len = RXFH_HEADER_BYTES + indirection_entries as usize * 4 + key_bytes as usize;
    let mut buf = vec![0u8; len];
    put_u32(&mut buf, 0, ETHTOOL_GRSSH);
    put_u32(&mut buf, 8, indirection_entries);
    put_u32(&mut buf, 12, key_bytes);
    buf
}

/// A parsed `ETHTOOL_GRSSH` reply: its header, the indirection table and the key.
pub type RssHashReply = (RxfhHeader, Vec<u32>, Vec<u8>);

/// Parses a filled `ETHTOOL_GRSSH` reply: the indirection table (`__u32` entries) then the key
/// bytes follow the header. The sizes in the reply must be the ones asked for.
pub fn parse_rxfh(
    reply: &[u8],
    indirection_entries: u32,
    key_bytes: u32,
) -> Result<RssHashReply, &'static str> {
    let header = parse_rxfh_header(reply).ok_or("reply shorter than its header")?;
    if header.indirection_entries != indirection_entries || header.key_bytes != key_bytes {
        return Err("sizes changed between the two GRSSH calls");
    }
    let table_bytes = indirection_entries as usize * 4;
    let table_end = RXFH_HEADER_BYTES + table_bytes;
    let key_end = table_end + key_bytes as usize;
    let table = reply
        .get(RXFH_HEADER_BYTES..table_end)
        .ok_or("reply shorter than its indirection table")?;
    let key = reply
        .get(table_end..key_end)
        .ok_or("reply shorter than its key")?;
    let indirection = table
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((header, indirection, key.to_vec()))
}

/// Parses the driver name out of a `struct ethtool_drvinfo` reply.
pub fn parse_driver_name(reply: &[u8]) -> Option<String> {
    let field = reply.get(4..36)?;
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let name = std::str::from_utf8(&field[..end]).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// What kind of device an interface is, as far as RSS goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// The loopback device (`IFF_LOOPBACK`).
    Loopback,
    /// A veth pair end (driver `veth`).
    Veth,
    /// Any other device, with its driver name if the kernel reports one.
    Other(Option<String>),
}

/// Why an interface offers no RSS to steer by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRss {
    /// The interface.
    pub interface: String,
    /// Its kind (loopback and veth never have RSS).
    pub kind: DeviceKind,
    /// The channel counts, where the device reports them (veth does).
    pub channels: Option<Channels>,
    /// The ethtool command that was refused and its errno (`EOPNOTSUPP`), or `None` when the
    /// device answered but with an empty indirection table.
    pub refused: Option<(&'static str, i32)>,
}

impl fmt::Display for NoRss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeviceKind::Loopback | DeviceKind::Veth => write!(
                f,
                "no RSS on {} (loopback and veth have no RSS)",
                self.interface
            ),
            DeviceKind::Other(driver) => {
                write!(f, "no RSS on {} (", self.interface)?;
                if let Some(driver) = driver {
                    write!(f, "driver {driver}: ")?;
                }
                match self.refused {
                    Some((command, errno)) => write!(
                        f,
                        "{command}: {} (errno {errno}))",
                        io::Error::from_raw_os_error(errno)
                    ),
                    None => write!(f, "empty indirection table)"),
                }
            }
        }
    }
}

/// Whether an interface has RSS to steer by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RssStatus {
    /// The NIC hashes flows over several queues with this configuration.
    Present(RssConfig),
    /// No RSS (loopback, veth, single-queue or RSS-less drivers).
    Absent(NoRss),
}

/// A datagram socket to carry ethtool ioctls (any socket family works; `AF_INET` is what the
/// ethtool tool itself uses).
#[derive(Debug)]
pub struct EthtoolSocket {
    fd: OwnedFd,
}

impl EthtoolSocket {
    /// Opens the control socket.
    pub fn open() -> Result<Self, SteeringError> {
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(SteeringError::Socket {
                op: "socket(AF_INET, SOCK_DGRAM) for ethtool",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EthtoolSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// One `SIOCETHTOOL` ioctl with `buf` as the command buffer (its first `__u32` is the
    /// command); on failure, the errno.
    fn ethtool(&self, interface: &str, buf: &mut [u8]) -> Result<(), i32> {
        let mut request = ifreq_for(interface).ok_or(libc::ENODEV)?;
        request.ifr_ifru.ifru_data = buf.as_mut_ptr().cast::<c_char>();
        // SAFETY: `request` is a valid ifreq whose data pointer refers to `buf`, which is
        // exclusively borrowed for the call and sized for the command it holds (each caller
        // sizes it for its command's structure, and for GRSSH for the sizes it asks for).
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SIOCETHTOOL as _,
                &mut request as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// `ETHTOOL_GCHANNELS`.
    pub fn channels(&self, interface: &str) -> Result<Channels, SteeringError> {
        let mut buf = [0u8; CHANNELS_BYTES];
        put_u32(&mut buf, 0, ETHTOOL_GCHANNELS);
        self.ethtool(interface, &mut buf)
            .map_err(|errno| SteeringError::ethtool(interface, "ETHTOOL_GCHANNELS", errno))?;
        parse_channels(&buf).ok_or_else(|| SteeringError::MalformedReply {
            interface: interface.to_string(),
            command: "ETHTOOL_GCHANNELS",
            detail: "short reply",
        })
    }

    /// `ETHTOOL_GRXRINGS`: the receive rings RSS spreads over.
    pub fn rx_rings(&self, interface: &str) -> Result<u64, SteeringError> {
        let mut buf = [0u8; RXNFC_BYTES];
        put_u32(&mut buf, 0, ETHTOOL_GRXRINGS);
        self.ethtool(interface, &mut buf)
            .map_err(|errno| SteeringError::ethtool(interface, "ETHTOOL_GRXRINGS", errno))?;
        parse_rx_rings(&buf).ok_or_else(|| SteeringError::MalformedReply {
            interface: interface.to_string(),
            command: "ETHTOOL_GRXRINGS",
            detail: "short reply",
        })
    }

    /// `ETHTOOL_GDRVINFO`: the driver's name.
    pub fn driver(&self, interface: &str) -> Result<Option<String>, SteeringError> {
        let mut buf = [0u8; DRVINFO_BYTES];
        put_u32(&mut buf, 0, ETHTOOL_GDRVINFO);
        self.ethtool(interface, &mut buf)
            .map_err(|errno| SteeringError::ethtool(interface, "ETHTOOL_GDRVINFO", errno))?;
        Ok(parse_driver_name(&buf))
    }

    /// `SIOCGIFFLAGS` & `IFF_LOOPBACK`.
    pub fn is_loopback(&self, interface: &str) -> Result<bool, SteeringError> {
        let mut request = ifreq_for(interface).ok_or_else(|| SteeringError::BadInterfaceName {
            interface: interface.to_string(),
        })?;
        // SAFETY: `request` is a valid ifreq living across the call; SIOCGIFFLAGS writes only
        // its flags field.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SIOCGIFFLAGS as _,
                &mut request as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            return Err(SteeringError::ethtool(interface, "SIOCGIFFLAGS", errno));
        }
        // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote the flags member of the union.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        Ok(i32::from(flags) & libc::IFF_LOOPBACK != 0)
    }

    /// `ETHTOOL_GRSSH` in its two steps: sizes, then key and table. `Ok(None)` when the
    /// driver does not support it (`EOPNOTSUPP`).
    pub fn rss_hash(&self, interface: &str) -> Result<Option<RssHashReply>, SteeringError> {
        const COMMAND: &str = "ETHTOOL_GRSSH";
        let mut sizes = rxfh_request(0, 0);
        match self.ethtool(interface, &mut sizes) {
            Ok(()) => {}
            Err(errno) if errno == libc::EOPNOTSUPP => return Ok(None),
            Err(errno) => return Err(SteeringError::ethtool(interface, COMMAND, errno)),
        }
        let header = parse_rxfh_header(&sizes).ok_or_else(|| SteeringError::MalformedReply {
            interface: interface.to_string(),
            command: COMMAND,
            detail: "short size reply",
        })?;
        if header.indirection_entries as usize > INDIRECTION_ENTRIES_MAX
            || header.key_bytes as usize > KEY_BYTES_MAX
        {
            return Err(SteeringError::MalformedReply {
                interface: interface.to_string(),
                command: COMMAND,
                detail: "indirection table or key larger than this reader accepts",
            });
        }
        let mut full = rxfh_request(header.indirection_entries, header.key_bytes);
        self.ethtool(interface, &mut full)
            .map_err(|errno| SteeringError::ethtool(interface, COMMAND, errno))?;
        parse_rxfh(&full, header.indirection_entries, header.key_bytes)
            .map(Some)
            .map_err(|detail| SteeringError::MalformedReply {
                interface: interface.to_string(),
                command: COMMAND,
                detail,
            })
    }

    /// Everything needed to steer by RSS on `interface`, or why there is nothing to steer by.
    /// `EOPNOTSUPP` from the RSS ioctls is [`RssStatus::Absent`]; other failures (no such
    /// device, permission) are errors that name the interface and errno.
    pub fn read_rss(&self, interface: &str) -> Result<RssStatus, SteeringError> {
        let loopback = self.is_loopback(interface)?;
        let driver = self.driver(interface).ok().flatten();
        let kind = if loopback {
            DeviceKind::Loopback
        } else if driver.as_deref() == Some("veth") {
            DeviceKind::Veth
        } else {
            DeviceKind::Other(driver)
        };
        let channels = self.channels(interface).ok();
        let absent = |refused| {
            Ok(RssStatus::Absent(NoRss {
                interface: interface.to_string(),
                kind: kind.clone(),
                channels,
                refused,
            }))
        };
        let Some((header, indirection, key)) = self.rss_hash(interface)? else {
            return absent(Some(("ETHTOOL_GRSSH", libc::EOPNOTSUPP)));
        };
        if indirection.is_empty() {
            return absent(None);
        }
        // The queue count: GRXRINGS where supported, else the channels, else the table itself.
        let table_queues = indirection.iter().max().map_or(1, |&q| q.saturating_add(1));
        let queues = match self.rx_rings(interface) {
            Ok(rings) => u32::try_from(rings).unwrap_or(u32::MAX),
            Err(_) => channels.map_or(0, |c| c.rx_queues()),
        }
        .max(table_queues);
        let mut config = RssConfig::new(queues, key, indirection)?;
        config.hash_function = header.hash_function;
        config.input_transform = header.input_transform;
        Ok(RssStatus::Present(config))
    }
}

/// An `ifreq` naming `interface`, or `None` if the name does not fit (`IFNAMSIZ` includes the
/// terminating NUL) or contains a NUL.
fn ifreq_for(interface: &str) -> Option<libc::ifreq> {
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return None;
    }
    // SAFETY: ifreq is plain data (a name array and a union of plain data and a pointer);
    // all zeroes is a valid value (empty name, null data pointer).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &byte) in request.ifr_name.iter_mut().zip(name) {
        *slot = byte as c_char;
    }
    Some(request)
}

/// Reads RSS on `interface` through a fresh control socket (see [`EthtoolSocket::read_rss`]).
pub fn read_rss(interface: &str) -> Result<RssStatus, SteeringError> {
    EthtoolSocket::open()?.read_rss(interface)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the hex fixture format: whitespace-separated bytes, `#` comments.
    pub(crate) fn hex_fixture(text: &str) -> Vec<u8> {
        text.lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split_whitespace())
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
            .collect()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/ethtool/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        hex_fixture(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    #[test]
    fn grssh_fixture_of_a_four_queue_nic_parses() {
        let reply = fixture("grssh-4q-128.hex");
        let header = parse_rxfh_header(&reply).unwrap();
        assert_eq!(header.indirection_entries, 128);
        assert_eq!(header.key_bytes, 40);
        assert_eq!(
            header.hash_function,
            super::super::rss::HASH_FUNCTION_TOEPLITZ
        );
        let (_, table, key) = parse_rxfh(&reply, 128, 40).unwrap();
        assert_eq!(table.len(), 128);
        assert!(table.iter().enumerate().all(|(i, &q)| q == i as u32 % 4));
        assert_eq!(key, super::super::toeplitz::MICROSOFT_VERIFICATION_KEY);
    }

    #[test]
    fn grssh_reply_with_other_sizes_or_short_is_refused() {
        let reply = fixture("grssh-4q-128.hex");
        assert!(parse_rxfh(&reply, 64, 40).is_err());
        assert!(parse_rxfh(&reply[..100], 128, 40).is_err());
        assert!(parse_rxfh(&reply[..RXFH_HEADER_BYTES + 512 + 39], 128, 40).is_err());
        assert!(parse_rxfh_header(&reply[..17]).is_none());
    }

    #[test]
    fn rxfh_request_asks_for_the_sizes() {
        let request = rxfh_request(128, 40);
        assert_eq!(request.len(), RXFH_HEADER_BYTES + 512 + 40);
        assert_eq!(u32_at(&request, 0), Some(ETHTOOL_GRSSH));
        assert_eq!(u32_at(&request, 8), Some(128));
        assert_eq!(u32_at(&request, 12), Some(40));
    }

    #[test]
    fn channels_fixture_of_a_veth_parses() {
        let channels = parse_channels(&fixture("gchannels-veth.hex")).unwrap();
        assert_eq!(channels.max_rx, 2);
        assert_eq!(channels.rx, 1);
        assert_eq!(channels.tx, 1);
        assert_eq!(channels.combined, 0);
        assert_eq!(channels.rx_queues(), 1);
        assert!(parse_channels(&[0; CHANNELS_BYTES - 1]).is_none());
    }

    #[test]
    fn driver_name_and_rings_parse() {
        let mut drvinfo = [0u8; DRVINFO_BYTES];
        drvinfo[4..8].copy_from_slice(b"veth");
        assert_eq!(parse_driver_name(&drvinfo).as_deref(), Some("veth"));
        assert_eq!(parse_driver_name(&[0u8; DRVINFO_BYTES]), None);
        let mut rxnfc = [0u8; RXNFC_BYTES];
        rxnfc[8..16].copy_from_slice(&8u64.to_ne_bytes());
        assert_eq!(parse_rx_rings(&rxnfc), Some(8));
    }

    #[test]
    fn interface_names_must_fit() {
        assert!(ifreq_for("lo").is_some());
        assert!(ifreq_for("").is_none());
        assert!(ifreq_for("a-name-far-too-long").is_none());
        assert!(ifreq_for("lo\0x").is_none());
    }

    #[test]
    fn no_rss_says_why() {
        let lo = NoRss {
            interface: "lo".into(),
            kind: DeviceKind::Loopback,
            channels: None,
            refused: Some(("ETHTOOL_GRSSH", libc::EOPNOTSUPP)),
        };
        assert_eq!(
            lo.to_string(),
            "no RSS on lo (loopback and veth have no RSS)"
        );
        let other = NoRss {
            interface: "eth0".into(),
            kind: DeviceKind::Other(Some("virtio_net".into())),
            channels: None,
            refused: Some(("ETHTOOL_GRSSH", libc::EOPNOTSUPP)),
        };
        let text = other.to_string();
        assert!(
            text.contains("driver virtio_net") && text.contains("errno 95"),
            "{text}"
        );
    }
}
