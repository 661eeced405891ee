//! The target a job runs against when it names no file: our own gateway
//! ([`gateway::server::start`]), started in this process on `127.0.0.1`, port 0 (a free
//! port), with one LUN (0) of the job's size. A RAM LUN keeps what is written, so verify
//! jobs work; a null LUN discards writes and reads zeros, for measuring the initiator side
//! alone. It stops when the engine that started it closes.
//!
//! This is a convenience, not a referee (DESIGN.md rule 6): `iscsi-bench --rw=randread`
//! works on a fresh machine, but numbers worth comparing come from real arrays.

use std::net::{Ipv4Addr, SocketAddr};

use datapath::url::IscsiUrl;
use gateway::server::{RunningTarget, TargetConfig, TargetNodeConfig};

use super::EngineError;

/// The backend of the embedded LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddedLun {
    /// Memory, allocated as written (what verify needs).
    #[default]
    Ram,
    /// Discards writes, reads zeros.
    Null,
}

/// Set-up of the embedded target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// The LUN's size; rounded up to a whole 512-byte block.
    pub size_bytes: u64,
    pub lun: EmbeddedLun,
    /// Event loop threads of the target (it shares the machine with the initiator).
    pub threads: usize,
}

impl EmbeddedOptions {
    pub fn new(size_bytes: u64) -> EmbeddedOptions {
        EmbeddedOptions {
            size_bytes,
            lun: EmbeddedLun::Ram,
            threads: 1,
        }
    }
}

/// A target running in this process; dropping it stops it.
#[derive(Debug)]
pub struct EmbeddedTarget {
    running: RunningTarget,
    portal: SocketAddr,
}

impl EmbeddedTarget {
    /// The embedded target's name.
    pub const IQN: &'static str = "iqn.2026-11.io.iscsi-uring:bench";
    /// Its one LUN.
    pub const LUN: u64 = 0;
    const BLOCK_BYTES: u64 = 512;

    pub fn start(options: &EmbeddedOptions) -> Result<EmbeddedTarget, EngineError> {
        if options.size_bytes == 0 {
            return Err(EngineError::InvalidOption(
                "the embedded target needs a size greater than 0".into(),
            ));
        }
        let size = options
            .size_bytes
            .checked_next_multiple_of(Self::BLOCK_BYTES)
            .ok_or_else(|| EngineError::InvalidOption("size too large".into()))?;
        let kind = match options.lun {
            EmbeddedLun::Ram => "ram",
            EmbeddedLun::Null => "null",
        };
        let node = TargetNodeConfig::new(Self::IQN, vec![(Self::LUN, format!("{kind}:{size}"))]);
        let mut config = TargetConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), node);
        config.threads = Some(options.threads.max(1));
        let running = gateway::server::start(config)?;
        let portal = *running
            .addrs()
            .first()
            .ok_or_else(|| EngineError::InvalidOption("the target bound no portal".into()))?;
        tracing::info!(%portal, size, kind, "embedded target started");
        Ok(EmbeddedTarget { running, portal })
    }

    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// `iscsi://127.0.0.1:PORT/IQN/0`.
    pub fn url(&self) -> IscsiUrl {
        IscsiUrl {
            user: None,
            secret: None,
            host: self.portal.ip().to_string(),
            port: self.portal.port(),
            target: Some(Self::IQN.to_string()),
            lun: Some(Self::LUN),
            target_user: None,
            target_secret: None,
            header_digest: None,
        }
    }

    /// Stops the target (closing its connections) and waits for its threads.
    pub fn stop(self) {
        self.running.shutdown();
    }
}
