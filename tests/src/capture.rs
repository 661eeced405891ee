//! Packet captures of one loopback port, judged by Wireshark's iSCSI dissector.
//!
//! A [`Capture`] runs `dumpcap` on `lo` with the capture filter `tcp port N` (plus a private
//! UDP marker port, below) into a pcap file in its own scratch directory. `tshark` then
//! decodes that port as iSCSI (`-d tcp.port==N,iscsi`) and reports what it could not parse.
//!
//! Start the capture before the session logs in: the dissector learns from the Login exchange
//! whether header and data digests follow each PDU, and mis-parses a session joined later.
//! Captures are for judging protocol exchanges, not for bulk-throughput runs.
//!
//! Facts about dumpcap and tshark 4.0 (Debian 12), found by running them:
//! - dumpcap's "Capturing on 'Loopback: lo'" line does not prove packets are being taken
//!   yet, and on SIGTERM it drops packets still in the kernel ring (measured: a connection
//!   made 50 ms before SIGTERM was missing from the file). So both start and stop are fenced
//!   with a marker: a UDP datagram with a unique payload, sent from a private socket to itself;
//!   once it shows up in the file, everything before it has been captured.
//! - The iSCSI dissector ignores PDUs it thinks are bogus, among them any with a data segment
//!   over `iscsi.bogus_pdu_max_data_len` (default 262144); that is raised to 2^24-1 here so
//!   large negotiated segments are decoded, not silently skipped.
//! - `iscsi.opcode` is the 6-bit opcode without the immediate bit; `iscsi.keyvalue` holds one
//!   `key=value` per text key.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, UdpSocket};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{
    describe_output, log_tail, run_tool, spawn_daemon, stop_child, tool_path, TempDir,
};

/// How long a marker may take to reach the capture file.
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a marker is re-sent while waiting for it (dumpcap writes about every 100 ms).
const MARKER_RESEND: Duration = Duration::from_millis(50);
/// How much of the end of the capture file is searched for a marker.
const MARKER_WINDOW_BYTES: u64 = 8 * 1024 * 1024;
/// Kernel capture buffer, in MiB (dumpcap's default of 2 drops packets when loopback
/// carries bulk data at GB/s).
const CAPTURE_BUFFER_MIB: &str = "32";
/// Bound on one tshark run.
const TSHARK_TIMEOUT: Duration = Duration::from_secs(60);
/// Separates multiple occurrences of a field in tshark's output (ASCII unit separator).
const AGGREGATOR: char = '\u{1f}';
/// Set this environment variable to keep pcaps (and print where they are) after a run.
pub const KEEP_PCAP_ENV: &str = "SYSTEM_TESTS_KEEP_PCAP";

/// A running capture of one TCP port on the loopback interface.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    port: u16,
    pcap: PathBuf,
    log: PathBuf,
    marker_socket: UdpSocket,
    marker_serial: u64,
    dir: Option<TempDir>,
}

impl Capture {
    /// Starts capturing `tcp port PORT` on `lo` and returns once packets are provably being
    /// recorded. Panics with the reason when dumpcap is missing or cannot capture (it needs
    /// root or CAP_NET_RAW); use [`Capture::try_start`] to handle that.
    pub fn start(port: u16) -> Capture {
        Capture::try_start(port).unwrap_or_else(|error| panic!("capture of port {port}: {error}"))
    }

    /// [`Capture::start`] returning the failure instead of panicking.
    pub fn try_start(port: u16) -> Result<Capture, String> {
        let dumpcap = tool_path("dumpcap").ok_or("dumpcap is not installed")?;
        let dir = TempDir::new("capture")?;
        let pcap = dir.join(format!("port{port}.pcap"));
        let log = dir.join("dumpcap.log");
        let marker_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|socket| {
                let own = socket.local_addr()?;
                socket.connect(own)?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .map_err(|e| format!("marker socket: {e}"))?;
        let marker_port = marker_socket
            .local_addr()
            .map_err(|e| format!("marker socket: {e}"))?
            .port();
        let filter =
            format!("tcp port {port} or (udp dst port {marker_port} and dst host 127.0.0.1)");
        let mut command = Command::new(dumpcap);
        command
            .args([
                "-q",
                "-P",
                "-B",
                CAPTURE_BUFFER_MIB,
                "-i",
                "lo",
                "-f",
                &filter,
                "-w",
            ])
            .arg(&pcap);
        let child = spawn_daemon(command, &log)?;
        let mut capture = Capture {
            child,
            port,
            pcap,
            log,
            marker_socket,
            marker_serial: 0,
            dir: Some(dir),
        };
        capture.fence("start")?;
        Ok(capture)
    }

    /// The port being captured.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends marker datagrams until one appears in the capture file: from then on, every
    /// packet sent before the marker is in the file.
    fn fence(&mut self, phase: &str) -> Result<(), String> {
        static NONCE: AtomicU64 = AtomicU64::new(0);
        self.marker_serial += 1;
        let marker = format!(
            "system-tests-capture-marker-{}-{}-{}-{phase}",
            std::process::id(),
            NONCE.fetch_add(1, Ordering::Relaxed),
            self.marker_serial
        );
        let deadline = Instant::now() + MARKER_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "dumpcap exited ({status}): {}",
                    log_tail(&self.log)
                ));
            }
            // A lost datagram is simply re-sent on the next round.
            let _ = self.marker_socket.send(marker.as_bytes());
            // Drain what we sent to ourselves so the socket buffer never fills.
            let mut sink = [0u8; 128];
            while self.marker_socket.recv(&mut sink).is_ok() {}
            thread::sleep(MARKER_RESEND);
            if file_contains(&self.pcap, marker.as_bytes()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "capture marker ({phase}) not seen within {MARKER_TIMEOUT:?}: {}",
                    log_tail(&self.log)
                ));
            }
        }
    }

    /// Stops the capture once everything sent so far is in the file, and returns the file.
    /// Panics if the end marker never reaches the file (the capture would be incomplete).
    pub fn stop(mut self) -> Pcap {
        let fenced = self.fence("stop");
        stop_child(&mut self.child, Duration::from_secs(5));
        if let Err(error) = fenced {
            panic!("stopping capture of port {}: {error}", self.port);
        }
        let dir = self
            .dir
            .take()
            .expect("a running capture owns its directory");
        Pcap {
            path: self.pcap.clone(),
            dir: Some(dir),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// Whether the last [`MARKER_WINDOW_BYTES`] of the file contain `needle` (the marker is among
/// the last packets written, and a long capture should not be re-read whole every round).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    if file
        .seek(SeekFrom::Start(length.saturating_sub(MARKER_WINDOW_BYTES)))
        .is_err()
    {
        return false;
    }
    let mut tail = Vec::new();
    if file.read_to_end(&mut tail).is_err() {
        return false;
    }
    tail.windows(needle.len()).any(|window| window == needle)
}

/// A finished capture file; its scratch directory is removed on drop unless
/// `SYSTEM_TESTS_KEEP_PCAP` is set or [`Pcap::keep`] is called. Derefs to its [`Path`].
#[derive(Debug)]
pub struct Pcap {
    path: PathBuf,
    dir: Option<TempDir>,
}

impl Pcap {
    /// The capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file on disk (in a `kept-system-tests-…` directory) and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.keep_in_place()
    }

    fn keep_in_place(&mut self) -> PathBuf {
        if let (Some(dir), Some(file_name)) = (self.dir.take(), self.path.file_name()) {
            self.path = dir.keep().join(file_name);
        }
        self.path.clone()
    }
}

impl Deref for Pcap {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Pcap {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pcap {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_PCAP_ENV).is_some() && self.dir.is_some() {
            let kept = self.keep_in_place();
            eprintln!("system-tests: kept capture {}", kept.display());
        }
    }
}

/// Runs tshark over `pcap` with `port` decoded as iSCSI, keeping frames that match the
/// display `filter`, and returns the requested `fields` of each frame (each field a list of
/// its occurrences in that frame).
pub fn tshark_fields(
    pcap: &Path,
    port: u16,
    filter: &str,
    fields: &[&str],
) -> Result<Vec<Vec<Vec<String>>>, String> {
    let pcap_text = pcap.to_str().ok_or("pcap path is not UTF-8")?;
    let decode_as = format!("tcp.port=={port},iscsi");
    let aggregator = format!("aggregator={AGGREGATOR}");
    let mut args = vec![
        "-n",
        "-r",
        pcap_text,
        "-d",
        &decode_as,
        "-o",
        "iscsi.bogus_pdu_max_data_len:16777215",
        "-o",
        "tcp.desegment_tcp_streams:TRUE",
        "-o",
        "tcp.check_checksum:FALSE",
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        &aggregator,
    ];
    for field in fields {
        args.push("-e");
        args.push(field);
    }
    let output = run_tool("tshark", &args, TSHARK_TIMEOUT);
    if !output.status.success() {
        return Err(format!(
            "tshark {}: {}",
            args.join(" "),
            describe_output(&output)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            line.split('\t')
                .map(|field| {
                    field
                        .split(AGGREGATOR)
                        .filter(|value| !value.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .collect()
        })
        .collect())
}

/// Every frame on `port` that Wireshark marks malformed or carries an expert item of
/// severity Error, as `frame N: <info column>: <expert messages>`. A tshark failure is
/// reported as a problem too, so an empty list means "decoded and clean".
pub fn tshark_iscsi_problems(pcap: &Path, port: u16) -> Vec<String> {
    let filter =
        format!("tcp.port == {port} && (_ws.malformed || _ws.expert.severity >= \"Error\")");
    match tshark_fields(
        pcap,
        port,
        &filter,
        &["frame.number", "_ws.col.Info", "_ws.expert.message"],
    ) {
        Ok(rows) => rows
            .into_iter()
            .map(|row| {
                let column = |index: usize| {
                    row.get(index)
                        .map(|values| values.join("; "))
                        .unwrap_or_default()
                };
                format!("frame {}: {}: {}", column(0), column(1), column(2))
            })
            .collect(),
        Err(error) => vec![error],
    }
}

/// The opcodes (RFC 7143 section 11.2.1.2, without the immediate bit) of every iSCSI PDU
/// the dissector found on `port`, in capture order. Its length is the PDU count.
pub fn tshark_iscsi_opcodes(pcap: &Path, port: u16) -> Result<Vec<u8>, String> {
    let filter = format!("tcp.port == {port} && iscsi");
    let rows = tshark_fields(pcap, port, &filter, &["iscsi.opcode"])?;
    let mut opcodes = Vec::new();
    for value in rows.iter().flatten().flatten() {
        let digits = value.trim_start_matches("0x");
        let opcode = u8::from_str_radix(digits, 16)
            .map_err(|e| format!("tshark gave opcode {value:?}: {e}"))?;
        opcodes.push(opcode);
    }
    Ok(opcodes)
}

/// The `key=value` text keys of the iSCSI PDUs with `opcode` on `port` (for example 0x24,
/// Text Response, to read a SendTargets reply), in capture order. Frames holding PDUs of
/// several opcodes contribute the keys of all their PDUs.
pub fn tshark_iscsi_key_values(pcap: &Path, port: u16, opcode: u8) -> Result<Vec<String>, String> {
    let filter = format!("tcp.port == {port} && iscsi.opcode == {opcode:#04x}");
    let rows = tshark_fields(pcap, port, &filter, &["iscsi.keyvalue"])?;
    Ok(rows.into_iter().flatten().flatten().collect())
}
