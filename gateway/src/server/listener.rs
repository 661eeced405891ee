//! Listening sockets for the portals, with `SO_REUSEADDR`, and a short wait for a port
//! that a gateway killed a moment ago still holds.
//!
//! A gateway restarted right after it died (`kill -9`, a crash) met two leftovers:
//! - its connections, in `FIN_WAIT`/`TIME_WAIT`. `std::net::TcpListener::bind` leaves
//!   `SO_REUSEADDR` off, so they blocked the port for a minute; with the option they do not.
//! - its listening socket itself: the dead process's io_uring holds it through the pending
//!   accepts until the kernel's asynchronous ring teardown drops them, some milliseconds
//!   after the process is gone. No socket option shares a port with another *listener*
//!   (`SO_REUSEPORT` would, but would also let two live gateways share one port without a
//!   word), so [`bind_portal`] retries for up to [`BUSY_PORT_WAIT`] and says why.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Connections the kernel queues before the event loops accept them.
const LISTEN_BACKLOG: i32 = 1024;
/// How long a busy port is retried before the bind fails: ring teardown after `kill -9`
/// took tens of milliseconds on a loaded 2-core machine.
const BUSY_PORT_WAIT: Duration = Duration::from_secs(3);
const BUSY_PORT_RETRY: Duration = Duration::from_millis(20);

/// [`bind_reusable`], retrying `EADDRINUSE` for up to [`BUSY_PORT_WAIT`] (see the module
/// docs), logging the wait.
pub(super) fn bind_portal(addr: SocketAddr) -> io::Result<TcpListener> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        match bind_reusable(addr) {
            Err(error)
                if error.raw_os_error() == Some(libc::EADDRINUSE)
                    && started.elapsed() < BUSY_PORT_WAIT =>
            {
                if !logged {
                    tracing::warn!(
                        portal = %addr,
                        wait_ms = BUSY_PORT_WAIT.as_millis() as u64,
                        "portal in use, retrying: a gateway stopped a moment ago may still \
                         be closing it"
                    );
                    logged = true;
                }
                std::thread::sleep(BUSY_PORT_RETRY);
            }
            Ok(listener) => {
                if logged {
                    tracing::info!(
                        portal = %addr,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "portal free again"
                    );
                }
                return Ok(listener);
            }
            Err(error) => return Err(error),
        }
    }
}

/// A listening TCP socket on `addr` with `SO_REUSEADDR` set.
pub(super) fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes plain integers; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let (storage, len) = socket_address(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for `family`, alive for the call.
    let rc = unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on our descriptor; plain integers.
    if unsafe { libc::listen(fd, LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(socket))
}

/// What to tell an operator after a bind error: `" (why)"`, or nothing.
pub(super) fn bind_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            " (another process listens on this address: waited 3 s for it to close; \
             connections left over from an earlier run do not block it, SO_REUSEADDR is set; \
             stop that process or choose another portal)"
        }
        Some(libc::EACCES) => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        Some(libc::EADDRNOTAVAIL) => " (no interface of this machine has this address)",
        _ => "",
    }
}

fn socket_address(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn a_port_with_a_leftover_connection_binds_again_but_a_listened_one_does_not() {
        let listener = bind_reusable("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // The listener is taken: a second one is refused with the reason.
        let started = Instant::now();
        let error = bind_portal(addr).unwrap_err();
        assert!(started.elapsed() >= BUSY_PORT_WAIT);
        assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
        assert!(bind_hint(&error).contains("another process"));
        // The server side closes first (as when the gateway is killed): its end lingers
        // in FIN_WAIT, which std's bind would trip over.
        drop(listener);
        drop(accepted);
        let again = bind_reusable(addr).expect("rebinds despite the leftover connection");
        assert_eq!(again.local_addr().unwrap(), addr);
        drop(client);
        let v6 = bind_reusable("[::1]:0".parse().unwrap());
        if let Ok(v6) = v6 {
            assert!(v6.local_addr().unwrap().is_ipv6());
        }
    }
}
