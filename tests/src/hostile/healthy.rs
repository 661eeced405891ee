//! The fair client beside each attack: QD1 4 KiB reads through datapath's blocking
//! client, timed one by one, and a timed login. The benchmark measures the same with
//! `iscsi-bench` and `iscsi-ctl`; in the tests this keeps the judge in-process and cheap.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::scsi::Cdb;
use datapath::session::Request;

use super::Until;

/// Bytes per read: the 4 KiB of the latency goal.
pub const READ_BYTES: u32 = 4096;

/// The reads walk the first 4 MiB of the LUN, 4 KiB at a time.
const SPAN_BLOCKS: u64 = 8192;

const BLOCK_BYTES: u32 = 512;

/// Latency of the reads of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyFigures {
    pub reads: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencyFigures {
    fn from_samples(
        mut samples: Vec<Duration>,
        errors: usize,
        first_error: Option<String>,
    ) -> Self {
        samples.sort_unstable();
        let at = |fraction: f64| {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            let rank = (fraction * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        LatencyFigures {
            reads: samples.len(),
            errors,
            first_error,
            p50: at(0.50),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for LatencyFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:?} p99 {:?} max {:?} reads {} errors {}",
            self.p50, self.p99, self.max, self.reads, self.errors
        )
    }
}

fn client_config(portal: SocketAddr, target: &str) -> ClientConfig {
    let mut config = ClientConfig::new(portal, Some(target.to_owned()));
    config.initiator_name = "iqn.2026-11.invalid.system-tests:healthy".to_owned();
    config.connect_timeout = Duration::from_secs(5);
    config.login_timeout = Duration::from_secs(5);
    config.command_timeout = Duration::from_secs(10);
    config.queue_depth = 1;
    config
}

/// A fair session on one LUN, logged in before the attack starts (an attack on
/// connection slots must not decide whether it gets in).
pub struct HealthySession {
    client: Client,
    lun: u64,
    next_lba: u64,
}

impl HealthySession {
    /// Logs in to `target` for reads of `lun`.
    pub fn connect(portal: SocketAddr, target: &str, lun: u64) -> Result<HealthySession, String> {
        let client =
            Client::connect(&client_config(portal, target)).map_err(|e| format!("login: {e}"))?;
        Ok(HealthySession {
            client,
            lun,
            next_lba: 0,
        })
    }

    /// Reads 4 KiB at a time, one in flight, until `until`. A read that fails for the
    /// connection (not for its SCSI status) ends the run.
    pub fn measure(&mut self, until: &Until) -> LatencyFigures {
        let blocks = READ_BYTES / BLOCK_BYTES;
        let mut samples = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        while !until.reached() {
            let cdb = match Cdb::read(self.next_lba, blocks, BLOCK_BYTES, false) {
                Ok(cdb) => cdb,
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                    break;
                }
            };
            let started = Instant::now();
            let answer =
                self.client
                    .execute(Request::new(self.lun, cdb, vec![0; READ_BYTES as usize], 0));
            match answer {
                Ok(outcome) if outcome.status == 0 => samples.push(started.elapsed()),
                Ok(outcome) => {
                    errors += 1;
                    first_error.get_or_insert(format!("status {:#04x}", outcome.status));
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                    break;
                }
            }
            self.next_lba = (self.next_lba + u64::from(blocks)) % SPAN_BLOCKS;
        }
        LatencyFigures::from_samples(samples, errors, first_error)
    }
}

/// How long a fair login (and nothing else) takes; the session is logged out after.
pub fn login_time(portal: SocketAddr, target: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let client = Client::connect(&client_config(portal, target)).map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let _ = client.logout();
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_sample_at_their_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let figures = LatencyFigures::from_samples(samples, 0, None);
        assert_eq!(figures.p50, Duration::from_millis(50));
        assert_eq!(figures.p99, Duration::from_millis(99));
        assert_eq!(figures.max, Duration::from_millis(100));
        assert_eq!(
            LatencyFigures::from_samples(vec![], 1, None).p99,
            Duration::ZERO
        );
    }
}
