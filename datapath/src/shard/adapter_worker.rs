//! A shard that drives an offload adapter (DESIGN.md, "The path of one I/O": the dependent
//! and independent HNIC branches) instead of its own io_uring TCP connection.
//!
//! Shard `i` takes queue pair `i` of the adapter its [`ShardPath`] names and pins to the
//! same core a software shard `i` would ([`planned_cores`]), so the I/O of one shard stays
//! on one core and one adapter queue. Callers see the same [`ShardPool`](super::ShardPool)
//! API: [`Request`] in, [`ShardCompletion`] out, [`ShardStats`] counters.
//!
//! - [`ShardPath::Dependent`]: the shard owns a [`DependentPath`]: the host iSCSI session
//!   (RFC 7143) runs here, its ISID made per shard like a software shard's; the adapter
//!   frames its PDUs, computes the digests it offloads and places Data-In in the callers'
//!   buffers.
//! - [`ShardPath::Independent`]: the shard owns an [`IndependentPath`]: it hands SCSI
//!   commands to the adapter, which logs in with the shard's target, names and keys
//!   (its own configuration interface) and runs the session itself.
//!
//! # One turn
//! 1. take requests from the shard's queue while it holds fewer than `queue_depth` (and
//!    the completion queue has room for them); each goes to the path, which posts it to the
//!    adapter's submission ring and rings the doorbell. A request the path hands back as
//!    "queue full" waits in the shard (one at most) and goes first next turn;
//! 2. [`AdapterPath::poll`] once, then post every completion;
//! 3. when nothing moved: poll the queue for `idle_spin` if nothing is in flight, then
//!    sleep on the adapter's completion eventfd ([`AdapterPath::notifier`]) until the adapter
//!    announces completions, a caller submits (the pool wakes the same eventfd), or the
//!    path's next deadline.
//!
//! # Errors
//! Adapter faults fail the affected commands with [`PathError::Adapter`], whose text
//! names the fault; a path that cannot carry commands any more (relogin failed) fails them
//! with [`CommandError::ConnectionLost`] saying so. Recovery is the path's documented
//! policy: a dependent path resets the queue pair and logs in again (new requests wait
//! meanwhile); an independent adapter logs in again itself, and the host resets the queue
//! pair only on a stalled doorbell. Nothing is retried behind the caller's back: an I/O
//! whose outcome is unknown is reported failed, never good.
//!
//! # Counters
//! `kernel_entries` counts the shard's sleeps on the eventfd (each a `poll(2)`, plus a
//! `read(2)` when woken): the only system calls the shard thread makes on this path; the
//! adapter's own threads do the TCP. `bytes_copied` counts payload the host session copied
//! (a dependent adapter without direct data placement); copies inside an adapter are
//! adapter work and are not counted here.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::{failure, ShardCompletion, ShardConfig, ShardError, ShardInfo};
use super::{ShardStats, SharedStats};
use crate::adapter::{
    AdapterError, AdapterInfo, AdapterPath, Capabilities, DependentAdapter, DependentConfig,
    DependentPath, IndependentAdapter, IndependentConfig, IndependentPath, IndependentPathConfig,
    NetworkConfig, Notifier, PathCompletion, PathError, PathRejection,
};
use crate::session::connect::{shard_isid, ClientConfig};
use crate::session::CommandError;
use crate::session::Request;

/// How long an idle shard sleeps before it looks at its queue and the path's timers.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How long a stopping dependent shard waits for its Logout Response.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sleep while the caller has not taken its completions (the queue to it is full).
const COMPLETIONS_FULL_PAUSE: Duration = Duration::from_micros(200);

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

/// What the shard thread owns before its path is up.
pub(super) struct AdapterWorker {
    pub(super) index: usize,
    pub(super) client_config: ClientConfig,
    pub(super) config: ShardConfig,
    pub(super) core: Option<core_affinity::CoreId>,
    pub(super) submit_rx: Receiver<Request>,
    pub(super) done_tx: Sender<ShardCompletion>,
    pub(super) shared: Arc<SharedStats>,
    /// Set once the path is up: the eventfd the pool writes when a caller submits.
    pub(super) wake: Arc<OnceLock<Arc<Notifier>>>,
    /// Its `caller` half wakes a caller asleep in `ShardPool::wait_completion`.
    pub(super) doorbell: Arc<super::Doorbell>,
}

/// The path a running shard drives.
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

impl AdapterWorker {
    /// The thread body: pin, take the queue pair and log in, report, then serve until the
    /// queue closes.
    pub(super) fn run(self, ready: Sender<Result<ShardInfo, ShardError>>) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(
                    shard = self.index,
                    core = core.id,
                    "could not pin the shard"
                );
            }
        }
        let index = self.index;
        let (driven, info) = match self.connect() {
            Ok(up) => up,
            Err(e) => {
                let _ = ready.send(Err(e));
                self.doorbell.caller.wake();
                return;
            }
        };
        let _ = self.wake.set(Arc::clone(driven.path_ref().notifier()));
        let _ = ready.send(Ok(info));
        let shard = AdapterShard {
            index,
            depth: self.config.queue_depth.max(1),
            idle_spin: self.config.idle_spin,
            submit_rx: self.submit_rx,
            done_tx: self.done_tx,
            shared: self.shared,
            driven,
            backlog: None,
            stats: ShardStats::default(),
            sleeps: 0,
            stopping: false,
            doorbell: Arc::clone(&self.doorbell),
        };
        shard.serve();
        // The completion queue is closed now: a caller asleep in wait_completion finds out.
        self.doorbell.caller.wake();
    }

    fn connect(&self) -> Result<(Driven, ShardInfo), ShardError> {
        let cc = &self.client_config;
        let index = self.index;
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
        let core = self.core.map(|c| c.id);
        match &self.config.path {
            ShardPath::Software => Err(ShardError::InvalidConfig(
                "the adapter worker needs an adapter path",
            )),
            ShardPath::Dependent(adapter) => {
                let isid = shard_isid(index);
                // The bounds of `SessionConfig::new`: the path holds requests itself.
                let session = cc.session_config(isid, 1024, 128);
                let network = NetworkConfig {
                    portal: cc.portal,
                    local_addr: None,
                    connect_timeout: cc.connect_timeout,
                };
                let mut config = DependentConfig::new(session, network);
                config.queue_depth = self.config.queue_depth.max(1);
                let path = DependentPath::connect(Arc::clone(adapter), index, config)
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
                Ok((Driven::Dependent(Box::new(path)), info))
            }
            ShardPath::Independent(adapter) => {
                let target_name = cc.target_name.clone().ok_or(ShardError::InvalidConfig(
                    "shards need a target name (not a discovery session)",
                ))?;
                let config = IndependentConfig {
                    portal: cc.portal,
                    target_name,
                    initiator_name: cc.initiator_name.clone(),
                    chap: cc.chap.clone(),
                    offer: cc.offer.clone(),
                    connect_timeout: cc.connect_timeout,
                    login_timeout: cc.login_timeout,
                    command_timeout: cc.command_timeout,
                    queue_depth: self.config.queue_depth.max(1),
                };
                let path = IndependentPath::connect(
                    Arc::clone(adapter),
                    index,
                    IndependentPathConfig::new(config),
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
                Ok((Driven::Independent(Box::new(path)), info))
            }
        }
    }
}

/// A running adapter shard.
struct AdapterShard {
    index: usize,
    depth: usize,
    idle_spin: Duration,
    submit_rx: Receiver<Request>,
    done_tx: Sender<ShardCompletion>,
    shared: Arc<SharedStats>,
    driven: Driven,
    /// A request the path handed back as "queue full"; first in line next turn.
    backlog: Option<Request>,
    stats: ShardStats,
    sleeps: u64,
    stopping: bool,
    doorbell: Arc<super::Doorbell>,
}

impl AdapterShard {
    fn serve(mut self) {
        loop {
            let accepted = self.accept();
            let completed = self.poll();
            self.publish();
            if self.stopping && self.held() == 0 {
                break;
            }
            if accepted == 0 && completed == 0 {
                self.idle();
            }
        }
        let index = self.index;
        match self.driven {
            Driven::Dependent(path) => {
                if let Err(error) = path.logout(LOGOUT_TIMEOUT) {
                    tracing::warn!(shard = index, %error, "stopping the adapter queue pair");
                }
            }
            // The independent adapter owns its session; it ends with the adapter.
            Driven::Independent(path) => drop(path),
        }
        self.shared.store(&self.stats);
    }

    /// Commands the shard holds: in the path, and the one waiting for room in it.
    fn held(&self) -> usize {
        self.driven.path_ref().in_flight() + usize::from(self.backlog.is_some())
    }

    /// How many more requests the shard may take now: under `queue_depth`, and never more
    /// than fit in the completion queue (twice that) beside what the caller has not taken.
    fn room(&self) -> usize {
        let held = self.held();
        self.depth
            .saturating_sub(held)
            .min((2 * self.depth).saturating_sub(held + self.done_tx.len()))
    }

    /// Takes requests while there is room; returns how many went to the path or failed.
    fn accept(&mut self) -> usize {
        let mut moved = 0;
        if let Some(request) = self.backlog.take() {
            if !self.submit(request) {
                return moved;
            }
            moved += 1;
        }
        // Bounded by the depth: each request taken fills one place.
        while !self.stopping && self.room() > 0 {
            let request = match self.submit_rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    break;
                }
            };
            if !self.submit(request) {
                break;
            }
            moved += 1;
            let depth = self.held() as u64;
            self.stats.peak_queue_depth = self.stats.peak_queue_depth.max(depth);
        }
        moved
    }

    /// Hands one request to the path. False when the path is full (the request waits in
    /// the backlog); a request the path refuses for any other reason fails at once.
    fn submit(&mut self, request: Request) -> bool {
        let refused = match self.driven.path().submit(Instant::now(), request) {
            Ok(()) => return true,
            Err(refused) => refused,
        };
        let error = match refused.reason {
            PathRejection::QueueFull => {
                self.backlog = Some(refused.request);
                return false;
            }
            PathRejection::Unavailable(reason) => {
                CommandError::ConnectionLost(format!("adapter path unavailable: {reason}"))
            }
            other => CommandError::Protocol(format!("not submitted: {other}")),
        };
        self.stats.ios += 1;
        self.stats.ios_failed += 1;
        let completion = ShardCompletion {
            user_data: refused.request.user_data,
            result: Err(failure(error, refused.request.buffer)),
        };
        self.post(vec![completion]);
        true
    }

    /// One turn of the path; posts its completions. Returns how many.
    fn poll(&mut self) -> usize {
        let path = self.driven.path();
        path.poll(Instant::now());
        let mut completions = Vec::new();
        // Bounded: the path holds at most `queue_depth` commands.
        while let Some(completion) = path.poll_completion() {
            completions.push(completion);
        }
        let completions: Vec<ShardCompletion> =
            completions.into_iter().map(|c| self.complete(c)).collect();
        let n = completions.len();
        self.post(completions);
        n
    }

    fn complete(&mut self, completion: PathCompletion) -> ShardCompletion {
        let PathCompletion { user_data, result } = completion;
        self.stats.ios += 1;
        let result = match result {
            Ok(outcome) => {
                self.stats.bytes += u64::from(outcome.transferred);
                Ok(outcome)
            }
            Err(path_failure) => {
                self.stats.ios_failed += 1;
                match path_failure.error {
                    PathError::Unavailable(reason) => Err(failure(
                        CommandError::ConnectionLost(format!("adapter path unavailable: {reason}")),
                        path_failure.buffer,
                    )),
                    _ => Err(path_failure),
                }
            }
        };
        ShardCompletion { user_data, result }
    }

    /// Posts completions after publishing the counters, so a caller holding a completion
    /// sees counters that include it.
    fn post(&mut self, completions: Vec<ShardCompletion>) {
        if completions.is_empty() {
            return;
        }
        self.publish();
        for completion in completions {
            // Never blocks: the shard takes no more than the completion queue's free room.
            let _ = self.done_tx.send(completion);
        }
        self.doorbell.caller.wake();
    }

    /// Nothing moved this turn: poll the queue a little when nothing is in flight, then
    /// sleep on the adapter's eventfd.
    fn idle(&mut self) {
        let room = self.room() > 0 && !self.stopping;
        if !room && self.held() == 0 {
            // The caller has not taken its completions yet; it does not wake us for that.
            std::thread::sleep(COMPLETIONS_FULL_PAUSE);
            return;
        }
        let has_work = |shard: &AdapterShard| {
            shard.driven.path_ref().ready_to_poll() || (room && !shard.submit_rx.is_empty())
        };
        if room && self.held() == 0 && !self.idle_spin.is_zero() {
            let until = Instant::now() + self.idle_spin;
            while Instant::now() < until {
                if has_work(self) {
                    return;
                }
                std::thread::yield_now();
            }
        }
        let now = Instant::now();
        let mut timeout = IDLE_WAIT;
        if let Some(deadline) = self.driven.path_ref().next_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(now));
        }
        if timeout.is_zero() || has_work(self) {
            return;
        }
        self.sleeps += 1;
        let notifier = Arc::clone(self.driven.path_ref().notifier());
        notifier.wait_until(timeout, || has_work(self));
    }

    fn publish(&mut self) {
        self.stats.kernel_entries = self.sleeps;
        self.stats.bytes_copied = self.driven.bytes_copied();
        self.stats.queue_depth = self.held() as u64;
        self.shared.store(&self.stats);
    }
}
