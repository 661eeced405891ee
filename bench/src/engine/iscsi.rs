//! The `iscsi` engine: our data path. It logs in to the target an
//! `iscsi://[user%secret@]host[:port]/iqn/lun` URL names ([`datapath::url`]), or to an
//! [`EmbeddedTarget`] started in-process when the job names no file. By default the job
//! runs on its shard: one [`InlineShard`] on the job's own thread (the job generates,
//! submits, reaps, records and verifies in the shard's loop: one thread on one core, no
//! queue, doorbell or futex between them; see `shards`). With `shards=N` above 1 a
//! [`ShardPool`] of N shard threads carries the job through their queues. Each shard holds
//! up to `iodepth` commands; a unit goes to the shard with the fewest.
//!
//! At open, the LUN probe ([`datapath::scsi::probe`]) on every shard: TEST UNIT READY until
//! GOOD (a new I_T nexus usually gets one UNIT ATTENTION, SAM-5 5.14; at most
//! [`UNIT_ATTENTION_RETRIES`] are taken); then, on the first, READ CAPACITY(16) (SBC-3 5.16),
//! or READ CAPACITY(10) when the device does not know it; and INQUIRY of the Block Limits
//! VPD page (SBC-3 6.6.3) to learn whether UNMAP is supported
//! ([`IscsiEngine::unmap_supported`]).
//!
//! Units become READ(10)/WRITE(10) when the range fits, READ(16)/WRITE(16) otherwise, and a
//! trim becomes UNMAP (SBC-3 5.28) with one block descriptor: when the LUN does not support
//! it, the target's CHECK CONDITION is what the unit reports. Completions map to
//! [`IoError`]: CHECK CONDITION with its sense key/ASC/ASCQ, any other status not GOOD as
//! `Status`, an underflow residual as `Short`, a lost connection or a protocol failure as
//! `Transport`.
//!
//! `transport=` ([`IscsiOptions::transport`]): `software` runs each shard's own session
//! over kernel TCP; `dependent` and `independent` build a software model of that kind of
//! offload adapter (`offload::dependent`, `offload::independent`) with one queue pair per
//! shard, and shard `i` drives queue pair `i` ([`ShardPath`]). The adapter's threads'
//! CPU time is [`IscsiEngine::adapter_cpu_time`], so a report can tell host from adapter CPU.
//!
//! `io_timeout`: a unit still in flight that long after its submission fails with
//! [`IoError::Timeout`], found when the runner reaps (there is no timer thread). The shard
//! still holds the command: its buffer is not handed back (the unit comes back with an
//! empty buffer), and its slot stays taken until the late completion arrives, which is then
//! dropped, counted in [`EngineCounters::late_completions`], and its buffer goes to the
//! pool. The engine also asks the shard to abort the command (ABORT TASK, RFC 7143
//! 11.5.1): a target that answers "function complete" frees the slot at once, the
//! connection untouched. A runner whose units all timed out waits in [`Engine::reap`] for
//! a slot to free (issue 11: it spun). If the target does not answer within twice
//! `io_timeout` (30 s
//! without one), the session's command timeout fails the connection (RFC 7143 ERL 0), and
//! the shard recovers the session ([`IscsiOptions::reconnect`], `datapath::shard`'s
//! `reconnect`: log in again, bounded, commands not timed out sent again), so I/O goes on
//! once the target is back. A target that closes the connection is recovered the same way.
//! Only when recovery gives up do units fail with [`IoError::Disconnected`].

use datapath::credentials::{short_secret_warning, EnvChap};
use std::collections::VecDeque;

use datapath::shard::TagMap;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use datapath::adapter::PathError;
use datapath::client::ClientConfig;
use datapath::scsi::probe::{probe_lun, LunFacts, ProbeConfig, ProbeError, ProbeFailure};
use datapath::scsi::sense::status;
use datapath::scsi::{Cdb, Sense};
use datapath::session::{ChapConfig, CommandError, DataDirection, Request, Residual};
use datapath::shard::{
    InlineExecutor, InlineShard, MultipathConfig, PathPolicy, PathStatus, ReconnectPolicy,
    ShardCommandError, ShardCompletion, ShardConfig, ShardExecutor, ShardPath, ShardPool,
};
use datapath::text::DigestChoice;
use datapath::url::{IscsiUrl, UrlError};

use super::embedded::{EmbeddedOptions, EmbeddedTarget};
use super::shards::Shards;
use super::{take_buffer, Engine, EngineCounters, EngineError};
use crate::io::{Direction, IoDone, IoError, IoUnit};
pub use crate::job::spec::{PathList, TransportKind};

/// Unit attentions taken per shard at open (TEST UNIT READY sent again after each).
pub const UNIT_ATTENTION_RETRIES: usize = 5;
/// Time allowed for each set-up command.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The session command timeout without `io_timeout` (see the module docs on `io_timeout`).
const COMMAND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The shortest session command timeout with `io_timeout`.
const COMMAND_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Session recovery by default: as many attempts as libiscsi's tools are usually given,
/// within open-iscsi's order of replacement timeout.
pub const RECONNECT_ATTEMPTS_DEFAULT: u32 = 5;
pub const REPLACEMENT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// UNMAP parameter list: 8-byte header and one 16-byte block descriptor.
const UNMAP_PARAMETER_BYTES: u16 = 24;

/// Where the engine connects.
#[derive(Debug, Clone)]
pub enum IscsiTarget {
    /// A target named by URL (target and LUN required).
    Url(IscsiUrl),
    /// Our own target, started in-process for the job.
    Embedded(EmbeddedOptions),
}

/// A digest offer, in libiscsi's words (`none`, `crc32c`, `crc32c-none`, `none-crc32c`):
/// the first is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestPreference {
    None,
    Crc32c,
    Crc32cOrNone,
    NoneOrCrc32c,
}

impl DigestPreference {
    /// Parses libiscsi's names (case-insensitive, `_` or `-`).
    pub fn parse(text: &str) -> Option<DigestPreference> {
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "none" => Some(DigestPreference::None),
            "crc32c" => Some(DigestPreference::Crc32c),
            "crc32c-none" => Some(DigestPreference::Crc32cOrNone),
            "none-crc32c" => Some(DigestPreference::NoneOrCrc32c),
            _ => None,
        }
    }

    fn choices(self) -> Vec<DigestChoice> {
        match self {
            DigestPreference::None => vec![DigestChoice::None],
            DigestPreference::Crc32c => vec![DigestChoice::Crc32c],
            DigestPreference::Crc32cOrNone => vec![DigestChoice::Crc32c, DigestChoice::None],
            DigestPreference::NoneOrCrc32c => vec![DigestChoice::None, DigestChoice::Crc32c],
        }
    }
}

/// Login keys (RFC 7143 section 13) and credentials. `None` keeps the data path's default
/// offer ([`ClientConfig::new`]). CHAP given here wins over CHAP in the URL.
/// (`Debug` leaves the secrets out.)
#[derive(Clone, Default)]
pub struct LoginOptions {
    pub initiator_name: Option<String>,
    pub header_digest: Option<DigestPreference>,
    pub data_digest: Option<DigestPreference>,
    pub immediate_data: Option<bool>,
    pub initial_r2t: Option<bool>,
    pub max_burst_length: Option<u32>,
    pub first_burst_length: Option<u32>,
    pub max_recv_data_segment_length: Option<u32>,
    /// One-way CHAP: the name and secret we answer with.
    pub chap: Option<(String, String)>,
    /// Mutual CHAP: the name and secret the target must answer with.
    pub mutual_chap: Option<(String, String)>,
    /// `None`: the data path's default (5 s).
    pub connect_timeout: Option<Duration>,
    /// NOP-Out after the target was silent this long, answered within the timeout
    /// (`noop_out_interval`, `noop_out_timeout`); `None`: the data path's defaults (10 s
    /// for one path, [`MultipathConfig::PING_INTERVAL_DEFAULT`] and
    /// [`MultipathConfig::PING_TIMEOUT_DEFAULT`] for multipath).
    pub nop_interval: Option<Duration>,
    pub nop_timeout: Option<Duration>,
}

impl std::fmt::Debug for LoginOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginOptions")
            .field("initiator_name", &self.initiator_name)
            .field("header_digest", &self.header_digest)
            .field("data_digest", &self.data_digest)
            .field("immediate_data", &self.immediate_data)
            .field("initial_r2t", &self.initial_r2t)
            .field("max_burst_length", &self.max_burst_length)
            .field("first_burst_length", &self.first_burst_length)
            .field(
                "max_recv_data_segment_length",
                &self.max_recv_data_segment_length,
            )
            .field("chap_user", &self.chap.as_ref().map(|(u, _)| u))
            .field(
                "mutual_chap_user",
                &self.mutual_chap.as_ref().map(|(u, _)| u),
            )
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Set-up of an iSCSI engine.
#[derive(Debug, Clone)]
pub struct IscsiOptions {
    pub target: IscsiTarget,
    pub login: LoginOptions,
    /// Shards (sessions, threads); 1 per job by default.
    pub shards: usize,
    /// Commands in flight per shard.
    pub iodepth: usize,
    /// Fail a unit not completed this long after submission (see the module docs).
    pub io_timeout: Option<Duration>,
    /// What a shard does when its connection is lost (the job's `reconnect_max` and
    /// `replacement_timeout`); software transport only.
    pub reconnect: ReconnectPolicy,
    /// Pin shard `i` to core `first_core + i` (fio's `cpus_allowed` maps here).
    pub first_core: Option<usize>,
    /// What carries the commands (the job's `transport=`, `spec.iscsi.transport`):
    /// software TCP, or a model of a dependent or independent offload adapter with one
    /// queue pair per shard.
    pub transport: TransportKind,
    /// More LUNs of the same target, addressed as files 1, 2, ... (fio's `filename` list).
    pub more_luns: Vec<u64>,
    /// fio's `sync` (`1` or `dsync`): writes carry FUA (SBC-3 5.40: the target completes
    /// them only once they are on the medium).
    pub fua: bool,
    /// fio's `hipri`: the shard polls for completions (`ShardConfig::completion_spin`, and
    /// a pool's shards poll their queue when idle, `idle_spin`) instead of sleeping at
    /// once. Off by default: spinning spends CPU on every I/O.
    pub hipri: bool,
    /// Several paths to the LU (the job's `paths=`, `path_policy=`, `no_path_retry=`):
    /// each shard logs in through every portal (software transport only).
    pub multipath: Option<MultipathOptions>,
}

/// The job's multipath options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathOptions {
    pub paths: PathList,
    pub policy: PathPolicy,
    pub no_path_retry: Duration,
}

impl MultipathOptions {
    /// What multipathd does with `no_path_retry=queue` bounded: commands wait this long
    /// for a path to come back before they fail.
    pub const NO_PATH_RETRY_DEFAULT: Duration = Duration::from_secs(30);
}

impl IscsiOptions {
    pub fn new(target: IscsiTarget, iodepth: usize) -> IscsiOptions {
        IscsiOptions {
            target,
            login: LoginOptions::default(),
            shards: 1,
            iodepth,
            io_timeout: None,
            reconnect: ReconnectPolicy::new(
                RECONNECT_ATTEMPTS_DEFAULT,
                REPLACEMENT_TIMEOUT_DEFAULT,
            ),
            first_core: None,
            transport: TransportKind::Software,
            more_luns: Vec::new(),
            fua: false,
            hipri: false,
            multipath: None,
        }
    }
}

/// One LUN beyond the first, as READ CAPACITY found it.
#[derive(Debug, Clone, Copy)]
struct MoreLun {
    lun: u64,
    size_bytes: u64,
    block_size_bytes: u32,
}

/// One command the engine has handed (or will hand) to a shard.
struct InFlight {
    /// The unit; for reads and writes its buffer travels in the request meanwhile.
    unit: IoUnit,
    shard: usize,
    /// When it counts as timed out (set at submission).
    deadline: Option<Instant>,
    /// Already reported as timed out; its completion is late.
    timed_out: bool,
}

/// See the module docs.
pub struct IscsiEngine {
    /// Declared before the target: the sessions log out before the target stops.
    shards: Option<Shards>,
    /// The adapter model the shards drive (software: none).
    path: ShardPath,
    embedded: Option<EmbeddedTarget>,
    lun: u64,
    block_size_bytes: u32,
    size_bytes: u64,
    /// Files 1, 2, ...: more LUNs of the target.
    more_luns: Vec<MoreLun>,
    unmap_supported: Option<bool>,
    iodepth: usize,
    /// Writes carry FUA (`IscsiOptions::fua`).
    fua: bool,
    io_timeout: Option<Duration>,
    command_timeout: Duration,
    next_tag: u64,
    in_flight: TagMap<u64, InFlight>,
    /// Completions taken from the shards, being turned into units (kept to reuse).
    arrived: Vec<ShardCompletion>,
    timed_out: usize,
    /// Commands per shard, timed-out ones included (the shard still holds them).
    per_shard: Vec<usize>,
    /// Shards whose thread is gone (completion queue disconnected).
    dead_shards: Vec<bool>,
    /// Requests queued, not yet handed to their shard.
    pending: VecDeque<(usize, Request)>,
    /// Requests handed to the inline shard that no kernel entry has sent yet.
    unsent: bool,
    ready: VecDeque<IoDone>,
    buffers: Vec<Vec<u8>>,
    counters: EngineCounters,
}

impl std::fmt::Debug for IscsiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiEngine")
            .field("shards", &self.shards)
            .field("embedded", &self.embedded)
            .field("lun", &self.lun)
            .field("block_size_bytes", &self.block_size_bytes)
            .field("size_bytes", &self.size_bytes)
            .field("unmap_supported", &self.unmap_supported)
            .finish_non_exhaustive()
    }
}

impl IscsiEngine {
    pub fn open(options: &IscsiOptions) -> Result<IscsiEngine, EngineError> {
        if options.iodepth == 0 {
            return Err(EngineError::InvalidOption(
                "iodepth must be at least 1".into(),
            ));
        }
        if options.shards == 0 {
            return Err(EngineError::InvalidOption(
                "shards must be at least 1".into(),
            ));
        }
        if options.io_timeout == Some(Duration::ZERO) {
            return Err(EngineError::InvalidOption(
                "io_timeout must be greater than 0".into(),
            ));
        }
        let (embedded, url) = match &options.target {
            IscsiTarget::Url(url) => (None, url.clone()),
            IscsiTarget::Embedded(embedded) => {
                let target = EmbeddedTarget::start(embedded)?;
                let url = target.url();
                (Some(target), url)
            }
        };
        let text = url.to_string();
        let lun = url.lun.ok_or(UrlError::NoLun { url: text.clone() })?;
        if url.target.is_none() {
            return Err(UrlError::NoTarget { url: text }.into());
        }
        // Twice io_timeout: a unit reported timed out keeps its slot that long more for a
        // late answer (a target back from a stall) before the session is recovered.
        let command_timeout = options.io_timeout.map_or(COMMAND_TIMEOUT_DEFAULT, |t| {
            t.saturating_mul(2).max(COMMAND_TIMEOUT_MIN)
        });
        let client = client_config(&url, &options.login, command_timeout, options.iodepth)?;
        let multipath = match &options.multipath {
            Some(multi) => Some(multipath_config(&client, multi, &options.login, lun)?),
            None => None,
        };
        // For an adapter, a fresh software model of that kind: a queue pair per path per
        // shard, and one to spare for each, so an Async Message event 1 makes the new
        // session before it breaks the old one.
        let paths = multipath.as_ref().map_or(1, |m| m.portals.len());
        let queue_pairs = datapath::shard::queue_pairs_needed(options.shards, paths);
        let path = offload::model_path(options.transport, queue_pairs);
        let shard_config = ShardConfig {
            core: options.first_core,
            queue_depth: options.iodepth,
            ring_entries: (options.iodepth * 2).next_power_of_two().clamp(64, 4096) as u32,
            path: path.clone(),
            reconnect: options.reconnect,
            multipath,
            ..ShardConfig::default()
        };
        let shard_config = if options.hipri {
            shard_config
        } else {
            ShardConfig {
                completion_spin: Duration::ZERO,
                idle_spin: Duration::ZERO,
                ..shard_config
            }
        };
        let (shards, facts, more) = if options.shards == 1 {
            // Probed through a session of its own here; the job's thread logs in again.
            let mut shard = InlineShard::connect(&client, &shard_config, 0)?;
            let info = shard.info().clone();
            let mut executor = InlineExecutor {
                shard: &mut shard,
                timeout: SETUP_TIMEOUT,
            };
            let facts = probe_on(&mut executor, &[], lun, true)?;
            let more = probe_more(&options.more_luns, |lun| {
                probe_on(&mut executor, &[], lun, false)
            })?;
            shard.close();
            let shards = Shards::Inline {
                shard: None,
                client: Box::new(client),
                config: Box::new(shard_config),
                info: Box::new(info),
            };
            (shards, facts, more)
        } else {
            let pool = ShardPool::start(&client, options.shards, &shard_config)?;
            let facts = probe(&pool, lun, true)?;
            let more = probe_more(&options.more_luns, |lun| probe(&pool, lun, false))?;
            (Shards::Pool(pool), facts, more)
        };
        let (size_bytes, block_size_bytes) = facts.size().map_err(probe_error)?;
        let more_luns = more;
        let unmap_supported = facts.unmap_supported();
        tracing::info!(
            url = %url,
            shards = shards.len(),
            transport = path.name(),
            size_bytes,
            block_size_bytes,
            ?unmap_supported,
            "iSCSI engine open"
        );
        Ok(IscsiEngine {
            per_shard: vec![0; shards.len()],
            dead_shards: vec![false; shards.len()],
            shards: Some(shards),
            path,
            embedded,
            lun,
            block_size_bytes,
            size_bytes,
            more_luns,
            unmap_supported,
            iodepth: options.iodepth,
            fua: options.fua,
            io_timeout: options.io_timeout,
            command_timeout,
            next_tag: 0,
            in_flight: TagMap::default(),
            arrived: Vec::new(),
            timed_out: 0,
            pending: VecDeque::new(),
            unsent: false,
            ready: VecDeque::new(),
            buffers: Vec::new(),
            counters: EngineCounters::default(),
        })
    }

    /// `software`, `dependent` or `independent`.
    pub fn transport(&self) -> &'static str {
        self.path.name()
    }

    /// CPU time the adapter model's own threads used so far (`None` on the software path).
    pub fn adapter_cpu_time(&self) -> Option<Duration> {
        self.path.adapter_cpu_time()
    }

    /// Whether the LUN supports UNMAP, from its Block Limits page (`None`: it has none).
    pub fn unmap_supported(&self) -> Option<bool> {
        self.unmap_supported
    }

    /// The LUN the engine addresses.
    pub fn lun(&self) -> u64 {
        self.lun
    }

    /// The shards' sessions (ISID, TSIH, ring flags), in shard order.
    pub fn shard_info(&self) -> Vec<datapath::shard::ShardInfo> {
        self.shards.as_ref().map_or_else(Vec::new, Shards::info)
    }

    /// The embedded target's portal, when the engine started one.
    pub fn embedded_portal(&self) -> Option<std::net::SocketAddr> {
        self.embedded.as_ref().map(EmbeddedTarget::portal)
    }

    fn refuse(&mut self, unit: IoUnit, error: IoError) {
        self.ready.push_back(IoDone {
            unit,
            result: Err(error),
        });
    }

    /// The CDB, data direction and buffer of `unit`'s command (the unit keeps a trim's
    /// empty buffer; the UNMAP parameter list travels instead).
    /// The LUN and logical block of file `file` (0: the URL's LUN).
    fn lun_of(&self, file: u32) -> Option<(u64, u32)> {
        match file {
            0 => Some((self.lun, self.block_size_bytes)),
            n => self
                .more_luns
                .get(n as usize - 1)
                .map(|more| (more.lun, more.block_size_bytes)),
        }
    }

    fn command(&self, unit: &mut IoUnit) -> Result<(Cdb, DataDirection, Vec<u8>), IoError> {
        let Some((_, block_size_bytes)) = self.lun_of(unit.file) else {
            return Err(IoError::Transport(format!(
                "file {} of a job with {} LUN(s)",
                unit.file,
                self.more_luns.len() + 1
            )));
        };
        if unit.is_flush() {
            // fio's fsync / end_fsync: the whole LUN's cache to the medium (SBC-3 5.24).
            let cdb = Cdb::synchronize_cache_10(0, 0, false);
            return Ok((cdb, DataDirection::None, Vec::new()));
        }
        let block = u64::from(block_size_bytes);
        if !unit.offset.is_multiple_of(block)
            || !u64::from(unit.len).is_multiple_of(block)
            || unit.len == 0
        {
            return Err(IoError::Transport(format!(
                "offset {} length {} is not a non-zero whole number of the LUN's \
                 {block}-byte blocks",
                unit.offset, unit.len
            )));
        }
        let lba = unit.offset / block;
        let blocks = (u64::from(unit.len) / block) as u32;
        let len = unit.len;
        let invalid = |e: datapath::scsi::ScsiError| IoError::Transport(e.to_string());
        match unit.direction {
            Direction::Read | Direction::Write if unit.buffer.len() < len as usize => {
                Err(IoError::Transport(format!(
                    "buffer of {} bytes is shorter than the {len}-byte I/O",
                    unit.buffer.len()
                )))
            }
            Direction::Read => {
                let cdb = Cdb::read(lba, blocks, block_size_bytes, false).map_err(invalid)?;
                let buffer = std::mem::take(&mut unit.buffer);
                Ok((cdb, DataDirection::Read { len }, buffer))
            }
            Direction::Write => {
                // fio's sync=1/dsync: every write reaches the medium before it completes.
                let cdb = Cdb::write(lba, blocks, block_size_bytes, self.fua).map_err(invalid)?;
                let buffer = std::mem::take(&mut unit.buffer);
                Ok((cdb, DataDirection::Write { len }, buffer))
            }
            Direction::Trim => {
                let (cdb, parameters) = unmap(lba, blocks);
                let len = u32::from(UNMAP_PARAMETER_BYTES);
                Ok((cdb, DataDirection::Write { len }, parameters))
            }
        }
    }

    /// The shard with the fewest commands, if one has room.
    fn pick_shard(&self) -> Option<usize> {
        self.per_shard
            .iter()
            .enumerate()
            .filter(|(i, n)| **n < self.iodepth && !self.dead_shards[*i])
            .min_by_key(|(_, n)| **n)
            .map(|(i, _)| i)
    }

    /// Hands queued requests to their shards; a full shard keeps the rest for later.
    fn push_pending(&mut self) -> usize {
        let Some(shards) = self.shards.as_mut() else {
            return 0;
        };
        let mut submitted = 0;
        // One reading for the batch: the commands' start and the io_timeout deadline.
        let now = Instant::now();
        let deadline = self.io_timeout.map(|t| now + t);
        while let Some((shard, request)) = self.pending.pop_front() {
            let tag = request.user_data;
            match shards.submit(shard, now, request) {
                Ok(()) => {
                    submitted += 1;
                    if let Some(entry) = self.in_flight.get_mut(&tag) {
                        entry.deadline = deadline;
                    }
                }
                Err(request) => {
                    self.pending.push_front((shard, request));
                    break;
                }
            }
        }
        // The inline shard sends in the caller's next kernel entry: the reap that follows
        // each submission waits with the send in the same entry (one `io_uring_enter` per
        // turn at depth 1, not a send and then a wait), and flushes on its way out when it
        // did not wait (`IscsiEngine::flush_unsent`).
        self.unsent |= submitted > 0;
        self.counters.ios_submitted += submitted as u64;
        submitted
    }

    /// Sends what `push_pending` handed the inline shard, if no wait has sent it yet.
    fn flush_unsent(&mut self) {
        if std::mem::take(&mut self.unsent) {
            if let Some(shards) = self.shards.as_mut() {
                shards.flush();
            }
        }
    }

    /// Turns a shard's completion into the unit's.
    fn complete(&mut self, completion: ShardCompletion) -> Option<IoDone> {
        let Some(entry) = self.in_flight.remove(&completion.user_data) else {
            tracing::warn!(
                tag = completion.user_data,
                "completion of an unknown command"
            );
            return None;
        };
        if let Some(n) = self.per_shard.get_mut(entry.shard) {
            *n = n.saturating_sub(1);
        }
        if entry.timed_out {
            self.timed_out -= 1;
            self.counters.late_completions += 1;
            if entry.unit.direction != Direction::Trim {
                let buffer = match completion.result {
                    Ok(outcome) => outcome.buffer,
                    Err(failure) => failure.buffer,
                };
                self.recycle(buffer);
            }
            return None;
        }
        let mut unit = entry.unit;
        let result = match completion.result {
            Ok(outcome) => {
                let result = outcome_result(
                    &unit,
                    outcome.status,
                    outcome.sense.as_deref(),
                    outcome.residual,
                    outcome.transferred,
                );
                if unit.direction != Direction::Trim {
                    unit.buffer = outcome.buffer;
                }
                result
            }
            Err(failure) => {
                if unit.direction != Direction::Trim {
                    unit.buffer = failure.buffer;
                }
                Err(match failure.error {
                    PathError::Command(CommandError::TimedOut) => {
                        IoError::Timeout(self.command_timeout)
                    }
                    // Recovery is off or gave up: the shard cannot reach the target.
                    PathError::Command(CommandError::ConnectionLost(reason)) => {
                        IoError::Disconnected(reason)
                    }
                    other => IoError::Transport(other.to_string()),
                })
            }
        };
        self.counters.ios_completed += 1;
        Some(IoDone { unit, result })
    }

    /// Fails every unit past its deadline with [`IoError::Timeout`] and asks its shard to
    /// abort the command (ABORT TASK); returns the earliest deadline still ahead.
    fn expire(&mut self, now: Instant, out: &mut Vec<IoDone>) -> Option<Instant> {
        let timeout = self.io_timeout?;
        let mut next: Option<Instant> = None;
        for (tag, entry) in self.in_flight.iter_mut() {
            let Some(deadline) = entry.deadline.filter(|_| !entry.timed_out) else {
                continue;
            };
            if deadline <= now {
                entry.timed_out = true;
                self.timed_out += 1;
                // The target's "function complete" frees the slot at once, without
                // ending the connection; a target that does not answer leaves it to the
                // session's command timeout (module docs).
                if let Some(shards) = self.shards.as_mut() {
                    if let Err(e) = shards.abort(entry.shard, *tag) {
                        tracing::debug!(tag, error = %e, "ABORT TASK not sent");
                    }
                }
                self.counters.ios_timed_out += 1;
                self.counters.ios_completed += 1;
                let mut unit = entry.unit.clone();
                if unit.direction != Direction::Trim {
                    unit.buffer = Vec::new();
                }
                out.push(IoDone {
                    unit,
                    result: Err(IoError::Timeout(timeout)),
                });
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        next
    }

    /// Takes every completion waiting on any shard.
    fn drain_completions(&mut self, out: &mut Vec<IoDone>) {
        let Some(shards) = self.shards.as_mut() else {
            return;
        };
        let mut completions = std::mem::take(&mut self.arrived);
        let mut gone = Vec::new();
        // Bounded: a shard posts at most its queue depth between two drains, and this
        // takes at most twice that from each before moving on.
        shards.drain(2 * self.iodepth + 1, &mut completions, &mut gone);
        for completion in completions.drain(..) {
            if let Some(done) = self.complete(completion) {
                out.push(done);
            }
        }
        self.arrived = completions;
        for shard in gone {
            self.shard_vanished(shard, out);
        }
    }

    /// A shard's thread is gone: every command it held fails.
    fn shard_vanished(&mut self, shard: usize, out: &mut Vec<IoDone>) {
        if self.dead_shards.get(shard).copied().unwrap_or(true) {
            return;
        }
        self.dead_shards[shard] = true;
        tracing::error!(shard, "iSCSI shard stopped");
        let tags: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, e)| e.shard == shard)
            .map(|(t, _)| *t)
            .collect();
        let pending: Vec<(usize, Request)> = self.pending.drain(..).collect();
        for (s, request) in pending {
            if s != shard {
                self.pending.push_back((s, request));
            }
        }
        for tag in tags {
            if let Some(entry) = self.in_flight.remove(&tag) {
                self.per_shard[shard] = self.per_shard[shard].saturating_sub(1);
                if entry.timed_out {
                    self.timed_out -= 1;
                    continue;
                }
                self.counters.ios_completed += 1;
                out.push(IoDone {
                    unit: entry.unit,
                    result: Err(IoError::Disconnected(format!(
                        "iSCSI shard {shard} stopped"
                    ))),
                });
            }
        }
    }

    /// Waits up to `wait` for a completion on any live shard (it is left for
    /// `drain_completions`).
    /// Waits for a completion; an inline shard's wait also sends what is unsent.
    fn wait_any(&mut self, wait: Duration) {
        self.unsent = false;
        match self.shards.as_mut() {
            Some(shards) => shards.wait_any(wait, &self.dead_shards),
            None => std::thread::sleep(wait),
        }
    }

    fn shutdown(&mut self) -> EngineCounters {
        if self.shards.is_none() {
            return self.counters;
        }
        let mut sink = Vec::new();
        // Completions dropped here were never handed to the runner (late ones still count
        // as late).
        let completed = self.counters.ios_completed;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        // Let what the shards hold finish, so their buffers come back before logout.
        while self.in_flight.len() > self.pending.len() && Instant::now() < deadline {
            self.drain_completions(&mut sink);
            sink.clear();
            self.wait_any(Duration::from_millis(50));
        }
        self.counters.ios_completed = completed;
        self.refresh_counters();
        if let Some(shards) = self.shards.take() {
            shards.shutdown();
        }
        if let Some(target) = self.embedded.take() {
            target.stop();
        }
        self.counters
    }

    fn refresh_counters(&mut self) {
        self.counters = Engine::counters(self);
    }
}

impl Engine for IscsiEngine {
    fn name(&self) -> &'static str {
        "iscsi"
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn block_size_bytes(&self) -> u32 {
        self.block_size_bytes
    }

    fn queue_depth(&self) -> usize {
        self.iodepth * self.per_shard.len()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len() - self.timed_out + self.ready.len()
    }

    fn buffer(&mut self, len_bytes: u32) -> Vec<u8> {
        take_buffer(&mut self.buffers, len_bytes)
    }

    fn recycle(&mut self, buffer: Vec<u8>) {
        if self.buffers.len() < 2 * self.queue_depth() {
            self.buffers.push(buffer);
        }
    }

    fn queue(&mut self, mut unit: IoUnit) -> Result<(), IoUnit> {
        if self.in_flight() >= self.queue_depth() {
            return Err(unit);
        }
        let Some(shard) = self.pick_shard() else {
            if self.dead_shards.iter().all(|d| *d) {
                self.refuse(
                    unit,
                    IoError::Disconnected("every iSCSI shard stopped".into()),
                );
                return Ok(());
            }
            return Err(unit);
        };
        let (cdb, direction, buffer) = match self.command(&mut unit) {
            Ok(command) => command,
            Err(error) => {
                self.refuse(unit, error);
                return Ok(());
            }
        };
        let lun = self.lun_of(unit.file).map_or(self.lun, |(lun, _)| lun);
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        self.pending.push_back((
            shard,
            Request {
                direction,
                ..Request::new(lun, cdb, buffer, tag)
            },
        ));
        self.per_shard[shard] += 1;
        self.in_flight.insert(
            tag,
            InFlight {
                unit,
                shard,
                deadline: None,
                timed_out: false,
            },
        );
        Ok(())
    }

    fn file_count(&self) -> usize {
        1 + self.more_luns.len()
    }

    fn file_geometry(&self, file: usize) -> Option<(u64, u32)> {
        match file {
            0 => Some((self.size_bytes, self.block_size_bytes)),
            n => self
                .more_luns
                .get(n - 1)
                .map(|more| (more.size_bytes, more.block_size_bytes)),
        }
    }

    /// Shards of a pool run on their own threads: a unit may be sent and answered before
    /// the hand-over returns. An inline shard sends during the submission itself; its
    /// units count as issued when the submission starts too, as fio's libiscsi engine's
    /// count from when libiscsi queues them (before its socket write).
    /// A flush unit is SYNCHRONIZE CACHE of its LUN.
    fn supports_flush(&self) -> bool {
        true
    }

    fn issues_when_submit_starts(&self) -> bool {
        true
    }

    /// The inline shard logs in on the job's thread (its ring is that thread's), and the
    /// LUN is made ready on its new I_T nexus (its UNIT ATTENTION taken), before the
    /// job's clock starts.
    fn on_job_thread(&mut self) -> Result<(), EngineError> {
        let lun = self.lun;
        let more: Vec<u64> = self.more_luns.iter().map(|m| m.lun).collect();
        let Some(shards) = self.shards.as_mut() else {
            return Ok(());
        };
        if shards.threaded() {
            return Ok(());
        }
        let shard = shards.on_job_thread()?;
        let mut executor = InlineExecutor {
            shard,
            timeout: SETUP_TIMEOUT,
        };
        probe_on(&mut executor, &more, lun, false)?;
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, EngineError> {
        if self.shards.as_ref().is_some_and(Shards::needs_connect) {
            // Driven without `on_job_thread` (a caller of its own): log in on this thread.
            self.on_job_thread()?;
        }
        Ok(self.push_pending())
    }

    fn reap(
        &mut self,
        min: usize,
        timeout: Duration,
        out: &mut Vec<IoDone>,
    ) -> Result<usize, EngineError> {
        let start = out.len();
        let wanted = min.min(self.in_flight());
        // Full of timed-out units, nothing the runner counts in flight: wait for a late
        // completion to free a slot (see `Engine::reap`).
        let wait_for_room = min > wanted && self.timed_out > 0 && self.pick_shard().is_none();
        let late_before = self.counters.late_completions;
        let mut now = Instant::now();
        let deadline = now + timeout;
        out.extend(self.ready.drain(..));
        let mut waited = false;
        // Bounded by the deadline: each round waits for a completion or the clock.
        loop {
            if !self.pending.is_empty() {
                self.push_pending();
            }
            self.drain_completions(out);
            // Read again only after a wait: the first round's is the deadline's reading.
            if std::mem::take(&mut waited) {
                now = Instant::now();
            }
            let next_expiry = self.expire(now, out);
            let room_freed =
                self.counters.late_completions > late_before || self.dead_shards.iter().any(|d| *d);
            let done = if wait_for_room {
                room_freed || out.len() > start
            } else {
                out.len() - start >= wanted
            };
            if done || now >= deadline {
                break;
            }
            let until = next_expiry.map_or(deadline, |e| e.min(deadline));
            // Requests waiting for room in a shard's queue: look again soon.
            let wait = if self.pending.is_empty() {
                until.saturating_duration_since(now)
            } else {
                until
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(1))
            };
            self.wait_any(wait);
            waited = true;
        }
        self.flush_unsent();
        self.refresh_counters();
        Ok(out.len() - start)
    }

    fn paths(&self) -> Vec<PathStatus> {
        self.shards
            .as_ref()
            .map(Shards::path_statuses)
            .unwrap_or_default()
    }

    fn counters(&self) -> EngineCounters {
        let mut counters = self.counters;
        if let Some(shards) = &self.shards {
            let sum = shards.stats();
            counters.kernel_entries = sum.kernel_entries;
            counters.bytes_copied = sum.bytes_copied;
            counters.reconnects = sum.reconnects;
            counters.reconnect_gap_ns_max = sum.reconnect_gap_ns_max;
            counters.commands_resent = sum.commands_resent;
        }
        counters
    }

    fn close(mut self: Box<Self>) -> Result<EngineCounters, EngineError> {
        Ok(self.shutdown())
    }
}

impl Drop for IscsiEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The shards' multipath configuration: the portals resolved (or discovered, for `all`).
fn multipath_config(
    client: &ClientConfig,
    options: &MultipathOptions,
    login: &LoginOptions,
    lun: u64,
) -> Result<MultipathConfig, EngineError> {
    let portals = options
        .paths
        .resolve(client)
        .map_err(EngineError::InvalidOption)?;
    Ok(MultipathConfig {
        portals,
        policy: options.policy,
        lun,
        no_path_retry: options.no_path_retry,
        ping_interval: login
            .nop_interval
            .unwrap_or(MultipathConfig::PING_INTERVAL_DEFAULT),
        ping_timeout: login
            .nop_timeout
            .unwrap_or(MultipathConfig::PING_TIMEOUT_DEFAULT),
    })
}

/// The unit's result from the target's answer.
fn outcome_result(
    unit: &IoUnit,
    status: u8,
    sense: Option<&[u8]>,
    residual: Residual,
    transferred: u32,
) -> Result<(), IoError> {
    match status {
        status::GOOD => {}
        status::CHECK_CONDITION => {
            return Err(match sense.map(Sense::decode) {
                Some(Ok(sense)) => IoError::CheckCondition {
                    key: sense.key,
                    asc: sense.asc,
                    ascq: sense.ascq,
                },
                _ => IoError::Status(status),
            })
        }
        other => return Err(IoError::Status(other)),
    }
    if unit.direction == Direction::Trim {
        return Ok(());
    }
    let done = match residual {
        Residual::Underflow(missing) => unit.len.saturating_sub(missing),
        _ => unit.len,
    }
    .min(if unit.direction == Direction::Read {
        transferred
    } else {
        unit.len
    });
    if done < unit.len {
        Err(IoError::Short {
            wanted: unit.len,
            done,
        })
    } else {
        Ok(())
    }
}

/// UNMAP (SBC-3 5.28) of `blocks` blocks from `lba`: the 10-byte CDB and its parameter
/// list (a header and one block descriptor).
fn unmap(lba: u64, blocks: u32) -> (Cdb, Vec<u8>) {
    let cdb = Cdb::unmap(UNMAP_PARAMETER_BYTES);
    let mut parameters = vec![0u8; usize::from(UNMAP_PARAMETER_BYTES)];
    // UNMAP DATA LENGTH counts the bytes after itself; BLOCK DESCRIPTOR DATA LENGTH the
    // descriptors.
    parameters[0..2].copy_from_slice(&(UNMAP_PARAMETER_BYTES - 2).to_be_bytes());
    parameters[2..4].copy_from_slice(&16u16.to_be_bytes());
    parameters[8..16].copy_from_slice(&lba.to_be_bytes());
    parameters[16..20].copy_from_slice(&blocks.to_be_bytes());
    (cdb, parameters)
}

/// The data path's client configuration for `url` with `login` applied.
pub(crate) fn client_config(
    url: &IscsiUrl,
    login: &LoginOptions,
    command_timeout: Duration,
    iodepth: usize,
) -> Result<ClientConfig, EngineError> {
    let portal = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| EngineError::Resolve {
            host: url.host.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| EngineError::Resolve {
            host: url.host.clone(),
            reason: "no address".into(),
        })?;
    let mut config = ClientConfig::new(portal, url.target.clone());
    config.command_timeout = command_timeout;
    config.queue_depth = iodepth;
    if let Some(name) = &login.initiator_name {
        config.initiator_name = name.clone();
    }
    if let Some(t) = login.connect_timeout {
        config.connect_timeout = t;
    }
    if let Some(t) = login.nop_interval {
        config.nop_interval = t;
    }
    if let Some(t) = login.nop_timeout {
        config.nop_timeout = t;
    }
    // Job options first, then the URL, then libiscsi's environment variables (so secrets
    // need not be in argv or a job file: `ps` shows argv to every user).
    let env = EnvChap::from_env();
    let user = url.user.clone().or(env.user);
    let secret = url.secret.clone().or(env.secret);
    let chap = login
        .chap
        .clone()
        .or_else(|| user.clone().zip(secret.clone()));
    let mutual = login.mutual_chap.clone().or_else(|| {
        (url.target_user.clone().or(env.target_user))
            .zip(url.target_secret.clone().or(env.target_secret))
    });
    if user.is_some() && secret.is_none() && login.chap.is_none() {
        return Err(EngineError::InvalidOption(format!(
            "{url}: CHAP needs a secret too (iscsi://user%secret@host/..., or ${})",
            datapath::credentials::CHAP_PASSWORD_ENV
        )));
    }
    for (what, credentials) in [("CHAP secret", &chap), ("mutual CHAP secret", &mutual)] {
        if let Some(warning) = credentials
            .as_ref()
            .and_then(|(_, secret)| short_secret_warning(what, secret.as_bytes()))
        {
            tracing::warn!("{warning}");
        }
    }
    config.chap = match (chap, mutual) {
        (Some((user, secret)), mutual) => Some(ChapConfig {
            user,
            secret: secret.into_bytes(),
            mutual: mutual.map(|(u, s)| (u, s.into_bytes())),
        }),
        (None, Some(_)) => {
            return Err(EngineError::InvalidOption(
                "mutual CHAP needs one-way CHAP too: give a user and a secret".into(),
            ))
        }
        (None, None) => None,
    };
    let url_digest = match url.header_digest.as_deref() {
        Some(text) => Some(DigestPreference::parse(text).ok_or_else(|| {
            EngineError::InvalidOption(format!(
                "header_digest '{text}' is not none, crc32c, crc32c-none or none-crc32c"
            ))
        })?),
        None => None,
    };
    if let Some(d) = login.header_digest.or(url_digest) {
        config.offer.header_digests = d.choices();
    }
    if let Some(d) = login.data_digest {
        config.offer.data_digests = d.choices();
    }
    let offer = &mut config.offer;
    if let Some(v) = login.immediate_data {
        offer.immediate_data = v;
    }
    if let Some(v) = login.initial_r2t {
        offer.initial_r2t = v;
    }
    if let Some(v) = login.max_burst_length {
        offer.max_burst_length = v;
    }
    if let Some(v) = login.first_burst_length {
        offer.first_burst_length = v;
    }
    if let Some(v) = login.max_recv_data_segment_length {
        offer.max_recv_data_segment_length = v;
    }
    Ok(config)
}

/// The LUN probe ([`datapath::scsi::probe`]): TEST UNIT READY past unit attentions (at
/// most [`UNIT_ATTENTION_RETRIES`] per shard) on every shard, its own I_T nexus; the capacity
/// (and the Block Limits page, with `limits`) on shard 0.
/// The LUN probe on every shard of `pool`: each made ready, the first also asked for
/// capacity (and Block Limits with `limits`).
fn probe(pool: &ShardPool, lun: u64, limits: bool) -> Result<LunFacts, EngineError> {
    let ready = ready_config();
    for shard in 1..pool.len() {
        probe_lun(
            &mut ShardExecutor::new(pool, shard, SETUP_TIMEOUT),
            lun,
            ready,
        )
        .map_err(probe_failure)?;
    }
    let config = ProbeConfig {
        capacity: true,
        block_limits: limits,
        ..ready
    };
    probe_lun(&mut ShardExecutor::new(pool, 0, SETUP_TIMEOUT), lun, config).map_err(probe_failure)
}

/// The LUN probe through one executor: `lun` with capacity (and Block Limits with
/// `limits`), after the LUNs of `ready_first` are only made ready (TEST UNIT READY past
/// their UNIT ATTENTION).
fn probe_on(
    executor: &mut InlineExecutor<'_>,
    ready_first: &[u64],
    lun: u64,
    limits: bool,
) -> Result<LunFacts, EngineError> {
    let ready = ready_config();
    for &other in ready_first {
        probe_lun(executor, other, ready).map_err(probe_failure)?;
    }
    let config = ProbeConfig {
        capacity: true,
        block_limits: limits,
        ..ready
    };
    probe_lun(executor, lun, config).map_err(probe_failure)
}

fn ready_config() -> ProbeConfig {
    ProbeConfig {
        unit_attention_retries: UNIT_ATTENTION_RETRIES as u32,
        ..ProbeConfig::READY
    }
}

/// Size and block of each of `luns`, by `probe`.
fn probe_more(
    luns: &[u64],
    mut probe: impl FnMut(u64) -> Result<LunFacts, EngineError>,
) -> Result<Vec<MoreLun>, EngineError> {
    luns.iter()
        .map(|&lun| {
            let (size_bytes, block_size_bytes) = probe(lun)?.size().map_err(probe_error)?;
            Ok(MoreLun {
                lun,
                size_bytes,
                block_size_bytes,
            })
        })
        .collect()
}

fn probe_error(e: ProbeError) -> EngineError {
    EngineError::Scsi {
        command: e.command(),
        reason: e.to_string(),
    }
}

fn probe_failure(failure: ProbeFailure<ShardCommandError>) -> EngineError {
    match failure {
        ProbeFailure::Execute {
            error: ShardCommandError::Shard(e),
            ..
        } => e.into(),
        ProbeFailure::Execute {
            command,
            error: ShardCommandError::Command(f),
        } => EngineError::Scsi {
            command,
            reason: f.error.to_string(),
        },
        ProbeFailure::Scsi(e) => probe_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(direction: Direction, len: u32) -> IoUnit {
        IoUnit {
            id: 1,
            file: 0,
            direction,
            offset: 0,
            len,
            buffer: vec![0; len as usize],
        }
    }

    #[test]
    fn unmap_parameter_list_has_one_descriptor() {
        let (cdb, p) = unmap(0x0102_0304_0506_0708, 0x1122_3344);
        assert_eq!(cdb.len(), 10);
        assert_eq!((cdb[0], cdb[7], cdb[8]), (0x42, 0, 24));
        assert_eq!(&p[0..4], &[0, 22, 0, 16]);
        assert_eq!(&p[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&p[16..20], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&p[20..24], &[0; 4]);
    }

    #[test]
    fn statuses_sense_and_residuals_map_to_io_errors() {
        let read = unit(Direction::Read, 4096);
        assert_eq!(outcome_result(&read, 0, None, Residual::None, 4096), Ok(()));
        let fixed_sense = [
            0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0,
        ];
        assert_eq!(
            outcome_result(&read, 2, Some(&fixed_sense), Residual::None, 0),
            Err(IoError::CheckCondition {
                key: 5,
                asc: 0x21,
                ascq: 0
            })
        );
        assert_eq!(
            outcome_result(&read, 2, None, Residual::None, 0),
            Err(IoError::Status(2))
        );
        assert_eq!(
            outcome_result(&read, 0x18, None, Residual::None, 0),
            Err(IoError::Status(0x18))
        );
        assert_eq!(
            outcome_result(&read, 0, None, Residual::Underflow(512), 3584),
            Err(IoError::Short {
                wanted: 4096,
                done: 3584
            })
        );
        let write = unit(Direction::Write, 4096);
        assert_eq!(
            outcome_result(&write, 0, None, Residual::Underflow(4096), 0),
            Err(IoError::Short {
                wanted: 4096,
                done: 0
            })
        );
        let trim = unit(Direction::Trim, 4096);
        assert_eq!(outcome_result(&trim, 0, None, Residual::None, 0), Ok(()));
    }

    #[test]
    fn digest_preferences_use_libiscsi_names() {
        assert_eq!(
            DigestPreference::parse("CRC32C_NONE"),
            Some(DigestPreference::Crc32cOrNone)
        );
        assert_eq!(
            DigestPreference::parse("none-crc32c").map(DigestPreference::choices),
            Some(vec![DigestChoice::None, DigestChoice::Crc32c])
        );
        assert_eq!(DigestPreference::parse("md5"), None);
    }

    #[test]
    fn login_options_override_the_url_and_debug_hides_secrets() {
        let url = IscsiUrl::parse("iscsi://u%urlsecret12@127.0.0.1:3260/iqn.x:y/1").unwrap();
        let login = LoginOptions {
            chap: Some(("other".into(), "optionsecret".into())),
            mutual_chap: Some(("tgt".into(), "mutualsecret".into())),
            header_digest: Some(DigestPreference::Crc32c),
            immediate_data: Some(false),
            max_burst_length: Some(65536),
            ..LoginOptions::default()
        };
        let config = client_config(&url, &login, COMMAND_TIMEOUT_MIN, 8).unwrap();
        let chap = config.chap.as_ref().unwrap();
        assert_eq!(chap.user, "other");
        assert_eq!(chap.secret, b"optionsecret");
        assert_eq!(chap.mutual.as_ref().unwrap().0, "tgt");
        assert_eq!(config.offer.header_digests, vec![DigestChoice::Crc32c]);
        assert!(!config.offer.immediate_data);
        assert_eq!(config.offer.max_burst_length, 65536);
        assert_eq!(config.target_name.as_deref(), Some("iqn.x:y"));
        let printed = format!("{login:?}");
        assert!(!printed.contains("optionsecret") && !printed.contains("mutualsecret"));

        let url_chap = client_config(&url, &LoginOptions::default(), COMMAND_TIMEOUT_MIN, 8)
            .unwrap()
            .chap
            .unwrap();
        assert_eq!(
            (url_chap.user.as_str(), url_chap.secret.as_slice()),
            ("u", &b"urlsecret12"[..])
        );

        let mutual_only = LoginOptions {
            mutual_chap: Some(("t".into(), "s".into())),
            ..LoginOptions::default()
        };
        let bare = IscsiUrl::parse("iscsi://127.0.0.1/iqn.x:y/1").unwrap();
        assert!(matches!(
            client_config(&bare, &mutual_only, COMMAND_TIMEOUT_MIN, 8),
            Err(EngineError::InvalidOption(_))
        ));
    }
}
