//! The adapter paths of a shard (DESIGN.md, "The path of one I/O": the dependent and
//! independent HNIC branches): the shard's loop (`run`) drives a queue pair of an offload
//! adapter instead of its own io_uring TCP connection.
//!
//! Shard `i` takes queue pair `i` of the adapter its [`ShardPath`] names and pins to the
//! same core a software shard `i` would ([`planned_cores`]), so the I/O of one shard stays
//! on one core and one adapter queue. Callers see the same [`ShardPool`](super::ShardPool)
//! API: requests in, completions out, [`ShardStats`] counters, work on the shard's thread.
//!
//! - [`ShardPath::Dependent`]: the shard owns a [`DependentPath`]: the host iSCSI session
//!   (RFC 7143) runs here, its ISID made per shard like a software shard's; the adapter
//!   frames its PDUs, computes the digests it offloads and places Data-In in the callers'
//!   buffers.
//! - [`ShardPath::Independent`]: the shard owns an [`IndependentPath`]: it hands SCSI
//!   commands to the adapter, which logs in with the shard's target, names and keys
//!   (its own configuration interface) and runs the session itself.
//!
//! A request the adapter hands back as "queue full" waits in the loop and goes first next
//! turn. The loop sleeps on the adapter's completion eventfd ([`AdapterPath::notifier`])
//! until the adapter announces completions, a caller submits (the pool wakes the same
//! eventfd), or a deadline.
//!
//! # Errors
//! Adapter faults fail the affected commands with [`CommandError::Adapter`], whose text
//! names the fault; a path that cannot carry commands any more (relogin failed) fails them
//! with [`CommandError::ConnectionLost`] saying so. Recovery is the path's documented
//! policy: a dependent path resets the queue pair and logs in again (new requests wait
//! meanwhile); an independent adapter logs in again itself, and the host resets the queue
//! pair only on a stalled doorbell. Nothing is retried behind the caller's back: an I/O
//! whose outcome is unknown is reported failed, never good. ABORT TASK is not offered on
//! these paths (`ShardPool::abort` refuses).
//!
//! # Counters
//! `kernel_entries` counts the shard's sleeps on the eventfd (each a `poll(2)`, plus a
//! `read(2)` when woken): the only system calls the shard thread makes on this path; the
//! adapter's own threads do the TCP. `bytes_copied` counts payload the host session copied
//! (a dependent adapter without direct data placement); copies inside an adapter are
//! adapter work and are not counted here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{Finished, Path, PathState, Refusal};
use super::{failure, ShardConfig, ShardError, ShardInfo, ShardStats};
use crate::adapter::{
    AdapterError, AdapterInfo, AdapterPath, Capabilities, DependentAdapter, DependentConfig,
    DependentPath, IndependentAdapter, IndependentConfig, IndependentPath, IndependentPathConfig,
    NetworkConfig, Notifier, PathCompletion, PathError, PathRejection,
};
use crate::session::connect::{shard_isid, ClientConfig};
use crate::session::{CommandError, Request};

/// How long a stopping dependent shard waits for its Logout Response.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// What carries a shard's commands: software TCP, or a queue pair of an offload adapter
/// (shard `i` takes queue pair `i`).
#[derive(Clone, Default)]
pub enum ShardPath {
    /// The shard's own session over kernel TCP through its io_uring.
    #[default]
    Software,
    /// A dependent adapter carries the shard's session.
    Dependent(Arc<dyn DependentAdapter>),
    /// An independent adapter runs the session; the shard hands it SCSI commands.
    Independent(Arc<dyn IndependentAdapter>),
}

impl ShardPath {
    /// `software`, `dependent` or `independent` (the words of `transport=`).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The adapter behind the path, if any.
    pub fn adapter_info(&self) -> Option<AdapterInfo> {
        match self {
            ShardPath::Software => None,
            ShardPath::Dependent(a) => Some(a.info()),
            ShardPath::Independent(a) => Some(a.info()),
        }
    }

    /// CPU time of the adapter's own threads so far (`None` for software).
    pub fn adapter_cpu_time(&self) -> Option<Duration> {
        match self {
            ShardPath::Software => None,
            ShardPath::Dependent(a) => Some(a.cpu_time()),
            ShardPath::Independent(a) => Some(a.cpu_time()),
        }
    }

    /// The adapter object's address, for equality.
    fn identity(&self) -> Option<*const ()> {
        match self {
            ShardPath::Software => None,
            ShardPath::Dependent(a) => Some(Arc::as_ptr(a) as *const ()),
            ShardPath::Independent(a) => Some(Arc::as_ptr(a) as *const ()),
        }
    }
}

impl std::fmt::Debug for ShardPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.adapter_info() {
            None => f.write_str("Software"),
            Some(info) => write!(f, "{}({})", info.kind.name(), info.name),
        }
    }
}

/// Two paths are equal when they are the same kind over the same adapter object.
impl PartialEq for ShardPath {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.identity() == other.identity()
    }
}

impl Eq for ShardPath {}

/// Which path a shard drives and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPathInfo {
    /// `software`, `dependent` or `independent`.
    pub transport: &'static str,
    /// The adapter's name, for adapter paths.
    pub adapter: Option<String>,
    /// The adapter queue pair the shard drives (its own index), for adapter paths.
    pub queue_pair: Option<usize>,
    /// The core the shard is pinned to, if pinned.
    pub core: Option<usize>,
    /// What the adapter offloads, for adapter paths.
    pub capabilities: Option<Capabilities>,
}

/// The core each of `shards` shards pins to when the first pins to `first_core`: shard `i`
/// to the `(first_core + i) % n`-th of the `n` cores this process may run on; all `None`
/// when unpinned or the cores cannot be read. The rule [`ShardPool::start`](super::ShardPool::start)
/// follows for every path.
pub fn planned_cores(first_core: Option<usize>, shards: usize) -> Vec<Option<usize>> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    (0..shards)
        .map(|index| match first_core {
            Some(first) if !cores.is_empty() => {
                cores.get((first + index) % cores.len()).map(|c| c.id)
            }
            _ => None,
        })
        .collect()
}

/// The queue pair a running adapter shard drives.
enum Driven {
    Dependent(Box<DependentPath>),
    Independent(Box<IndependentPath>),
}

impl Driven {
    fn path(&mut self) -> &mut dyn AdapterPath {
        match self {
            Driven::Dependent(p) => p.as_mut(),
            Driven::Independent(p) => p.as_mut(),
        }
    }

    fn path_ref(&self) -> &dyn AdapterPath {
        match self {
            Driven::Dependent(p) => p.as_ref(),
            Driven::Independent(p) => p.as_ref(),
        }
    }

    /// Payload bytes the host session copied.
    fn bytes_copied(&self) -> u64 {
        match self {
            Driven::Dependent(p) => p.session().stats().bytes_copied,
            Driven::Independent(_) => 0,
        }
    }
}

/// A shard's path through an adapter queue pair.
pub(super) struct AdapterShardPath {
    /// `None` once closed.
    driven: Option<Driven>,
    notifier: Arc<Notifier>,
    /// Sleeps on the eventfd (the shard's system calls on this path).
    sleeps: u64,
    /// Payload bytes the host session copied, as of the last poll.
    copied: u64,
}

impl AdapterShardPath {
    /// Takes queue pair `index` of the adapter `config.path` names and logs in (or has the
    /// adapter log in).
    pub(super) fn connect(
        index: usize,
        cc: &ClientConfig,
        config: &ShardConfig,
        core: Option<usize>,
    ) -> Result<(AdapterShardPath, ShardInfo), ShardError> {
        let adapter_error = |source: AdapterError| match source {
            AdapterError::Login { reason, .. } => ShardError::Login {
                shard: index,
                reason,
            },
            source => ShardError::Adapter {
                shard: index,
                source,
            },
        };
        let (driven, info) = match &config.path {
            ShardPath::Software => {
                return Err(ShardError::InvalidConfig(
                    "an adapter path needs an adapter",
                ))
            }
            ShardPath::Dependent(adapter) => {
                let isid = shard_isid(index);
                // The bounds of `SessionConfig::new`: the path holds requests itself.
                let session = cc.session_config(isid, 1024, 128);
                let network = NetworkConfig {
                    portal: cc.portal,
                    local_addr: None,
                    connect_timeout: cc.connect_timeout,
                };
                let mut dependent = DependentConfig::new(session, network);
                dependent.queue_depth = config.queue_depth.max(1);
                let path = DependentPath::connect(Arc::clone(adapter), index, dependent)
                    .map_err(adapter_error)?;
                let info = ShardInfo {
                    core,
                    isid,
                    tsih: path.session().tsih(),
                    ring_flags: format!(
                        "none (dependent adapter {}, queue pair {index})",
                        adapter.info().name
                    ),
                    steering: None,
                    registered_buffer_bytes: 0,
                    registered_files: false,
                };
                (Driven::Dependent(Box::new(path)), info)
            }
            ShardPath::Independent(adapter) => {
                let target_name = cc.target_name.clone().ok_or(ShardError::InvalidConfig(
                    "shards need a target name (not a discovery session)",
                ))?;
                let independent = IndependentConfig {
                    portal: cc.portal,
                    target_name,
                    initiator_name: cc.initiator_name.clone(),
                    chap: cc.chap.clone(),
                    offer: cc.offer.clone(),
                    connect_timeout: cc.connect_timeout,
                    login_timeout: cc.login_timeout,
                    command_timeout: cc.command_timeout,
                    queue_depth: config.queue_depth.max(1),
                };
                let path = IndependentPath::connect(
                    Arc::clone(adapter),
                    index,
                    IndependentPathConfig::new(independent),
                )
                .map_err(adapter_error)?;
                let info = ShardInfo {
                    core,
                    // The adapter chose its own ISID; the host does not see it.
                    isid: [0; 6],
                    tsih: path.login().tsih,
                    ring_flags: format!(
                        "none (independent adapter {}, queue pair {index})",
                        adapter.info().name
                    ),
                    steering: None,
                    registered_buffer_bytes: 0,
                    registered_files: false,
                };
                (Driven::Independent(Box::new(path)), info)
            }
        };
        let notifier = Arc::clone(driven.path_ref().notifier());
        let path = AdapterShardPath {
            driven: Some(driven),
            notifier,
            sleeps: 0,
            copied: 0,
        };
        Ok((path, info))
    }

    /// The eventfd the pool writes when a caller submits.
    pub(super) fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }
}

/// A finished command of the adapter path: an adapter's fault stays the path's error; a
/// path that can carry nothing more fails the command as a lost connection.
fn finished(completion: PathCompletion) -> Finished {
    let PathCompletion { user_data, result } = completion;
    let result = result.map_err(|path_failure| match path_failure.error {
        PathError::Unavailable(reason) => failure(
            CommandError::ConnectionLost(format!("adapter path unavailable: {reason}")),
            path_failure.buffer,
        ),
        _ => path_failure,
    });
    (user_data, result)
}

impl Path for AdapterShardPath {
    fn held(&self) -> usize {
        self.driven.as_ref().map_or(0, |d| d.path_ref().in_flight())
    }

    fn submit(
        &mut self,
        now: Instant,
        tag: u64,
        mut request: Request,
        _resend: bool,
    ) -> Result<(), Refusal> {
        let Some(driven) = self.driven.as_mut() else {
            let error = CommandError::ConnectionLost("the adapter path is closed".into());
            return Err(Refusal::Failed(request, error));
        };
        // The path answers with the loop's tag; the caller's comes back on refusal.
        let user_data = std::mem::replace(&mut request.user_data, tag);
        let refused = match driven.path().submit(now, request) {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        let mut request = refused.request;
        request.user_data = user_data;
        Err(match refused.reason {
            PathRejection::QueueFull => Refusal::Full(request),
            PathRejection::Unavailable(reason) => Refusal::Failed(
                request,
                CommandError::ConnectionLost(format!("adapter path unavailable: {reason}")),
            ),
            other => Refusal::Failed(
                request,
                CommandError::Protocol(format!("not submitted: {other}")),
            ),
        })
    }

    fn abort(&mut self, _now: Instant, tag: u64) {
        // `ShardPool::abort` refuses adapter shards; nothing reaches here.
        tracing::debug!(tag, "ABORT TASK is not offered on adapter paths");
    }

    fn poll(&mut self, now: Instant, done: &mut Vec<Finished>) -> PathState {
        let Some(driven) = self.driven.as_mut() else {
            return PathState::Serving;
        };
        self.copied = driven.bytes_copied();
        let path = driven.path();
        path.poll(now);
        // Bounded: the path holds at most `queue_depth` commands.
        while let Some(completion) = path.poll_completion() {
            done.push(finished(completion));
        }
        PathState::Serving
    }

    fn wait(&mut self, timeout: Duration, callers_ready: &dyn Fn() -> bool) {
        let Some(driven) = self.driven.as_ref() else {
            std::thread::sleep(timeout);
            return;
        };
        let path = driven.path_ref();
        if timeout.is_zero() || path.ready_to_poll() || callers_ready() {
            return;
        }
        self.sleeps += 1;
        self.notifier
            .wait_until(timeout, || path.ready_to_poll() || callers_ready());
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.driven.as_ref()?.path_ref().next_deadline()
    }

    fn close(&mut self, _now: Instant) -> bool {
        match self.driven.take() {
            Some(Driven::Dependent(path)) => {
                if let Err(error) = path.logout(LOGOUT_TIMEOUT) {
                    tracing::warn!(%error, "stopping the adapter queue pair");
                }
            }
            // The independent adapter owns its session; it ends with the adapter.
            Some(Driven::Independent(path)) => drop(path),
            None => {}
        }
        true
    }

    fn count(&self, stats: &mut ShardStats) {
        stats.kernel_entries = self.sleeps;
        stats.bytes_copied = self.copied;
    }
}
