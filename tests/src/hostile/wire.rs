//! The attacker's side of the wire: a TCP connection from a chosen loopback source
//! address, a login driven by datapath's own sans-IO initiator session (so the login is a
//! fair one and the hostility starts only after it), and sends that give up at a deadline
//! instead of blocking on a peer that stopped reading.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use datapath::client::{random_bytes, random_isid};
use datapath::pdu::{self, Header, Limits};
use datapath::session::{Event, Session, SessionConfig};

/// Initiator name every attack logs in with, so the gateway's log names the culprit.
pub const ATTACKER_NAME: &str = "iqn.2026-11.invalid.system-tests:attacker";

/// How long one blocking socket call may wait before the caller looks at its deadline.
pub(crate) const SOCKET_STEP: Duration = Duration::from_millis(100);

/// Most bytes of one login exchange we accept from the target before giving up.
const MAX_LOGIN_BYTES: usize = 1 << 20;

/// Opens a TCP connection to `portal` from `source` (any port), within `timeout`.
///
/// std's `TcpStream::connect` cannot bind first, and the source address is the point: a
/// flood from 127.0.0.2 must not count against a legitimate client on 127.0.0.1.
pub fn connect_from(
    source: Ipv4Addr,
    portal: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    // SAFETY: socket(2) takes integers; the descriptor it returns is owned at once below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let local = sockaddr_in(SocketAddrV4::new(source, 0));
    // SAFETY: `local` is a valid sockaddr_in and its size is passed with it.
    if unsafe { libc::bind(fd, sockaddr_ptr(&local), sockaddr_len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sockaddr_in(portal);
    // SAFETY: as for bind.
    if unsafe { libc::connect(fd, sockaddr_ptr(&remote), sockaddr_len()) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
        wait_connected(fd, timeout)?;
    }
    let stream = TcpStream::from(owned);
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Waits for a non-blocking connect to finish and reports its outcome (SO_ERROR).
fn wait_connected(fd: i32, timeout: Duration) -> io::Result<()> {
    let mut poll_fd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, count 1.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    if ready == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `error` and `len` are valid for writes of the sizes given.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(())
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_ptr(addr: &libc::sockaddr_in) -> *const libc::sockaddr {
    (addr as *const libc::sockaddr_in).cast()
}

fn sockaddr_len() -> libc::socklen_t {
    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
}

/// The IPv4 portal of `portal`: the attacks bind an IPv4 source, so they need an IPv4 peer.
pub fn ipv4_portal(portal: SocketAddr) -> io::Result<SocketAddrV4> {
    match portal {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the attacks bind an IPv4 source address: give an IPv4 portal",
        )),
    }
}

/// A logged-in connection the attacker now writes raw PDUs on, with the numbers the
/// login left: the next CmdSN, the StatSN we acknowledge, the window the target granted.
pub struct RawSession {
    pub stream: TcpStream,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub max_cmd_sn: u32,
    next_itt: u32,
}

impl RawSession {
    /// Connects from `source` and logs in (a discovery session when `target` is `None`),
    /// offering a MaxRecvDataSegmentLength of `max_recv_bytes` so the target's answers
    /// (NOP-In echoes, Data-In) come as large as it will send them.
    pub fn login(
        source: Ipv4Addr,
        portal: SocketAddrV4,
        target: Option<&str>,
        max_recv_bytes: u32,
        timeout: Duration,
    ) -> Result<RawSession, String> {
        let deadline = Instant::now() + timeout;
        let mut stream = connect_from(source, portal, timeout)
            .map_err(|e| format!("connect {source} -> {portal}: {e}"))?;
        stream
            .set_read_timeout(Some(SOCKET_STEP))
            .and_then(|()| stream.set_write_timeout(Some(SOCKET_STEP)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        let mut config = SessionConfig::new(ATTACKER_NAME, target.map(str::to_owned));
        config.isid = random_isid();
        config.chap_challenge = random_bytes(16);
        config.offer.max_recv_data_segment_length = max_recv_bytes;
        config.login_timeout = timeout;
        // The attack never reads after login: no pings of our own that would need answers.
        config.nop_interval = Duration::ZERO;
        let mut session = Session::new(config, Instant::now());
        let mut received = Vec::new();
        let mut last_response = None;
        loop {
            while let Some(transmit) = session.poll_transmit() {
                let mut out = Vec::new();
                pdu::encode_pdu(
                    &transmit.header,
                    session.transmit_data(&transmit),
                    session.digests(),
                    &mut out,
                )
                .map_err(|e| format!("encode login PDU: {e}"))?;
                let sent = send_by(&mut stream, &out, &|| Instant::now() >= deadline)
                    .map_err(|e| format!("send login PDU: {e}"))?;
                if sent != Sent::All {
                    return Err(format!("login PDU not taken within {timeout:?}"));
                }
            }
            while let Some(event) = session.poll_event() {
                match event {
                    Event::LoginComplete => {
                        let Some(response) = last_response else {
                            return Err("login completed without a Login Response".into());
                        };
                        return Ok(RawSession::after_login(stream, &response));
                    }
                    Event::LoginFailed { reason, .. } => return Err(format!("login: {reason}")),
                    Event::ConnectionFailed(error) => return Err(format!("login: {error}")),
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("login not finished within {timeout:?}"));
            }
            let limits = Limits {
                max_data_segment_length: session.max_recv_data_segment_length(),
                ..Limits::default()
            };
            match pdu::decode_pdu(&received, session.digests(), &limits) {
                Ok(Some(decoded)) => {
                    if let Header::LoginResponse(response) = &decoded.header {
                        last_response = Some(response.clone());
                    }
                    let data = received[decoded.data.clone()].to_vec();
                    received.drain(..decoded.consumed);
                    session
                        .handle_pdu(Instant::now(), decoded.header, &data)
                        .map_err(|e| format!("login: {e}"))?;
                }
                Ok(None) => read_some(&mut stream, &mut received)?,
                Err(e) => return Err(format!("login: undecodable answer: {e}")),
            }
        }
    }

    fn after_login(stream: TcpStream, response: &pdu::LoginResponse) -> RawSession {
        RawSession {
            stream,
            // The leading login's CmdSN is not used up (the request is immediate): the
            // first command carries the ExpCmdSN the target answered with.
            cmd_sn: response.exp_cmd_sn,
            exp_stat_sn: response.stat_sn.wrapping_add(1),
            max_cmd_sn: response.max_cmd_sn,
            next_itt: 1,
        }
    }

    /// A fresh Initiator Task Tag (never the reserved 0xffffffff).
    pub fn next_itt(&mut self) -> u32 {
        let itt = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1) % 0xffff_fffe;
        itt
    }
}

/// Reads what is there (or waits up to [`SOCKET_STEP`]) into `received`.
fn read_some(stream: &mut TcpStream, received: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) => Err("the target closed the connection during login".into()),
        Ok(n) if received.len() + n <= MAX_LOGIN_BYTES => {
            received.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Ok(_) => Err(format!("login answers over {MAX_LOGIN_BYTES} bytes")),
        Err(e) if is_timeout(&e) => Ok(()),
        Err(e) => Err(format!("read during login: {e}")),
    }
}

/// Whether a socket error only means "not yet" (a read or write timeout ran out).
pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// What became of bytes handed to [`send_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    All,
    /// The caller gave up first (the peer stopped reading); `sent` bytes went out.
    Partly {
        sent: usize,
    },
}

/// Writes `bytes` on a socket with a write timeout, giving up once `give_up` says so: a
/// target that stops reading must not hold the attacker past its time bound.
pub fn send_by(
    stream: &mut TcpStream,
    bytes: &[u8],
    give_up: &dyn Fn() -> bool,
) -> io::Result<Sent> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if is_timeout(&e) => {
                if give_up() {
                    return Ok(Sent::Partly { sent });
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Sent::All)
}
