//! Conversion between `std::net::SocketAddr` and the C socket address structures that
//! `IORING_OP_CONNECT` and `getsockname(2)` use (POSIX `<netinet/in.h>`: ports and IPv4
//! addresses in network byte order; IPv6 flow info and scope id passed through as std does).

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address in the C layout the kernel reads, sized for its family.
#[derive(Clone, Copy)]
pub enum RawSockAddr {
    /// `AF_INET`.
    V4(libc::sockaddr_in),
    /// `AF_INET6`.
    V6(libc::sockaddr_in6),
}

impl RawSockAddr {
    /// Builds the C form of `addr`.
    pub fn new(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(v4) => RawSockAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    // The octets are already in network order; keep their memory layout.
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(v6) => RawSockAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            }),
        }
    }

    /// The address family, for `socket(2)`.
    pub fn family(&self) -> libc::c_int {
        match self {
            RawSockAddr::V4(_) => libc::AF_INET,
            RawSockAddr::V6(_) => libc::AF_INET6,
        }
    }

    /// A pointer to the C structure, valid while `self` is neither moved nor dropped.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        match self {
            RawSockAddr::V4(sin) => (sin as *const libc::sockaddr_in).cast(),
            RawSockAddr::V6(sin6) => (sin6 as *const libc::sockaddr_in6).cast(),
        }
    }

    /// The length of the C structure in bytes.
    pub fn len(&self) -> libc::socklen_t {
        let bytes = match self {
            RawSockAddr::V4(_) => mem::size_of::<libc::sockaddr_in>(),
            RawSockAddr::V6(_) => mem::size_of::<libc::sockaddr_in6>(),
        };
        // Both sizes are small constants (16 and 28 bytes).
        bytes as libc::socklen_t
    }

    /// Always false: a socket address has a fixed, non-zero size (here to satisfy `len`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The address as std knows it.
    pub fn to_socket_addr(&self) -> SocketAddr {
        match self {
            RawSockAddr::V4(sin) => SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )),
            RawSockAddr::V6(sin6) => SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )),
        }
    }

    /// Reads the address the kernel wrote into `storage` (`len` bytes of it), or `None` for a
    /// family other than IPv4 and IPv6 or a length too short for the family.
    pub fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<Self> {
        let len = len as usize;
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: sockaddr_storage is at least as large and as aligned as every socket
                // address type, the family says the kernel wrote a sockaddr_in there, and the
                // length check shows all of it was written. The read copies it out.
                let sin = unsafe {
                    std::ptr::read(
                        (storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    )
                };
                Some(RawSockAddr::V4(sin))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe {
                    std::ptr::read(
                        (storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    )
                };
                Some(RawSockAddr::V6(sin6))
            }
            _ => None,
        }
    }
}

/// The socket address of a redirect's `TargetAddress`: its literal, else the first address
/// the system resolver gives for its host name (blocking, like the connect that follows).
pub fn resolve_target_address(
    address: &crate::session::redirect::TargetAddress,
) -> Result<std::net::SocketAddr, crate::session::redirect::RedirectError> {
    use std::net::ToSocketAddrs;
    if let Some(literal) = address.literal() {
        return Ok(literal);
    }
    let unresolved = |reason: String| crate::session::redirect::RedirectError::Unresolved {
        address: address.host_port(),
        reason,
    };
    address
        .host_port()
        .to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
        .next()
        .ok_or_else(|| unresolved("no address".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_round_trips_in_network_order() {
        let addr: SocketAddr = "192.0.2.7:3260".parse().unwrap();
        let raw = RawSockAddr::new(&addr);
        let RawSockAddr::V4(sin) = raw else {
            panic!("expected IPv4");
        };
        assert_eq!(sin.sin_port.to_ne_bytes(), [0x0c, 0xbc]);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [192, 0, 2, 7]);
        assert_eq!(raw.family(), libc::AF_INET);
        assert_eq!(raw.len() as usize, mem::size_of::<libc::sockaddr_in>());
        assert_eq!(raw.to_socket_addr(), addr);
    }

    #[test]
    fn ipv6_round_trips_with_scope() {
        let addr = SocketAddr::V6(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 860, 0, 3));
        let raw = RawSockAddr::new(&addr);
        assert_eq!(raw.family(), libc::AF_INET6);
        assert_eq!(raw.len() as usize, mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(raw.to_socket_addr(), addr);
    }

    #[test]
    fn storage_with_unknown_family_or_short_length_is_refused() {
        // SAFETY: sockaddr_storage is plain bytes; all zeroes is a valid value (family 0).
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        assert!(RawSockAddr::from_storage(&storage, 128).is_none());
        storage.ss_family = libc::AF_INET as libc::sa_family_t;
        assert!(RawSockAddr::from_storage(&storage, 4).is_none());
        assert!(RawSockAddr::from_storage(&storage, 16).is_some());
    }
}
