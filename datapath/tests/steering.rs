//! NIC queue steering against the real kernel: loopback (no RSS, reported cleanly), a
//! connection bound to a chosen local port, and a veth pair between two network namespaces
//! this test creates (veth reports channels but no RSS). The namespace test skips with a
//! message where `ip netns` is not permitted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use datapath::steering::{self, DeviceKind, RssStatus, SteeringRequest};
use datapath::transport::{RingConfig, TcpConnection, TransportError};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts one connection within `TIMEOUT`, echoes one byte, and returns the peer address.
fn echo_one(listener: TcpListener) -> std::thread::JoinHandle<Option<SocketAddr>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let (mut stream, peer): (TcpStream, SocketAddr) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        stream.write_all(&byte).ok()?;
        // Wait for the client's close so the echo is not cut by a reset.
        let _ = stream.read(&mut byte);
        Some(peer)
    })
}

fn exchange_one_byte(connection: &mut TcpConnection) {
    connection.send_all(&[b"x"], TIMEOUT).unwrap();
    let mut reply = [0u8; 1];
    connection.recv_exact(&mut reply, TIMEOUT).unwrap();
    assert_eq!(&reply, b"x");
}

#[test]
fn loopback_reports_no_rss_cleanly() {
    let status = steering::read_rss("lo").expect("reading RSS on lo is not an error");
    let RssStatus::Absent(no_rss) = status else {
        panic!("lo has RSS? {status:?}");
    };
    assert_eq!(no_rss.kind, DeviceKind::Loopback);
    assert_eq!(
        no_rss.to_string(),
        "no RSS on lo (loopback and veth have no RSS)"
    );
}

#[test]
fn a_missing_interface_is_an_error_naming_it_and_the_errno() {
    let error = steering::read_rss("nosuchdev0").unwrap_err();
    let text = error.to_string();
    assert!(text.contains("nosuchdev0"), "{text}");
    assert!(text.contains(&format!("errno {}", libc::ENODEV)), "{text}");
}

#[test]
fn a_connection_from_a_chosen_local_port_has_that_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = echo_one(listener);
    // A port that was free a moment ago; retry a few times if another test takes it.
    let mut attempt = 0;
    let (mut connection, port) = loop {
        attempt += 1;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let local: SocketAddr = SocketAddr::new(target.ip(), port);
        match TcpConnection::connect_from(target, Some(local), TIMEOUT, &RingConfig::default()) {
            Ok(connection) => break (connection, port),
            Err(TransportError::Bind { .. }) if attempt < 5 => continue,
            Err(e) => panic!("connect from {local}: {e}"),
        }
    };
    assert_eq!(connection.local_addr().unwrap().port(), port);
    exchange_one_byte(&mut connection);
    // After receiving, the kernel knows which CPU processed the packets.
    let cpu = connection.incoming_cpu().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert!(matches!(cpu, Some(c) if c < cpus.max(64)), "{cpu:?}");
    connection.shutdown().unwrap();
    let peer = server.join().unwrap().expect("server saw the connection");
    assert_eq!(peer.port(), port);
}

#[test]
fn binding_a_port_a_listener_holds_is_refused_as_in_use() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = listener.local_addr().unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = other.local_addr().unwrap();
    let error = TcpConnection::connect_from(target, Some(held), TIMEOUT, &RingConfig::default())
        .unwrap_err();
    match error {
        TransportError::Bind { local, source } => {
            assert_eq!(local, held);
            assert_eq!(source.raw_os_error(), Some(libc::EADDRINUSE));
        }
        other => panic!("expected a bind error, got {other}"),
    }
}

#[test]
fn steered_connect_on_loopback_falls_back_to_the_kernel_port_and_says_why() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = echo_one(listener);
    let mut request = SteeringRequest::new(target, 1);
    request.expected_cpu = Some(1);
    let plan = steering::plan(&request).unwrap();
    assert_eq!(plan.interface, "lo");
    assert!(plan.candidate_ports.is_empty());
    let (mut connection, mut report) =
        steering::connect_steered(&plan, TIMEOUT, &RingConfig::default()).unwrap();
    exchange_one_byte(&mut connection);
    report.observe(&connection);
    assert!(!report.port_steered);
    assert_eq!(
        report.local_port,
        Some(connection.local_addr().unwrap().port())
    );
    assert!(report.incoming_cpu.is_some());
    assert_eq!(report.steering_held(), None);
    let text = report.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("no RSS on lo (loopback and veth have no RSS)"),
        "{text}"
    );
    connection.shutdown().unwrap();
    server.join().unwrap().expect("server saw the connection");
}

#[test]
fn steered_connect_binds_a_candidate_port_and_skips_one_in_use() {
    use datapath::steering::toeplitz::MICROSOFT_VERIFICATION_KEY;
    use datapath::steering::{Route, RssConfig};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = echo_one(listener);
    // Pretend lo had a 4-queue RSS NIC's configuration (a fixture), to drive the port choice
    // and the bind-retry loop against the real kernel.
    let rss = RssConfig::equal_spread(4, MICROSOFT_VERIFICATION_KEY.to_vec(), 128).unwrap();
    let mut request = SteeringRequest::new(target, 3);
    request.expected_cpu = Some(0);
    let route = Route {
        interface: "lo".into(),
        local_ip: target.ip(),
    };
    let plan = steering::plan_with(route, RssStatus::Present(rss.clone()), &request);
    assert!(
        plan.candidate_ports.len() >= 2,
        "{:?}",
        plan.candidate_ports
    );
    // Take the first candidate, so the connect has to move on to the next one. (If another
    // test holds a candidate too, a later one is used; any candidate lands on queue 3.)
    let first = plan.candidate_ports[0];
    let blocker = TcpListener::bind(SocketAddr::new(target.ip(), first));
    let (mut connection, mut report) =
        steering::connect_steered(&plan, TIMEOUT, &RingConfig::default()).unwrap();
    let port = connection.local_addr().unwrap().port();
    assert!(plan.candidate_ports.contains(&port), "{port}");
    if blocker.is_ok() {
        assert_ne!(port, first);
    }
    assert_eq!(
        rss.receive_queue(target, SocketAddr::new(target.ip(), port)),
        Some(3)
    );
    exchange_one_byte(&mut connection);
    report.observe(&connection);
    assert!(report.port_steered);
    assert_eq!(report.local_port, Some(port));
    assert_eq!(report.predicted_queue, Some(3));
    let text = report.to_string();
    eprintln!("{text}");
    assert!(
        text.contains(&format!("local port {port} chosen for rx queue 3")),
        "{text}"
    );
    connection.shutdown().unwrap();
    assert_eq!(server.join().unwrap().map(|peer| peer.port()), Some(port));
}

/// Two network namespaces joined by a veth pair, deleted (with the pair) on drop.
struct VethPair {
    namespaces: [String; 2],
}

const VETH_A: &str = "stqa";
const VETH_B: &str = "stqb";
const ADDR_A: &str = "10.77.0.1";
const ADDR_B: &str = "10.77.0.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl VethPair {
    fn create() -> Result<VethPair, String> {
        let pid = std::process::id();
        let pair = VethPair {
            namespaces: [format!("steer-{pid}-a"), format!("steer-{pid}-b")],
        };
        let [a, b] = &pair.namespaces;
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&[
            "-n",
            a,
            "link",
            "add",
            VETH_A,
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            VETH_B,
            "netns",
            b,
        ])?;
        for (ns, dev, addr) in [(a, VETH_A, ADDR_A), (b, VETH_B, ADDR_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// Runs `f` on a thread that has entered namespace `index` (setns affects only the
    /// calling thread, so the test's other threads stay where they are).
    fn run_in<T: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.namespaces[index]);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns takes a descriptor we hold open for the call, and changes only
            // this thread's network namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Deleting a namespace deletes the veth end inside it.
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

#[test]
fn veth_between_namespaces_reports_channels_but_no_rss() {
    let started = Instant::now();
    let pair = match VethPair::create() {
        Ok(pair) => pair,
        Err(reason) => {
            eprintln!("SKIP veth test: network namespaces not permitted here ({reason})");
            return;
        }
    };
    let target: SocketAddr = format!("{ADDR_B}:3260").parse().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = pair.run_in(1, move || {
        let listener = TcpListener::bind(target).unwrap();
        ready_tx.send(()).unwrap();
        echo_one(listener).join().unwrap()
    });
    // The client may connect only once the target listens.
    ready_rx
        .recv_timeout(TIMEOUT)
        .expect("the target listens in its namespace");
    let client = pair.run_in(0, move || {
        let status = steering::read_rss(VETH_A).expect("reading RSS on veth is not an error");
        let request = SteeringRequest::new(target, 0);
        let plan = steering::plan(&request).expect("plan over veth");
        let (mut connection, mut report) =
            steering::connect_steered(&plan, TIMEOUT, &RingConfig::default()).unwrap();
        exchange_one_byte(&mut connection);
        report.observe(&connection);
        let local = connection.local_addr().unwrap();
        connection.shutdown().unwrap();
        (status, plan, report, local)
    });
    let (status, plan, report, local) = client.join().expect("client thread");
    let peer = server.join().expect("server thread");
    eprintln!("{report}");
    assert_eq!(peer, Some(local), "the target saw our connection");
    let RssStatus::Absent(no_rss) = status else {
        panic!("veth has RSS? {status:?}");
    };
    assert_eq!(no_rss.kind, DeviceKind::Veth);
    // veth implements ETHTOOL_GCHANNELS: the ethtool path works, only RSS is missing.
    let channels = no_rss.channels.expect("veth reports its channels");
    assert_eq!(channels.max_rx, 2, "{channels:?}");
    assert!(channels.rx_queues() >= 1, "{channels:?}");
    assert_eq!(no_rss.refused, Some(("ETHTOOL_GRSSH", libc::EOPNOTSUPP)));
    assert_eq!(plan.interface, VETH_A);
    assert_eq!(plan.local_ip.to_string(), ADDR_A);
    assert!(plan.candidate_ports.is_empty());
    assert!(!report.port_steered);
    assert!(report.incoming_cpu.is_some());
    assert!(
        report
            .to_string()
            .contains("no RSS on stqa (loopback and veth have no RSS)"),
        "{report}"
    );
    drop(pair);
    assert!(started.elapsed() < Duration::from_secs(30));
}
