//! TCP for the models: `std::net::TcpStream`, connected with an optional local address.
//!
//! Why std TCP rather than datapath's io_uring `TcpConnection`: an adapter's engines run
//! full duplex on two threads (one sends what the host submits, one receives what the target
//! sends), and a `TcpConnection` is one ring driven by one thread, `!Send`, one call at a
//! time. A blocking std stream split with `try_clone` gives each engine its own direction,
//! which is what an adapter's transmit and receive engines are.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, FromRawFd};
use std::time::{Duration, Instant};

use datapath::transport::reach::{Reach, ReachProbe};
use datapath::transport::sockaddr::RawSockAddr;
use datapath::transport::tcp::set_user_timeout_fd;

/// How often an interruptible connect looks at its stop condition.
const CONNECT_POLL: Duration = Duration::from_millis(20);

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

/// Sets `TCP_USER_TIMEOUT` (the host path's liveness settings) on `stream`, when given.
pub fn set_user_timeout(stream: &TcpStream, timeout: Option<Duration>) -> io::Result<()> {
    match timeout {
        Some(timeout) => set_user_timeout_fd(stream.as_fd(), timeout),
        None => Ok(()),
    }
}

/// Connects to `portal` within `timeout` without blocking past `stopping()` turning true
/// (looked at every 20 ms): a processor that connects so can be stopped (joined) at once,
/// even while a cut link leaves its SYN unanswered.
pub fn connect_interruptible(
    portal: SocketAddr,
    timeout: Duration,
    stopping: impl Fn() -> bool,
) -> io::Result<TcpStream> {
    let probe = ReachProbe::start(portal, timeout)?;
    loop {
        match probe.poll(Instant::now()) {
            Reach::Reachable => break,
            Reach::Unreachable(error) => return Err(error),
            Reach::Pending if stopping() => {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "stopped while connecting",
                ))
            }
            Reach::Pending => std::thread::sleep(CONNECT_POLL),
        }
    }
    stream_of(probe.into_socket(), None)
}

/// The blocking stream of a socket a [`ReachProbe`] connected, with `TCP_NODELAY` and
/// `TCP_USER_TIMEOUT` (when given) set.
pub fn stream_of(
    socket: std::os::fd::OwnedFd,
    tcp_user_timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    set_user_timeout(&stream, tcp_user_timeout)?;
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
