//! What a driver needs to open an initiator session, whichever path carries it: the login
//! configuration ([`ClientConfig`]), ISIDs (RFC 7143 section 11.12.5) and the random bytes
//! behind them and behind CHAP challenges (section 12.1.3). The blocking client, the shards
//! and the adapter paths all build their [`SessionConfig`] here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ChapConfig, Liveness, SessionConfig};
use crate::pdu;
use crate::text::OperationalOffer;

/// Everything needed to reach one target (or a portal, for discovery).
/// (No `Debug`: it holds CHAP secrets.)
#[derive(Clone)]
pub struct ClientConfig {
    pub portal: SocketAddr,
    pub initiator_name: String,
    /// `None` opens a discovery session.
    pub target_name: Option<String>,
    pub chap: Option<ChapConfig>,
    pub offer: OperationalOffer,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    pub command_timeout: Duration,
    pub nop_interval: Duration,
    pub nop_timeout: Duration,
    /// Commands in flight at once for [`Client::execute_batch`].
    pub queue_depth: usize,
    /// The ISID the blocking client logs in with: `None` picks a random one, a new I_T
    /// nexus per login; a fixed one keeps a host's nexus across runs (its reservations and
    /// registrations, SPC-4 5.12).
    pub isid: Option<pdu::Isid>,
}

impl ClientConfig {
    /// The session this configuration logs in with: ISID `isid`, a fresh CHAP challenge,
    /// the command bounds given (waiting for the window, and in flight).
    pub fn session_config(
        &self,
        isid: pdu::Isid,
        max_queued_commands: usize,
        max_outstanding_commands: usize,
    ) -> SessionConfig {
        SessionConfig {
            initiator_name: self.initiator_name.clone(),
            initiator_alias: None,
            target_name: self.target_name.clone(),
            isid,
            tsih: 0,
            cid: 0,
            chap: self.chap.clone(),
            offer: self.offer.clone(),
            login_timeout: self.login_timeout,
            command_timeout: self.command_timeout,
            nop_interval: self.nop_interval,
            nop_timeout: self.nop_timeout,
            logout_timeout: self.login_timeout,
            max_queued_commands,
            max_outstanding_commands,
            initial_cmd_sn: 1,
            chap_challenge: random_bytes(16),
        }
    }

    /// The liveness settings of a path logging in with this configuration: its pings,
    /// and `tcp_user_timeout` (the shard's) on its socket. Adapter paths are handed this,
    /// so they notice a silent loss as the software path does.
    pub fn liveness(&self, tcp_user_timeout: Option<Duration>) -> Liveness {
        Liveness {
            ping_interval: self.nop_interval,
            ping_timeout: self.nop_timeout,
            tcp_user_timeout,
        }
    }

    pub fn new(portal: SocketAddr, target_name: Option<String>) -> ClientConfig {
        // Like open-iscsi, accept 256 KiB per Data-In PDU rather than the RFC's 8 KiB default:
        // fewer PDUs per read, and the receive buffer is sized from it anyway.
        let offer = OperationalOffer {
            max_recv_data_segment_length: 262_144,
            ..OperationalOffer::default()
        };
        ClientConfig {
            portal,
            initiator_name: default_initiator_name(),
            target_name,
            chap: None,
            offer,
            isid: None,
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            nop_interval: Liveness::SINGLE_PATH.ping_interval,
            nop_timeout: Liveness::SINGLE_PATH.ping_timeout,
            queue_depth: 16,
        }
    }
}

/// The initiator name used when none is configured: stable per host, like open-iscsi's.
pub fn default_initiator_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if host.is_empty() {
        "iqn.2026-11.io.iscsi-uring:initiator".to_string()
    } else {
        format!("iqn.2026-11.io.iscsi-uring:{host}")
    }
}

/// A random ISID of the "random" type (RFC 7143 section 11.12.5: T = 0b11).
pub fn random_isid() -> pdu::Isid {
    let r = random_bytes(6);
    [0xc0 | (r[0] & 0x3f), r[1], r[2], r[3], r[4], r[5]]
}

/// A random ISID whose last byte is a shard's index, so the shards of one pool never
/// share an I_T nexus.
pub fn shard_isid(index: usize) -> pdu::Isid {
    let mut isid = random_isid();
    isid[5] = index as u8;
    isid
}

/// Random bytes from the kernel (CHAP challenges, ISIDs).
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // Fall back to time-derived bytes: still unique per call, never all zeros.
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
        let mut x = seed | 1;
        for b in bytes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    bytes
}
