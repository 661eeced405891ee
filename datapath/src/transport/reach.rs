//! Whether a portal answers, found without blocking: a non-blocking TCP connect polled
//! by an event loop (a multipath shard rejoining a lost path). A cut link or a dead host
//! answers a SYN with nothing, so a blocking connect would hold the loop, and every other
//! path's I/O with it, for the whole connect timeout; the loop instead asks each turn and
//! logs in only once the portal has accepted a connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::sockaddr::RawSockAddr;

/// What [`ReachProbe::poll`] found.
#[derive(Debug)]
pub enum Reach {
    /// Still connecting.
    Pending,
    /// The portal accepted a TCP connection (closed again at once).
    Reachable,
    /// It refused, failed or did not answer in time.
    Unreachable(io::Error),
}

/// One non-blocking connect in progress.
#[derive(Debug)]
pub struct ReachProbe {
    socket: OwnedFd,
    deadline: Instant,
}

impl ReachProbe {
    /// Starts connecting to `portal`; gives up after `timeout`.
    pub fn start(portal: SocketAddr, timeout: Duration) -> io::Result<ReachProbe> {
        let raw = RawSockAddr::new(&portal);
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                raw.family(),
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a descriptor we just opened and own alone.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `raw` outlives the call and `len` is its size.
        let rc = unsafe { libc::connect(fd, raw.as_ptr(), raw.len()) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(error);
            }
        }
        Ok(ReachProbe {
            socket,
            deadline: Instant::now() + timeout,
        })
    }

    /// Whether the connect finished, without blocking.
    pub fn poll(&self, now: Instant) -> Reach {
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc < 0 {
            return Reach::Unreachable(io::Error::last_os_error());
        }
        if rc == 0 {
            return if now >= self.deadline {
                Reach::Unreachable(io::Error::from(io::ErrorKind::TimedOut))
            } else {
                Reach::Pending
            };
        }
        let mut error: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `error` and `len` are valid for writes of their sizes.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut error as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Reach::Unreachable(io::Error::last_os_error());
        }
        if error != 0 {
            return Reach::Unreachable(io::Error::from_raw_os_error(error));
        }
        Reach::Reachable
    }

    /// When the probe gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The connected socket, once [`ReachProbe::poll`] said [`Reach::Reachable`]
    /// (non-blocking still): a caller that must not block on a connect (an adapter
    /// model's processor watching its stop flag) connects so and keeps the socket.
    pub fn into_socket(self) -> OwnedFd {
        self.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn settle(probe: &ReachProbe) -> Reach {
        // Bounded: loopback answers within milliseconds; the probe's own deadline ends it.
        loop {
            match probe.poll(Instant::now()) {
                Reach::Pending => std::thread::sleep(Duration::from_millis(1)),
                other => return other,
            }
        }
    }

    #[test]
    fn a_listening_portal_is_reachable_and_a_closed_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let probe = ReachProbe::start(open, Duration::from_secs(5)).unwrap();
        assert!(matches!(settle(&probe), Reach::Reachable));
        drop(listener);
        let probe = ReachProbe::start(open, Duration::from_secs(5)).unwrap();
        assert!(matches!(settle(&probe), Reach::Unreachable(_)));
    }

    #[test]
    fn a_silent_portal_times_out_without_blocking() {
        // TEST-NET-1 (RFC 5737) is never routed: the SYN goes nowhere, or the route is
        // missing and the connect fails at once; either way the probe never blocks.
        let started = Instant::now();
        let probe =
            match ReachProbe::start("192.0.2.1:3260".parse().unwrap(), Duration::from_millis(50)) {
                Ok(probe) => probe,
                Err(_) => return,
            };
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(matches!(settle(&probe), Reach::Unreachable(_)));
    }
}
