//! Hostile clients: the attacks of issue 11 ("one client must never take the gateway
//! down"), each a raw TCP client built on datapath's PDU codec and its sans-IO initiator
//! session (a fair login, then misbehaviour). One implementation of each attack serves the
//! CI tests (`tests/hostile_clients.rs`) and the benchmark (`scripts/bench-hostile.sh`,
//! through the `iscsi-hostile` binary).
//!
//! - [`nop_flood`]: log in (discovery or normal), then NOP-Out pings with a large data
//!   segment as fast as the socket takes them, never reading the NOP-In echoes.
//! - [`slow_reader`]: log in, then 1 MiB READs numbered past MaxCmdSN, never reading the
//!   Data-In.
//! - [`idle_flood`]: many connections from one loopback source address that never send
//!   a byte.
//! - [`login_slowloris`]: many connections that each trickle a Login Request, one byte
//!   every few seconds.
//! - [`stuck_write`]: one WRITE to a LUN whose backing store hangs (the test pauses it).
//!
//! Beside them, the judges: [`healthy`] (a fair session's QD1 4 KiB read latency, a timed
//! legitimate login) and [`MemoryWatch`] (the gateway's resident memory sampled during the
//! attack; it also stops the attack once the gateway is far over its budget, so a failing
//! run does not eat the machine).
//!
//! Every attack is bounded in count ([`MAX_CONNECTIONS`]) and in time (its [`Until`], at
//! most [`MAX_ATTACK_TIME`]), stops by itself, and reports what happened instead of
//! panicking: a gateway that closes the attacker's connections is a result, not an error.

mod floods;
pub mod healthy;
mod sockets;
mod watch;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use floods::{nop_flood, slow_reader, stuck_write, NopFlood, SlowReader, StuckWrite};
pub use sockets::{idle_flood, login_slowloris, raise_fd_limit, IdleFlood, Slowloris};
pub use watch::MemoryWatch;

/// Longest any attack runs, whatever it is asked.
pub const MAX_ATTACK_TIME: Duration = Duration::from_secs(600);

/// Most connections one attack opens (the benchmark's 10,000 idle ones, with room).
pub const MAX_CONNECTIONS: usize = 20_000;

/// When an attack stops: at its deadline, or earlier when someone sets its stop flag.
#[derive(Debug, Clone)]
pub struct Until {
    deadline: Instant,
    stop: Arc<AtomicBool>,
}

impl Until {
    /// `duration` from now (at most [`MAX_ATTACK_TIME`]), with a fresh stop flag.
    pub fn after(duration: Duration) -> Until {
        Until {
            deadline: Instant::now() + duration.min(MAX_ATTACK_TIME),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag that ends the attack early when set (shared with a [`MemoryWatch`]).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Ends the attack at its next check.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the attack should stop now.
    pub fn reached(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// What an attack did and what the gateway did to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttackReport {
    /// The attack's name (`nop-flood`, `slow-reader`, ...).
    pub attack: &'static str,
    /// Connections opened (and logged in, for the attacks that log in).
    pub connections_opened: usize,
    /// Connections that could not be opened or logged in.
    pub connections_failed: usize,
    /// Connections the gateway closed (or reset) while the attack ran.
    pub connections_closed_by_target: usize,
    /// When, from the attack's start, the gateway first closed one of them.
    pub first_close_after: Option<Duration>,
    /// PDUs (or, for the slowloris, bytes of PDUs) sent whole.
    pub pdus_sent: u64,
    /// Bytes sent in all.
    pub bytes_sent: u64,
    /// How long the attack ran.
    pub elapsed: Duration,
    /// The first failure that was not the gateway closing a connection.
    pub first_error: Option<String>,
}

impl AttackReport {
    fn new(attack: &'static str) -> AttackReport {
        AttackReport {
            attack,
            ..AttackReport::default()
        }
    }

    /// Counts a connection the gateway closed, `started` being the attack's start.
    fn closed_by_target(&mut self, started: Instant) {
        self.connections_closed_by_target += 1;
        self.first_close_after.get_or_insert(started.elapsed());
    }

    fn note_error(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }

    /// One JSON object, for the benchmark script and the test logs.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "attack": self.attack,
            "connections_opened": self.connections_opened,
            "connections_failed": self.connections_failed,
            "connections_closed_by_target": self.connections_closed_by_target,
            "first_close_after_s": self.first_close_after.map(|d| d.as_secs_f64()),
            "pdus_sent": self.pdus_sent,
            "bytes_sent": self.bytes_sent,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "first_error": self.first_error,
        })
    }
}

/// Whether a socket error means the peer closed or reset the connection.
pub(crate) fn is_closed_by_peer(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected
    )
}
