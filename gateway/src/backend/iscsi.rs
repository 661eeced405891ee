//! The `iscsi:` backend: a LUN that lives on another array, reached through our own
//! initiator (`datapath::client::Client`, the software path).
//!
//! `iscsi://HOST[:PORT]/TARGET-IQN/LUN` (libiscsi's URL form, CHAP user and secret
//! included). Size and block length come from READ CAPACITY, UNMAP support from the Block
//! Limits VPD page (SBC-3 6.6.3): the LUN is thin exactly when the far side unmaps.
//!
//! Several sessions (one per gateway core, at most [`SESSIONS_MAX`]), each owned by its
//! own thread (a `Client` stays on the thread that logged it in) and carrying one command
//! at a time: the backend's calls come from the gateway's blocking pool
//! ([`super::Backend::io_may_block`]), several at once, and go through one bounded queue
//! that every session thread takes from, so the queue depth is the session count. A
//! session lost (connection reset, the far side restarted) is logged in again and the
//! command sent again, for up to [`RECONNECT_BUDGET`]; a unit attention the far side
//! reports after such a login is taken and the command retried. A SCSI refusal from the
//! far side is an I/O error naming its sense. The threads end when the backend is dropped.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig, ClientError};
use datapath::scsi::probe::{describe, probe_lun, ProbeConfig};
use datapath::scsi::{Cdb, Sense};
use datapath::session::{ChapConfig, Request};
use datapath::url::IscsiUrl;

use super::{check_range, Backend, BackendError};

/// Sessions opened to the far side at most, whatever the core count.
pub const SESSIONS_MAX: usize = 8;
/// How long a command keeps trying to log in again after its session was lost.
pub const RECONNECT_BUDGET: Duration = Duration::from_secs(10);
/// Largest piece of one read or write sent as one command (the far side's Block Limits may
/// lower it).
const TRANSFER_BYTES_MAX: u64 = 1 << 20;
/// Unit attentions taken per command before its answer counts as a failure.
const UNIT_ATTENTION_RETRIES: u32 = 4;

const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;
const STATUS_BUSY: u8 = 0x08;
const STATUS_TASK_SET_FULL: u8 = 0x28;

/// A LUN of another array.
pub struct IscsiBackend {
    url: String,
    size_bytes: u64,
    block_bytes: u32,
    transfer_bytes_max: u64,
    unmap: bool,
    /// Commands for the session threads (closed on drop, which ends them).
    jobs: Option<crossbeam_channel::Sender<Job>>,
}

/// One command for a session thread, and where its outcome goes.
struct Job {
    cdb: Cdb,
    buffer: Vec<u8>,
    reply: crossbeam_channel::Sender<io::Result<Vec<u8>>>,
}

/// What a session thread needs to log in and run commands.
struct Far {
    url: String,
    config: ClientConfig,
    lun: u64,
    reconnect_budget: Duration,
}

impl std::fmt::Debug for IscsiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiBackend")
            .field("url", &self.url)
            .field("size_bytes", &self.size_bytes)
            .field("block_bytes", &self.block_bytes)
            .finish()
    }
}

fn spec_error(url: &str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Io {
        path: url.to_string(),
        source: io::Error::other(reason.to_string()),
    }
}

/// Parses the URL of an `iscsi:` spec (`iscsi://HOST[:PORT]/IQN/LUN`).
pub fn parse_url(text: &str) -> Result<IscsiUrl, BackendError> {
    let url = IscsiUrl::parse_lun_url(text).map_err(|e| BackendError::InvalidOption {
        option: text.chars().take(120).collect(),
        reason: e.to_string(),
    })?;
    if url.target.is_none() {
        return Err(BackendError::InvalidOption {
            option: text.chars().take(120).collect(),
            reason: "an iscsi: LUN names its target and LUN: iscsi://HOST:PORT/IQN/LUN".into(),
        });
    }
    Ok(url)
}

impl IscsiBackend {
    /// Logs in to the LUN `url` names and probes it (ready, capacity, Block Limits).
    pub fn open(
        url_text: &str,
        initiator_name: Option<&str>,
    ) -> Result<IscsiBackend, BackendError> {
        IscsiBackend::open_with(url_text, initiator_name, RECONNECT_BUDGET)
    }

    /// [`IscsiBackend::open`] with another budget for logging in again: a migration's
    /// destination gives up fast, so the migration fails instead of stalling the host.
    pub fn open_with(
        url_text: &str,
        initiator_name: Option<&str>,
        reconnect_budget: Duration,
    ) -> Result<IscsiBackend, BackendError> {
        let url = parse_url(url_text)?;
        let portal = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| spec_error(url_text, format!("resolving {}: {e}", url.host)))?
            .next()
            .ok_or_else(|| spec_error(url_text, format!("{} resolves to nothing", url.host)))?;
        let mut config = ClientConfig::new(portal, url.target.clone());
        if let Some(name) = initiator_name {
            config.initiator_name = name.to_string();
        }
        if let (Some(user), Some(secret)) = (&url.user, &url.secret) {
            config.chap = Some(ChapConfig {
                user: user.clone(),
                secret: secret.clone().into_bytes(),
                mutual: None,
            });
        }
        config.queue_depth = 1;
        config.connect_timeout =
            Duration::from_secs(3).min(reconnect_budget.max(Duration::from_millis(500)));
        config.login_timeout = Duration::from_secs(5);
        // A command waits no longer than the budget allows (at least a second), so a far
        // side that hangs fails a migration's destination fast.
        config.command_timeout =
            Duration::from_secs(15).min((reconnect_budget * 2).max(Duration::from_secs(1)));
        let lun = url.lun.unwrap_or(0);
        let mut first = Client::connect(&config).map_err(|e| spec_error(url_text, e))?;
        let facts = probe_lun(&mut first, lun, ProbeConfig::FULL)
            .map_err(|e| spec_error(url_text, format!("probing LUN {lun}: {e}")))?;
        let (size_bytes, block_bytes) = facts
            .size()
            .map_err(|e| spec_error(url_text, format!("LUN {lun}: {e}")))?;
        if block_bytes != 512 && block_bytes != 4096 {
            return Err(spec_error(
                url_text,
                format!("LUN {lun} has {block_bytes}-byte blocks; the gateway exports 512 or 4096"),
            ));
        }
        let mut transfer_bytes_max = TRANSFER_BYTES_MAX;
        if let Some(limits) = &facts.block_limits {
            if limits.max_transfer_length_blocks > 0 {
                transfer_bytes_max = transfer_bytes_max
                    .min(u64::from(limits.max_transfer_length_blocks) * u64::from(block_bytes));
            }
        }
        if let Err(error) = first.logout() {
            tracing::debug!(url = url_text, %error, "logout of the probing session");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let sessions = cores.clamp(1, SESSIONS_MAX);
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(sessions * 4);
        let far = Arc::new(Far {
            url: url_text.to_string(),
            config,
            lun,
            reconnect_budget,
        });
        for index in 0..sessions {
            let (far, queue) = (Arc::clone(&far), queue.clone());
            std::thread::Builder::new()
                .name(format!("iscsi-far-{index}"))
                .spawn(move || session_thread(&far, &queue))
                .map_err(|e| spec_error(url_text, format!("starting a session thread: {e}")))?;
        }
        Ok(IscsiBackend {
            url: url_text.to_string(),
            size_bytes,
            block_bytes,
            transfer_bytes_max: transfer_bytes_max.max(u64::from(block_bytes)),
            unmap: facts.unmap_supported() == Some(true),
            jobs: Some(jobs),
        })
    }

    /// The far side's logical block length.
    pub fn block_bytes(&self) -> u32 {
        self.block_bytes
    }

    /// Runs one command on a session thread; the data-in buffer.
    fn run(&self, cdb: Cdb, buffer: Vec<u8>) -> io::Result<Vec<u8>> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let gone = || io::Error::other(format!("{}: the session threads stopped", self.url));
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Job { cdb, buffer, reply })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Splits `offset..offset+len` into commands of at most the transfer limit.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let step =
            self.transfer_bytes_max / u64::from(self.block_bytes) * u64::from(self.block_bytes);
        let end = offset + len;
        let mut at = offset;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let piece = step.min(end - at);
                let here = at;
                at += piece;
                (here, piece)
            })
        })
    }

    fn check_aligned(&self, offset: u64, len: u64) -> io::Result<()> {
        let block = u64::from(self.block_bytes);
        check_range(self.size_bytes, offset, len)?;
        if !offset.is_multiple_of(block) || !len.is_multiple_of(block) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{offset}+{len} is not whole {block}-byte blocks of {}",
                    self.url
                ),
            ));
        }
        Ok(())
    }

    fn lba_blocks(&self, offset: u64, len: u64) -> (u64, u32) {
        let block = u64::from(self.block_bytes);
        (offset / block, (len / block) as u32)
    }
}

impl Drop for IscsiBackend {
    fn drop(&mut self) {
        // Closing the queue ends the session threads once they finish their command.
        self.jobs.take();
    }
}

/// One session's thread: logs in on first use, runs commands until the queue closes.
fn session_thread(far: &Far, queue: &crossbeam_channel::Receiver<Job>) {
    let mut session: Option<Client> = None;
    while let Ok(job) = queue.recv() {
        let outcome = run_on(far, &mut session, &job.cdb, job.buffer);
        let _ = job.reply.send(outcome);
    }
    if let Some(client) = session {
        let _ = client.logout();
    }
}

/// Runs one command, logging in again when the session is lost and taking unit
/// attentions, within [`RECONNECT_BUDGET`]. Returns the data-in buffer.
fn run_on(
    far: &Far,
    session: &mut Option<Client>,
    cdb: &Cdb,
    buffer: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + far.reconnect_budget;
    let mut attentions = 0;
    let mut pause = Duration::from_millis(20);
    loop {
        let client = match session {
            Some(client) => client,
            None => match Client::connect(&far.config) {
                Ok(client) => session.insert(client),
                Err(error) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::other(format!(
                            "{}: logging in again: {error}",
                            far.url
                        )));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                    continue;
                }
            },
        };
        let request = Request::new(far.lun, cdb.clone(), buffer.clone(), 0);
        match client.execute(request) {
            Ok(outcome) => match outcome.status {
                STATUS_GOOD => return Ok(outcome.buffer),
                STATUS_BUSY | STATUS_TASK_SET_FULL if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                STATUS_CHECK_CONDITION
                    if attentions < UNIT_ATTENTION_RETRIES
                        && is_unit_attention(outcome.sense.as_deref()) =>
                {
                    attentions += 1;
                }
                status => {
                    let sense = outcome.sense.as_deref().and_then(|s| Sense::decode(s).ok());
                    return Err(io::Error::other(format!(
                        "{} answered {}",
                        far.url,
                        describe(status, sense.as_ref())
                    )));
                }
            },
            Err(error) if lost(&error) && Instant::now() < deadline => {
                tracing::warn!(url = %far.url, %error, "session to the far side lost; logging in again");
                *session = None;
            }
            Err(error) => return Err(io::Error::other(format!("{}: {error}", far.url))),
        }
    }
}

fn is_unit_attention(sense: Option<&[u8]>) -> bool {
    datapath::scsi::is_unit_attention(STATUS_CHECK_CONDITION, sense)
}

/// Whether the error means the session is gone (log in again), not that the command failed.
fn lost(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Transport { .. }
            | ClientError::Connect { .. }
            | ClientError::Session { .. }
            | ClientError::Pdu { .. }
            | ClientError::Closed(_)
            | ClientError::Command(_)
    )
}

fn invalid(error: datapath::scsi::ScsiError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
}

impl Backend for IscsiBackend {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_aligned(offset, buf.len() as u64)?;
        let mut done = 0usize;
        for (at, len) in self.pieces(offset, buf.len() as u64) {
            let (lba, blocks) = self.lba_blocks(at, len);
            let cdb = Cdb::read(lba, blocks, self.block_bytes, false).map_err(invalid)?;
            let data = self.run(cdb, vec![0; len as usize])?;
            let len = len as usize;
            if data.len() < len {
                return Err(io::Error::other(format!(
                    "{}: READ returned {} of {len} bytes",
                    self.url,
                    data.len()
                )));
            }
            buf[done..done + len].copy_from_slice(&data[..len]);
            done += len;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_aligned(offset, data.len() as u64)?;
        let mut done = 0usize;
        for (at, len) in self.pieces(offset, data.len() as u64) {
            let (lba, blocks) = self.lba_blocks(at, len);
            let cdb = Cdb::write(lba, blocks, self.block_bytes, false).map_err(invalid)?;
            let len = len as usize;
            self.run(cdb, data[done..done + len].to_vec())?;
            done += len;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.run(Cdb::synchronize_cache_10(0, 0, false), Vec::new())
            .map(drop)
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_aligned(offset, len)?;
        if !self.unmap {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} does not support UNMAP", self.url),
            ));
        }
        // One block descriptor per command (SBC-3 5.28): LBA, count, within u32 blocks.
        let block = u64::from(self.block_bytes);
        let mut lba = offset / block;
        let mut left = len / block;
        while left > 0 {
            let count = left.min(u64::from(u32::MAX));
            let mut list = vec![0u8; 24];
            list[0..2].copy_from_slice(&22u16.to_be_bytes());
            list[2..4].copy_from_slice(&16u16.to_be_bytes());
            list[8..16].copy_from_slice(&lba.to_be_bytes());
            list[16..20].copy_from_slice(&(count as u32).to_be_bytes());
            self.run(Cdb::unmap(24), list)?;
            lba += count;
            left -= count;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "iscsi"
    }

    fn thin(&self) -> bool {
        self.unmap
    }

    fn flush_may_block(&self) -> bool {
        true
    }

    fn io_may_block(&self) -> bool {
        true
    }

    fn logical_block_bytes(&self) -> Option<u32> {
        Some(self.block_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_target_or_with_a_bad_lun_are_refused_with_the_reason() {
        let error = parse_url("iscsi://127.0.0.1:3260").unwrap_err().to_string();
        assert!(error.contains("names no target"), "{error}");
        let error = parse_url("iscsi://127.0.0.1/iqn.x/abc")
            .unwrap_err()
            .to_string();
        assert!(error.contains("LUN"), "{error}");
        let url = parse_url("iscsi://127.0.0.1:3261/iqn.2026-01.x:y/2").unwrap();
        assert_eq!((url.port, url.lun), (3261, Some(2)));
    }

    #[test]
    fn a_far_side_that_does_not_answer_fails_the_open_with_its_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Nobody listens on the port once the listener is dropped.
        let error = IscsiBackend::open(&format!("iscsi://127.0.0.1:{port}/iqn.x:y/0"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    }
}
