//! The io_uring TCP transport against std listeners on loopback (127.0.0.1 and ::1 only).
//!
//! The tests take one lock so they run one at a time: the descriptor-leak test counts the
//! process's open descriptors, and the machine is small. Every server thread reads with a
//! timeout and is joined, so no test can hang.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use datapath::transport::{RingConfig, TcpConnection, TransportError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack allowed past a timeout on a busy two-core machine.
const SLACK: Duration = Duration::from_millis(300);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn listener_v4() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn accept_with_timeouts(listener: &TcpListener) -> TcpStream {
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Serves one connection: echoes one byte, then reports whether it saw an orderly end of
/// stream and the client address it saw.
fn spawn_one_byte_echo(listener: TcpListener) -> thread::JoinHandle<(bool, SocketAddr)> {
    thread::spawn(move || {
        let mut stream = accept_with_timeouts(&listener);
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        stream.write_all(&byte).unwrap();
        let mut rest = [0u8; 16];
        let saw_eof = matches!(stream.read(&mut rest), Ok(0));
        (saw_eof, stream.peer_addr().unwrap())
    })
}

fn echo_one_byte_through(
    mut connection: TcpConnection,
    server: thread::JoinHandle<(bool, SocketAddr)>,
) {
    assert!(connection.nodelay().unwrap(), "TCP_NODELAY must be set");
    connection.send_all(&[&[0x5a]], IO_TIMEOUT).unwrap();
    let mut reply = [0u8; 8];
    let n = connection.recv(&mut reply, IO_TIMEOUT).unwrap();
    assert_eq!(&reply[..n], &[0x5a]);
    let local = connection.local_addr().unwrap();
    connection.shutdown().unwrap();
    let (saw_eof, client_seen_by_server) = server.join().unwrap();
    assert!(saw_eof, "the server must read end of stream after shutdown");
    assert_eq!(local, client_seen_by_server);
}

#[test]
fn one_byte_echo_over_ipv4() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let server = spawn_one_byte_echo(listener);
    let connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    assert_eq!(connection.peer_addr(), addr);
    let flags = connection.ring_flags_description();
    eprintln!("default ring flags: {flags}");
    assert!(
        flags == "single_issuer+defer_taskrun" || flags.starts_with("plain"),
        "{flags}"
    );
    echo_one_byte_through(connection, server);
}

#[test]
fn one_byte_echo_over_ipv6() {
    let _serial = serial();
    let Ok(listener) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let addr = listener.local_addr().unwrap();
    let server = spawn_one_byte_echo(listener);
    let connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    assert!(connection.local_addr().unwrap().is_ipv6());
    echo_one_byte_through(connection, server);
}

#[test]
fn sqpoll_ring_or_its_fallback_carries_an_echo() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let server = spawn_one_byte_echo(listener);
    let config = RingConfig {
        sqpoll: true,
        ..RingConfig::default()
    };
    let connection = TcpConnection::connect_with_config(addr, CONNECT_TIMEOUT, &config).unwrap();
    let flags = connection.ring_flags_description();
    assert!(flags == "sqpoll" || flags.starts_with("plain"), "{flags}");
    echo_one_byte_through(connection, server);
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// Sends `payload` split at `cuts` through one `send_all`, with the server starting to read
/// only after `reader_delay`, and checks the server received exactly the payload.
fn gather_send_arrives_intact(payload: &[u8], cuts: [usize; 2], reader_delay: Duration) {
    let (listener, addr) = listener_v4();
    let server = thread::spawn(move || {
        let mut stream = accept_with_timeouts(&listener);
        thread::sleep(reader_delay);
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        received
    });
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let (head, rest) = payload.split_at(cuts[0]);
    let (middle, tail) = rest.split_at(cuts[1] - cuts[0]);
    connection
        .send_all(&[head, middle, tail], IO_TIMEOUT)
        .unwrap();
    connection.shutdown().unwrap();
    let received = server.join().unwrap();
    assert_eq!(received.len(), payload.len());
    assert!(received == payload, "payload corrupted in transit");
}

#[test]
fn one_mebibyte_gather_send_over_three_iovecs_arrives_intact() {
    let _serial = serial();
    let payload = pattern(1 << 20);
    gather_send_arrives_intact(&payload, [1, 300_001], Duration::ZERO);
}

#[test]
fn send_larger_than_socket_buffers_waits_for_a_slow_reader() {
    let _serial = serial();
    // 16 MiB exceeds loopback send plus receive buffers, so the send must wait for the
    // reader (and may complete short and be resumed).
    let payload = pattern(16 << 20);
    gather_send_arrives_intact(&payload, [4096, 9 << 20], Duration::from_millis(100));
}

#[test]
fn closed_port_refuses() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    drop(listener);
    match TcpConnection::connect(addr, CONNECT_TIMEOUT) {
        Err(TransportError::ConnectionRefused(refused)) => assert_eq!(refused, addr),
        other => panic!("expected ConnectionRefused, got {other:?}"),
    }
}

#[test]
fn recv_on_a_silent_peer_times_out_and_the_connection_stays_usable() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();

    let timeout = Duration::from_millis(200);
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let result = connection.recv(&mut buf, timeout);
    let elapsed = started.elapsed();
    match result {
        Err(TransportError::TimedOut { op: "recv", after }) => assert_eq!(after, timeout),
        other => panic!("expected a recv timeout, got {other:?}"),
    }
    assert!(elapsed >= timeout, "returned early after {elapsed:?}");
    assert!(elapsed < timeout + SLACK, "returned late after {elapsed:?}");

    // A plain recv timeout moves no bytes: the next recv sees the next byte sent.
    server_side.write_all(&[7]).unwrap();
    assert_eq!(connection.recv(&mut buf, IO_TIMEOUT).unwrap(), 1);
    assert_eq!(buf[0], 7);
    drop(connection);
}

#[test]
fn recv_exact_timeout_is_bounded_and_breaks_the_stream() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    // Half of what is asked for arrives; the other half never does.
    server_side.write_all(&[1; 24]).unwrap();

    let timeout = Duration::from_millis(200);
    let mut buf = [0u8; 48];
    let started = Instant::now();
    let result = connection.recv_exact(&mut buf, timeout);
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(TransportError::TimedOut { op: "recv", .. })),
        "{result:?}"
    );
    assert!(elapsed < timeout + SLACK, "returned late after {elapsed:?}");
    assert!(matches!(
        connection.recv(&mut buf, IO_TIMEOUT),
        Err(TransportError::StreamBroken { failed_op: "recv" })
    ));
    assert!(matches!(
        connection.send_all(&[&[0]], IO_TIMEOUT),
        Err(TransportError::StreamBroken { .. })
    ));
}

#[test]
fn peer_close_reads_as_zero_and_as_closed_mid_message() {
    let _serial = serial();
    let (listener, addr) = listener_v4();

    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    drop(listener.accept().unwrap());
    let mut buf = [0u8; 16];
    assert_eq!(connection.recv(&mut buf, IO_TIMEOUT).unwrap(), 0);

    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    {
        let (mut server_side, _) = listener.accept().unwrap();
        server_side.write_all(&[9, 9, 9]).unwrap();
    }
    let mut message = [0u8; 10];
    assert!(matches!(
        connection.recv_exact(&mut message, IO_TIMEOUT),
        Err(TransportError::Closed)
    ));
    assert_eq!(&message[..3], &[9, 9, 9]);
}

#[test]
fn recv_exact_assembles_a_message_sent_in_pieces() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let server = thread::spawn(move || {
        let mut stream = accept_with_timeouts(&listener);
        for piece in [&[1u8, 2][..], &[3, 4, 5], &[6]] {
            stream.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    });
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let mut message = [0u8; 6];
    connection.recv_exact(&mut message, IO_TIMEOUT).unwrap();
    assert_eq!(message, [1, 2, 3, 4, 5, 6]);
    server.join().unwrap();
}

#[test]
fn shutdown_is_idempotent_and_ends_the_data_path() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    connection.shutdown().unwrap();
    connection.shutdown().unwrap();
    assert!(matches!(
        connection.send_all(&[&[1]], IO_TIMEOUT),
        Err(TransportError::AlreadyShutDown { .. })
    ));
    assert!(matches!(
        connection.local_addr(),
        Err(TransportError::AlreadyShutDown { .. })
    ));
    drop(listener);
}

#[test]
fn connect_to_a_listener_with_a_full_backlog_times_out() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    // Linux lets listen(2) be called again to change the backlog. With a backlog of 0 the
    // accept queue holds one connection; the next SYN is dropped and the connect hangs.
    // SAFETY: listen(2) on a descriptor the listener owns, no pointers.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let _queued = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).unwrap();

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = TcpConnection::connect(addr, timeout);
    let elapsed = started.elapsed();
    match result {
        Err(TransportError::TimedOut {
            op: "connect",
            after,
        }) => assert_eq!(after, timeout),
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(elapsed >= timeout, "returned early after {elapsed:?}");
    assert!(elapsed < timeout + SLACK, "returned late after {elapsed:?}");
}

fn open_descriptor_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn connections_release_every_descriptor() {
    let _serial = serial();
    let before = open_descriptor_count();
    {
        let (listener, addr) = listener_v4();
        // Dropped while open, after a timeout, after shutdown, and a refused attempt.
        let plain = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
        let mut timed_out = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
        let mut buf = [0u8; 4];
        assert!(timed_out.recv(&mut buf, Duration::from_millis(20)).is_err());
        let mut shut = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
        shut.shutdown().unwrap();
        drop((plain, timed_out, shut));
        drop(listener);
        assert!(TcpConnection::connect(addr, CONNECT_TIMEOUT).is_err());
    }
    assert_eq!(open_descriptor_count(), before);
}

#[test]
fn send_to_a_peer_that_never_reads_times_out_and_breaks_the_stream() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let (_server_side, _) = listener.accept().unwrap();
    // Far more than loopback socket buffers hold, so the send stalls part-way.
    let payload = vec![0xa5u8; 32 << 20];
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let result = connection.send_all(&[&payload], timeout);
    let elapsed = started.elapsed();
    match result {
        Err(TransportError::TimedOut { op: "send", after }) => assert_eq!(after, timeout),
        other => panic!("expected a send timeout, got {other:?}"),
    }
    assert!(elapsed < timeout + SLACK, "returned late after {elapsed:?}");
    assert!(matches!(
        connection.send_all(&[&[0]], IO_TIMEOUT),
        Err(TransportError::StreamBroken { failed_op: "send" })
    ));
}

#[test]
fn zero_timeout_takes_queued_bytes_and_never_waits() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    let mut buf = [0u8; 8];

    let started = Instant::now();
    assert!(matches!(
        connection.recv(&mut buf, Duration::ZERO),
        Err(TransportError::TimedOut { op: "recv", .. })
    ));
    assert!(started.elapsed() < SLACK);

    server_side.write_all(&[1, 2, 3]).unwrap();
    // Give loopback delivery a moment so the bytes are queued before the zero-time receive.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(connection.recv(&mut buf, Duration::ZERO).unwrap(), 3);
    assert_eq!(&buf[..3], &[1, 2, 3]);
    connection.send_all(&[&[4]], Duration::ZERO).unwrap();
}

#[test]
fn send_all_and_recv_sends_a_request_and_takes_its_answer_in_one_entry() {
    let _serial = serial();
    let (listener, addr) = listener_v4();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut stream = accept_with_timeouts(&listener);
        let mut request = [0u8; 5];
        stream.read_exact(&mut request).unwrap();
        // The answer: the request reversed, after a pause the receive has to wait out.
        thread::sleep(Duration::from_millis(20));
        request.reverse();
        stream.write_all(&request).unwrap();
        // A second request that gets no answer.
        let mut second = [0u8; 3];
        stream.read_exact(&mut second).unwrap();
        // Keep the connection open until the client has seen its receive time out.
        let _ = done_rx.recv_timeout(IO_TIMEOUT);
        second
    });
    let mut connection = TcpConnection::connect(addr, CONNECT_TIMEOUT).unwrap();
    let entries_before = connection.kernel_entries();
    let mut answer = [0u8; 16];
    let received = connection
        .send_all_and_recv(
            &[&[1, 2], &[], &[3, 4, 5]],
            IO_TIMEOUT,
            &mut answer,
            IO_TIMEOUT,
        )
        .unwrap();
    assert_eq!(received, Some(5));
    assert_eq!(&answer[..5], &[5, 4, 3, 2, 1]);
    assert_eq!(connection.kernel_entries() - entries_before, 1);

    // Nothing comes back: the send still completes, the receive times out moving nothing.
    let timeout = Duration::from_millis(100);
    let received = connection
        .send_all_and_recv(&[&[7, 8, 9]], IO_TIMEOUT, &mut answer, timeout)
        .unwrap();
    assert_eq!(received, None);
    // The connection stays usable after a receive timeout.
    assert!(connection.send_all(&[&[0]], IO_TIMEOUT).is_ok());
    done_tx.send(()).unwrap();
    assert_eq!(server.join().unwrap(), [7, 8, 9]);
}
