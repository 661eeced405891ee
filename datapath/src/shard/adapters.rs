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
//! Async Message event 1 (the target asks the session to move) is made before the break
//! when the adapter has a queue pair to spare ([`AdapterSlot::spare`]): see
//! [`AdapterShardPath::start_move`]. In a multipath shard ([`AdapterSlot::member`]) an
//! adapter path does not log in again by itself: the multipath shard takes it down when a
//! command fails for a lost connection (or an independent adapter reports its session
//! lost, idle or not), sends the commands elsewhere and brings it back.
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{Finished, Path, PathState, Refusal};
use super::{failure, ShardConfig, ShardError, ShardInfo, ShardStats};
use crate::adapter::{
    AdapterError, AdapterFault, AdapterInfo, AdapterPath, Capabilities, DependentAdapter,
    DependentConfig, DependentPath, IndependentAdapter, IndependentConfig, IndependentPath,
    IndependentPathConfig, NetworkConfig, Notifier, PathCompletion, PathError, PathRejection,
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

/// Which queue pairs an adapter path drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AdapterSlot {
    /// The shard (its ISID's last byte).
    pub(super) shard: usize,
    /// The queue pair it logs in on.
    pub(super) queue_pair: usize,
    /// A queue pair for an Async Message event 1 move's new session (make before break);
    /// `None`: the adapter has none to spare, and a move breaks before it makes.
    pub(super) spare: Option<usize>,
    /// A multipath sub-path: it does not log in again by itself after a loss (the
    /// multipath shard sends its commands elsewhere and brings it back).
    pub(super) member: bool,
}

impl AdapterSlot {
    /// Shard `shard` of a pool of `shards` on an adapter with `queue_pairs`: queue pair
    /// `shard`, and `shard + shards` to spare when the adapter has it.
    pub(super) fn of_shard(shard: usize, shards: usize, queue_pairs: usize) -> AdapterSlot {
        AdapterSlot {
            shard,
            queue_pair: shard,
            spare: Some(shard + shards).filter(|&q| q < queue_pairs),
            member: false,
        }
    }
}

/// Queue pairs a pool of `shards` shards with `paths` paths each uses at most on an
/// adapter: one per path, and as many to spare for make-before-break moves.
pub fn queue_pairs_needed(shards: usize, paths: usize) -> usize {
    2 * shards * paths.max(1)
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

/// The session a move (Async Message event 1) left: it completes what it holds, then logs
/// out, while new commands go to the new one.
struct Draining {
    path: Box<DependentPath>,
    /// The target's Parameter3: out by then.
    deadline: Instant,
    retiring: bool,
}

/// A move's new session logging in while the current one carries I/O.
struct Joining {
    path: Box<DependentPath>,
    /// Given up (the old session then leaves and logs in again) past this.
    deadline: Instant,
    /// The target's Parameter3 and Parameter2 for the move.
    within_secs: u16,
    time2wait: u16,
    started: Instant,
}

/// What a dependent path's next session (a move's) is made from.
struct DependentRecipe {
    adapter: Arc<dyn DependentAdapter>,
    config: DependentConfig,
}

/// A shard's path through an adapter queue pair.
pub(super) struct AdapterShardPath {
    slot: AdapterSlot,
    /// `None` once closed.
    driven: Option<Driven>,
    draining: Option<Draining>,
    joining: Option<Joining>,
    /// The queue pair the next move logs in on.
    spare: Option<usize>,
    recipe: Option<DependentRecipe>,
    /// What callers wake (the first queue pair's eventfd, given to the pool).
    caller_wake: Arc<Notifier>,
    /// What the current queue pair's completions wake.
    notifier: Arc<Notifier>,
    /// A member path's commands failed for a lost connection, or its independent adapter
    /// reported its session lost (it logs in again by itself, so the loss shows only so).
    lost: bool,
    /// The Time2Wait of the target's drop an independent adapter reported with the loss.
    lost_time2wait: Option<Duration>,
    /// Sessions an independent adapter reported lost (and logged in again by itself).
    sessions_lost: u64,
    /// Each command the loop allowed to be sent again, without its buffer, by the loop's
    /// tag: kept while a dependent path can move (a single path with a spare queue pair),
    /// so what a moved session still holds at the target's Parameter3 goes again on the
    /// new one instead of failing.
    templates: HashMap<u64, Request>,
    /// Commands cut at Parameter3, to send again on the current session ahead of new ones.
    resend: VecDeque<(u64, Request)>,
    /// Commands sent again so ([`ShardStats::commands_resent`]).
    resent: u64,
    /// Sleeps on the eventfd (the shard's system calls on this path).
    sleeps: u64,
    /// Payload bytes the host session copied, as of the last poll (and of the sessions
    /// before it).
    copied: u64,
    copied_before: u64,
    moves: u64,
}

/// How long a moved session's logout may take past the target's deadline.
const RETIRE_GRACE: Duration = Duration::from_secs(2);
/// The longest sleep while a moved session drains (both queue pairs are looked at).
const DRAIN_POLL: Duration = Duration::from_millis(1);

impl AdapterShardPath {
    /// Takes the queue pair `slot` names on the adapter `config.path` names and logs in
    /// (or has the adapter log in) at `cc.portal`.
    pub(super) fn connect(
        slot: AdapterSlot,
        cc: &ClientConfig,
        config: &ShardConfig,
        core: Option<usize>,
    ) -> Result<(AdapterShardPath, ShardInfo), ShardError> {
        let index = slot.queue_pair;
        let adapter_error = |source: AdapterError| match source {
            AdapterError::Login { reason, .. } => ShardError::Login {
                shard: slot.shard,
                reason,
            },
            source => ShardError::Adapter {
                shard: slot.shard,
                source,
            },
        };
        let mut recipe = None;
        let (driven, info) = match &config.path {
            ShardPath::Software => {
                return Err(ShardError::InvalidConfig(
                    "an adapter path needs an adapter",
                ))
            }
            ShardPath::Dependent(adapter) => {
                let isid = shard_isid(slot.shard);
                // The bounds of `SessionConfig::new`: the path holds requests itself.
                let session = cc.session_config(isid, 1024, 128);
                // The host session pings (`cc`); the adapter's socket takes the timeout.
                let network = NetworkConfig {
                    portal: cc.portal,
                    local_addr: None,
                    connect_timeout: cc.connect_timeout,
                    tcp_user_timeout: cc.liveness(config.tcp_user_timeout).tcp_user_timeout,
                };
                let mut dependent = DependentConfig::new(session, network);
                dependent.queue_depth = config.queue_depth.max(1);
                dependent.recover = !slot.member;
                dependent.host_moves = slot.spare.is_some();
                let path = DependentPath::connect(Arc::clone(adapter), index, dependent.clone())
                    .map_err(adapter_error)?;
                recipe = Some(DependentRecipe {
                    adapter: Arc::clone(adapter),
                    config: dependent,
                });
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
                    liveness: cc.liveness(config.tcp_user_timeout),
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
            slot,
            driven: Some(driven),
            draining: None,
            joining: None,
            spare: slot.spare,
            recipe,
            caller_wake: Arc::clone(&notifier),
            notifier,
            lost: false,
            lost_time2wait: None,
            sessions_lost: 0,
            templates: HashMap::new(),
            resend: VecDeque::new(),
            resent: 0,
            sleeps: 0,
            copied: 0,
            copied_before: 0,
            moves: 0,
        };
        Ok((path, info))
    }

    /// The eventfd the pool writes when a caller submits (the first queue pair's: the
    /// shard sleeps on it whichever queue pair a move left it on).
    pub(super) fn caller_wake(&self) -> &Arc<Notifier> {
        &self.caller_wake
    }

    /// Async Message event 1 on a dependent path: make before break. A new session (new
    /// ISID, on the spare queue pair, through the route's start so an array places it)
    /// starts to log in while the current one goes on carrying I/O ([`Joining`]); once it
    /// is in, new commands go to it, and the old one completes what it holds and logs out
    /// before the target's `within_secs` ([`AdapterShardPath::drive_joining`]). Without a
    /// spare queue pair (or when the new login fails) the old path leaves and logs in
    /// again itself (break before make).
    fn start_move(&mut self, now: Instant, within_secs: u16, time2wait: u16) {
        let Some(Driven::Dependent(current)) = self.driven.as_mut() else {
            return;
        };
        let busy = self.draining.is_some() || self.joining.is_some();
        let (spare, recipe) = match (self.spare, &self.recipe) {
            (Some(spare), Some(recipe)) if !busy => (spare, recipe),
            _ => {
                tracing::info!(
                    shard = self.slot.shard,
                    "no queue pair to move to: logging out, then in again"
                );
                current.leave(now, time2wait);
                return;
            }
        };
        let mut config = recipe.config.clone();
        config.network.portal = current.route_start();
        config.session.isid = shard_isid(self.slot.shard);
        let login_timeout = config.session.login_timeout;
        match DependentPath::start(Arc::clone(&recipe.adapter), spare, config) {
            Ok(path) => {
                self.spare = None;
                let within = Duration::from_secs(u64::from(within_secs.max(1)));
                self.joining = Some(Joining {
                    path: Box::new(path),
                    deadline: now + login_timeout.min(within),
                    within_secs,
                    time2wait,
                    started: now,
                });
            }
            Err(error) => {
                tracing::warn!(shard = self.slot.shard, %error, "the new session of a move did not start; logging out, then in again");
                current.leave(now, time2wait);
            }
        }
    }

    /// Moves a move's new session on: once logged in it takes the current one's place and
    /// the current one drains; if it fails or is not in by its deadline, the current one
    /// leaves and logs in again (break before make), and the queue pair is spare again.
    fn drive_joining(&mut self, now: Instant) {
        let Some(joining) = self.joining.as_mut() else {
            return;
        };
        joining.path.poll(now);
        if joining.path.is_ready() {
            let Some(joining) = self.joining.take() else {
                return;
            };
            tracing::info!(
                shard = self.slot.shard,
                queue_pair = joining.path.queue_pair(),
                tsih = joining.path.session().tsih(),
                login_ms = joining.started.elapsed().as_millis() as u64,
                "moved at the target's request; the old session drains"
            );
            self.moves += 1;
            self.notifier = Arc::clone(joining.path.notifier());
            let within = Duration::from_secs(u64::from(joining.within_secs.max(1)));
            if let Some(Driven::Dependent(old)) =
                self.driven.replace(Driven::Dependent(joining.path))
            {
                self.copied_before += old.session().stats().bytes_copied;
                self.draining = Some(Draining {
                    path: old,
                    deadline: joining.started + within,
                    retiring: false,
                });
            }
            return;
        }
        if joining.path.failure().is_none() && now < joining.deadline {
            return;
        }
        let Some(joining) = self.joining.take() else {
            return;
        };
        tracing::warn!(
            shard = self.slot.shard,
            reason = joining
                .path
                .failure()
                .unwrap_or("not logged in by its deadline"),
            "the new session of a move failed; logging out, then in again"
        );
        self.spare = Some(joining.path.queue_pair());
        if let Some(Driven::Dependent(current)) = self.driven.as_mut() {
            current.leave(now, joining.time2wait);
        }
        // Dropped: its queue pair is reset and given back to the adapter.
    }

    /// Moves the draining session on: its answers go out with the others; once it holds
    /// nothing it logs out; past the target's deadline it is ended, and what it still held
    /// is sent again on the current session ([`AdapterShardPath::keep_or_finish`]). Once
    /// out, its queue pair is the next move's spare.
    fn drive_draining(&mut self, now: Instant, done: &mut Vec<Finished>) {
        let Some(draining) = self.draining.as_mut() else {
            return;
        };
        let path = draining.path.as_mut();
        path.poll(now);
        let mut ended = Vec::new();
        while let Some(completion) = path.poll_completion() {
            ended.push(completion);
        }
        if !draining.retiring {
            if path.in_flight() == 0 {
                draining.retiring = true;
                path.start_retiring(now);
            } else if now >= draining.deadline {
                draining.retiring = true;
                path.end(now, "did not drain within the target's logout deadline");
            }
        }
        while let Some(completion) = path.poll_completion() {
            ended.push(completion);
        }
        let overdue = now >= draining.deadline + RETIRE_GRACE;
        let out = path.is_closed() || overdue;
        if out {
            path.end(now, "the moved session is out");
            while let Some(completion) = path.poll_completion() {
                ended.push(completion);
            }
        }
        for completion in ended {
            self.keep_or_finish(completion, done);
        }
        if !out {
            return;
        }
        if let Some(draining) = self.draining.take() {
            self.spare = Some(draining.path.queue_pair());
            tracing::info!(shard = self.slot.shard, "the moved session is out");
            // Dropped: the queue pair is reset and given back to the adapter.
        }
    }

    /// A moved session's command ended: one its connection lost (cut at Parameter3) goes
    /// again on the current session when the loop allowed it and its data came back
    /// (`DataDirection::can_send_again`); anything else finishes as it ended.
    fn keep_or_finish(&mut self, completion: PathCompletion, done: &mut Vec<Finished>) {
        let tag = completion.user_data;
        let template = self.templates.remove(&tag);
        match (completion.result, template) {
            (Err(failure), Some(mut request))
                if lost_connection(&failure.error)
                    && request.direction.can_send_again(&failure.buffer) =>
            {
                request.buffer = failure.buffer;
                request.user_data = tag;
                self.resend.push_back((tag, request));
            }
            (result, _) => done.push(finished(PathCompletion {
                user_data: tag,
                result,
            })),
        }
    }

    /// Sends the commands a move's cut handed back, in order, ahead of new ones; a full
    /// path keeps the rest for the next turn.
    fn send_again(&mut self, now: Instant, done: &mut Vec<Finished>) {
        while let Some((tag, request)) = self.resend.pop_front() {
            let template = self.keep_template(&request);
            let Some(driven) = self.driven.as_mut() else {
                let error = CommandError::ConnectionLost("the adapter path is closed".into());
                done.push((tag, Err(failure(error, request.buffer))));
                continue;
            };
            match driven.path().submit(now, request) {
                Ok(()) => {
                    self.resent += 1;
                    if let Some(template) = template {
                        self.templates.insert(tag, template);
                    }
                }
                Err(refused) if matches!(refused.reason, PathRejection::QueueFull) => {
                    self.resend.push_front((tag, refused.request));
                    return;
                }
                Err(refused) => {
                    let error = CommandError::ConnectionLost(format!(
                        "not sent again after a move: {}",
                        refused.reason
                    ));
                    done.push((tag, Err(failure(error, refused.request.buffer))));
                }
            }
        }
    }

    /// The command without its buffer, when this path keeps one to send again after a
    /// move (see [`AdapterShardPath::templates`]).
    fn keep_template(&self, request: &Request) -> Option<Request> {
        let moves_here = !self.slot.member && self.recipe.is_some() && self.slot.spare.is_some();
        moves_here.then(|| Request {
            lun: request.lun,
            cdb: request.cdb.clone(),
            direction: request.direction,
            buffer: Vec::new(),
            attribute: request.attribute,
            user_data: request.user_data,
        })
    }

    /// Every eventfd the adapter writes for this path: the queue pair it serves on, the one
    /// callers were given, and a move's joining or draining one.
    pub(super) fn notifiers<'a>(&'a self, out: &mut Vec<&'a Notifier>) {
        out.push(&self.notifier);
        out.push(&self.caller_wake);
        if let Some(joining) = &self.joining {
            out.push(joining.path.notifier());
        }
        if let Some(draining) = &self.draining {
            out.push(draining.path.notifier());
        }
    }

    /// True when a poll would find completions (of the current, a joining or a draining
    /// session) or commands to send again.
    pub(super) fn ready_to_poll(&self) -> bool {
        !self.resend.is_empty()
            || self
                .driven
                .as_ref()
                .is_some_and(|d| d.path_ref().ready_to_poll())
            || self
                .joining
                .as_ref()
                .is_some_and(|j| j.path.ready_to_poll())
            || self
                .draining
                .as_ref()
                .is_some_and(|d| d.path.ready_to_poll())
    }

    /// The path's commands, the draining session's and those waiting to go again.
    fn in_flight(&self) -> usize {
        let current = self.driven.as_ref().map_or(0, |d| d.path_ref().in_flight());
        current + self.draining.as_ref().map_or(0, |d| d.path.in_flight()) + self.resend.len()
    }

    /// A member path is lost: its commands failed for a lost connection, or the path gave
    /// up (a dependent path that does not recover).
    pub(super) fn is_lost(&self) -> bool {
        self.lost
            || match &self.driven {
                Some(Driven::Dependent(p)) => p.failure().is_some(),
                Some(Driven::Independent(p)) => p.failure().is_some(),
                None => false,
            }
    }

    /// The Time2Wait of the event 2 or 3 that dropped a member path, if one did.
    pub(super) fn lost_time2wait(&self) -> Option<Duration> {
        match &self.driven {
            Some(Driven::Dependent(p)) => p.dropped_time2wait(),
            Some(Driven::Independent(_)) => self.lost_time2wait,
            None => None,
        }
    }

    /// Ends a lost member path: the adapter lets go of every buffer, and every command it
    /// held comes back, failed as a lost connection or finished, buffers included.
    pub(super) fn end_lost(&mut self, done: &mut Vec<Finished>) {
        let now = Instant::now();
        self.joining = None;
        if let Some(mut draining) = self.draining.take() {
            draining.path.end(now, "the path is lost");
            while let Some(completion) = draining.path.poll_completion() {
                done.push(finished(completion));
            }
        }
        let Some(driven) = self.driven.as_mut() else {
            return;
        };
        match driven {
            Driven::Dependent(p) => p.end(now, "the path is lost"),
            Driven::Independent(p) => p.end("the path is lost"),
        }
        let path = driven.path();
        while let Some(completion) = path.poll_completion() {
            done.push(finished(completion));
        }
    }
}

/// True when a command's failure says its path lost its connection (or the adapter its
/// session): a multipath shard then takes the path down and sends the command elsewhere.
pub(super) fn lost_connection(error: &PathError) -> bool {
    match error {
        PathError::Command(CommandError::ConnectionLost(_)) | PathError::Unavailable(_) => true,
        PathError::Adapter(fault) => !matches!(fault, AdapterFault::DroppedSubmission { .. }),
        _ => false,
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
        self.in_flight()
    }

    fn submit(
        &mut self,
        now: Instant,
        tag: u64,
        mut request: Request,
        resend: bool,
    ) -> Result<(), Refusal> {
        if !self.resend.is_empty() {
            // Commands a move's cut handed back go first.
            return Err(Refusal::Full(request));
        }
        let template = if resend {
            self.keep_template(&request)
        } else {
            None
        };
        let Some(driven) = self.driven.as_mut() else {
            let error = CommandError::ConnectionLost("the adapter path is closed".into());
            return Err(Refusal::Failed(request, error));
        };
        // The path answers with the loop's tag; the caller's comes back on refusal.
        let user_data = std::mem::replace(&mut request.user_data, tag);
        let refused = match driven.path().submit(now, request) {
            Ok(()) => {
                if let Some(template) = template {
                    self.templates.insert(tag, template);
                }
                return Ok(());
            }
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
        self.drive_joining(now);
        self.drive_draining(now, done);
        self.send_again(now, done);
        let Some(driven) = self.driven.as_mut() else {
            return PathState::Serving;
        };
        self.copied = self.copied_before + driven.bytes_copied();
        let path = driven.path();
        path.poll(now);
        // Bounded: the path holds at most `queue_depth` commands.
        while let Some(completion) = path.poll_completion() {
            if !self.templates.is_empty() {
                self.templates.remove(&completion.user_data);
            }
            if self.slot.member {
                if let Err(failure) = &completion.result {
                    self.lost |= lost_connection(&failure.error);
                }
            }
            done.push(finished(completion));
        }
        let request = match driven {
            Driven::Dependent(p) => p.take_logout_request(),
            Driven::Independent(p) => {
                if let Some(loss) = p.take_session_loss() {
                    self.sessions_lost += 1;
                    if self.slot.member {
                        // Idle or not, the path is down until the multipath shard brings
                        // it back (the adapter's own new login is stopped with it).
                        self.lost = true;
                        self.lost_time2wait = loss.time2wait;
                    }
                }
                None
            }
        };
        if let Some((within_secs, time2wait)) = request {
            self.start_move(now, within_secs, time2wait);
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
        // While a moved session logs in or drains, both queue pairs are looked at in short
        // steps.
        let timeout = if self.draining.is_some() || self.joining.is_some() {
            timeout.min(DRAIN_POLL)
        } else {
            timeout
        };
        self.sleeps += 1;
        self.notifier
            .wait_until_either(&self.caller_wake, timeout, || {
                path.ready_to_poll() || callers_ready()
            });
    }

    fn next_deadline(&self) -> Option<Instant> {
        let current = self.driven.as_ref()?.path_ref().next_deadline();
        let draining = self
            .draining
            .as_ref()
            .map(|d| match d.path.next_deadline() {
                Some(at) => at.min(d.deadline),
                None => d.deadline,
            });
        let joining = self.joining.as_ref().map(|j| j.deadline);
        [current, draining, joining].into_iter().flatten().min()
    }

    fn close(&mut self, now: Instant) -> bool {
        // A move's session still logging in is let go (its queue pair reset).
        self.joining = None;
        if self.draining.is_some() {
            let mut done = Vec::new();
            self.drive_draining(now, &mut done);
            if self.draining.is_some() {
                return false;
            }
        }
        match self.driven.take() {
            Some(Driven::Dependent(path)) => {
                if let Err(error) = path.logout(LOGOUT_TIMEOUT) {
                    tracing::warn!(%error, "stopping the adapter queue pair");
                }
            }
            // The independent adapter owns its session: dropping the path stops its
            // queue pair and gives it back.
            Some(Driven::Independent(path)) => drop(path),
            None => {}
        }
        true
    }

    fn count(&self, stats: &mut ShardStats) {
        stats.kernel_entries = self.sleeps;
        stats.bytes_copied = self.copied;
        stats.moves = self.moves;
        stats.commands_resent = self.resent;
        // An independent adapter's own logins after a loss (a multipath shard counts the
        // losses of its members itself).
        if !self.slot.member {
            stats.reconnects = self.sessions_lost;
        }
    }
}
