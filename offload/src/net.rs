//! TCP for the models: `std::net::TcpStream`, connected with an optional local address.
//!
//! Why std TCP rather than datapath's io_uring `TcpConnection`: an adapter's engines run
//! full duplex on two threads (one sends what the host submits, one receives what the target
//! sends), and a `TcpConnection` is one ring driven by one thread, `!Send`, one call at a
//! time. A blocking std stream split with `try_clone` gives each engine its own direction,
//! which is what an adapter's transmit and receive engines are.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use datapath::transport::sockaddr::RawSockAddr;

/// Connects to `portal` within `timeout`, first binding to `local` when given.
pub fn connect(
    portal: SocketAddr,
    local: Option<SocketAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = match local {
        None => TcpStream::connect_timeout(&portal, timeout)?,
        Some(local) => connect_bound(portal, local, timeout)?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn connect_bound(
    portal: SocketAddr,
    local: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let peer = RawSockAddr::new(&portal);
    let local = RawSockAddr::new(&local);
    // SAFETY: socket takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(peer.family(), libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket this function owns; the stream closes it on any error.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // Linux bounds a blocking connect by SO_SNDTIMEO.
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    // SAFETY: the address outlives the call; its length is the structure's.
    if unsafe { libc::bind(fd, local.as_ptr(), local.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::connect(fd, peer.as_ptr(), peer.len()) } != 0 {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EINPROGRESS) {
            io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
        } else {
            error
        });
    }
    stream.set_write_timeout(None)?;
    Ok(stream)
}
