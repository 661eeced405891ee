//! Which interface carries the traffic to a destination, and which local address the kernel
//! uses as the source.
//!
//! Method: `connect(2)` a UDP socket to the destination (no packet is sent; the kernel only
//! resolves the route and picks a source address), read the source back with
//! `getsockname(2)`, and find the interface that holds that address with `getifaddrs(3)`.
//! Loopback destinations (127.0.0.0/8, ::1) and destinations that are one of this host's own
//! addresses travel over `lo` whatever interface holds the address, as the kernel's local
//! routing table sends them there.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use super::SteeringError;

/// The loopback interface's name on Linux.
pub const LOOPBACK_INTERFACE: &str = "lo";

/// The most interface addresses looked at (bounds the walk of the `getifaddrs` list).
const INTERFACE_ADDRESSES_MAX: usize = 4096;

/// The route to a destination, as far as steering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The outgoing interface.
    pub interface: String,
    /// The local address the kernel uses as source.
    pub local_ip: IpAddr,
}

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The interface name.
    pub interface: String,
    /// The address.
    pub ip: IpAddr,
}

/// Picks the interface for traffic to `destination` sent from `source` (the address the
/// kernel chose), given the host's interface addresses. Pure; see the module documentation.
pub fn pick_interface(
    destination: IpAddr,
    source: IpAddr,
    addresses: &[InterfaceAddress],
) -> Option<String> {
    if destination.is_loopback() || addresses.iter().any(|a| a.ip == destination) {
        return Some(LOOPBACK_INTERFACE.to_string());
    }
    addresses
        .iter()
        .find(|a| a.ip == source)
        .map(|a| a.interface.clone())
}

/// The host's interface addresses (IPv4 and IPv6), from `getifaddrs(3)`.
pub fn interface_addresses() -> Result<Vec<InterfaceAddress>, SteeringError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into the pointer we pass; checked below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(SteeringError::Socket {
            op: "getifaddrs",
            source: io::Error::last_os_error(),
        });
    }
    let mut out = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() && out.len() < INTERFACE_ADDRESSES_MAX {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a socket address whose family field is always valid.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: the family says this is a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this is a sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        out.push(InterfaceAddress {
            interface: name.to_string_lossy().into_owned(),
            ip,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once; no reference into the
    // list outlives this point (names were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The local source address the kernel would use towards `destination`.
pub fn source_address_for(destination: SocketAddr) -> Result<IpAddr, SteeringError> {
    let unspecified: SocketAddr = match destination {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let route_error = |source| SteeringError::Route {
        destination: destination.ip(),
        source,
    };
    let socket = UdpSocket::bind(unspecified).map_err(route_error)?;
    // The port does not matter for the route; a zero port is refused by connect.
    let mut probe = destination;
    if probe.port() == 0 {
        probe.set_port(9);
    }
    socket.connect(probe).map_err(route_error)?;
    Ok(socket.local_addr().map_err(route_error)?.ip())
}

/// The interface and source address for traffic to `destination`.
pub fn route_to(destination: SocketAddr) -> Result<Route, SteeringError> {
    let local_ip = source_address_for(destination)?;
    let addresses = interface_addresses()?;
    let interface = pick_interface(destination.ip(), local_ip, &addresses).ok_or(
        SteeringError::NoInterface {
            destination: destination.ip(),
            local_ip,
        },
    )?;
    Ok(Route {
        interface,
        local_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Vec<InterfaceAddress> {
        [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.0.2.5"),
            ("eth0", "2001:db8::5"),
            ("eth1", "198.51.100.9"),
        ]
        .iter()
        .map(|(interface, ip)| InterfaceAddress {
            interface: interface.to_string(),
            ip: ip.parse().unwrap(),
        })
        .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_destinations_use_lo() {
        let a = addresses();
        assert_eq!(
            pick_interface(ip("127.0.0.1"), ip("127.0.0.1"), &a).as_deref(),
            Some("lo")
        );
        assert_eq!(
            pick_interface(ip("127.9.8.7"), ip("127.0.0.1"), &a).as_deref(),
            Some("lo")
        );
        assert_eq!(
            pick_interface(ip("::1"), ip("::1"), &a).as_deref(),
            Some("lo")
        );
    }

    #[test]
    fn own_addresses_use_lo_even_when_an_ethernet_holds_them() {
        let a = addresses();
        assert_eq!(
            pick_interface(ip("192.0.2.5"), ip("192.0.2.5"), &a).as_deref(),
            Some("lo")
        );
    }

    #[test]
    fn remote_destinations_use_the_interface_of_the_source() {
        let a = addresses();
        assert_eq!(
            pick_interface(ip("192.0.2.77"), ip("192.0.2.5"), &a).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            pick_interface(ip("203.0.113.1"), ip("198.51.100.9"), &a).as_deref(),
            Some("eth1")
        );
        assert_eq!(
            pick_interface(ip("2001:db8::99"), ip("2001:db8::5"), &a).as_deref(),
            Some("eth0")
        );
        assert_eq!(pick_interface(ip("203.0.113.1"), ip("10.9.9.9"), &a), None);
    }

    #[test]
    fn the_kernel_routes_loopback_over_lo() {
        let route = route_to("127.0.0.1:3260".parse().unwrap()).unwrap();
        assert_eq!(route.interface, "lo");
        assert_eq!(route.local_ip, ip("127.0.0.1"));
        let addresses = interface_addresses().unwrap();
        assert!(addresses
            .iter()
            .any(|a| a.interface == "lo" && a.ip == ip("127.0.0.1")));
    }
}
